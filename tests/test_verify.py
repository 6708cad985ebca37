"""Each restore verifier fails on the fault it exists to catch, and passes on a faithful restore."""

from dataclasses import replace
from typing import cast

import pytest

from restoredrill.podvolumes import PodVolumeRecord, compare_pod_volumes
from restoredrill.verify import (
    Entry,
    compare_uids,
    compare_volume,
    diff_volume,
    fs_backup_volumes,
    kopia_folder_mtimes,
    parse_inventory,
    unexpected_warnings,
)

MTIME = 1_767_225_600  # 2026-01-01T00:00:00Z
EMPTY_SHA = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def line(mode: str, path: str, *, size: int = 0, uid: int = 0, gid: int = 0, mtime: int = MTIME, inode: int = 1,
         links: int = 1, rdev: str = "0:0", extra: str = "-") -> str:
    """One inventory record as data.INVENTORY_SCRIPT prints it (busybox `stat -c %f...`)."""
    return f"{mode}\t{size}\t{uid}\t{gid}\t{mtime}\t65024:{inode}\t{links}\t{rdev}\t{extra}\t{path}\n"


INVENTORY = "".join([
    line("41ed", ".", size=4096, inode=1),
    line("41ed", "nested", size=4096, inode=2, uid=1000, gid=1000),
    line("81a4", "empty", inode=3, extra=EMPTY_SHA),
    line("81a0", "nested/big.bin", size=52428801, inode=4, uid=1000, gid=2000, extra="ab" + "0" * 62),
    line("a1ff", "link to big", size=14, inode=5, extra="nested/big.bin"),
    line("81a4", "with\\ttab", size=3, inode=6, links=2, extra="cd" + "0" * 62),
    line("81a4", "nested/same as with tab", size=3, inode=6, links=2, extra="cd" + "0" * 62),
    line("89ed", "setuid-tool", size=3, inode=7, extra="ef" + "0" * 62),
    line("43ff", "tmp", size=4096, inode=8),
    line("11a4", "pipe", inode=9),
    line("c1ed", "app.sock", inode=10),
    line("21b6", "null", inode=11, rdev="1:3"),
    line("61b0", "disk", inode=12, rdev="8:10"),
])


@pytest.fixture
def backed_up() -> dict[str, Entry]:
    return parse_inventory(INVENTORY)


def test_inventory_parses_every_kind(backed_up: dict[str, Entry]) -> None:
    assert backed_up["nested"].kind == "dir"
    assert backed_up["nested"].size == 0  # a directory's size is not its data
    assert backed_up["empty"].size == 0
    assert backed_up["nested/big.bin"].size == 52428801
    assert backed_up["link to big"] == Entry(path="link to big", kind="symlink", target="nested/big.bin", mode=0o777,
                                             uid=0, gid=0, mtime=MTIME)
    assert "with\ttab" in backed_up
    assert [backed_up[p].kind for p in ("pipe", "app.sock", "null", "disk")] == [
        "fifo", "socket", "char-device", "block-device"]
    assert backed_up["null"].device == "1:3" and backed_up["disk"].device == "8:16"


def test_inventory_parses_metadata(backed_up: dict[str, Entry]) -> None:
    big = backed_up["nested/big.bin"]
    assert (big.mode, big.uid, big.gid, big.mtime) == (0o640, 1000, 2000, MTIME)
    assert backed_up["setuid-tool"].mode == 0o4755
    assert backed_up["tmp"].mode == 0o1777
    assert backed_up["."].kind == "dir" and backed_up["."].mode == 0o755


def test_inventory_groups_hard_links_by_inode(backed_up: dict[str, Entry]) -> None:
    assert backed_up["with\ttab"].hard_links == ("nested/same as with tab",)
    assert backed_up["nested/same as with tab"].hard_links == ("with\ttab",)
    assert backed_up["empty"].hard_links == ()
    # A link count above one whose other names are outside the volume links nothing inside it.
    (alone,) = parse_inventory(line("81a4", "f", inode=9, links=3, extra=EMPTY_SHA)).values()
    assert alone.hard_links == ()


