"""Where a drill's time goes, from the objects' own timestamps: pure, no cluster access.

The drill hands over the Velero Backup and Restore, their PodVolumeBackups/Restores and the
restored namespace's pods as it read them; these functions turn their timestamps into parts, each
owned by whoever the time was spent waiting for ("velero", "kubelet", "restoredrill", "flux").

Kubernetes and Velero write timestamps as RFC 3339 with whole seconds ("2026-12-01T23:40:12Z",
metav1.Time), so every figure here is whole seconds. A timestamp that is missing makes the parts
touching it None, never a crash, and adds a note saying which object lacked which field.

Upstream facts (Velero v1.16.2, github.com/vmware-tanzu/velero@v1.16.2):
- pkg/apis/velero/v1/restore_types.go, backup_types.go: status.startTimestamp and
  status.completionTimestamp (both optional, nullable); metadata.creationTimestamp is when the
  object was created. backup_types.go: "Completion time is recorded before uploading the backup
  object"; pkg/controller/backup_finalizer_controller.go sets it again when Finalizing ends.
- pkg/apis/velero/v1/pod_volume_restore_type.go (singular "type") and pod_volume_backup_types.go:
  status.startTimestamp, status.completionTimestamp ("recorded even on failed" ones),
  status.progress.totalBytes / bytesDone (pkg/apis/velero/shared/data_move_operation_progress.go,
  omitted when 0), spec.pod (an ObjectReference), spec.volume.
- pkg/controller/pod_volume_restore_controller.go: a PodVolumeRestore is started (startTimestamp
  set) only once its pod runs Velero's restore-wait init container (shouldProcess ->
  isInitContainerRunning), so PVR created -> started is the kubelet scheduling the pod, pulling
  images and starting that container.
- The Restore's completionTimestamp is not used as a step of the RTO: restoredrill/platform/velero.py
  (wait_for_pod_volume_restores, velero issue 9365) saw a Restore report Completed before its
  PodVolumeRestores existed, so data and pods are timed from their own objects.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

VELERO, KUBELET, RESTOREDRILL, FLUX = "velero", "kubelet", "restoredrill", "flux"
OWNERS = (VELERO, KUBELET, FLUX, RESTOREDRILL)

# The namespace drill's steps (restoredrill/drill/namespace.py NamespaceDrill.run) and whom each
# waits for. "backup" and "restore" are split further by their timelines; what the objects' own
# timestamps do not cover is restoredrill's (API calls, polling, checks).
STEP_OWNERS: dict[str, tuple[str, str]] = {
    "deploy": (FLUX, "Flux applies the app's Kustomizations until Ready"),
    "seed": (RESTOREDRILL, "writes the seed files and rows"),
    "record": (RESTOREDRILL, "inventories volumes and tables"),
    "backup": (VELERO, "the Backup"),
    "sentinel": (RESTOREDRILL, "changes the data after the backup"),
    "suspend": (FLUX, "suspends the Kustomizations and waits for an idle reconcile"),
    "destroy": (KUBELET, "namespace deletion: pods terminating, then the namespace controller"),
    "restore": (VELERO, "the Restore until every pod is Ready"),
    "verify": (RESTOREDRILL, "compares files, rows and the Kopia snapshots"),
    "adopt": (FLUX, "resumes the Kustomizations and waits for their reconcile"),
}

# The parts of a restore's RTO, in order; they follow one another, so their seconds add up to rto_s.
RESTORE_PARTS: tuple[tuple[str, str, str], ...] = (
    ("queued", VELERO, "Restore created -> Velero started it"),
    ("objects", VELERO, "Velero restores objects until the first PodVolumeRestore is created "
                        "(the Restore's completion when there is none)"),
    ("pod_start", KUBELET, "first PodVolumeRestore created -> started: the pod scheduled and running "
                           "Velero's restore-wait init container"),
    ("data", VELERO, "first PodVolumeRestore started -> last one completed: the node-agent copies the data"),
    ("pods_ready", KUBELET, "last PodVolumeRestore completed -> every pod Ready: containers start, "
                            "readiness probes pass"),
    ("finishing", VELERO, "every pod Ready -> Velero reports the Restore completed (0 when it did so before)"),
)

BACKUP_PARTS: tuple[tuple[str, str, str], ...] = (
    ("queued", VELERO, "Backup created -> Velero started it"),
    ("data", VELERO, "PodVolumeBackups running (the node-agent uploads volume data; overlaps counted once)"),
    ("not_data", VELERO, "the rest of started -> completed: item collection, hooks, the backup's upload"),
)


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 timestamp as Kubernetes writes it, or None when absent or unreadable."""
    if not value or not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def _seconds(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds())


