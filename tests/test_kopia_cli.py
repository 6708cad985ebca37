"""The snapshot check against the real kopia CLI Velero v1.16.2 links, on a local filesystem
repository: the command lines parse, the output is understood, a damaged pack fails at once, and
what Kopia keeps (and does not) is what verify.py says. Runs where `restoredrill toolchain --only
kopia` has built the binary (`make test` does); no cluster needed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from restoredrill.drill.data import INVENTORY_SCRIPT
from restoredrill.drill.snapshot import SnapshotVerification, VolumeSnapshot, verify_snapshots
from restoredrill.errors import MissingToolError
from restoredrill.platform.kopia import KopiaCommands, S3Credentials, filesystem_repository
from restoredrill.toolchain.gobuild import GoToolchain
from restoredrill.verify import compare_volume, parse_inventory

BUSYBOX = Path("/bin/busybox")
PASSWORD = "static-passw0rd"  # Velero's default repository password
RESTORE_UID = "0d7c3b52-6f1e-4d3a-9a2b-5c4e8f1a2b3c"


def kopia_binary() -> Path | None:
    try:
        return GoToolchain().binary("kopia")
    except MissingToolError:
        return None


KOPIA = kopia_binary()
pytestmark = [
    pytest.mark.skipif(KOPIA is None, reason="kopia is not built: restoredrill toolchain --no-apt --only kopia"),
    pytest.mark.skipif(not BUSYBOX.is_file(), reason="no busybox (restoredrill toolchain installs busybox-static)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="a restore that keeps owners needs root, as Velero's node-agent"),
]


def kopia(*args: str, home: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    assert KOPIA is not None
    env = {"PATH": "/usr/bin:/bin", "KOPIA_PASSWORD": PASSWORD, "KOPIA_CHECK_FOR_UPDATES": "false",
           "HOME": str(home)}
    done = subprocess.run([str(KOPIA), *args, f"--config-file={home}/writer.config", f"--log-dir={home}/logs"],
                          env=env, capture_output=True, text=True, timeout=300, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"kopia {' '.join(args)} exited {done.returncode}: {done.stdout}{done.stderr}")
    return done


@dataclass
class Backup:
    """A source volume, its snapshot in a repository, and a Velero-style restore of it."""

    root: Path
    repository: Path
    source: Path
    snapshot_id: str

    @property
    def volumes(self) -> Path:
        return self.root / "volumes"

    @property
    def restored(self) -> Path:
        return self.volumes / "data"


def shape_volume(source: Path) -> None:
    """An app's volume: owners, modes with setuid and sticky, old mtimes, a hard link, a fifo."""
    (source / "db").mkdir(parents=True)
    (source / "db" / "table.bin").write_bytes(os.urandom(3 * 1024 * 1024))
    (source / "db" / "small").write_bytes(b"row\n")
    (source / "config.yml").write_text("key: value\n")
    (source / "tool").write_bytes(b"#!/bin/sh\n")
    (source / "tmp").mkdir()
    os.link(source / "config.yml", source / "tmp" / "config.link")
    os.symlink("db/small", source / "current")
    os.mkfifo(source / "pipe")
    os.chown(source / "db", 999, 999)
    os.chown(source / "db" / "table.bin", 999, 999)
    os.lchown(source / "current", 999, 999)
    os.chmod(source / "db", 0o700)
    os.chmod(source / "tool", 0o4755)
    os.chmod(source / "tmp", 0o1777)
    for path in (source / "db" / "table.bin", source / "db", source / "config.yml"):
        os.utime(path, (1_600_000_000, 1_600_000_000))


@pytest.fixture(scope="module")
def backup(tmp_path_factory: pytest.TempPathFactory) -> Backup:
    root = tmp_path_factory.mktemp("kopia")
    repository, source = root / "repository", root / "source"
    shape_volume(source)
    kopia("repository", "create", "filesystem", f"--path={repository}", f"--cache-directory={root}/writer-cache",
          home=root)
    kopia("snapshot", "create", str(source), home=root)
    listed = json.loads(kopia("snapshot", "list", str(source), "--json", home=root).stdout)
    backup = Backup(root=root, repository=repository, source=source, snapshot_id=str(listed[0]["id"]))
    # What Velero's node-agent does: kopia's restore (the same FilesystemOutput), then the done-file.
    kopia("snapshot", "restore", backup.snapshot_id, str(backup.restored), home=root)
    (backup.restored / ".velero").mkdir(mode=0o755)
    (backup.restored / ".velero" / RESTORE_UID).write_bytes(b"")
    return backup