@pytest.mark.parametrize("bad", [
    "d\t0\t-\tthe old four-field format\n",
    line("81a4", "f", extra="not-a-digest"),
    line("81a4", "f", extra="unreadable"),
    line("zz", "f", extra=EMPTY_SHA),
    line("f1a4", "unknown type", extra="-"),
    line("81a4", "f", extra=EMPTY_SHA).replace("\t0\t0\t", "\troot\t0\t", 1),
])
def test_a_bad_inventory_line_is_an_error(bad: str) -> None:
    with pytest.raises(ValueError, match="inventory line 2"):
        parse_inventory(line("41ed", ".") + bad)


def test_a_faithful_restore_passes(backed_up: dict[str, Entry]) -> None:
    assert compare_volume(volume="pelican-data", expected=backed_up, actual=dict(backed_up), sentinel="SENTINEL") == []


def test_a_changed_byte_fails(backed_up: dict[str, Entry]) -> None:
    restored = dict(backed_up)
    restored["nested/big.bin"] = replace(backed_up["nested/big.bin"], sha256="ff" * 32)
    (problem,) = compare_volume(volume="pelican-data", expected=backed_up, actual=restored)
    assert problem == (f"pelican-data: file 'nested/big.bin' differs: sha256 {'ab' + '0' * 62} at backup, "
                       f"{'ff' * 32} restored")


def test_the_sentinel_present_fails(backed_up: dict[str, Entry]) -> None:
    restored = {**backed_up, "SENTINEL": Entry(path="SENTINEL", kind="file", size=1, sha256="00" * 32)}
    (problem,) = compare_volume(volume="v", expected=backed_up, actual=restored, sentinel="SENTINEL")
    assert "written after the backup, is present" in problem


def test_missing_extra_retyped_and_relinked_entries_fail(backed_up: dict[str, Entry]) -> None:
    restored = dict(backed_up)
    del restored["empty"]
    restored["stray"] = Entry(path="stray", kind="dir")
    restored["nested"] = Entry(path="nested", kind="file", size=0, sha256="x")
    restored["link to big"] = replace(backed_up["link to big"], target="elsewhere")
    problems = compare_volume(volume="v", expected=backed_up, actual=restored)
    assert problems == [
        "v: file 'empty' is missing after the restore",
        "v: dir 'stray' was not there at backup time",
        "v: symlink 'link to big' differs: target 'nested/big.bin' at backup, 'elsewhere' restored",
        "v: 'nested' was a dir and is now a file",
    ]


@pytest.mark.parametrize("path, change, field", [
    ("nested/big.bin", {"mode": 0o644}, "mode 0640 at backup, 0644 restored"),
    ("setuid-tool", {"mode": 0o755}, "mode 4755 at backup, 0755 restored"),
    ("tmp", {"mode": 0o777}, "mode 1777 at backup, 0777 restored"),
    ("nested/big.bin", {"uid": 0}, "uid 1000 at backup, 0 restored"),
    ("nested/big.bin", {"gid": 0}, "gid 2000 at backup, 0 restored"),
    ("nested", {"mtime": MTIME + 1}, "mtime 2026-01-01T00:00:00Z at backup, 2026-01-01T00:00:01Z restored"),
    ("link to big", {"mtime": MTIME - 60}, "mtime 2026-01-01T00:00:00Z at backup, 2025-12-31T23:59:00Z restored"),
    ("nested/big.bin", {"size": 1}, "size 52428801 at backup, 1 restored"),
    ("null", {"device": "1:5"}, "device 1:3 at backup, 1:5 restored"),
    (".", {"mode": 0o700}, "mode 0755 at backup, 0700 restored"),
    (".", {"mtime": MTIME + 5}, "mtime 2026-01-01T00:00:00Z at backup, 2026-01-01T00:00:05Z restored"),
])
def test_each_changed_field_fails_naming_path_and_field(backed_up: dict[str, Entry], path: str,
                                                        change: dict[str, int | str], field: str) -> None:
    restored = {**backed_up, path: replace(backed_up[path], **change)}  # type: ignore[arg-type]
    (problem,) = compare_volume(volume="v", expected=backed_up, actual=restored)
    assert problem == f"v: {backed_up[path].kind} {path!r} differs: {field}"


