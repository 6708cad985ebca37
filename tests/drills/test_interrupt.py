"""Ctrl-C in the middle of a drill leaves nothing that stops the next one.

A user's drill session is interrupted (SIGINT, what Ctrl-C sends) while its restore runs; its
fixtures' clean-up runs as pytest unwinds. Then the same drill runs again, with no manual
clean-up between, and must pass. Both sessions join this session's local cluster as any second
session on the host would.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from restoredrill.cluster import ClusterHandle
from tests.conftest import PROJECT_ROOT, user_project

pytestmark = [pytest.mark.cluster, pytest.mark.platform, pytest.mark.drill]

APP = "pelican"
INTERRUPT_AT = f"[drill {APP}] restore ..."


def drill_command(project: Path) -> list[str]:
    return [sys.executable, "-m", "pytest", "suites/drills/test_namespace_restore.py", "-k", APP,
            "--gitops-repo", "repo", "-p", "no:cacheprovider", "-s"]


def project_copy(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(PROJECT_ROOT / "pyproject.toml", project / "pyproject.toml")
    return user_project(project)


def test_a_drill_interrupted_at_the_restore_leaves_the_next_one_able_to_pass(cluster: ClusterHandle,
                                                                            tmp_path: Path) -> None:
    assert cluster.created_by_us  # both sessions join this cluster; neither tears it down
    project = project_copy(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "PYTHONUNBUFFERED": "1"}
    interrupted = subprocess.Popen(drill_command(project), cwd=project, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
    assert interrupted.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([interrupted.stdout], [], [], 5)
            if not ready:
                assert interrupted.poll() is None, "".join(seen)[-4000:]
                continue
            line = interrupted.stdout.readline()
            if not line:
                break
            seen.append(line)
            if INTERRUPT_AT in line:
                time.sleep(3)  # well inside the restore: the Restore exists, its volumes are on their way
                interrupted.send_signal(signal.SIGINT)
                break
        else:
            pytest.fail(f"the drill never reached its restore: {''.join(seen)[-4000:]}")
        rest, _ = interrupted.communicate(timeout=600)
    finally:
        if interrupted.poll() is None:
            interrupted.kill()
    output = "".join(seen) + rest
    assert INTERRUPT_AT in output, output[-4000:]
    assert interrupted.returncode == 2, f"pytest's status for an interrupted run is 2:\n{output[-4000:]}"
    assert "KeyboardInterrupt" in output

    again = subprocess.run(drill_command(project), cwd=project, env=env, capture_output=True, text=True,
                           timeout=1200, check=False)
    assert again.returncode == 0, (again.stdout + again.stderr)[-6000:]
    assert "1 passed" in again.stdout
