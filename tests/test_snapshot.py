"""The check against the backup's Kopia snapshot: the comparison (every field, Velero's bookkeeping,
what the app wrote after the restore) and the steps, with a scripted kopia."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from restoredrill.drill.snapshot import VolumeSnapshot, repository_access, verify_snapshots, volume_snapshots
from restoredrill.errors import ConfigError
from restoredrill.platform.kopia import KopiaCommands, filesystem_repository
from restoredrill.podvolumes import records
from restoredrill.verify import Entry, compare_with_snapshot

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z: the snapshot's times
RESTORE_STARTED = T0 + 3600.5
SHA = "ab" * 32


def tree() -> dict[str, Entry]:
    base = Entry(path=".", kind="dir", mode=0o755, uid=1000, gid=1000, mtime=T0)
    return {
        ".": base,
        "db": replace(base, path="db", mode=0o700),
        "db/data.bin": replace(base, path="db/data.bin", kind="file", size=10, sha256=SHA, mode=0o600),
        "current": replace(base, path="current", kind="symlink", target="db/data.bin", mode=0o777),
    }


def velero_done(uid: str = "r-1") -> dict[str, Entry]:
    when = int(RESTORE_STARTED) + 30
    return {".velero": Entry(path=".velero", kind="dir", mode=0o755, uid=0, gid=0, mtime=when),
            f".velero/{uid}": Entry(path=f".velero/{uid}", kind="file", sha256="00" * 32, mode=0o644, uid=0, gid=0,
                                    mtime=when)}


def restored(**changes: Entry) -> dict[str, Entry]:
    volume = {**tree(), **velero_done()}
    volume["."] = replace(volume["."], mtime=int(RESTORE_STARTED) + 30)  # Velero wrote .velero/ into the root
    volume.update({path.replace("__", "/"): entry for path, entry in changes.items()})
    return volume


def compare(actual: dict[str, Entry], *, started: float | None = None) -> tuple[list[str], list[str]]:
    diff = compare_with_snapshot(volume="PVC pelican/data", snapshot=tree(), restored=actual, restore_uid="r-1",
                                 restore_started=started)
    return diff.problems, diff.written_by_app


def test_a_faithful_restore_matches_its_snapshot() -> None:
    assert compare(restored()) == ([], [])
    assert compare(restored(), started=RESTORE_STARTED) == ([], [])


@pytest.mark.parametrize("path, change, field", [
    ("db/data.bin", {"mode": 0o644}, "mode 0600 in the snapshot, 0644 restored"),
    ("db/data.bin", {"uid": 0}, "uid 1000 in the snapshot, 0 restored"),
    ("db", {"gid": 0}, "gid 1000 in the snapshot, 0 restored"),
    ("db/data.bin", {"sha256": "cd" * 32}, f"sha256 {SHA} in the snapshot, {'cd' * 32} restored"),
    ("current", {"target": "elsewhere"}, "target 'db/data.bin' in the snapshot, 'elsewhere' restored"),
    ("db", {"mtime": T0 + 1}, "mtime 2026-01-01T00:00:00Z in the snapshot, 2026-01-01T00:00:01Z restored"),
    (".", {"mode": 0o700}, "mode 0755 in the snapshot, 0700 restored"),
])
def test_each_difference_from_the_snapshot_fails(path: str, change: dict[str, Any], field: str) -> None:
    actual = restored()
    actual[path] = replace(actual[path], **change)
    problems, by_app = compare(actual, started=RESTORE_STARTED)
    assert by_app == []
    assert problems == [f"PVC pelican/data: {tree()[path].kind} {path!r} differs from the backup's snapshot: {field}"]


def test_missing_and_extra_entries_are_named() -> None:
    actual = restored()
    del actual["db/data.bin"]
    actual["stray"] = Entry(path="stray", kind="file", sha256=SHA, mode=0o644, uid=0, gid=0, mtime=T0)
    actual[".velero/another-restore"] = replace(velero_done()[".velero/r-1"], path=".velero/another-restore")
    problems, _ = compare(actual)
    assert problems == [
        "PVC pelican/data: file 'db/data.bin' is in the backup's snapshot and missing from the restored volume",
        "PVC pelican/data: file '.velero/another-restore' is in the restored volume and not in the backup's snapshot",
        "PVC pelican/data: file 'stray' is in the restored volume and not in the backup's snapshot",
    ]


def test_what_the_app_wrote_after_the_restore_is_reported_not_failed() -> None:
    late = int(RESTORE_STARTED) + 60
    actual = restored(**{
        "db__data.bin": replace(tree()["db/data.bin"], sha256="cd" * 32, size=12, mtime=late),
        "db__new.log": Entry(path="db/new.log", kind="file", sha256=SHA, size=3, mode=0o644, uid=1000, gid=1000,
                             mtime=late),
        "db": replace(tree()["db"], mtime=late)})
    problems, by_app = compare(actual, started=RESTORE_STARTED)
    assert problems == []
    assert by_app == [
        "PVC pelican/data: file 'db/new.log' was written by the app after the restore (mtime 2026-01-01T01:01:00Z, "
        "restore started 2026-01-01T01:00:00Z): not in the backup",
        "PVC pelican/data: dir 'db' was written by the app after the restore (mtime 2026-01-01T01:01:00Z, restore "
        "started 2026-01-01T01:00:00Z): mtime 2026-01-01T00:00:00Z in the snapshot, 2026-01-01T01:01:00Z restored",
        "PVC pelican/data: file 'db/data.bin' was written by the app after the restore (mtime 2026-01-01T01:01:00Z, "
        "restore started 2026-01-01T01:00:00Z): size 10 in the snapshot, 12 restored; sha256 "
        f"{SHA} in the snapshot, {'cd' * 32} restored; mtime 2026-01-01T00:00:00Z in the snapshot, "
        "2026-01-01T01:01:00Z restored",
    ]
    # Without a restore start (the synthetic drill, whose stand-ins never write) the same differences fail.
    problems, by_app = compare(actual)
    assert len(problems) == 3 and by_app == []


def test_an_old_mtime_never_excuses_a_difference() -> None:
    """Content that differs under the snapshot's own mtime was written wrong by the restore."""
    actual = restored()
    actual["db/data.bin"] = replace(actual["db/data.bin"], sha256="cd" * 32)
    problems, by_app = compare(actual, started=RESTORE_STARTED)
    assert len(problems) == 1 and by_app == []


