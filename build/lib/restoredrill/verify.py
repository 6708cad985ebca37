"""Verifiers of a restore: pure comparisons of what was recorded at backup time with what the
restore produced. The drills collect the evidence from the cluster; these functions decide.

Each returns a list of problems (empty: proven), every problem a sentence that names the volume,
the path or the object, so a failed drill explains itself in the report.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

EntryKind = Literal["file", "dir", "symlink", "fifo", "socket", "char-device", "block-device"]
SPECIAL_KINDS: frozenset[str] = frozenset({"fifo", "socket", "char-device", "block-device"})


@dataclass(frozen=True)
class Entry:
    """One path inside a volume, as recorded by an inventory (relative to the volume root, which is
    itself the entry "."). Metadata left None was not recorded and compares equal only to None."""

    path: str
    kind: EntryKind
    size: int = 0  # files only (a directory's size is the file system's business, not the data's)
    sha256: str | None = None  # files only
    target: str | None = None  # symlinks only
    mode: int | None = None  # permission bits with setuid, setgid and sticky (0o7777)
    uid: int | None = None
    gid: int | None = None
    mtime: int | None = None  # whole seconds since the epoch
    hard_links: tuple[str, ...] = ()  # the other paths of the same volume sharing this entry's inode
    device: str | None = None  # major:minor, character and block devices only


# st_mode's file-type bits (S_IFMT) -> kind.
_KINDS: dict[int, EntryKind] = {
    stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket", stat.S_IFCHR: "char-device", stat.S_IFBLK: "block-device",
}
INVENTORY_FIELDS = ("st_mode(hex)<TAB>size<TAB>uid<TAB>gid<TAB>mtime<TAB>dev:inode<TAB>links<TAB>rdev<TAB>"
                    "sha256|target|-<TAB>path")


def parse_inventory(text: str) -> dict[str, Entry]:
    """Read an inventory (data.INVENTORY_SCRIPT): one record per line, `INVENTORY_FIELDS`.

    The raw st_mode (busybox `stat -c %f`) gives the kind and the permission bits. Paths are
    relative to the volume root ("." is the root); in paths and link targets the inventory script
    escapes backslash, tab and newline as \\\\, \\t and \\n. Entries sharing an inode get each
    other's paths in `hard_links` (the inode numbers themselves never survive a restore).
    """
    entries: dict[str, Entry] = {}
    inodes: dict[str, list[str]] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != 10 or not all(_NUMBER.fullmatch(f) for f in (*fields[1:5], fields[6])):
            raise ValueError(f"inventory line {number} is not `{INVENTORY_FIELDS}`: {line!r}")
        raw_mode, size, uid, gid, mtime, inode, links, rdev, extra, path = fields
        try:
            st_mode = int(raw_mode, 16)
        except ValueError:
            raise ValueError(f"inventory line {number}: {raw_mode!r} is not a hexadecimal st_mode: {line!r}") from None
        kind = _KINDS.get(stat.S_IFMT(st_mode))
        if kind is None:
            raise ValueError(f"inventory line {number}: st_mode {raw_mode} is of no known file type: {line!r}")
        if kind == "file" and not _SHA256.fullmatch(extra):
            # An unreadable file must never compare equal to another unreadable file.
            raise ValueError(f"inventory line {number}: file {path!r} has no readable SHA-256: {line!r}")
        path = _unescape(path)
        entries[path] = Entry(
            path=path, kind=kind, size=int(size) if kind == "file" else 0,
            sha256=extra if kind == "file" else None, target=_unescape(extra) if kind == "symlink" else None,
            mode=stat.S_IMODE(st_mode), uid=int(uid), gid=int(gid), mtime=int(mtime),
            device=_device(rdev) if kind in ("char-device", "block-device") else None)
        if kind != "dir" and int(links) > 1:
            inodes.setdefault(inode, []).append(path)
    for paths in inodes.values():
        for path in paths:
            entries[path] = replace(entries[path], hard_links=tuple(sorted(p for p in paths if p != path)))
    return entries


_SHA256 = re.compile(r"[0-9a-f]{64}")
_NUMBER = re.compile(r"-?[0-9]+")  # an mtime before 1970 is negative
_ESCAPES = {"\\\\": "\\", "\\t": "\t", "\\n": "\n"}


def _unescape(text: str) -> str:
    return re.sub(r"\\[\\tn]", lambda m: _ESCAPES[m.group(0)], text)


def _device(rdev: str) -> str:
    # busybox prints major and minor in hex (`%t:%T`).
    major, _, minor = rdev.partition(":")
    return f"{int(major, 16)}:{int(minor, 16)}"


# ---- what a correct Velero restore keeps -------------------------------------------------------
# Checked in Velero v1.16.2 and the kopia fork it pins (github.com/project-velero/kopia
# v0.0.0-20250227051353-20bfabbfc7a0), and measured with that kopia CLI:
# - kopia restore (snapshot/restore/local_fs_output.go setAttributes; Velero's
#   pkg/uploader/kopia/snapshot.go Restore sets no Skip* option) restores owner and group, the
#   permission bits with setuid/setgid/sticky (fs.ModBits), and the mtime of files and symlinks
#   (Lchown, Lutimes): all compared exactly.
# - A folder's mtime is restored (FinishDirectory, after its children) but not as it was: reading a
#   snapshot folder, kopia gives each non-empty subfolder the newest mtime found anywhere inside it
#   (snapshot/snapshotfs/repofs.go loadLocked: md.ModTime = md.DirSummary.MaxModTime, built in
#   dir_manifest_builder.go AddEntry; an empty folder keeps its own). In a volume Velero restored,
#   each folder's mtime is compared with exactly that value computed from the backup-time
#   inventory (`kopia_folder_mtimes`); the root keeps its own (the manifest's root entry).
#   Measured with the pinned CLI.
# - Kopia runs with IgnorePermissionErrors, so a chown or chmod the node refuses leaves the file
#   root-owned or with the wrong mode *silently*: exactly what this comparison catches.
# - Linux has no symlink permissions (kopia's symlinkChmod is a no-op): a symlink's mode is not
#   compared.
# - Velero's node-agent, after kopia finished, removes `.velero/` from the volume and writes the
#   done-file `.velero/<restore UID>` (pkg/controller/pod_volume_restore_controller.go
#   OnDataPathCompleted); the restore helper may then remove `.velero/` again
#   (cmd/velero-restore-helper removeFolder). So in a volume Velero restored, `.velero` and that
#   one done-file are the only allowed extras, whatever `.velero/` held at backup time is gone by
#   design, and the volume root's mtime is Velero's, not the backup's (tolerated, root only).
# - Kopia keeps no hard links (its uploader stores each name as its own file; restored, they are
#   separate inodes) and skips fifos, sockets and devices (fs/localfs entryFromDirEntry: unknown
#   entry type, ignored under Velero's IgnoreUnknownTypes policy). Both are real differences of
#   the restored data and fail, with that reason, except a socket: a socket file is a listening
#   process's rendezvous, meaningless without it, and the app makes a new one (a note).
VELERO_DONE_DIR = ".velero"
ROOT = "."
_NOT_KEPT = {
    "hard_links": "Kopia keeps no hard links: each name is restored as a file of its own",
    "special": "Velero's fs-backup (Kopia) does not back up fifos, sockets or device files",
}


@dataclass(frozen=True)
class VolumeDiff:
    """What a volume comparison found: `problems` fail the drill, `notes` are reported."""

    problems: list[str]
    notes: list[str]


def compare_volume(*, volume: str, expected: Mapping[str, Entry], actual: Mapping[str, Entry],
                   sentinel: str | None = None, restore_uid: str | None = None) -> list[str]:
    """Problems with a restored volume (see `diff_volume`)."""
    return diff_volume(volume=volume, expected=expected, actual=actual, sentinel=sentinel,
                       restore_uid=restore_uid).problems


def diff_volume(*, volume: str, expected: Mapping[str, Entry], actual: Mapping[str, Entry],
                sentinel: str | None = None, restore_uid: str | None = None,
                restore_started: float | None = None) -> VolumeDiff:
    """Compare a restored volume with what it held: anything missing, added, changed in kind, size,
    bytes, link target, device, mode, owner, group, mtime or hard links, one problem per path that
    names each differing field (at backup vs restored); and the post-backup sentinel present, which
    proves the data did not come from the backup (the namespace was not really destroyed, or the
    restore reused live data).

    `restore_uid`: the volume was restored by that Velero Restore, so its bookkeeping is allowed
    (`.velero/<restore_uid>`, by exact path, and the root's mtime; see above). Without it (a volume
    that must survive on its own) nothing is tolerated.

    `restore_started` (epoch seconds): the app ran again after the restore and may write. A new
    entry whose mtime is at or after that moment, and a folder whose only change is such an mtime
    (a file made or removed in it), are what the app wrote: reported in `notes`, not failed (a
    restore writes every entry with its backup-time mtime, so it cannot be the restore's). Every
    entry present at backup time stays strict: the drill seeded it and the app has no business
    with it, and a missing one fails whatever the time.
    """
    problems: list[str] = []
    notes: list[str] = []
    folder_mtimes = kopia_folder_mtimes(expected) if restore_uid is not None else {}
    expected, actual, skip_root_mtime = _without_velero_bookkeeping(expected, actual, restore_uid=restore_uid)
    if sentinel is not None and sentinel in actual:
        problems.append(f"{volume}: sentinel {sentinel!r}, written after the backup, is present: the data was not "
                        "restored from the backup (was the namespace really deleted?)")
    for path in sorted(set(expected) - set(actual)):
        entry = expected[path]
        if entry.kind == "socket":
            notes.append(f"{volume}: socket {path!r} is not restored ({_NOT_KEPT['special']}; the app makes a new one)")
        elif entry.kind in SPECIAL_KINDS:
            problems.append(f"{volume}: {entry.kind} {path!r} is missing after the restore ({_NOT_KEPT['special']})")
        else:
            problems.append(f"{volume}: {entry.kind} {path!r} is missing after the restore")
    since = None if restore_started is None else int(restore_started)

    def app_wrote(entry: Entry) -> bool:
        return since is not None and entry.mtime is not None and entry.mtime >= since

    for path in sorted(set(actual) - set(expected) - {sentinel}):
        if app_wrote(actual[path]):
            notes.append(f"{volume}: {actual[path].kind} {path!r} was written by the app after the restore (mtime "
                         f"{_when(actual[path].mtime)}, restore started {_when(since)}; not in the backup)")
        else:
            problems.append(f"{volume}: {actual[path].kind} {path!r} was not there at backup time")
    for path in sorted(set(expected) & set(actual)):
        before, after = expected[path], actual[path]
        if before.kind != after.kind:
            problems.append(f"{volume}: {path!r} was a {before.kind} and is now a {after.kind}")
            continue
        changes = entry_changes(before, after, compare_mtime=not (skip_root_mtime and path == ROOT),
                                mtime=folder_mtimes.get(path))
        if changes and before.kind == "dir" and app_wrote(after) and all(c.startswith("mtime ") for c in changes):
            notes.append(f"{volume}: folder {path!r} was changed by the app after the restore (mtime "
                         f"{_when(after.mtime)}: an entry made or removed in it)")
        elif changes:
            problems.append(f"{volume}: {before.kind} {path!r} differs: {'; '.join(changes)}")
    return VolumeDiff(problems=problems, notes=notes)


def _without_velero_bookkeeping(expected: Mapping[str, Entry], actual: Mapping[str, Entry], *,
                                restore_uid: str | None) -> tuple[dict[str, Entry], dict[str, Entry], bool]:
    if restore_uid is None:
        return dict(expected), dict(actual), False
    done_file = f"{VELERO_DONE_DIR}/{restore_uid}"

    def velero(path: str) -> bool:
        return path == VELERO_DONE_DIR or path.startswith(f"{VELERO_DONE_DIR}/")

    kept = {path: entry for path, entry in expected.items() if not velero(path)}
    restored = {path: entry for path, entry in actual.items()
                if not (path == VELERO_DONE_DIR and entry.kind == "dir") and path != done_file}
    return kept, restored, True


def kopia_folder_mtimes(entries: Mapping[str, Entry]) -> dict[str, int]:
    """The mtime Kopia restores for each folder of a volume (see above): the newest mtime of
    anything below a non-empty subfolder that Kopia backs up (special files are skipped), its own
    for an empty one and for the root."""
    newest: dict[str, int] = {}
    for path, entry in entries.items():
        if path == ROOT or entry.mtime is None or entry.kind in SPECIAL_KINDS:
            continue
        parent = path
        while "/" in parent:
            parent = parent.rsplit("/", 1)[0]
            newest[parent] = max(newest.get(parent, entry.mtime), entry.mtime)
    return {path: newest.get(path, entry.mtime) for path, entry in entries.items()
            if entry.kind == "dir" and entry.mtime is not None and path != ROOT}


def entry_changes(before: Entry, after: Entry, *, compare_mtime: bool = True, mtime: int | None = None) -> list[str]:
    """Each field of two entries of one kind that differs, as `field X at backup, Y restored`.

    `mtime`: the mtime a correct restore gives `after` when it is not `before`'s own (a folder
    Kopia restored: the newest mtime inside it)."""
    fields: list[tuple[str, object, object]] = []
    if before.kind == "file":
        fields += [("size", before.size, after.size), ("sha256", before.sha256, after.sha256)]
    if before.kind == "symlink":
        fields.append(("target", _quoted(before.target), _quoted(after.target)))
    if before.kind in ("char-device", "block-device"):
        fields.append(("device", before.device, after.device))
    if before.kind != "symlink":
        fields.append(("mode", _octal(before.mode), _octal(after.mode)))
    fields += [("uid", before.uid, after.uid), ("gid", before.gid, after.gid)]
    changes = [f"{name} {_show(old)} at backup, {_show(new)} restored" for name, old, new in fields if old != new]
    if compare_mtime and mtime is not None and mtime != before.mtime:
        if after.mtime != mtime:
            changes.append(f"mtime {_when(mtime)} expected (the newest inside the folder at backup, which Kopia "
                           f"restores as the folder's), {_when(after.mtime)} restored")
    elif compare_mtime and before.mtime != after.mtime:
        changes.append(f"mtime {_show(_when(before.mtime))} at backup, {_show(_when(after.mtime))} restored")
    if before.hard_links != after.hard_links:
        reason = f" ({_NOT_KEPT['hard_links']})" if before.hard_links and not after.hard_links else ""
        changes.append(f"hard_links {_show(before.hard_links)} at backup, {_show(after.hard_links)} restored{reason}")
    return changes


@dataclass(frozen=True)
class SnapshotDiff:
    """A restored volume against the Kopia snapshot it came from: `problems` fail the drill,
    `written_by_app` (a sentence naming each path) is reported."""

    problems: list[str]
    written_by_app: list[str]


def compare_with_snapshot(*, volume: str, snapshot: Mapping[str, Entry], restored: Mapping[str, Entry],
                          restore_uid: str, restore_started: float | None = None) -> SnapshotDiff:
    """Compare a restored volume, entry by entry with every field of `entry_changes`, with the
    inventory of its snapshot (restored by kopia into scratch space and inventoried by the same
    script), allowing Velero's bookkeeping of `restore_uid` as `diff_volume` does.

    `restore_started` (epoch seconds; set when the app runs its real image, which writes): an entry
    the snapshot lacks or holds differently whose mtime is at or after the restore started was
    written by the app after the restore, and is reported, not failed. Everything else fails: a
    missing entry (the app deleting a file leaves nothing whose time could tell), a difference in
    an entry whose mtime is older than the restore (the restore wrote it wrong), and any change to
    the volume root but its mtime (Velero's).
    """
    problems: list[str] = []
    by_app: list[str] = []
    expected, actual, _ = _without_velero_bookkeeping(snapshot, restored, restore_uid=restore_uid)
    since = None if restore_started is None else int(restore_started)

    def after_restore(entry: Entry) -> bool:
        return since is not None and entry.path != ROOT and entry.mtime is not None and entry.mtime >= since

    def app_wrote(entry: Entry, what: str) -> str:
        return (f"{volume}: {entry.kind} {entry.path!r} was written by the app after the restore (mtime "
                f"{_when(entry.mtime)}, restore started {_when(since)}): {what}")

    for path in sorted(set(expected) - set(actual)):
        problems.append(f"{volume}: {expected[path].kind} {path!r} is in the backup's snapshot and missing from the "
                        "restored volume")
    for path in sorted(set(actual) - set(expected)):
        entry = actual[path]
        if after_restore(entry):
            by_app.append(app_wrote(entry, "not in the backup"))
        else:
            problems.append(f"{volume}: {entry.kind} {path!r} is in the restored volume and not in the backup's "
                            "snapshot")
    for path in sorted(set(expected) & set(actual)):
        before, after = expected[path], actual[path]
        if before.kind != after.kind:
            change = f"a {before.kind} in the backup's snapshot, a {after.kind} restored"
            if after_restore(after):
                by_app.append(app_wrote(after, change))
            else:
                problems.append(f"{volume}: {path!r} is {change}")
            continue
        changes = entry_changes(before, after, compare_mtime=path != ROOT)
        if not changes:
            continue
        if after_restore(after):
            by_app.append(app_wrote(after, "; ".join(changes).replace("at backup", "in the snapshot")))
        else:
            problems.append(f"{volume}: {before.kind} {path!r} differs from the backup's snapshot: "
                            + "; ".join(changes).replace("at backup", "in the snapshot"))
    return SnapshotDiff(problems=problems, written_by_app=by_app)


def _octal(mode: int | None) -> str | None:
    return None if mode is None else f"{mode:04o}"


def _when(mtime: int | None) -> str | None:
    return None if mtime is None else datetime.fromtimestamp(mtime, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _quoted(text: str | None) -> str | None:
    return None if text is None else repr(text)


def _show(value: object) -> str:
    if value is None:
        return "unrecorded"
    if isinstance(value, tuple):
        return "[" + ", ".join(repr(v) for v in value) + "]" if value else "none"
    return str(value)


def compare_uids(*, before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """Objects Flux recreated instead of adopting: keyed `Kind/namespace/name`, valued by UID."""
    problems = []
    for key in sorted(before):
        if key not in after:
            problems.append(f"{key} is gone after Flux reconciled")
        elif after[key] != before[key]:
            problems.append(f"{key} was recreated by Flux (uid {before[key]} -> {after[key]}), not adopted")
    return problems


def unexpected_warnings(warnings: Mapping[str, Iterable[str]], *, allowed: Iterable[str]) -> list[str]:
    """Restore warnings (Velero's status.warnings detail, by scope) not matched by an allow-list
    entry (a substring)."""
    allow = list(allowed)
    return [f"{scope}: {message}" for scope, messages in sorted(warnings.items()) for message in messages
            if not any(pattern in message for pattern in allow)]


OPT_OUT_ANNOTATION = "backup.velero.io/backup-volumes-excludes"
OPT_IN_ANNOTATION = "backup.velero.io/backup-volumes"
_NOT_COPIED = ("hostPath", "secret", "configMap", "projected", "downwardAPI")


def fs_backup_volumes(pod: Mapping[str, Any], *, default_volumes_to_fs_backup: bool) -> list[str]:
    """The volumes of `pod` Velero's fs-backup must copy (pkg/util/podvolume GetVolumesByPod).

    Deliberately *not* mirrored: Velero's silent skip of claims bound to hostPath PVs. Such a
    claim is expected here, so its missing PodVolumeBackup fails the drill.
    """
    metadata = pod.get("metadata") or {}
    annotations = metadata.get("annotations") or {}
    volumes = (pod.get("spec") or {}).get("volumes") or []
    if not default_volumes_to_fs_backup:
        wanted = [v.strip() for v in str(annotations.get(OPT_IN_ANNOTATION, "")).split(",") if v.strip()]
        return [str(v["name"]) for v in volumes if v.get("name") in wanted]
    excluded = {v.strip() for v in str(annotations.get(OPT_OUT_ANNOTATION, "")).split(",") if v.strip()}
    return [str(v["name"]) for v in volumes
            if not any(v.get(kind) is not None for kind in _NOT_COPIED)
            and v.get("name") not in excluded and not str(v.get("name", "")).startswith("default-token")]


def content_digest(obj: Mapping[str, Any]) -> str:
    """A digest of what an object *says* (everything but metadata and status): changes when Flux
    corrects drift, not when a controller updates status."""
    import hashlib
    import json

    body = {key: value for key, value in obj.items() if key not in ("metadata", "status")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def compare_drift(*, before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """Objects Flux changed when it took the app back: the restored state differed from Git."""
    return [f"{key} was changed by Flux on resume: what the backup restored differs from Git (drift)"
            for key in sorted(set(before) & set(after)) if before[key] != after[key]]