@pytest.fixture
def copy(backup: Backup, tmp_path: Path) -> Iterator[Backup]:
    """The backup's repository and restored volume copied, to damage one thing at a time."""
    shutil.copytree(backup.repository, tmp_path / "repository", symlinks=True)
    subprocess.run(["cp", "-a", str(backup.volumes), str(tmp_path / "volumes")], check=True, timeout=60)
    yield Backup(root=tmp_path, repository=tmp_path / "repository", source=backup.source,
                 snapshot_id=backup.snapshot_id)


def local_pod(backup: Backup) -> tuple[KopiaCommands, SnapshotVerificationRunner]:
    home = backup.root / "verifier"
    assert KOPIA is not None
    commands = KopiaCommands(repository=filesystem_repository(str(backup.repository)), home=str(home),
                             kopia=str(KOPIA))
    return commands, SnapshotVerificationRunner(env={"PATH": "/usr/bin:/bin", "HOME": str(home),
                                                     **commands.env(password=PASSWORD, credentials=_NO_S3)})


class SnapshotVerificationRunner:
    """Runs the verifier's commands here, as the pod would: `sh` is busybox's."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.calls: list[tuple[list[str], float]] = []

    def __call__(self, argv: Sequence[str], seconds: float) -> tuple[int | None, str]:
        command = [str(BUSYBOX), *argv] if argv[0] == "sh" else list(argv)
        began = time.monotonic()
        try:
            done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=seconds, check=False)
        except subprocess.TimeoutExpired as error:
            return None, str(error.stdout or "")
        finally:
            self.calls.append((list(argv), time.monotonic() - began))
        return done.returncode, done.stdout + done.stderr


_NO_S3 = S3Credentials("unused", "unused")  # a filesystem repository needs no S3 keys


def check(backup: Backup, *, restore_started: float | None = None) -> tuple[SnapshotVerification,
                                                                            SnapshotVerificationRunner]:
    commands, runner = local_pod(backup)
    snapshot = VolumeSnapshot(claim="data", snapshot_id=backup.snapshot_id, pod_volume_backup="pvb-1",
                              volume_namespace="app")
    result = verify_snapshots(runner, commands=commands, snapshots=[snapshot], restore_uid=RESTORE_UID,
                              restore_started=restore_started, timeout=120, volumes_root=str(backup.volumes),
                              scratch_root=str(backup.root / "scratch"), volume_name=lambda claim: f"PVC app/{claim}")
    return result, runner


def test_a_faithful_restore_matches_its_snapshot(copy: Backup) -> None:
    result, _ = check(copy)
    assert result.problems == [] and result.written_by_app == []
    (volume,) = result.volumes
    assert volume.entries >= 9 and volume.snapshot_bytes > 3 * 1024 * 1024
    assert volume.verify_s is not None and volume.restore_s is not None and volume.compare_s is not None
    assert not (copy.root / "scratch" / "snapshots" / "data").exists()  # scratch cleaned for the next volume


def test_kopia_keeps_owners_modes_and_times_not_hard_links_or_fifos(backup: Backup) -> None:
    """What verify.py says a correct Velero restore keeps, measured with Velero's kopia."""
    run = [str(BUSYBOX), "sh", "-c", INVENTORY_SCRIPT, "inventory"]
    before = parse_inventory(subprocess.run([*run, str(backup.source)], capture_output=True, text=True, check=True,
                                            timeout=60).stdout)
    after = parse_inventory(subprocess.run([*run, str(backup.restored)], capture_output=True, text=True, check=True,
                                           timeout=60).stdout)
    assert (after["db"].uid, after["db"].mode) == (999, 0o700)
    assert after["db/table.bin"].mtime == 1_600_000_000
    # A folder gets the newest mtime inside it (snapshotfs/repofs.go), not its own.
    assert before["db"].mtime == 1_600_000_000 and after["db"].mtime == before["db/small"].mtime
    assert after["tool"].mode == 0o4755 and after["tmp"].mode == 0o1777
    assert after["current"].uid == 999 and after["current"].target == "db/small"
    assert after["."].mode == before["."].mode
    reason = "Kopia keeps no hard links: each name is restored as a file of its own"
    assert compare_volume(volume="v", expected=before, actual=after, restore_uid=RESTORE_UID) == [
        "v: fifo 'pipe' is missing after the restore (Velero's fs-backup (Kopia) does not back up fifos, sockets or "
        "device files)",
        f"v: file 'config.yml' differs: hard_links ['tmp/config.link'] at backup, none restored ({reason})",
        f"v: file 'tmp/config.link' differs: hard_links ['config.yml'] at backup, none restored ({reason})",
    ]