def test_a_file_the_app_deleted_still_fails() -> None:
    actual = restored(db=replace(tree()["db"], mtime=int(RESTORE_STARTED) + 5))
    del actual["db/data.bin"]
    problems, by_app = compare(actual, started=RESTORE_STARTED)
    assert problems == ["PVC pelican/data: file 'db/data.bin' is in the backup's snapshot and missing from the "
                        "restored volume"]
    assert len(by_app) == 1  # db's new mtime


def test_the_root_is_never_the_apps() -> None:
    """The root's mtime is always after the restore started (Velero's done-file): its other fields
    are compared whatever its mtime says."""
    actual = restored()
    actual["."] = replace(actual["."], uid=0)
    problems, by_app = compare(actual, started=RESTORE_STARTED)
    assert problems == ["PVC pelican/data: dir '.' differs from the backup's snapshot: uid 1000 in the snapshot, "
                        "0 restored"] and by_app == []


# ---- PodVolumeBackups to snapshots -------------------------------------------------------------
def pvb(name: str, volume: str, *, phase: str = "Completed", snapshot: str = "8cda3a1c38ca050a57236faa40c3dad7",
        total: int | None = 10) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "snapshotID": snapshot}
    if total is not None:
        status["progress"] = {"totalBytes": total, "bytesDone": total}
    return {"metadata": {"name": name}, "spec": {"pod": {"namespace": "pelican", "name": "panel-0"}, "volume": volume},
            "status": status}


