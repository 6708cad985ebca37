"""The audit: every check passes on a healthy cluster and fails on the fault it exists to catch,
naming the object and the fix; against a recording API server it sends nothing but GETs."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from restoredrill.audit import (
    CHECKS,
    AuditReport,
    AuditSettings,
    ClusterState,
    audit,
    audit_cluster,
    prometheus_text,
    render_text,
)
from restoredrill.cli import main
from tests.conftest import EXAMPLE_REPO, PROJECT_ROOT, user_project
from tests.providers.fake_apiserver import running_fake_apiserver

pytest_plugins = ("pytester",)

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
BACKUP = "pelican-daily-20261126020000"


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _pod(namespace: str, name: str, *, node: str = "node-1", volumes: list[dict[str, Any]] | None = None,
         annotations: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"namespace": namespace, "name": name, "creationTimestamp": _ts(NOW - timedelta(days=5)),
                         "annotations": annotations or {}, "labels": labels or {}},
            "spec": {"nodeName": node, "volumes": volumes or []},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}


def _claim_volume(name: str, claim: str) -> dict[str, Any]:
    return {"name": name, "persistentVolumeClaim": {"claimName": claim}}


def _pvb(name: str, *, pod: str = "pelican-0", volume: str = "data", backup: str = BACKUP, total: int = 4096,
         phase: str = "Completed", pvc_uid: str = "uid-data", created: datetime | None = None) -> dict[str, Any]:
    return {"metadata": {"namespace": "velero", "name": name,
                         "creationTimestamp": _ts(created or NOW - timedelta(hours=10)),
                         "labels": {"velero.io/backup-name": backup, "velero.io/pvc-uid": pvc_uid}},
            "spec": {"pod": {"namespace": "pelican", "name": pod}, "volume": volume},
            "status": {"phase": phase, "progress": {"totalBytes": total, "bytesDone": total}}}


def healthy() -> dict[str, list[dict[str, Any]]]:
    """A small cluster whose backups are all well: the objects a test then breaks one at a time."""
    return {
        "storage_locations": [{"metadata": {"namespace": "velero", "name": "default"},
                               "spec": {"provider": "aws", "validationFrequency": "1m"},
                               "status": {"phase": "Available",
                                          "lastValidationTime": _ts(NOW - timedelta(seconds=30))}}],
        "schedules": [{"metadata": {"namespace": "velero", "name": "pelican-daily",
                                    "creationTimestamp": _ts(NOW - timedelta(days=10))},
                       "spec": {"schedule": "0 2 * * *", "template": {"includedNamespaces": ["pelican"]}},
                       "status": {"phase": "Enabled", "lastBackup": _ts(NOW - timedelta(hours=10))}}],
        "backups": [{"metadata": {"namespace": "velero", "name": BACKUP,
                                  "labels": {"velero.io/schedule-name": "pelican-daily"},
                                  "creationTimestamp": _ts(NOW - timedelta(hours=10))},
                     "spec": {"includedNamespaces": ["pelican"]},
                     "status": {"phase": "Completed", "startTimestamp": _ts(NOW - timedelta(hours=10)),
                                "completionTimestamp": _ts(NOW - timedelta(hours=9, minutes=58)),
                                "hookStatus": {"hooksAttempted": 1, "hooksFailed": 0}}}],
        "pod_volume_backups": [_pvb(f"{BACKUP}-abcde")],
        "velero_deployments": [{"metadata": {"namespace": "velero", "name": "velero"},
                                "spec": {"template": {"spec": {"containers": [{"args": ["server"]}]}}}}],
        "node_agent_daemonsets": [{"metadata": {"namespace": "velero", "name": "node-agent"}}],
        "pods": [
            _pod("pelican", "pelican-0", volumes=[_claim_volume("data", "data"),
                                                  {"name": "config", "configMap": {"name": "pelican"}}],
                 annotations={"backup.velero.io/backup-volumes": "data"}),
            _pod("velero", "node-agent-x1", labels={"role": "node-agent"},
                 volumes=[{"name": "host-pods", "hostPath": {"path": "/var/lib/kubelet/pods"}}]),
        ],
        "nodes": [{"metadata": {"name": "node-1"}, "spec": {}}],
        "claims": [{"metadata": {"namespace": "pelican", "name": "data", "uid": "uid-data"},
                    "spec": {"volumeName": "pv-data"}}],
        "volumes": [{"metadata": {"name": "pv-data"}, "spec": {"local": {"path": "/var/local/pv-data"}}}],
        "cnpg_clusters": [{"metadata": {"namespace": "immich", "name": "immich-db"},
                           "status": {"conditions": [{"type": "ContinuousArchiving", "status": "True"}],
                                      "lastSuccessfulBackup": _ts(NOW - timedelta(hours=3))}}],
    }


def state_of(objects: dict[str, list[dict[str, Any]]], **extra: Any) -> ClusterState:
    fields: dict[str, Any] = {**objects, **extra}
    return ClusterState(now=NOW, **fields)


def run(objects: dict[str, list[dict[str, Any]]], **extra: Any) -> AuditReport:
    return audit(state_of(objects, **extra), AuditSettings())


def only(report: AuditReport, check: str) -> str:
    """The one error of `check`, rendered; fails if there is not exactly one."""
    __tracebackhide__ = True
    errors = [f for f in report.errors if f.check == check]
    assert len(errors) == 1, render_text(report)
    assert not [f for f in report.errors if f.check != check], render_text(report)
    return errors[0].render()


def test_a_healthy_cluster_has_no_findings() -> None:
    report = run(healthy())
    assert not report.findings, render_text(report)
    assert report.checked["schedules"] == 1
    assert report.backup_ages == {"velero/pelican-daily": 36000.0}


# -- storage locations --------------------------------------------------------------------------


def test_an_unavailable_storage_location() -> None:
    objects = healthy()
    objects["storage_locations"][0]["status"] = {"phase": "Unavailable", "lastValidationTime": _ts(NOW),
                                                 "message": "BackupStorageLocation is unavailable: NoSuchBucket"}
    text = only(run(objects), "storage-locations")
    assert "BackupStorageLocation velero/default: is Unavailable: BackupStorageLocation is unavailable: " \
           "NoSuchBucket" in text
    assert "fix: check its bucket, prefix, s3Url" in text


def test_a_storage_location_not_validated_recently() -> None:
    objects = healthy()
    objects["storage_locations"][0]["status"]["lastValidationTime"] = _ts(NOW - timedelta(hours=2))
    text = only(run(objects), "storage-locations")
    assert "was last validated 2h0m0s ago" in text and "every 1m0s" in text
    assert "kubectl -n velero get deployment velero" in text


def test_no_velero_at_all() -> None:
    objects = healthy()
    del objects["storage_locations"], objects["schedules"]
    report = run(objects)
    assert "Velero: is not installed" in only(report, "storage-locations")


# -- schedules -----------------------------------------------------------------------------------


def test_a_paused_schedule() -> None:
    objects = healthy()
    objects["schedules"][0]["spec"]["paused"] = True
    text = only(run(objects), "schedules")
    assert "Schedule velero/pelican-daily: is paused (spec.paused: true): it takes no backups" in text
    assert "velero schedule unpause pelican-daily" in text


def test_a_partially_failed_last_backup() -> None:
    objects = healthy()
    objects["backups"][0]["status"].update(phase="PartiallyFailed", errors=2, warnings=1)
    report = run(objects)
    phase, rpo = (f.render() for f in report.errors)
    assert f"its last finished backup velero/{BACKUP}" in phase and "is PartiallyFailed (2 errors, 1 warnings)" in phase
    assert f"velero backup describe {BACKUP} --details" in phase
    # A PartiallyFailed backup is no good backup: with no Completed one, the RPO is exceeded too.
    assert "has no Completed backup since it was created" in rpo


def test_a_backup_older_than_its_interval_and_grace() -> None:
    objects = healthy()
    late = NOW - timedelta(hours=35)  # 2026-11-25T01:00: the 02:00 runs of the 25th and 26th were missed
    objects["backups"][0]["status"]["startTimestamp"] = _ts(late)
    text = only(run(objects), "schedules")
    assert f"its last Completed backup velero/{BACKUP} started 35h0m0s ago" in text
    assert "the next was due at 2026-11-25T02:00:00+00:00 (schedule '0 2 * * *', every 24h0m0s)" in text
    assert "grace of 1h0m0s has passed: RPO exceeded" in text
    # Inside the grace it is not late.
    assert not audit(state_of(objects), AuditSettings(grace=timedelta(hours=40))).errors


def test_a_schedule_that_never_backed_up() -> None:
    objects = healthy()
    objects["backups"], objects["pod_volume_backups"] = [], []
    assert "has no Completed backup since it was created 240h0m0s ago" in only(run(objects), "schedules")


def test_failed_hooks_and_warnings() -> None:
    objects = healthy()
    objects["backups"][0]["status"].update(warnings=3, hookStatus={"hooksAttempted": 2, "hooksFailed": 1})
    report = run(objects)
    assert "1 of 2 backup hooks failed in its last backup" in only(report, "schedules")
    warning = next(f for f in report.findings if f.severity == "warning")
    assert warning.subject == f"Backup velero/{BACKUP}" and warning.problem == \
        "Completed with 3 warning(s); it is the last backup of Schedule velero/pelican-daily"


# -- pod volumes ---------------------------------------------------------------------------------


def test_a_skipped_volume_has_no_pod_volume_backup() -> None:
    objects = healthy()
    objects["pod_volume_backups"] = []
    text = only(run(objects), "pod-volumes")
    assert f"Backup velero/{BACKUP}: volume 'data' (claim data) of pod pelican/pelican-0 has no PodVolumeBackup: " \
           "its data is not in the backup" in text
    assert f"velero backup logs {BACKUP}" in text


def test_a_volume_skipped_for_want_of_a_node_agent() -> None:
    objects = healthy()
    objects["pod_volume_backups"] = []
    objects["pods"][0]["spec"]["nodeName"] = "node-2"
    objects["nodes"].append({"metadata": {"name": "node-2"}, "spec": {}})
    volume, node = run(objects).errors
    assert "node node-2 runs no node-agent pod, so Velero could not copy it" in volume.problem
    assert "start the node-agent on node node-2" in volume.fix
    assert node.subject == "Node node-2" and "runs no Running, Ready node-agent pod" in node.problem


def test_a_claim_on_a_host_path_volume_is_skipped_by_fs_backup() -> None:
    objects = healthy()
    objects["volumes"][0]["spec"] = {"hostPath": {"path": "/var/local-path-provisioner/pv-data"}}
    objects["pod_volume_backups"] = []
    text = only(run(objects), "pod-volumes")
    assert "claim data is bound to a hostPath PersistentVolume, which fs-backup skips" in text
    assert "StorageClass whose PVs are local or CSI" in text


def test_opted_out_and_default_fs_backup_volumes() -> None:
    objects = healthy()
    objects["velero_deployments"][0]["spec"]["template"]["spec"]["containers"][0]["args"] = [
        "server", "--default-volumes-to-fs-backup"]
    objects["pods"][0]["metadata"]["annotations"] = {"backup.velero.io/backup-volumes-excludes": "library"}
    objects["pods"][0]["spec"]["volumes"].append(_claim_volume("library", "library"))
    report = run(objects)
    assert not report.errors, render_text(report)  # the configMap volume is not expected; data is backed up
    warning = next(f for f in report.findings if f.check == "pod-volumes")
    assert warning.severity == "warning" and "volumes library are left out" in warning.problem


def test_a_pod_volume_backup_that_failed() -> None:
    objects = healthy()
    objects["pod_volume_backups"] = [_pvb(f"{BACKUP}-abcde", phase="Failed")]
    objects["pod_volume_backups"][0]["status"]["message"] = "error to initialize data path"
    assert "PodVolumeBackup velero/pelican-daily-20261126020000-abcde of volume 'data' (claim data) of pod " \
           "pelican/pelican-0 is Failed: error to initialize data path" in only(run(objects), "pod-volumes")


def test_a_zero_byte_pod_volume_backup_of_a_claim_with_data() -> None:
    objects = healthy()
    objects["pod_volume_backups"][0]["status"]["progress"] = {"totalBytes": 0}
    report = run(objects, claim_usage={("pelican", "data"): 52_000_000})
    text = only(report, "pod-volumes")
    assert "Completed with 0 bytes, but the kubelet reports 52000000 bytes used in claim data" in text
    # An earlier backup of the same claim with data is evidence too.
    objects["pod_volume_backups"].append(_pvb("pelican-daily-20261125020000-xyz", backup="pelican-daily-20261125020000",
                                              total=9000, created=NOW - timedelta(hours=34)))
    assert "the earlier PodVolumeBackup velero/pelican-daily-20261125020000-xyz of that claim copied 9000 bytes" in \
        only(run(objects), "pod-volumes")


def test_a_zero_byte_pod_volume_backup_of_an_empty_claim() -> None:
    objects = healthy()
    objects["pod_volume_backups"][0]["status"]["progress"] = {"totalBytes": 0}
    assert not run(objects, claim_usage={("pelican", "data"): 4096}).findings
    unknown = run(objects)  # no stats, no earlier backup: said, but not failed
    assert not unknown.errors and "nothing shows whether the claim is empty" in unknown.findings[0].problem


def test_a_pod_started_after_the_backup_is_judged_by_its_claims() -> None:
    """A rollout or restart after the nightly backup: the new pod is not in the backup, its claim is
    (the PodVolumeBackup names the old pod); a claim with none is an error, not a silence."""
    objects = healthy()
    objects["pods"][0]["metadata"]["name"] = "pelican-7f9c-new"
    objects["pods"][0]["metadata"]["creationTimestamp"] = _ts(NOW - timedelta(hours=1))
    objects["pods"][0]["spec"]["volumes"].append({"name": "scratch", "emptyDir": {}})
    objects["pods"][0]["metadata"]["annotations"]["backup.velero.io/backup-volumes"] = "data,scratch"
    assert not run(objects).findings, render_text(run(objects))  # data found by its claim; scratch was never in it
    objects["pod_volume_backups"] = []
    text = only(run(objects), "pod-volumes")
    assert "volume 'data' (claim data) of pod pelican/pelican-7f9c-new (started after the backup: looked up by its " \
           "claim's uid) has no PodVolumeBackup: its data is not in the backup" in text
    # A claim made after the backup is not expected in it.
    objects["claims"][0]["metadata"]["creationTimestamp"] = _ts(NOW - timedelta(hours=2))
    assert not run(objects).errors


def test_a_claim_shared_by_pods_is_backed_up_once() -> None:
    """Velero copies a claim mounted by several pods from one of them ("already been backed up from
    another pod"): the others' volumes are not missing."""
    objects = healthy()
    objects["pods"].append(_pod("pelican", "pelican-worker", volumes=[_claim_volume("shared-data", "data")],
                                annotations={"backup.velero.io/backup-volumes": "shared-data"}))
    assert not run(objects).findings, render_text(run(objects))
    objects["pod_volume_backups"] = []  # and with none at all, the claim is named once
    assert "volume 'data' (claim data) of pod pelican/pelican-0 has no PodVolumeBackup" in only(run(objects),
                                                                                              "pod-volumes")


def test_pod_volume_backups_of_a_long_backup_name_are_found_by_its_uid() -> None:
    """Velero labels a PodVolumeBackup with its Backup's name shortened to 63 characters with a hash
    (label.GetValidName) and with the Backup's uid: the uid is the key."""
    objects = healthy()
    long_name = "pelican-volumes-and-config-nightly-offsite-schedule-20261126020000"
    assert len(long_name) > 63
    objects["backups"][0]["metadata"].update(name=long_name, uid="uid-backup")
    objects["pod_volume_backups"][0]["metadata"]["labels"].update({
        "velero.io/backup-name": long_name[:57] + "3f2a1b", "velero.io/backup-uid": "uid-backup"})
    assert not run(objects).findings, render_text(run(objects))
    # A PodVolumeBackup of another Backup of the same name (its uid differs) is not this one's.
    objects["pod_volume_backups"][0]["metadata"]["labels"].update({"velero.io/backup-name": long_name,
                                                                   "velero.io/backup-uid": "uid-other"})
    assert "has no PodVolumeBackup" in only(run(objects), "pod-volumes")


# -- node-agent and CNPG -------------------------------------------------------------------------


def test_node_agent_missing_on_a_node() -> None:
    objects = healthy()
    objects["nodes"].append({"metadata": {"name": "node-2"}, "spec": {}})
    text = only(run(objects), "node-agent")
    assert "Node node-2: runs no Running, Ready node-agent pod" in text
    assert "kubectl -n velero get pods -l role=node-agent -o wide" in text
    objects["nodes"][1]["spec"]["taints"] = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    assert not run(objects).errors  # a tainted node with no claims: a warning only


def test_no_node_agent_daemonset() -> None:
    objects = healthy()
    objects["node_agent_daemonsets"] = []
    report = run(objects)
    assert "Velero: has no node-agent DaemonSet" in render_text(report)
    # Without a node-agent, the opted-in claim is taken by nothing, and the audit says so.
    assert any("is taken by nothing" in f.problem for f in report.of("pod-volumes"))


def test_cnpg_not_archiving() -> None:
    objects = healthy()
    objects["cnpg_clusters"][0]["status"]["conditions"] = [
        {"type": "ContinuousArchiving", "status": "False", "reason": "ContinuousArchivingFailing",
         "message": "unexpected failure invoking barman-cloud-wal-archive: exit status 4"}]
    text = only(run(objects), "cnpg")
    assert "CNPG Cluster immich/immich-db: is not archiving WAL (ContinuousArchiving False: " \
           "ContinuousArchivingFailing unexpected failure" in text
    assert "kubectl -n immich logs -l cnpg.io/cluster=immich-db" in text


def test_cnpg_base_backup_too_old_or_missing() -> None:
    objects = healthy()
    objects["cnpg_clusters"][0]["status"]["lastSuccessfulBackup"] = _ts(NOW - timedelta(days=3))
    assert "last base backup succeeded 72h0m0s ago" in only(run(objects), "cnpg")
    del objects["cnpg_clusters"][0]["status"]["lastSuccessfulBackup"]
    assert "has no successful base backup" in only(run(objects), "cnpg")
    objects["cnpg_clusters"][0]["status"] = {"lastSuccessfulBackup": _ts(NOW)}
    assert "has no ContinuousArchiving condition" in only(run(objects), "cnpg")


# -- reports -------------------------------------------------------------------------------------


def test_prometheus_text() -> None:
    objects = healthy()
    objects["schedules"][0]["spec"]["paused"] = True
    text = prometheus_text(run(objects), finished=1_790_000_000, seconds=0.25)
    assert 'restoredrill_audit_findings{check="schedules",severity="error"} 1' in text
    assert 'restoredrill_audit_backup_age_seconds{schedule="velero/pelican-daily"} 36000' in text
    assert "restoredrill_audit_duration_seconds 0.250" in text


# -- against a recording API server --------------------------------------------------------------

PATHS = {
    "storage_locations": "/apis/velero.io/v1/backupstoragelocations",
    "schedules": "/apis/velero.io/v1/schedules",
    "backups": "/apis/velero.io/v1/backups",
    "pod_volume_backups": "/apis/velero.io/v1/podvolumebackups",
    "velero_deployments": "/apis/apps/v1/deployments",
    "node_agent_daemonsets": "/apis/apps/v1/daemonsets",
    "pods": "/api/v1/pods",
    "nodes": "/api/v1/nodes",
    "claims": "/api/v1/persistentvolumeclaims",
    "volumes": "/api/v1/persistentvolumes",
}


def serve(server: Any, objects: dict[str, list[dict[str, Any]]]) -> None:
    for key, path in PATHS.items():
        server.collections[path] = objects[key]
    server.collections["/apis/velero.io/v1/volumesnapshotlocations"] = []
    # No CNPG CRD: its list is a 404, which the audit notes and does not judge.
    server.documents["/api/v1/nodes/node-1/proxy/stats/summary"] = {
        "pods": [{"podRef": {"namespace": "pelican", "name": "pelican-0"},
                  "volume": [{"name": "data", "usedBytes": 52_000_000, "pvcRef": {"namespace": "pelican",
                                                                                  "name": "data"}}]}]}


def shifted(value: Any, *, by: timedelta) -> Any:
    """`value` with every timestamp moved by `by`: the cluster as seen by a reader that audits now."""
    if isinstance(value, dict):
        return {key: shifted(item, by=by) for key, item in value.items()}
    if isinstance(value, list):
        return [shifted(item, by=by) for item in value]
    if isinstance(value, str) and len(value) == 20 and value.endswith("Z") and value[10] == "T":
        return _ts(datetime.fromisoformat(value) + by)
    return value


class _AtNow(datetime):
    """The audit module's clock stopped at NOW (12:00): its Schedules' cron phases then hold at any
    hour the test runs (shifting the objects to the real time cannot: `0 2 * * *` is wall-clock)."""

    @classmethod
    def now(cls, tz: Any = None) -> _AtNow:
        return cls.fromtimestamp(NOW.timestamp(), tz=tz or UTC)


@pytest.fixture(autouse=True)
def audit_clock_at_now(monkeypatch: pytest.MonkeyPatch) -> None:
    import restoredrill.audit as audit_module

    monkeypatch.setattr(audit_module, "datetime", _AtNow)


def now_objects() -> dict[str, list[dict[str, Any]]]:
    # The cluster as a reader auditing at NOW sees it (the audit's own clock reads NOW).
    return healthy()


def real_time_objects() -> dict[str, list[dict[str, Any]]]:
    """For an audit in another process (its clock is the real one): every age kept by moving the
    objects to the real time. A Schedule's cron phase cannot move with them, so its RPO may fail
    at some hours: use only where the Schedules check fails anyway."""
    real_now = datetime.now(UTC).replace(microsecond=0)
    return shifted(healthy(), by=real_now - NOW)  # type: ignore[no-any-return]


def test_the_audit_only_reads(tmp_path: Path) -> None:
    objects = now_objects()
    objects["pod_volume_backups"][0]["status"]["progress"] = {"totalBytes": 0}  # a fault the stats reveal
    with running_fake_apiserver() as server:
        serve(server, objects)
        report = audit_cluster(server.kubeconfig(tmp_path), None)
        assert server.writes() == [], server.writes()
    assert [f.check for f in report.errors] == ["pod-volumes"], render_text(report)
    assert "the kubelet reports 52000000 bytes used in claim data" in report.errors[0].problem
    assert any("postgresql.cnpg.io" in note for note in report.notes)
    listed = {path for method, path, _ in server.requests}
    assert set(PATHS.values()) <= listed


def test_the_command_exits_non_zero_on_findings_and_speaks_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                                ) -> None:
    objects = now_objects()
    objects["schedules"][0]["spec"]["paused"] = True
    with running_fake_apiserver() as server:
        serve(server, objects)
        kubeconfig = server.kubeconfig(tmp_path)
        code = main(["audit", "--kubeconfig", str(kubeconfig), "--json", "--metrics", str(tmp_path / "m.prom")])
        assert server.writes() == []
    assert code == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["ok"] is False
    paused = next(f for f in printed["findings"] if f["check"] == "schedules")
    assert paused["subject"] == "Schedule velero/pelican-daily" and "paused" in paused["problem"]
    assert 'check="schedules",severity="error"} 1' in (tmp_path / "m.prom").read_text()