def test_a_root_owned_mode_0000_restore_names_every_field(backed_up: dict[str, Entry]) -> None:
    restored = {**backed_up, "nested/big.bin": replace(backed_up["nested/big.bin"], mode=0, uid=0, gid=0)}
    assert compare_volume(volume="v", expected=backed_up, actual=restored) == [
        "v: file 'nested/big.bin' differs: mode 0640 at backup, 0000 restored; uid 1000 at backup, 0 restored; "
        "gid 2000 at backup, 0 restored"]


def test_a_symlink_mode_is_not_compared(backed_up: dict[str, Entry]) -> None:
    """Linux has no symlink permissions; kopia's symlinkChmod is a no-op there."""
    restored = {**backed_up, "link to big": replace(backed_up["link to big"], mode=0o755)}
    assert compare_volume(volume="v", expected=backed_up, actual=restored) == []


def test_a_broken_hard_link_fails_with_kopias_reason(backed_up: dict[str, Entry]) -> None:
    restored = {path: replace(entry, hard_links=()) for path, entry in backed_up.items()}
    reason = "(Kopia keeps no hard links: each name is restored as a file of its own)"
    assert compare_volume(volume="v", expected=backed_up, actual=restored) == [
        f"v: file 'nested/same as with tab' differs: hard_links ['with\\ttab'] at backup, none restored {reason}",
        f"v: file 'with\\ttab' differs: hard_links ['nested/same as with tab'] at backup, none restored {reason}",
    ]
    linked = {**backed_up, "empty": replace(backed_up["empty"], hard_links=("setuid-tool",))}
    assert compare_volume(volume="v", expected=backed_up, actual=linked) == [
        "v: file 'empty' differs: hard_links none at backup, ['setuid-tool'] restored"]


def test_special_files_velero_skips_fail_with_the_reason_sockets_are_noted(backed_up: dict[str, Entry]) -> None:
    restored = {p: e for p, e in backed_up.items() if e.kind not in ("fifo", "socket", "char-device", "block-device")}
    diff = diff_volume(volume="v", expected=backed_up, actual=restored)
    reason = "Velero's fs-backup (Kopia) does not back up fifos, sockets or device files"
    assert diff.problems == [f"v: block-device 'disk' is missing after the restore ({reason})",
                             f"v: char-device 'null' is missing after the restore ({reason})",
                             f"v: fifo 'pipe' is missing after the restore ({reason})"]
    assert diff.notes == [f"v: socket 'app.sock' is not restored ({reason}; the app makes a new one)"]


def done_dir(uid: str = "restore-uid-1") -> dict[str, Entry]:
    return {".velero": Entry(path=".velero", kind="dir", mode=0o755, uid=0, gid=0, mtime=MTIME + 99),
            f".velero/{uid}": Entry(path=f".velero/{uid}", kind="file", sha256=EMPTY_SHA, mode=0o644, uid=0, gid=0,
                                    mtime=MTIME + 99)}


def test_velero_bookkeeping_is_allowed_in_a_volume_velero_restored(backed_up: dict[str, Entry]) -> None:
    restored = {**backed_up, ".": replace(backed_up["."], mtime=MTIME + 99), **done_dir()}
    assert compare_volume(volume="v", expected=backed_up, actual=restored, restore_uid="restore-uid-1") == []
    # An earlier restore's done-file in the backup is removed by the node-agent before it writes its own.
    older = {**backed_up, **done_dir("older-restore")}
    assert compare_volume(volume="v", expected=older, actual=restored, restore_uid="restore-uid-1") == []