def test_volume_snapshots_from_pod_volume_backups() -> None:
    claims = {("pelican/panel-0", "data"): "pelican-data", ("pelican/panel-0", "logs"): "pelican-logs"}
    found, problems = volume_snapshots(records(
        [pvb("b-1", "data"), pvb("b-2", "logs", snapshot=""), pvb("b-3", "cache"), pvb("b-4", "data", phase="Failed")]),
        claims=claims)
    assert found == [VolumeSnapshot(claim="pelican-data", snapshot_id="8cda3a1c38ca050a57236faa40c3dad7",
                                    pod_volume_backup="b-1", volume_namespace="pelican", total_bytes=10)]
    assert problems == [
        "PodVolumeBackup b-2 of PVC pelican-logs is Completed without a snapshotID: there is no snapshot to verify "
        "(an empty volume Velero skipped?)",
        "PodVolumeBackup b-3 (pod pelican/panel-0, volume 'cache') copied no claim the drill knows",
    ]


# ---- the steps, with a scripted kopia -----------------------------------------------------------
def inventory_line(entry: Entry) -> str:
    kinds = {"dir": 0o040000, "file": 0o100000, "symlink": 0o120000}
    raw = f"{kinds[entry.kind] | (entry.mode or 0):x}"
    extra = entry.sha256 or entry.target or "-"
    return (f"{raw}\t{entry.size}\t{entry.uid}\t{entry.gid}\t{entry.mtime}\t1:{abs(hash(entry.path))}\t1\t0:0\t"
            f"{extra}\t{entry.path}\n")


class ScriptedPod:
    """Answers the verifier's commands as kopia and the inventory script would."""

    def __init__(self, *, verify: tuple[int, str] = (0, "Finished processing 5 objects.\n"),
                 restored: dict[str, Entry] | None = None) -> None:
        self.calls: list[list[str]] = []
        self.verify = verify
        self.volume = restored if restored is not None else {**tree(), **velero_done()}

    def __call__(self, argv: Sequence[str], seconds: float) -> tuple[int | None, str]:
        self.calls.append(list(argv))
        if argv[1:3] == ["repository", "connect"]:
            return 0, "Connected to repository.\n"
        if argv[1:3] == ["snapshot", "verify"]:
            return self.verify
        if argv[1:3] == ["snapshot", "restore"]:
            return 0, "Restored 1 files, 2 directories and 1 symbolic links (10 B).\n"
        if argv[:2] == ["sh", "-c"] and argv[3:4] == ["inventory"]:
            entries = tree() if argv[4].startswith("/scratch/") else self.volume
            return 0, "".join(inventory_line(e) for e in entries.values())
        if argv[:2] == ["sh", "-c"] and "rm -rf" in argv[2]:
            return 0, ""
        raise AssertionError(f"unexpected command {argv}")


SNAP = VolumeSnapshot(claim="pelican-data", snapshot_id="8cda3a1c38ca050a57236faa40c3dad7", pod_volume_backup="b-1",
                      volume_namespace="pelican", total_bytes=10)


def run_steps(pod: ScriptedPod) -> Any:
    commands = KopiaCommands(repository=filesystem_repository("/repo"), home="/scratch/kopia")
    return verify_snapshots(pod, commands=commands, snapshots=[SNAP], restore_uid="r-1", restore_started=None,
                            timeout=60)


def test_the_steps_connect_verify_restore_inventory_compare_and_clean_up() -> None:
    pod = ScriptedPod()
    result = run_steps(pod)
    assert result.problems == [] and result.written_by_app == []
    steps = [c[1:3] if c[0].endswith("kopia") else c[:1] + c[3:5] for c in pod.calls]
    assert steps[:3] == [["repository", "connect"], ["snapshot", "verify"], ["snapshot", "restore"]]
    assert sorted(steps[3:5]) == [["sh", "inventory", "/scratch/snapshots/pelican-data"],  # at once, either first
                                  ["sh", "inventory", "/volumes/pelican-data"]]
    assert steps[5:] == [["sh", "/scratch/snapshots/pelican-data"]]
    (volume,) = result.volumes
    assert volume.entries == 4 and volume.snapshot_bytes == 10 and volume.verify_s is not None
    assert result.facts()["volumes"][0]["claim"] == "pelican-data"