def _get(obj: Mapping[str, Any], *path: str) -> Any:
    value: Any = obj
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def _name(obj: Mapping[str, Any]) -> str:
    return str(_get(obj, "metadata", "name") or "?")


def _stamp(obj: Mapping[str, Any], kind: str, *path: str, notes: list[str]) -> datetime | None:
    value = _get(obj, *path)
    moment = parse_time(value)
    if moment is None:
        why = "has no" if not value else f"has an unreadable ({value!r})"
        notes.append(f"{kind} {_name(obj)} {why} {'.'.join(path)}")
    return moment


def _iso(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment is not None else None


def _volume_entry(item: Mapping[str, Any], kind: str, notes: list[str]) -> dict[str, Any]:
    """One PodVolumeBackup/Restore: when it was created, started and completed, and its bytes."""
    created = _stamp(item, kind, "metadata", "creationTimestamp", notes=notes)
    started = _stamp(item, kind, "status", "startTimestamp", notes=notes)
    completed = _stamp(item, kind, "status", "completionTimestamp", notes=notes)
    pod = _get(item, "spec", "pod")
    pod = pod if isinstance(pod, Mapping) else {}
    progress = _get(item, "status", "progress")
    progress = progress if isinstance(progress, Mapping) else {}
    return {
        "name": _name(item),
        "pod": f"{pod.get('namespace', '?')}/{pod.get('name', '?')}",
        "volume": _get(item, "spec", "volume"),
        "phase": _get(item, "status", "phase"),
        "created": _iso(created), "started": _iso(started), "completed": _iso(completed),
        "wait_s": _seconds(created, started),
        "seconds": _seconds(started, completed),
        "total_bytes": progress.get("totalBytes"),
        "bytes_done": progress.get("bytesDone"),
        "_moments": (created, started, completed),
    }


def _chain(milestones: Sequence[datetime | None], parts: Sequence[tuple[str, str, str]],
           ) -> list[dict[str, Any]]:
    """Parts between consecutive milestones, each moment held to no earlier than the one before it
    (whole-second stamps of different controllers can be out of order by a second), so the known
    parts add up to last - first. A part next to a missing milestone is None."""
    held: list[datetime | None] = []
    latest: datetime | None = None
    for moment in milestones:
        if moment is not None:
            latest = moment if latest is None else max(latest, moment)
            held.append(latest)
        else:
            held.append(None)
    return [{"part": name, "owner": owner, "what": what, "start": _iso(held[i]), "end": _iso(held[i + 1]),
             "seconds": _seconds(held[i], held[i + 1])}
            for i, (name, owner, what) in enumerate(parts)]


def restore_timeline(*, restore: Mapping[str, Any], pod_volume_restores: Sequence[Mapping[str, Any]],
                     pods: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The RTO of a Velero Restore (created -> last PodVolumeRestore completed -> every pod Ready,
    and the Restore itself completed) in whole seconds, with its parts (RESTORE_PARTS, in order,
    adding up to rto_s), the moment each pod became Ready and each PodVolumeRestore's times and bytes.

    `pods` are the restored namespace's pods as listed once the drill saw them Ready; pods that
    ran to completion (phase Succeeded, a Job's) never become Ready and are left out of the RTO.
    """
    notes: list[str] = []
    created = _stamp(restore, "Restore", "metadata", "creationTimestamp", notes=notes)
    started = _stamp(restore, "Restore", "status", "startTimestamp", notes=notes)
    completed = _stamp(restore, "Restore", "status", "completionTimestamp", notes=notes)

    volumes = [_volume_entry(item, "PodVolumeRestore", notes) for item in pod_volume_restores]
    pvr_created = [v["_moments"][0] for v in volumes]
    pvr_started = [v["_moments"][1] for v in volumes]
    pvr_completed = [v["_moments"][2] for v in volumes]
    if volumes:
        first_created = _first(pvr_created)
        first_started = _first(pvr_started)
        last_completed = _last(pvr_completed)
    else:
        notes.append("no PodVolumeRestores: no volume data was restored; objects runs to the Restore's completion")
        first_created = first_started = last_completed = completed

    pod_entries, not_ready = _pods(pods, since=created, notes=notes)
    ready = [parse_time(p["ready"]) for p in pod_entries if p["name"] not in not_ready]
    known_ready = [m for m in ready if m is not None]
    last_ready = max(known_ready) if known_ready and len(known_ready) == len(ready) and not not_ready else None
    if not pod_entries:
        notes.append("no pods to wait for: the RTO ends with the data")
    elif not_ready:
        notes.append(f"pods never Ready: {', '.join(not_ready)}: no RTO")

    data_end = last_completed
    pods_end = data_end if not pod_entries else None
    if pod_entries and last_ready is not None and data_end is not None:
        pods_end = max(data_end, last_ready)
    # The drill waits for the Restore to finish too (restoredrill/platform/velero.py
    # wait_for_pod_volume_restores): Velero's own completion after the pods are Ready is in the RTO.
    end = max(pods_end, completed) if pods_end is not None and completed is not None else None
    parts = _chain([created, started, first_created, first_started, data_end, pods_end, end], RESTORE_PARTS)
    rto = _seconds(created, end)
    if completed is not None and volumes and last_completed is not None and completed < last_completed:
        notes.append(f"the Restore reported completion {_seconds(completed, last_completed)} s before its last "
                     "PodVolumeRestore completed")
    return {
        "rto_s": rto,
        "restore": {"name": _name(restore), "phase": _get(restore, "status", "phase"),
                    "created": _iso(created), "started": _iso(started), "completed": _iso(completed)},
        "parts": parts,
        "spans": {
            "queued_s": _seconds(created, started),
            "velero_restore_s": _seconds(started, completed),  # the Restore's own start -> completion
            "data_s": _seconds(first_started, last_completed) if volumes else None,
            "pods_ready_after_data_s": _seconds(last_completed, last_ready) if volumes else None,
        },
        "pod_volume_restores": [_public(v) for v in volumes],
        "pods": pod_entries,
        "not_ready": not_ready,
        "notes": notes,
    }


def _pods(pods: Sequence[Mapping[str, Any]], *, since: datetime | None, notes: list[str],
          ) -> tuple[list[dict[str, Any]], list[str]]:
    """Each pod's condition times and its Ready as seconds after `since` (the Restore's creation);
    the names of pods that are not Ready. A condition's lastTransitionTime is the last time its
    status changed, so a True Ready condition's is when the pod last became Ready."""
    entries, not_ready = [], []
    for pod in sorted(pods, key=_name):
        name = _name(pod)
        if _get(pod, "status", "phase") == "Succeeded":
            notes.append(f"pod {name} ran to completion (Succeeded): not counted")
            continue
        conditions = {str(c.get("type")): c for c in (_get(pod, "status", "conditions") or [])
                      if isinstance(c, Mapping)}
        moments = {"created": parse_time(_get(pod, "metadata", "creationTimestamp")),
                   "started": parse_time(_get(pod, "status", "startTime"))}
        for condition, key in (("PodScheduled", "scheduled"), ("Initialized", "initialized"),
                               ("ContainersReady", "containers_ready"), ("Ready", "ready")):
            entry = conditions.get(condition) or {}
            moments[key] = parse_time(entry.get("lastTransitionTime")) if entry.get("status") == "True" else None
        ready = conditions.get("Ready") or {}
        if ready.get("status") != "True":
            not_ready.append(name)
        elif moments["ready"] is None:
            notes.append(f"pod {name} is Ready but its Ready condition has no lastTransitionTime")
        elif since is not None and moments["ready"] < since:
            notes.append(f"pod {name} was Ready before the Restore was created: not restored by it")
        entries.append({"name": name, **{k: _iso(v) for k, v in moments.items()},
                        "ready_at_s": _seconds(since, moments["ready"])})
    return entries, not_ready


def backup_timeline(*, backup: Mapping[str, Any], pod_volume_backups: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A Velero Backup's created -> started -> completed, in whole seconds, with each
    PodVolumeBackup's data time, and how much of the backup was not PodVolumeBackup data
    (BACKUP_PARTS, adding up to total_s)."""
    notes: list[str] = []
    created = _stamp(backup, "Backup", "metadata", "creationTimestamp", notes=notes)
    started = _stamp(backup, "Backup", "status", "startTimestamp", notes=notes)
    completed = _stamp(backup, "Backup", "status", "completionTimestamp", notes=notes)
    volumes = [_volume_entry(item, "PodVolumeBackup", notes) for item in pod_volume_backups]
    if not volumes:
        notes.append("no PodVolumeBackups: no volume data was taken by fs-backup")
    intervals = [(v["_moments"][1], v["_moments"][2]) for v in volumes]
    known = [(s, e) for s, e in intervals if s is not None and e is not None]
    data: int | None = None
    if len(known) == len(intervals):
        if started is not None and completed is not None:
            # Only the data inside started -> completed is part of the Backup's run.
            known = [(max(s, started), min(e, completed)) for s, e in known]
        data = _union_seconds((s, e) for s, e in known if e > s)
    run = _seconds(started, completed)
    queued = _seconds(created, started)
    seconds = {"queued": queued, "data": data, "not_data": run - data if run is not None and data is not None else None}
    return {
        "total_s": _seconds(created, completed),
        "backup": {"name": _name(backup), "phase": _get(backup, "status", "phase"),
                   "created": _iso(created), "started": _iso(started), "completed": _iso(completed)},
        "parts": [{"part": name, "owner": owner, "what": what, "seconds": seconds[name]}
                  for name, owner, what in BACKUP_PARTS],
        "spans": {
            "velero_backup_s": run,
            "data_window_s": _seconds(_first(s for s, _ in intervals), _last(e for _, e in intervals))
            if volumes else None,
        },
        "pod_volume_backups": [_public(v) for v in volumes],
        "notes": notes,
    }


def drill_timeline(*, backup: Mapping[str, Any], pod_volume_backups: Sequence[Mapping[str, Any]],
                   restore: Mapping[str, Any], pod_volume_restores: Sequence[Mapping[str, Any]],
                   pods: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """summary.json's "timeline" fact of a namespace drill: {"backup": ..., "restore": ...}."""
    return {"backup": backup_timeline(backup=backup, pod_volume_backups=pod_volume_backups),
            "restore": restore_timeline(restore=restore, pod_volume_restores=pod_volume_restores, pods=pods)}


def _first(moments: Iterable[datetime | None]) -> datetime | None:
    """The earliest known moment: one never reached (a PodVolumeRestore not started) is not earlier."""
    known = [m for m in moments if m is not None]
    return min(known) if known else None


def _last(moments: Iterable[datetime | None]) -> datetime | None:
    """The latest moment, or None when any is unknown: the one not reached yet would be the last."""
    values = list(moments)
    known = [m for m in values if m is not None]
    return max(known) if known and len(known) == len(values) else None


def _union_seconds(intervals: Iterable[tuple[datetime, datetime]]) -> int:
    """Seconds covered by at least one interval: parallel PodVolumeBackups are counted once."""
    total, end = 0.0, None
    for start, stop in sorted(intervals):
        if end is None or start > end:
            total += (stop - start).total_seconds()
            end = stop
        elif stop > end:
            total += (stop - end).total_seconds()
            end = stop
    return round(total)


def _public(volume: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in volume.items() if not k.startswith("_")}


# ---- what a bench prints -----------------------------------------------------------------------
def step_breakdown(*, timeline: Mapping[str, Any] | None, steps: Mapping[str, float] | None,
                   ) -> list[dict[str, Any]]:
    """Each drill step's seconds (facts["steps"]) and whom they belong to; the backup and restore
    steps split by their timelines, what the timestamps do not cover going to restoredrill.

    Rows: {"step", "part" (None for the step itself), "owner", "seconds", "what"}.
    """
    timeline = timeline or {}
    rows: list[dict[str, Any]] = []
    for step, seconds in (steps or {}).items():
        owner, what = STEP_OWNERS.get(step, (RESTOREDRILL, "a step of the drill"))
        rows.append({"step": step, "part": None, "owner": owner, "seconds": seconds, "what": what})
        sub = timeline.get({"backup": "backup", "restore": "restore"}.get(step, "")) or {}
        parts = [p for p in sub.get("parts") or [] if isinstance(p, Mapping)]
        if not parts:
            continue
        covered = 0.0
        for part in parts:
            rows.append({"step": step, "part": part["part"], "owner": part["owner"], "seconds": part["seconds"],
                         "what": part["what"]})
            covered += part["seconds"] or 0
        if all(p["seconds"] is not None for p in parts):
            rows.append({"step": step, "part": "rest", "owner": RESTOREDRILL,
                         "seconds": round(max(0.0, float(seconds) - covered), 1),
                         "what": "not covered by the objects' timestamps: restoredrill's API calls, polling, checks"})
    return rows


def owner_totals(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Seconds per owner over step_breakdown's rows: split steps by their parts, others whole."""
    split = {r["step"] for r in rows if r["part"] == "rest"}
    totals = dict.fromkeys(OWNERS, 0.0)
    for row in rows:
        counted = row["part"] is not None if row["step"] in split else row["part"] is None
        if counted and row["seconds"] is not None:
            totals[row["owner"]] = round(totals.get(row["owner"], 0.0) + float(row["seconds"]), 1)
    return totals


def format_timeline(*, timeline: Mapping[str, Any] | None, steps: Mapping[str, float] | None = None) -> list[str]:
    """The lines a bench prints for one drill: every step with its parts, seconds and owner, the
    RTO, then seconds per owner and the timelines' notes."""
    timeline = timeline or {}
    rows = step_breakdown(timeline=timeline, steps=steps)
    lines = [f"  {'step':<22}{'seconds':>9}  {'owner':<13}where the time goes"]
    for row in rows:
        label = row["step"] if row["part"] is None else f"  {row['part']}"
        lines.append(f"  {label:<22}{_figure(row['seconds']):>9}  {row['owner']:<13}{row['what']}")
    restore = timeline.get("restore") or {}
    backup = timeline.get("backup") or {}
    if not steps:  # no steps recorded: the timelines' parts alone
        for name, sub in (("backup", backup), ("restore", restore)):
            for part in sub.get("parts") or []:
                lines.append(f"  {name + ' ' + part['part']:<22}{_figure(part['seconds']):>9}  {part['owner']:<13}"
                             f"{part['what']}")
    if restore:
        velero_s = (restore.get("spans") or {}).get("velero_restore_s")
        lines.append(f"  RTO from the objects: {_figure(restore.get('rto_s'))} s "
                     f"(the Restore's own start -> completion: {_figure(velero_s)} s)")
        for pod in restore.get("pods") or []:
            ready_at = _figure(pod.get("ready_at_s"))
            lines.append(f"    pod {pod['name']}: Ready {ready_at} s after the Restore was created")
        for volume in restore.get("pod_volume_restores") or []:
            lines.append(f"    PodVolumeRestore {volume['pod']} {volume['volume']}: waited {_figure(volume['wait_s'])} "
                         f"s, data {_figure(volume['seconds'])} s, {_figure(volume.get('bytes_done'))} bytes")
    for volume in backup.get("pod_volume_backups") or []:
        lines.append(f"    PodVolumeBackup {volume['pod']} {volume['volume']}: data {_figure(volume['seconds'])} s, "
                     f"{_figure(volume.get('bytes_done'))} bytes")
    if rows:
        totals = owner_totals(rows)
        lines.append("  by owner: " + ", ".join(f"{owner} {_figure(s)} s" for owner, s in totals.items()))
    for name, sub in (("backup", backup), ("restore", restore)):
        lines += [f"  note ({name}): {note}" for note in sub.get("notes") or []]
    return lines


def _figure(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)