def test_velero_bookkeeping_is_allowed_by_exact_path_only(backed_up: dict[str, Entry]) -> None:
    restored = {**backed_up, **done_dir(), **done_dir("another-restore")}
    assert compare_volume(volume="v", expected=backed_up, actual=restored, restore_uid="restore-uid-1") == [
        "v: file '.velero/another-restore' was not there at backup time"]
    not_a_dir = {**backed_up, ".velero": Entry(path=".velero", kind="file", sha256=EMPTY_SHA)}
    assert compare_volume(volume="v", expected=backed_up, actual=not_a_dir, restore_uid="restore-uid-1") == [
        "v: file '.velero' was not there at backup time"]


def test_a_volume_velero_did_not_restore_tolerates_nothing(backed_up: dict[str, Entry]) -> None:
    restored = {**backed_up, ".": replace(backed_up["."], mtime=MTIME + 99), **done_dir()}
    assert compare_volume(volume="v", expected=backed_up, actual=restored) == [
        "v: dir '.velero' was not there at backup time",
        "v: file '.velero/restore-uid-1' was not there at backup time",
        "v: dir '.' differs: mtime 2026-01-01T00:00:00Z at backup, 2026-01-01T00:01:39Z restored",
    ]


START = MTIME + 3600  # the restore started an hour after the backup's files were written


def test_what_the_app_writes_after_the_restore_is_reported_not_failed(backed_up: dict[str, Entry]) -> None:
    """A new file (and its folder's new mtime) newer than the restore's start is the app's: a note."""
    restored = {**backed_up, "nested": replace(backed_up["nested"], mtime=START + 5),
                "nested/app.log": Entry(path="nested/app.log", kind="file", size=1, sha256="aa" * 32, mode=0o644,
                                        uid=0, gid=0, mtime=START + 5)}
    diff = diff_volume(volume="v", expected=backed_up, actual=restored, restore_uid="u", restore_started=START)
    assert diff.problems == []
    assert [n.split(" was ")[0] for n in diff.notes] == ["v: file 'nested/app.log'", "v: folder 'nested'"]
    assert "written by the app after the restore" in diff.notes[0]
    # Without the restore's start, or written before it, the same entries fail.
    assert len(diff_volume(volume="v", expected=backed_up, actual=restored, restore_uid="u").problems) == 2
    early = diff_volume(volume="v", expected=backed_up, actual=restored, restore_uid="u", restore_started=START + 60)
    assert len(early.problems) == 2 and early.notes == []


def test_an_entry_of_the_backup_changed_after_the_restore_still_fails(backed_up: dict[str, Entry]) -> None:
    """What the drill seeded is strict whatever its mtime; what is missing fails whatever the time."""
    restored = {**backed_up, "nested/big.bin": replace(backed_up["nested/big.bin"], sha256="ff" * 32, mtime=START)}
    del restored["empty"]
    diff = diff_volume(volume="v", expected=backed_up, actual=restored, restore_uid="u", restore_started=START)
    assert [p.split(" ", 3)[2] for p in diff.problems] == ["'empty'", "'nested/big.bin'"]


EXPECTED = [("pelican/pelican-panel-1", "data"), ("pelican/pelican-panel-1", "logs")]


def test_pod_volumes_one_for_one_completed_pass() -> None:
    records = [PodVolumeRecord("b-1", "pelican/pelican-panel-1", "data", "Completed"),
               PodVolumeRecord("b-2", "pelican/pelican-panel-1", "logs", "Completed")]
    assert compare_pod_volumes(operation="backup", expected=EXPECTED, records=records) == []


def test_a_volume_velero_skipped_silently_fails() -> None:
    records = [PodVolumeRecord("b-1", "pelican/pelican-panel-1", "data", "Completed")]
    (problem,) = compare_pod_volumes(operation="backup", expected=EXPECTED, records=records)
    assert problem.startswith("no PodVolumeBackup for volume 'logs' of pod pelican/pelican-panel-1")
    assert "hostPath" in problem