def test_a_corrupted_pack_fails_the_volume_without_restoring_it() -> None:
    output = ("\x1b[31mERROR\x1b[0m error processing root@vm:/x@2026-12-01 20:53:33 UTC/big: unexpected content "
              "error: invalid checksum at pe7ba9ea3ac245aeb7633d3b892732373-sb1fc2bff7e30f1e6147 offset 95: decrypt: "
              "unable to decrypt content: cipher: message authentication failed\n")
    pod = ScriptedPod(verify=(1, output))
    result = run_steps(pod)
    (problem,) = result.problems
    assert problem.startswith("PVC pelican-data (snapshot 8cda3a1c38ca050a57236faa40c3dad7, repository /repo)")
    assert "pe7ba9ea3ac245aeb7633d3b892732373-sb1fc2bff7e30f1e6147" in problem and "corrupted" in problem
    assert not any(c[1:3] == ["snapshot", "restore"] for c in pod.calls)


def test_a_restored_volume_that_differs_from_its_snapshot_fails() -> None:
    volume = {**tree(), **velero_done()}
    volume["db/data.bin"] = replace(volume["db/data.bin"], mode=0)
    result = run_steps(ScriptedPod(restored=volume))
    assert result.problems == ["PVC pelican-data: file 'db/data.bin' differs from the backup's snapshot: mode 0600 "
                               "in the snapshot, 0000 restored"]


def test_a_failed_connect_is_one_problem() -> None:
    def refuse(argv: Sequence[str], seconds: float) -> tuple[int | None, str]:
        return 1, "\x1b[31mERROR\x1b[0m error connecting to repository: invalid repository password\n"

    result = verify_snapshots(refuse, commands=KopiaCommands(repository=filesystem_repository("/r"), home="/h"),
                              snapshots=[SNAP], restore_uid="r-1", restore_started=None, timeout=5)
    (problem,) = result.problems
    assert "does not open the repository" in problem and result.volumes == []


# ---- what reading the repository takes ---------------------------------------------------------
class FakeCore:
    def __init__(self, secrets: dict[str, dict[str, str]]) -> None:
        self.secrets = secrets

    def read_namespaced_secret(self, name: str, namespace: str) -> dict[str, Any]:
        if (namespace, name) not in {("velero", n) for n in self.secrets}:
            raise ApiException(status=404)
        return {"metadata": {"name": name}, "data": self.secrets[name]}


class FakeContext:
    def __init__(self, bsl: dict[str, Any] | None, secrets: dict[str, dict[str, str]]) -> None:
        self.bsl, self.core = bsl, FakeCore(secrets)

    def get_object(self, group: str, version: str, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        assert (group, plural, namespace, name) == ("velero.io", "backupstoragelocations", "velero", "default")
        return self.bsl

    def as_manifests(self, item: dict[str, Any]) -> dict[str, Any]:
        return item


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_repository_access_reads_the_bsl_password_and_keys() -> None:
    bsl = {"spec": {"provider": "aws", "objectStorage": {"bucket": "velero"}, "config": {"s3Url": "http://m:9000"}}}
    secrets = {"velero-repo-credentials": {"repository-password": b64("static-passw0rd")},
               "velero-s3-credentials": {"cloud": b64("[default]\naws_access_key_id=AK\naws_secret_access_key=SK\n")}}
    access = repository_access(FakeContext(bsl, secrets), velero_namespace="velero", bsl_name="default")  # type: ignore[arg-type]
    assert access.password == "static-passw0rd"
    assert (access.credentials.access_key_id, access.credentials.secret_access_key) == ("AK", "SK")
    # spec.credential names another Secret and key.
    bsl["spec"]["credential"] = {"name": "other", "key": "creds"}
    secrets["other"] = {"creds": b64("[default]\naws_access_key_id=A2\naws_secret_access_key=S2\n")}
    access = repository_access(FakeContext(bsl, secrets), velero_namespace="velero", bsl_name="default")  # type: ignore[arg-type]
    assert access.credentials.access_key_id == "A2"
    del secrets["other"]
    with pytest.raises(ConfigError, match="velero/other has no 'creds'"):
        repository_access(FakeContext(bsl, secrets), velero_namespace="velero", bsl_name="default")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no BackupStorageLocation velero/default"):
        repository_access(FakeContext(None, secrets), velero_namespace="velero", bsl_name="default")  # type: ignore[arg-type]
