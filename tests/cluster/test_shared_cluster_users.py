"""Who uses the shared local cluster: a worker counts while its process holds its user file's lock.

The fault this exists for (seen in CI): a user file kept in the cache from an earlier run named a
process id that another process held by then, so the creator waited 15 minutes for a user that was
not there, and the full-cluster recovery refused to run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fixtures.cluster import SharedLocalCluster, user_alive

HOLDER = """
import sys, time
from pathlib import Path
from fixtures.cluster import SharedLocalCluster
shared = SharedLocalCluster(None, lock_dir=Path(sys.argv[1]), worker="gw9", keep=False)
shared.users.mkdir(parents=True, exist_ok=True)
shared._hold()
print(shared.worker, flush=True)
time.sleep(600)
"""


class NoCluster:
    name = "local"


def shared_in(tmp_path: Path) -> SharedLocalCluster:
    shared = SharedLocalCluster(NoCluster(), lock_dir=tmp_path, worker="master", keep=False)  # type: ignore[arg-type]
    shared.users.mkdir(parents=True, exist_ok=True)
    return shared


def test_a_file_left_behind_naming_a_live_process_id_is_not_a_user(tmp_path: Path) -> None:
    shared = shared_in(tmp_path)
    left = shared.users / f"master-{os.getppid()}"  # a process that runs, but holds no lock
    left.touch()
    (shared.users / "gw0-1").touch()  # pid 1 runs on every machine
    assert shared.others() == []
    assert not left.exists(), "a file nobody holds is removed"


def test_a_worker_counts_while_its_process_lives_and_not_after_it_is_killed(tmp_path: Path) -> None:
    shared = shared_in(tmp_path)
    root = Path(__file__).resolve().parents[2]
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(root)})
    try:
        assert holder.stdout is not None
        name = holder.stdout.readline().strip()
        assert name == f"gw9-{holder.pid}"
        assert shared.others() == [name]
        assert user_alive(shared.users / name)
    finally:
        holder.kill()
        holder.wait()
    assert (shared.users / name).exists(), "killed: it had no chance to remove its file"
    assert shared.others() == []


def test_own_file_is_held_and_released(tmp_path: Path) -> None:
    shared = shared_in(tmp_path)
    shared._hold()
    assert shared.users_alive() == [shared.worker]
    assert shared.others() == []
    other = shared_in(tmp_path)
    other.worker = "gw1-0"
    assert other.others() == [shared.worker]
    shared.release()
    assert other.others() == []
    assert not (shared.users / shared.worker).exists()
