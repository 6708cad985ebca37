"""Verifiers of a restore: pure comparisons of what was recorded at backup time with what the
restore produced. The drills collect the evidence from the cluster; these functions decide.

Each returns a list of problems (empty: proven), every problem a sentence that names the volume,
the path or the object, so a failed drill explains itself in the report.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

EntryKind = Literal["file", "dir", "symlink"]


@dataclass(frozen=True)
class Entry:
    """One path inside a volume, as recorded by an inventory (relative to the volume root)."""

    path: str
    kind: EntryKind
    size: int = 0
    sha256: str | None = None  # files only
    target: str | None = None  # symlinks only


def parse_inventory(text: str) -> dict[str, Entry]:
    """Read an inventory: one record per line, `kind<TAB>size<TAB>sha256-or-target<TAB>path`.

    `kind` is f, d or l. Paths are relative to the volume root; in paths and link targets the
    inventory script escapes backslash, tab and newline as \\\\, \\t and \\n.
    """
    entries: dict[str, Entry] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        if not line:
            continue
        fields = line.split("\t")
        if len(fields) != 4 or fields[0] not in ("f", "d", "l"):
            raise ValueError(f"inventory line {number} is not `kind<TAB>size<TAB>digest<TAB>path`: {line!r}")
        kind_code, size, digest, path = fields
        if kind_code == "f" and not (_SHA256.fullmatch(digest) and size.isdigit()):
            # An unreadable file must never compare equal to another unreadable file.
            raise ValueError(f"inventory line {number}: file {path!r} has no readable size and SHA-256: {line!r}")
        path = _unescape(path)
        if kind_code == "f":
            entries[path] = Entry(path=path, kind="file", size=int(size), sha256=digest)
        elif kind_code == "d":
            entries[path] = Entry(path=path, kind="dir")
        else:
            entries[path] = Entry(path=path, kind="symlink", target=_unescape(digest))
    return entries


_SHA256 = re.compile(r"[0-9a-f]{64}")
_ESCAPES = {"\\\\": "\\", "\\t": "\t", "\\n": "\n"}


def _unescape(text: str) -> str:
    return re.sub(r"\\[\\tn]", lambda m: _ESCAPES[m.group(0)], text)


def compare_volume(*, volume: str, expected: Mapping[str, Entry], actual: Mapping[str, Entry],
                   sentinel: str | None = None) -> list[str]:
    """Problems with a restored volume: anything missing, added, changed in kind, size, bytes or
    link target; and the post-backup sentinel present, which proves the data did not come from
    the backup (the namespace was not really destroyed, or the restore reused live data)."""
    problems: list[str] = []
    if sentinel is not None and sentinel in actual:
        problems.append(f"{volume}: sentinel {sentinel!r}, written after the backup, is present: the data was not "
                        "restored from the backup (was the namespace really deleted?)")
    for path in sorted(set(expected) - set(actual)):
        problems.append(f"{volume}: {expected[path].kind} {path!r} is missing after the restore")
    for path in sorted(set(actual) - set(expected) - {sentinel}):
        problems.append(f"{volume}: {actual[path].kind} {path!r} was not there at backup time")
    for path in sorted(set(expected) & set(actual)):
        before, after = expected[path], actual[path]
        if before.kind != after.kind:
            problems.append(f"{volume}: {path!r} was a {before.kind} and is now a {after.kind}")
        elif before.kind == "file" and (before.size, before.sha256) != (after.size, after.sha256):
            problems.append(f"{volume}: file {path!r} differs: {before.size} bytes sha256 {before.sha256} at "
                            f"backup, {after.size} bytes sha256 {after.sha256} restored")
        elif before.kind == "symlink" and before.target != after.target:
            problems.append(f"{volume}: symlink {path!r} pointed to {before.target!r}, now to {after.target!r}")
    return problems


@dataclass(frozen=True)
class PodVolumeRecord:
    """A PodVolumeBackup or PodVolumeRestore, reduced to what the drill checks."""

    name: str
    pod: str  # namespace/name of the pod whose volume it copied
    volume: str  # the pod's volume name
    phase: str
    message: str = ""


def compare_pod_volumes(*, operation: Literal["backup", "restore"], expected: Iterable[tuple[str, str]],
                        records: Iterable[PodVolumeRecord]) -> list[str]:
    """Problems with the PodVolumeBackups/Restores of one operation: each expected (pod, volume)
    needs exactly one record, Completed. A missing one is the silent failure of fs-backup (a
    hostPath PV, an opted-out volume, no node-agent on the node)."""
    kind = "PodVolumeBackup" if operation == "backup" else "PodVolumeRestore"
    wanted = set(expected)
    by_volume: dict[tuple[str, str], list[PodVolumeRecord]] = {}
    for record in records:
        by_volume.setdefault((record.pod, record.volume), []).append(record)
    problems = []
    for pod, volume in sorted(wanted - set(by_volume)):
        problems.append(f"no {kind} for volume {volume!r} of pod {pod}: its data was not "
                        f"{'backed up' if operation == 'backup' else 'restored'} (hostPath PVs and volumes "
                        "excluded by annotation are skipped silently by Velero's fs-backup)")
    for (pod, volume), found in sorted(by_volume.items()):
        if (pod, volume) not in wanted:
            problems.append(f"unexpected {kind} {found[0].name} for volume {volume!r} of pod {pod}")
            continue
        if len(found) > 1:
            problems.append(f"{len(found)} {kind}s for volume {volume!r} of pod {pod}: "
                            f"{', '.join(r.name for r in found)}")
        for record in found:
            if record.phase != "Completed":
                detail = f": {record.message}" if record.message else ""
                problems.append(f"{kind} {record.name} (pod {pod}, volume {volume!r}) is {record.phase or 'pending'}"
                                f"{detail}")
    return problems


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