def test_the_audit_suite_reports_a_paused_schedule(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """`pytest suites -m audit --cluster-kubeconfig K` as a user runs it: one test per check, the
    paused Schedule's failing, the reports written, and nothing but reads sent."""
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT))
    user_project(pytester.path, repo=False)
    objects = real_time_objects()
    objects["schedules"][0]["spec"]["paused"] = True
    with running_fake_apiserver() as server:
        serve(server, objects)
        kubeconfig = server.kubeconfig(pytester.path)
        result = pytester.runpytest_subprocess("suites", "-m", "audit", "--cluster-kubeconfig", str(kubeconfig),
                                               "--gitops-repo", str(EXAMPLE_REPO), "-p", "no:cacheprovider")
        assert server.writes() == []
    result.assert_outcomes(passed=4, failed=1)
    result.stdout.fnmatch_lines(["*Schedule velero/pelican-daily: is paused (spec.paused: true)*"])
    summary = json.loads((pytester.path / "reports" / "summary.json").read_text())
    failed = next(r for r in summary["results"] if r["outcome"] == "failed")
    assert failed["scenario"] == "audit" and failed["check"] == "schedules" and failed["errors"] == 1
    results = [json.loads(p.read_text()) for p in (pytester.path / "reports" / "allure-results").glob("*-result.json")]
    assert any(r["name"] == "audit: " + CHECKS["schedules"] and r["status"] == "failed" for r in results)
