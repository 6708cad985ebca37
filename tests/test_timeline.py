"""The drill's timeline from the objects' own timestamps (restoredrill.timeline): hand-written
Velero Restores, Backups, PodVolumeRestores/Backups and pods shaped as the API server returns them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from restoredrill.timeline import (
    RESTORE_PARTS,
    backup_timeline,
    drill_timeline,
    format_timeline,
    owner_totals,
    restore_timeline,
    step_breakdown,
)

NS = "pelican"


def at(second: int) -> str:
    """A timestamp `second` seconds after 23:40:00, written as the API server writes it."""
    minutes, seconds = divmod(second, 60)
    return f"2026-12-01T{23 + (40 + minutes) // 60:02d}:{(40 + minutes) % 60:02d}:{seconds:02d}Z"


def restore(*, created: int | None = 0, started: int | None = 2, completed: int | None = 30) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Completed", "progress": {"itemsRestored": 12, "totalItems": 12}}
    if started is not None:
        status["startTimestamp"] = at(started)
    if completed is not None:
        status["completionTimestamp"] = at(completed)
    metadata: dict[str, Any] = {"name": "pelican-restore-1", "namespace": "velero"}
    if created is not None:
        metadata["creationTimestamp"] = at(created)
    return {"apiVersion": "velero.io/v1", "kind": "Restore", "metadata": metadata,
            "spec": {"backupName": "pelican-daily-1", "includedNamespaces": [NS]}, "status": status}


def pod_volume(kind: str, name: str, *, pod: str, volume: str, created: int, started: int | None,
               completed: int | None, done: int = 0) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": "Completed" if completed is not None else "InProgress"}
    if started is not None:
        status["startTimestamp"] = at(started)
    if completed is not None:
        status["completionTimestamp"] = at(completed)
    if done:
        status["progress"] = {"totalBytes": done, "bytesDone": done}
    return {"apiVersion": "velero.io/v1", "kind": kind,
            "metadata": {"name": name, "namespace": "velero", "creationTimestamp": at(created)},
            "spec": {"pod": {"kind": "Pod", "namespace": NS, "name": pod}, "volume": volume,
                     "backupStorageLocation": "default", "uploaderType": "kopia"},
            "status": status}


def pvr(name: str, *, created: int, started: int | None, completed: int | None, done: int = 0) -> dict[str, Any]:
    return pod_volume("PodVolumeRestore", name, pod="pelican-0", volume=name, created=created, started=started,
                      completed=completed, done=done)


def pvb(name: str, *, created: int, started: int | None, completed: int | None, done: int = 0) -> dict[str, Any]:
    return pod_volume("PodVolumeBackup", name, pod="pelican-0", volume=name, created=created, started=started,
                      completed=completed, done=done)


def pod(name: str, *, created: int = 3, ready: int | None = 40, phase: str = "Running") -> dict[str, Any]:
    def condition(kind: str, second: int | None) -> dict[str, Any]:
        if second is None:
            return {"type": kind, "status": "False", "lastTransitionTime": at(created), "reason": "ContainersNotReady"}
        return {"type": kind, "status": "True", "lastTransitionTime": at(second)}

    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "creationTimestamp": at(created)},
            "status": {"phase": phase, "startTime": at(created + 1), "conditions": [
                condition("PodScheduled", created + 1), condition("Initialized", None if ready is None else ready - 2),
                condition("ContainersReady", ready), condition("Ready", ready)]}}


def seconds_of(timeline: dict[str, Any]) -> dict[str, int | None]:
    return {part["part"]: part["seconds"] for part in timeline["parts"]}


def test_the_parts_of_the_rto_follow_one_another_and_add_up() -> None:
    timeline = restore_timeline(restore=restore(created=0, started=2, completed=30),
                                pod_volume_restores=[pvr("data", created=5, started=12, completed=25, done=4096)],
                                pods=[pod("pelican-0", ready=40), pod("pelican-web", ready=33)])
    assert seconds_of(timeline) == {"queued": 2, "objects": 3, "pod_start": 7, "data": 13, "pods_ready": 15,
                                    "finishing": 0}
    assert timeline["rto_s"] == 40 == sum(p["seconds"] for p in timeline["parts"])
    assert [p["part"] for p in timeline["parts"]] == [name for name, _, _ in RESTORE_PARTS]
    assert {p["part"]: p["owner"] for p in timeline["parts"]} == {
        "queued": "velero", "objects": "velero", "pod_start": "kubelet", "data": "velero", "pods_ready": "kubelet",
        "finishing": "velero"}
    assert timeline["spans"] == {"queued_s": 2, "velero_restore_s": 28, "data_s": 13, "pods_ready_after_data_s": 15}
    assert {p["name"]: p["ready_at_s"] for p in timeline["pods"]} == {"pelican-0": 40, "pelican-web": 33}
    assert timeline["pods"][0]["scheduled"] == at(4) and timeline["pods"][0]["ready"] == at(40)
    (volume,) = timeline["pod_volume_restores"]
    assert volume == {"name": "data", "pod": f"{NS}/pelican-0", "volume": "data", "phase": "Completed",
                      "created": at(5), "started": at(12), "completed": at(25), "wait_s": 7, "seconds": 13,
                      "total_bytes": 4096, "bytes_done": 4096}
    assert timeline["not_ready"] == [] and timeline["notes"] == []


def test_several_pod_volume_restores_take_the_earliest_start_and_the_latest_completion() -> None:
    volumes = [pvr("config", created=6, started=10, completed=14),
               pvr("data", created=5, started=8, completed=50),
               pvr("cache", created=7, started=20, completed=22)]
    timeline = restore_timeline(restore=restore(), pod_volume_restores=volumes, pods=[pod("pelican-0", ready=55)])
    assert timeline["spans"]["data_s"] == 42  # 8 -> 50
    assert seconds_of(timeline) == {"queued": 2, "objects": 3, "pod_start": 3, "data": 42, "pods_ready": 5,
                                    "finishing": 0}
    assert timeline["rto_s"] == 55 == sum(p["seconds"] for p in timeline["parts"])
    assert [v["seconds"] for v in timeline["pod_volume_restores"]] == [4, 42, 2]


def test_the_restore_reporting_completion_before_its_data_is_noted_and_does_not_end_the_rto() -> None:
    timeline = restore_timeline(restore=restore(completed=9),
                                pod_volume_restores=[pvr("data", created=5, started=12, completed=25)],
                                pods=[pod("pelican-0", ready=28)])
    assert timeline["rto_s"] == 28 and timeline["spans"]["velero_restore_s"] == 7
    assert any("completion 16 s before its last PodVolumeRestore" in n for n in timeline["notes"])


def test_velero_finishing_the_restore_after_the_pods_are_ready_is_in_the_rto() -> None:
    # What the drill's own clock measures too: it waits for the Restore's phase as well as the pods.
    timeline = restore_timeline(restore=restore(completed=50),
                                pod_volume_restores=[pvr("data", created=5, started=12, completed=25)],
                                pods=[pod("pelican-0", ready=40)])
    assert seconds_of(timeline)["finishing"] == 10
    assert timeline["rto_s"] == 50 == sum(p["seconds"] for p in timeline["parts"])
    assert timeline["spans"]["pods_ready_after_data_s"] == 15


def test_out_of_order_stamps_of_different_controllers_are_held_so_the_parts_still_add_up() -> None:
    # The pod's Ready is stamped by the kubelet, the PVR's completion by the node-agent: a second apart
    # either way. The RTO ends at the later of the two.
    timeline = restore_timeline(restore=restore(completed=20),
                                pod_volume_restores=[pvr("data", created=5, started=5, completed=26)],
                                pods=[pod("pelican-0", ready=25)])
    assert timeline["rto_s"] == 26 == sum(p["seconds"] for p in timeline["parts"])
    assert seconds_of(timeline)["pods_ready"] == 0 and seconds_of(timeline)["pod_start"] == 0


def test_missing_timestamps_give_none_parts_with_a_note_never_a_crash() -> None:
    timeline = restore_timeline(restore=restore(started=None, completed=None),
                                pod_volume_restores=[pvr("data", created=5, started=12, completed=None)],
                                pods=[pod("pelican-0", ready=40)])
    parts = seconds_of(timeline)
    assert parts["queued"] is None and parts["objects"] is None
    assert parts["pod_start"] == 7
    assert parts["data"] is None and parts["pods_ready"] is None and parts["finishing"] is None
    assert timeline["rto_s"] is None
    assert timeline["spans"]["velero_restore_s"] is None
    assert "Restore pelican-restore-1 has no status.startTimestamp" in timeline["notes"]
    assert "Restore pelican-restore-1 has no status.completionTimestamp" in timeline["notes"]
    assert "PodVolumeRestore data has no status.completionTimestamp" in timeline["notes"]


def test_objects_with_no_status_at_all_or_unreadable_stamps_give_none() -> None:
    bare = {"metadata": {"name": "r", "creationTimestamp": "yesterday"}}
    timeline = restore_timeline(restore=bare, pod_volume_restores=[{"metadata": {"name": "p"}}],
                                pods=[{"metadata": {"name": "x"}}])
    assert timeline["rto_s"] is None and all(p["seconds"] is None for p in timeline["parts"])
    assert "Restore r has an unreadable ('yesterday') metadata.creationTimestamp" in timeline["notes"]
    assert timeline["not_ready"] == ["x"]
    backup = backup_timeline(backup={}, pod_volume_backups=[{}])
    assert backup["total_s"] is None and all(p["seconds"] is None for p in backup["parts"])
    assert "Backup ? has no metadata.creationTimestamp" in backup["notes"]


def test_pods_that_never_became_ready_are_named_and_there_is_no_rto() -> None:
    timeline = restore_timeline(restore=restore(), pod_volume_restores=[pvr("data", created=5, started=12,
                                                                            completed=25)],
                                pods=[pod("pelican-0", ready=40), pod("pelican-worker", ready=None),
                                      pod("pelican-migrate", ready=None, phase="Succeeded")])
    assert timeline["not_ready"] == ["pelican-worker"]
    assert timeline["rto_s"] is None and seconds_of(timeline)["pods_ready"] is None
    assert seconds_of(timeline)["data"] == 13  # what is known is still given
    assert any("pods never Ready: pelican-worker" in n for n in timeline["notes"])
    assert any("pelican-migrate ran to completion" in n for n in timeline["notes"])
    assert [p["name"] for p in timeline["pods"]] == ["pelican-0", "pelican-worker"]


def test_a_restore_without_pod_volume_restores_runs_objects_to_its_completion() -> None:
    timeline = restore_timeline(restore=restore(created=0, started=1, completed=6), pod_volume_restores=[],
                                pods=[pod("gatus", ready=15)])
    assert seconds_of(timeline) == {"queued": 1, "objects": 5, "pod_start": 0, "data": 0, "pods_ready": 9,
                                    "finishing": 0}
    assert timeline["rto_s"] == 15 and timeline["spans"]["data_s"] is None
    assert any("no PodVolumeRestores" in n for n in timeline["notes"])


def test_the_backup_is_split_into_queued_pod_volume_data_and_velero_s_own_work() -> None:
    backup = {"apiVersion": "velero.io/v1", "kind": "Backup",
              "metadata": {"name": "pelican-daily-1", "namespace": "velero", "creationTimestamp": at(0)},
              "status": {"phase": "Completed", "startTimestamp": at(1), "completionTimestamp": at(31)}}
    # Two volumes copied in parallel (5 -> 15 and 10 -> 20): 15 s of data, counted once.
    timeline = backup_timeline(backup=backup, pod_volume_backups=[
        pvb("data", created=4, started=5, completed=15, done=1 << 20), pvb("config", created=4, started=10,
                                                                         completed=20)])
    assert timeline["total_s"] == 31
    assert seconds_of(timeline) == {"queued": 1, "data": 15, "not_data": 15}
    assert sum(p["seconds"] for p in timeline["parts"]) == timeline["total_s"]
    assert timeline["spans"] == {"velero_backup_s": 30, "data_window_s": 15}
    assert [(v["volume"], v["seconds"], v["bytes_done"]) for v in timeline["pod_volume_backups"]] == [
        ("data", 10, 1 << 20), ("config", 10, None)]
    missing = backup_timeline(backup=backup, pod_volume_backups=[pvb("data", created=4, started=5, completed=None)])
    assert seconds_of(missing) == {"queued": 1, "data": None, "not_data": None}
    assert "PodVolumeBackup data has no status.completionTimestamp" in missing["notes"]


def test_the_steps_are_split_by_their_timelines_and_the_rest_is_restoredrill_s() -> None:
    backup = {"metadata": {"name": "b", "creationTimestamp": at(0)},
              "status": {"startTimestamp": at(1), "completionTimestamp": at(11)}}
    timeline = drill_timeline(backup=backup, pod_volume_backups=[pvb("data", created=2, started=3, completed=7)],
                              restore=restore(), pod_volume_restores=[pvr("data", created=5, started=12, completed=25)],
                              pods=[pod("pelican-0", ready=40)])
    steps = {"deploy": 20.0, "seed": 3.5, "backup": 12.4, "destroy": 8.0, "restore": 41.5, "adopt": 6.0}
    rows = step_breakdown(timeline=timeline, steps=steps)
    rest = {r["step"]: r["seconds"] for r in rows if r["part"] == "rest"}
    assert rest == {"backup": 1.4, "restore": 1.5}
    totals = owner_totals(rows)
    assert totals == {"velero": 1 + 4 + 6 + 2 + 3 + 13, "kubelet": 8.0 + 7 + 15, "flux": 26.0,
                      "restoredrill": 3.5 + 1.4 + 1.5}
    assert sum(totals.values()) == sum(steps.values())
    lines = format_timeline(timeline=timeline, steps=steps)
    text = "\n".join(lines)
    assert "RTO from the objects: 40 s" in text and "pod pelican-0: Ready 40 s after the Restore was created" in text
    assert any(line.split()[:3] == ["pod_start", "7", "kubelet"] for line in lines)
    assert "by owner: velero 29.0 s, kubelet 30.0 s, flux 26.0 s, restoredrill 6.4 s" in text


def test_format_without_steps_or_timeline_still_prints() -> None:
    assert format_timeline(timeline=None, steps=None)[0].split()[:2] == ["step", "seconds"]
    lines = format_timeline(timeline={"restore": restore_timeline(restore={}, pod_volume_restores=[], pods=[])})
    assert any(line.strip().startswith("restore queued") for line in lines)
    assert any("note (restore): Restore ? has no metadata.creationTimestamp" in line for line in lines)


def test_the_bench_prints_each_app_s_steps_and_says_what_to_run_without_timeline_facts(tmp_path: Path) -> None:
    from bench.drill_timeline import NoTimeline, load_summary, report

    path = tmp_path / "summary.json"
    with pytest.raises(NoTimeline, match=r"no .*summary\.json; run a drill first"):
        load_summary(path)
    static = {"nodeid": "suites/static/test_x.py::t", "phase": "call", "outcome": "passed", "app": "pelican"}
    path.write_text(json.dumps({"results": [static]}))
    with pytest.raises(NoTimeline, match=r"no timeline facts in .*: 1 test results, no drill among them; run a drill"):
        report(load_summary(path), source=path)
    timeline = drill_timeline(backup={}, pod_volume_backups=[], restore=restore(started=1, completed=6),
                              pod_volume_restores=[],
                              pods=[pod("gatus", ready=12)])
    drill = {"nodeid": "suites/drills/test_namespace_restore.py::t[gatus]", "phase": "call", "outcome": "passed",
             "app": "gatus", "scenario": "namespace-restore", "duration_s": 60.0, "rto_s": 13.2,
             "steps": {"deploy": 10.0, "restore": 13.2}, "timeline": timeline}
    path.write_text(json.dumps({"results": [static, drill]}))
    lines = report(load_summary(path), source=path)
    assert lines[0].startswith("gatus (namespace-restore, passed): drill 60.0 s, RTO from the objects 12 s")
    assert lines[-1].split() == ["gatus", "6.0", "6.0", "10.0", "1.2", "23.2"]