def test_a_failed_pod_volume_restore_fails_with_its_message() -> None:
    records = [PodVolumeRecord("r-1", "pelican/pelican-panel-1", "data", "Completed"),
               PodVolumeRecord("r-2", "pelican/pelican-panel-1", "logs", "Failed", "error restoring: no space left")]
    (problem,) = compare_pod_volumes(operation="restore", expected=EXPECTED, records=records)
    assert problem == ("PodVolumeRestore r-2 (pod pelican/pelican-panel-1, volume 'logs') is Failed: "
                       "error restoring: no space left")


def test_duplicate_and_unexpected_records_fail() -> None:
    records = [PodVolumeRecord("b-1", "pelican/pelican-panel-1", "data", "Completed"),
               PodVolumeRecord("b-9", "pelican/pelican-panel-1", "data", "Completed"),
               PodVolumeRecord("b-2", "pelican/pelican-panel-1", "logs", "Completed"),
               PodVolumeRecord("b-3", "pelican/other", "cache", "Completed")]
    problems = compare_pod_volumes(operation="backup", expected=EXPECTED, records=records)
    assert problems == ["unexpected PodVolumeBackup b-3 for volume 'cache' of pod pelican/other",
                        "2 PodVolumeBackups for volume 'data' of pod pelican/pelican-panel-1: b-1, b-9"]


def test_objects_recreated_by_flux_fail() -> None:
    before = {"Deployment/pelican/pelican-panel": "u1", "Service/pelican/pelican-panel": "u2"}
    assert compare_uids(before=before, after=dict(before)) == []
    problems = compare_uids(before=before, after={"Deployment/pelican/pelican-panel": "u9"})
    assert problems == ["Deployment/pelican/pelican-panel was recreated by Flux (uid u1 -> u9), not adopted",
                        "Service/pelican/pelican-panel is gone after Flux reconciled"]


def test_restore_warnings_outside_the_allow_list_fail() -> None:
    warnings = {"namespaces": {"pelican": ["could not restore, ConfigMap kube-root-ca.crt already exists"]},
                "velero": ["Cannot find restore helper image"]}
    flat = {"pelican": cast(dict[str, list[str]], warnings["namespaces"])["pelican"],
            "velero": cast(list[str], warnings["velero"])}
    assert unexpected_warnings(flat, allowed=["kube-root-ca.crt already exists"]) == [
        "velero: Cannot find restore helper image"]


def pod_with(volumes: list[dict[str, object]], annotations: dict[str, str] | None = None) -> dict[str, object]:
    return {"metadata": {"name": "immich-server-1", "namespace": "immich", "annotations": annotations or {}},
            "spec": {"containers": [{"name": "app"}], "volumes": volumes}}


POD_VOLUMES: list[dict[str, object]] = [
    {"name": "data", "persistentVolumeClaim": {"claimName": "immich-data"}},
    {"name": "library", "persistentVolumeClaim": {"claimName": "immich-library"}},
    {"name": "cache", "emptyDir": {}},
    {"name": "host", "hostPath": {"path": "/srv"}},
    {"name": "secrets", "secret": {"secretName": "s"}},
    {"name": "config", "configMap": {"name": "c"}},
    {"name": "token", "projected": {"sources": []}},
    {"name": "podinfo", "downwardAPI": {"items": []}},
    {"name": "default-token-abcde", "emptyDir": {}},
]


def test_opt_out_copies_claims_and_empty_dirs_only() -> None:
    pod = pod_with(POD_VOLUMES)
    assert fs_backup_volumes(pod, default_volumes_to_fs_backup=True) == ["data", "library", "cache"]


def test_opt_out_honours_the_excludes_annotation() -> None:
    pod = pod_with(POD_VOLUMES, {"backup.velero.io/backup-volumes-excludes": "library, cache"})
    assert fs_backup_volumes(pod, default_volumes_to_fs_backup=True) == ["data"]


def test_opt_in_copies_only_the_annotated_volumes() -> None:
    assert fs_backup_volumes(pod_with(POD_VOLUMES), default_volumes_to_fs_backup=False) == []
    pod = pod_with(POD_VOLUMES, {"backup.velero.io/backup-volumes": "cache,data",
                                 "backup.velero.io/backup-volumes-excludes": "data"})
    assert fs_backup_volumes(pod, default_volumes_to_fs_backup=False) == ["data", "cache"]