def test_changed_modes_owners_and_missing_files_fail(copy: Backup) -> None:
    folder = (copy.restored / "db").stat()
    os.chmod(copy.restored / "tool", 0o755)
    os.chown(copy.restored / "db" / "table.bin", 0, 0)
    (copy.restored / "db" / "small").unlink()
    os.utime(copy.restored / "db", ns=(folder.st_atime_ns, folder.st_mtime_ns))  # only the file is gone
    result, _ = check(copy)
    assert result.problems == [
        "PVC app/data: file 'db/small' is in the backup's snapshot and missing from the restored volume",
        "PVC app/data: file 'db/table.bin' differs from the backup's snapshot: uid 999 in the snapshot, 0 restored; "
        "gid 999 in the snapshot, 0 restored",
        "PVC app/data: file 'tool' differs from the backup's snapshot: mode 4755 in the snapshot, 0755 restored",
    ]


def test_a_file_the_app_writes_after_the_restore_is_reported(copy: Backup) -> None:
    started = time.time() - 5
    (copy.restored / "db" / "app.log").write_text("started\n")
    result, _ = check(copy, restore_started=started)
    assert result.problems == []
    assert [w.split(" (mtime")[0] for w in result.written_by_app] == [
        "PVC app/data: file 'db/app.log' was written by the app after the restore",
        "PVC app/data: dir 'db' was written by the app after the restore"]
    # Without a restore start, or for a file older than the restore, the same is a failure.
    assert len(check(copy)[0].problems) == 2


def largest_pack(repository: Path) -> Path:
    packs = [p for p in (repository / "p").rglob("*") if p.is_file()]
    return max(packs, key=lambda p: p.stat().st_size)


def test_a_corrupted_pack_fails_at_once_naming_it(copy: Backup) -> None:
    pack = largest_pack(copy.repository)
    data = bytearray(pack.read_bytes())
    for i in range(4096, 4096 + 64):  # 64 bytes flipped, as measured through the S3 API (DESIGN.md)
        data[i] ^= 0xFF
    pack.write_bytes(bytes(data))
    started = time.monotonic()
    result, runner = check(copy)
    elapsed = time.monotonic() - started
    (problem,) = result.problems
    blob = "".join(pack.relative_to(copy.repository).parts).removesuffix(".f")  # the folder storage shards IDs
    assert problem.startswith(f"PVC app/data (snapshot {copy.snapshot_id}, repository {copy.repository})")
    assert f"`kopia snapshot verify` found pack object {copy.repository}/{blob}" in problem
    assert "corrupted while reading 'db/table.bin'" in problem
    assert not any(argv[1:3] == ["snapshot", "restore"] for argv, _ in runner.calls)
    assert elapsed < 30, f"a damaged pack took {elapsed:.1f}s to fail"


def test_a_missing_pack_fails_naming_it(copy: Backup) -> None:
    pack = largest_pack(copy.repository)
    pack.unlink()
    result, _ = check(copy)
    assert len(result.problems) == 1, result.problems
    (problem,) = result.problems
    blob = "".join(pack.relative_to(copy.repository).parts).removesuffix(".f")
    assert f"pack object {copy.repository}/{blob}" in problem and "is missing" in problem


def test_the_connection_is_read_only(copy: Backup) -> None:
    commands, runner = local_pod(copy)
    code, output = runner(commands.connect(), 60)
    assert code == 0, output
    assert KOPIA is not None
    code, output = runner([str(KOPIA), "snapshot", "create", str(copy.source), *commands.global_flags()], 60)
    assert code != 0 and "read-only" in output.lower(), output


def test_a_wrong_password_is_one_clear_problem(copy: Backup) -> None:
    commands, runner = local_pod(copy)
    runner.env["KOPIA_PASSWORD"] = "not-the-password"
    result = verify_snapshots(runner, commands=commands, snapshots=[], restore_uid=RESTORE_UID, restore_started=None,
                              timeout=60)
    (problem,) = result.problems
    assert "does not open the repository" in problem