def test_a_claim_is_expected_whatever_its_volume_is() -> None:
    """The pod only names a claim; that its PV is hostPath (which Velero skips silently) is not visible here, so
    the claim stays expected and a missing PodVolumeBackup for it fails the drill."""
    pod = pod_with([{"name": "library", "persistentVolumeClaim": {"claimName": "immich-library"}}])
    assert fs_backup_volumes(pod, default_volumes_to_fs_backup=True) == ["library"]


def test_a_pod_without_volumes_or_metadata() -> None:
    assert fs_backup_volumes({}, default_volumes_to_fs_backup=True) == []
    assert fs_backup_volumes({"spec": {"volumes": None}}, default_volumes_to_fs_backup=False) == []


# ---- folder mtimes as Kopia restores them ------------------------------------------------------------
def folders() -> dict[str, Entry]:
    base = Entry(path=".", kind="dir", mode=0o755, uid=0, gid=0, mtime=MTIME)
    return {
        ".": base,
        "a": replace(base, path="a", mtime=MTIME - 500),
        "a/b": replace(base, path="a/b", mtime=MTIME - 400),
        "a/b/old.txt": replace(base, path="a/b/old.txt", kind="file", sha256=EMPTY_SHA, mtime=MTIME - 300),
        "a/new.txt": replace(base, path="a/new.txt", kind="file", sha256=EMPTY_SHA, mtime=MTIME - 100),
        "a/pipe": replace(base, path="a/pipe", kind="fifo", mtime=MTIME + 900),  # not backed up by Kopia
        "empty": replace(base, path="empty", mtime=MTIME - 700),
        "only-a-fifo": replace(base, path="only-a-fifo", mtime=MTIME - 800),
        "only-a-fifo/p": replace(base, path="only-a-fifo/p", kind="fifo", mtime=MTIME + 900),
    }


def test_kopia_restores_a_folder_with_the_newest_mtime_inside_it() -> None:
    """snapshotfs/repofs.go loadLocked: a subfolder's ModTime is its DirSummary.MaxModTime."""
    assert kopia_folder_mtimes(folders()) == {"a": MTIME - 100, "a/b": MTIME - 300, "empty": MTIME - 700,
                                              "only-a-fifo": MTIME - 800}


def velero_restored(tree: dict[str, Entry]) -> dict[str, Entry]:
    restored = {p: e for p, e in tree.items() if e.kind != "fifo"}
    for path, mtime in kopia_folder_mtimes(tree).items():
        restored[path] = replace(restored[path], mtime=mtime)
    return {**restored, **done_dir()}


def test_folder_mtimes_of_a_velero_restore_pass() -> None:
    restored = velero_restored(folders())
    problems = compare_volume(volume="v", expected=folders(), actual=restored, restore_uid="restore-uid-1")
    assert [p for p in problems if "fifo" not in p] == []


def test_a_folder_mtime_other_than_kopias_fails() -> None:
    restored = velero_restored(folders())
    restored["a/b"] = replace(restored["a/b"], mtime=MTIME - 400)  # its own, which Kopia does not restore
    restored["empty"] = replace(restored["empty"], mtime=MTIME + 3600)  # the restore's time
    problems = [p for p in compare_volume(volume="v", expected=folders(), actual=restored,
                                          restore_uid="restore-uid-1") if "fifo" not in p]
    assert problems == [
        "v: dir 'a/b' differs: mtime 2025-12-31T23:55:00Z expected (the newest inside the folder at backup, which "
        "Kopia restores as the folder's), 2025-12-31T23:53:20Z restored",
        "v: dir 'empty' differs: mtime 2025-12-31T23:48:20Z at backup, 2026-01-01T01:00:00Z restored",
    ]
    # A volume that was not restored (it must survive as it was) keeps every folder's own mtime.
    assert compare_volume(volume="v", expected=folders(), actual=dict(folders())) == []
