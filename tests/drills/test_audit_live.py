"""The read-only audit against a live cluster that plays production (issue 14).

pelican is deployed and seeded on the session's cluster, its real Schedule (from the repo under
test) applied to the drill cluster's Velero, and a Backup made from it as Velero's schedule
controller makes one (the Schedule's template, its labels, `velero.io/schedule-name`, a
timestamped name). The audit then runs for real, in process and through `restoredrill audit`:
the healthy state has no error finding; each fault, injected on the live objects and undone after,
fails naming the object: a paused Schedule, a backup older than its interval allows (RPO), a
PartiallyFailed backup, a hostPath claim and an opted-out volume, a volume missing from the last
backup, also once its pod has been replaced. A claim a second pod mounts (Velero copies it once)
is no finding. Every audit goes through a recording proxy in front of the API server, which
forwards GETs only and records every request: the proof that the audit never writes. Tests run in
file order: the last ones build on the Backups the earlier ones made.

The Schedule's name carries the run id (parallel sessions share the cluster, and other drills'
Backups carry the label of the repo's own name); its spec is the repo's. On a shared cluster the
audit also sees other sessions' objects: findings about namespaces other than pelican's are
listed, not judged. Not done live: a node without a node-agent (the node-agent DaemonSet and the
single node are shared by every session on the host; the unit tests cover the check).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import allure
import pytest

from restoredrill.audit import CHECKS, AuditFinding, AuditReport, audit_cluster, render_text
from restoredrill.catalogue import App, Catalogue
from restoredrill.cluster import ClusterHandle
from restoredrill.drill.namespace import NamespaceDrill
from restoredrill.kube import load_api_client
from restoredrill.platform import Velero
from restoredrill.platform.base import Manifest, PlatformContext
from restoredrill.platform.velero import GROUP, SCHEDULE_NAME_LABEL, VERSION
from restoredrill.timeouts import timeout
from restoredrill.waits import wait_until
from tests.conftest import EXAMPLE_REPO, PROJECT_ROOT, user_project

pytestmark = [pytest.mark.cluster, pytest.mark.platform, pytest.mark.drill]
pytest_plugins = ("pytester",)

APP = "pelican"
# Annotations a fault puts on the app's pod (removed after it).
FAILING_HOOK = {"pre.hook.backup.velero.io/command": '["/bin/sh", "-c", "echo restoredrill-audit-fault >&2; exit 3"]',
                "pre.hook.backup.velero.io/on-error": "Continue"}
EXCLUDES = "backup.velero.io/backup-volumes-excludes"


# ---------------------------------------------------------------------------------------------
# The recording proxy: what the audit sends, seen from outside it
# ---------------------------------------------------------------------------------------------


@dataclass
class RecordingProxy:
    """A plain-HTTP front of the cluster's API server on 127.0.0.1: every request is recorded;
    GETs are forwarded with the real kubeconfig's credentials, anything else is refused (405), so a
    write the audit attempted is both seen and kept from the cluster."""

    api: Any  # the real cluster's kubernetes ApiClient
    directory: Path
    requests: list[tuple[str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "recorded-kubeconfig"

    context = "recorded"

    def start(self) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                proxy.requests.append(("GET", self.path))
                status, content_type, body = proxy.forward(self.path, self.headers.get("Accept"),
                                                           self.headers.get("User-Agent"))
                self.answer(status, content_type, body)

            def refuse(self) -> None:
                proxy.requests.append((self.command, self.path))
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.answer(405, "application/json", json.dumps(
                    {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 405,
                     "message": "the audit's recording proxy forwards reads only"}).encode())

            do_POST = do_PUT = do_PATCH = do_DELETE = refuse

            def answer(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, name="audit-recording-proxy", daemon=True).start()
        url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": self.context,
            "clusters": [{"name": "recorded", "cluster": {"server": url}}],
            "users": [{"name": "recorded", "user": {"token": "not-forwarded"}}],
            "contexts": [{"name": self.context, "context": {"cluster": "recorded", "user": "recorded"}}]}))

    def forward(self, path: str, accept: str | None, user_agent: str | None) -> tuple[int, str, bytes]:
        configuration = self.api.configuration
        headers = {"Accept": accept or "application/json", "User-Agent": user_agent or "audit-recording-proxy"}
        authorization = configuration.get_api_key_with_prefix("authorization")
        if authorization:
            headers["Authorization"] = authorization
        response = self.api.rest_client.pool_manager.request("GET", configuration.host + path, headers=headers,
                                                             preload_content=False, timeout=timeout("api_request"))
        try:
            return int(response.status), str(response.headers.get("Content-Type", "application/json")), response.read()
        finally:
            response.release_conn()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        self.api.close()


def assert_reads_only(sent: Sequence[tuple[str, str]]) -> None:
    """Every request GET (a LIST is a GET of a collection), none a watch, and some were sent."""
    __tracebackhide__ = True
    assert sent, "the recording proxy saw no request: did the audit read through it?"
    others = [f"{method} {path}" for method, path in sent if method != "GET"]
    assert not others, f"the audit sent requests other than GET: {others}"
    watches = [path for _, path in sent if re.search(r"[?&]watch=(true|1)", path)]
    assert not watches, f"the audit watched: {watches}"


# ---------------------------------------------------------------------------------------------
# Production, played by the drill cluster
# ---------------------------------------------------------------------------------------------


@dataclass
class Production:
    """pelican deployed with its Schedule applied, and what this module made of Velero's objects."""

    drill: NamespaceDrill
    velero: Velero
    ctx: PlatformContext
    schedule: Manifest  # as applied
    proxy: RecordingProxy
    backups: list[str] = field(default_factory=list)  # made here, oldest first

    @property
    def name(self) -> str:
        return str(self.schedule["metadata"]["name"])

    @property
    def ns(self) -> str:
        return self.drill.ns

    def pod(self) -> str:
        (pod,) = [p for p in self.drill.app_pods() if p["metadata"]["name"].startswith("pelican-panel")]
        return str(pod["metadata"]["name"])

    def backup(self, *, expect_phase: str = "Completed") -> Manifest:
        """A Backup as the schedule controller makes one: the Schedule's template and labels plus
        velero.io/schedule-name, named `<schedule>-<UTC timestamp>` (Schedule.TimestampedName)."""
        name = f"{self.name}-{datetime.now(UTC):%Y%m%d%H%M%S}"
        while self.backups and name <= self.backups[-1]:  # two within one second: the controller waits too
            time.sleep(0.2)
            name = f"{self.name}-{datetime.now(UTC):%Y%m%d%H%M%S}"
        self.velero.create_backup_from_schedule(self.schedule, name)
        self.backups.append(name)
        backup = self.velero.wait_for_backup(name, require_completed=False)
        phase = (backup.get("status") or {}).get("phase")
        assert phase == expect_phase, f"Backup {name} ended {phase}, not {expect_phase}: {backup.get('status')}"
        return backup

    def first_backup(self) -> None:
        self.backup()

    def audit(self, *, now: datetime | None = None) -> tuple[AuditReport, list[tuple[str, str]]]:
        """The real audit through the recording proxy; the report and the requests it sent."""
        start = len(self.proxy.requests)
        report = audit_cluster(self.proxy.kubeconfig, self.proxy.context, now=now)
        sent = self.proxy.requests[start:]
        assert_reads_only(sent)
        allure.attach(render_text(report), name=f"audit at {(now or datetime.now(UTC)).isoformat()}",
                      attachment_type=allure.attachment_type.TEXT)
        return report, sent

    def ours(self, report: AuditReport) -> list[AuditFinding]:
        """Findings about the cluster as a whole or this app's namespace (not other sessions' apps)."""
        return [f for f in report.findings if f.app in (None, self.ns)]

    def remove(self) -> list[str]:
        """The Schedule, and (DeleteBackupRequest) every Backup labelled with its name: this module's,
        and any the schedule controller made for it; waited for, so nothing of it outlives the module."""
        done, started = [], time.monotonic()
        self.ctx.delete([self.schedule], wait=True)
        done.append(f"deleted Schedule {self.velero.namespace}/{self.name}")
        labelled = {str(b["metadata"]["name"]) for b in self.ctx.list_objects(
            GROUP, VERSION, "backups", self.velero.namespace, label_selector=f"{SCHEDULE_NAME_LABEL}={self.name}")}
        for name in sorted(labelled):
            self.velero.request_backup_deletion(name)
            done.append(f"requested deletion of Backup {name}")

        def gone() -> tuple[bool | None, str]:
            left = [b for b in labelled if self.velero.get_backup(b)]
            return (True if not left else None), f"left: {left}"

        if labelled:
            wait_until(f"Backups of Schedule {self.name} deleted", gone, timeout=timeout("namespace_deleted"),
                       interval=1.0)
            done.append(f"the {len(labelled)} Backups are gone, {time.monotonic() - started:.1f} s after the start")
        return done


def app_named(catalogue: Catalogue, name: str) -> App:
    return next(app for app in catalogue.apps if app.name == name)


@pytest.fixture(scope="module")
def production(catalogue: Catalogue, module_namespace_drill: Callable[[App], NamespaceDrill], velero: Velero,
               platform_context: PlatformContext, cluster: ClusterHandle, run_id: str,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Production]:
    drill = module_namespace_drill(app_named(catalogue, APP))
    drill.step("deploy", drill.deploy)
    drill.step("seed", drill.seed)
    real = drill.plan.schedule
    assert real.get("spec", {}).get("template", {}).get("includedNamespaces") == [drill.ns], drill.plan.schedule_source
    schedule = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Schedule",
                "metadata": {"name": f"{real['metadata']['name']}-{run_id[:8]}", "namespace": velero.namespace,
                             "labels": dict(real["metadata"].get("labels") or {})},
                "spec": copy.deepcopy(real["spec"])}
    proxy = RecordingProxy(api=load_api_client(cluster.kubeconfig, cluster.context),
                           directory=tmp_path_factory.mktemp("audit-proxy"))
    proxy.start()
    live = Production(drill=drill, velero=velero, ctx=platform_context, schedule=schedule, proxy=proxy)
    try:
        platform_context.apply([schedule])
        drill.step("backup", live.first_backup)
        pod = live.pod()
        velero.check_pod_volume_backups(live.backups[0], expected=[(f"{drill.ns}/{pod}", "data"),
                                                                   (f"{drill.ns}/{pod}", "logs")])
        yield live
    finally:
        try:
            for line in live.remove():
                drill.out(f"[audit-live] {line}")
        finally:
            proxy.stop()


def backup_started(live: Production, name: str) -> datetime:
    started = (live.velero.get_backup(name).get("status") or {}).get("startTimestamp")
    return datetime.fromisoformat(str(started).replace("Z", "+00:00"))


def next_two_am(after: datetime) -> datetime:
    """The next activation of "0 2 * * *" after `after` (UTC), computed apart from the audit's cron."""
    due = after.replace(hour=2, minute=0, second=0, microsecond=0)
    return due if due > after else due + timedelta(days=1)


def annotate(live: Production, pod: str, annotations: dict[str, str] | None = None,
             remove: Sequence[str] = ()) -> None:
    live.ctx.kubectl(["-n", live.ns, "annotate", "pod", pod, "--overwrite",
                      *(f"{k}={v}" for k, v in (annotations or {}).items()), *(f"{k}-" for k in remove)])


def errors_of(findings: Sequence[AuditFinding], check: str) -> list[AuditFinding]:
    return [f for f in findings if f.check == check and f.severity == "error"]


# ---------------------------------------------------------------------------------------------
# The healthy state
# ---------------------------------------------------------------------------------------------


def test_the_healthy_state_has_no_error_finding_and_the_audit_only_reads(
        production: Production, cluster: ClusterHandle, record_result: Callable[..., None]) -> None:
    started = time.perf_counter()
    direct = audit_cluster(cluster.kubeconfig, cluster.context)
    seconds = time.perf_counter() - started
    report, sent = production.audit()
    for one in (direct, report):
        errors = [f.render() for f in production.ours(one) if f.severity == "error"]
        assert not errors, "\n".join(errors) + "\n\n" + render_text(one)
    others = [f.render() for f in report.findings if f not in production.ours(report)]
    if others:
        allure.attach("\n".join(others), name="findings about other sessions' apps (not judged)",
                      attachment_type=allure.attachment_type.TEXT)
    key = f"{production.velero.namespace}/{production.name}"
    assert key in report.backup_ages and 0 <= report.backup_ages[key] < timeout("backup") + 600, report.backup_ages
    assert report.checked["schedules"] >= 1 and report.checked["pod_volume_backups"] >= 2, report.checked
    mine = [f.render() for f in report.findings if production.name in f.subject or production.name in f.problem
            or f.subject.startswith(f"Pod {production.ns}/")]
    assert not mine, "findings about the healthy Schedule, its Backup or pods:\n" + "\n".join(mine)
    # Every list the audit reads, and each node's kubelet volume stats; nothing else.
    paths = {path.split("?", 1)[0] for _, path in sent}
    assert "/apis/velero.io/v1/podvolumebackups" in paths and any(p.endswith("/proxy/stats/summary") for p in paths)
    record_result(scenario="audit-live", audit_seconds=round(seconds, 3), requests=len(sent),
                  checked=dict(report.checked), findings=len(report.findings), other_findings=len(others))
    production.drill.out(f"[audit-live] audit of the live cluster: {seconds:.3f} s, {len(sent)} GET requests, "
                         f"{len(report.findings)} findings ({len(others)} about other namespaces)")


def test_the_command_line_audit_prints_json_and_only_reads(production: Production,
                                                           record_result: Callable[..., None]) -> None:
    executable = Path(sys.executable).with_name("restoredrill")
    command = [str(executable)] if executable.exists() else [sys.executable, "-m", "restoredrill.cli"]
    start = len(production.proxy.requests)
    started = time.perf_counter()
    completed = subprocess.run([*command, "audit", "--kubeconfig", str(production.proxy.kubeconfig),
                                "--context", production.proxy.context, "--json"],
                               capture_output=True, text=True, timeout=timeout("command"), cwd=PROJECT_ROOT)
    wall = time.perf_counter() - started
    assert_reads_only(production.proxy.requests[start:])
    result = json.loads(completed.stdout)
    errors = [f for f in result["findings"] if f["severity"] == "error"]
    assert completed.returncode == (1 if errors else 0), completed.stdout + completed.stderr
    ours = [f for f in errors if f["app"] in (None, production.ns)]
    assert not ours, json.dumps(ours, indent=2)
    assert result["ok"] is (not errors) and f"{production.velero.namespace}/{production.name}" in \
        result["backup_age_seconds"]
    record_result(scenario="audit-live", cli_seconds=round(wall, 3), cli_audit_seconds=result["duration_s"])
    production.drill.out(f"[audit-live] restoredrill audit --json: {wall:.3f} s wall, {result['duration_s']} s audit")


def test_the_audit_suite_passes_on_the_healthy_cluster_and_only_reads(production: Production,
                                                                      pytester: pytest.Pytester,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """`pytest suites -m audit --cluster-kubeconfig K` as a user runs it (the existing provider, one
    test per check), through the recording proxy: its fixtures read too, and only read."""
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT))
    user_project(pytester.path, repo=False)
    failing = {f.check for f in production.audit()[0].errors}  # other sessions' apps may fail a check
    start = len(production.proxy.requests)
    result = pytester.runpytest_subprocess("suites", "-m", "audit", "--cluster-kubeconfig",
                                           str(production.proxy.kubeconfig), "--cluster-context",
                                           production.proxy.context, "--gitops-repo", str(EXAMPLE_REPO),
                                           "-p", "no:cacheprovider", timeout=timeout("command"))
    assert_reads_only(production.proxy.requests[start:])
    result.assert_outcomes(passed=len(CHECKS) - len(failing), failed=len(failing))


def test_the_bench_script_prints_the_audits_time_on_the_live_cluster(production: Production,
                                                                    cluster: ClusterHandle,
                                                                    record_result: Callable[..., None]) -> None:
    completed = subprocess.run([sys.executable, str(PROJECT_ROOT / "bench" / "audit.py"), "--kubeconfig",
                                str(cluster.kubeconfig), *(["--context", cluster.context] if cluster.context else []),
                                "--runs", "3"], capture_output=True, text=True, timeout=timeout("command"))
    assert completed.returncode == 0, completed.stdout + completed.stderr
    production.drill.out(completed.stdout.rstrip())
    total = re.search(r"total\s+median ([0-9.]+) s", completed.stdout)
    assert total, completed.stdout
    record_result(scenario="audit-live", bench_total_median_seconds=float(total.group(1)))


# ---------------------------------------------------------------------------------------------
# Faults, each injected on the live objects and undone after
# ---------------------------------------------------------------------------------------------


def test_a_paused_schedule_fails_naming_it(production: Production) -> None:
    production.ctx.merge_patch(GROUP, VERSION, "schedules", production.velero.namespace, production.name,
                               {"spec": {"paused": True}})
    try:
        report, _ = production.audit()
    finally:
        production.ctx.merge_patch(GROUP, VERSION, "schedules", production.velero.namespace, production.name,
                                   {"spec": {"paused": None}})
    (finding,) = errors_of(production.ours(report), "schedules")
    assert finding.subject == f"Schedule {production.velero.namespace}/{production.name}", finding.render()
    assert "is paused (spec.paused: true): it takes no backups" in finding.problem, finding.render()
    assert f"velero schedule unpause {production.name}" in finding.fix
    assert not errors_of(production.ours(production.audit()[0]), "schedules"), "unpaused, it is healthy again"


def test_a_backup_older_than_its_schedule_allows_fails_on_the_rpo(production: Production) -> None:
    """Objects cannot be aged: the audit is run as at later moments. The Schedule ("0 2 * * *")
    was due again at the first 02:00 UTC after the Backup started; with the default grace of 1h,
    a minute before due + grace passes and a minute after fails naming the Schedule and Backup."""
    (first,) = production.backups[:1]
    due = next_two_am(backup_started(production, first))
    before, _ = production.audit(now=due + timedelta(minutes=59))
    assert not [f for f in production.ours(before) if "RPO" in f.problem], render_text(before)
    after, _ = production.audit(now=due + timedelta(hours=1, minutes=1))
    (finding,) = [f for f in errors_of(production.ours(after), "schedules") if "RPO exceeded" in f.problem]
    assert finding.subject == f"Schedule {production.velero.namespace}/{production.name}", finding.render()
    assert f"its last Completed backup {production.velero.namespace}/{first} started" in finding.problem
    assert f"the next was due at {due.isoformat()}" in finding.problem, finding.render()
    age = after.backup_ages[f"{production.velero.namespace}/{production.name}"]
    assert age == pytest.approx((due + timedelta(hours=1, minutes=1) - backup_started(production, first))
                                .total_seconds())


def test_a_partially_failed_backup_fails_naming_it(production: Production) -> None:
    """A backup hook that fails with on-error Continue: Velero finishes the Backup PartiallyFailed.
    The Schedule's last finished backup fails the audit, its failed hook too; and the RPO stays
    counted from the last Completed one."""
    pod = production.pod()
    annotate(production, pod, FAILING_HOOK)
    try:
        backup = production.backup(expect_phase="PartiallyFailed")
    finally:
        annotate(production, pod, remove=list(FAILING_HOOK))
    name = str(backup["metadata"]["name"])
    report, _ = production.audit()
    errors = errors_of(production.ours(report), "schedules")
    text = "\n".join(f.render() for f in errors)
    assert all(f.subject == f"Schedule {production.velero.namespace}/{production.name}" for f in errors), text
    assert any(f"its last finished backup {production.velero.namespace}/{name}" in f.problem
               and "is PartiallyFailed" in f.problem for f in errors), text
    assert any(f"1 of 1 backup hooks failed in its last backup {production.velero.namespace}/{name}" in f.problem
               for f in errors), text
    later, _ = production.audit(now=next_two_am(backup_started(production, name)) + timedelta(hours=2))
    rpo = [f for f in errors_of(production.ours(later), "schedules") if "RPO exceeded" in f.problem]
    assert rpo and f"last Completed backup {production.velero.namespace}/{production.backups[0]}" in rpo[0].problem, \
        render_text(later)


def test_skipped_volumes_are_named_and_a_volume_missing_from_the_backup_fails(production: Production) -> None:
    """Volumes fs-backup does not copy, in one new Backup: the app's `logs` opted out by the pod's
    excludes annotation (a warning naming pod and volume while the pod says so), and a claim bound to
    a hostPath PV (an error: Velero skips it with a log line). A second pod mounting the app's
    `pelican-data` is copied once, from one of the two pods, and is no finding. With the annotation
    removed, the pod says `logs` should be backed up and the last backup has none of it: an error."""
    ns, pod = production.ns, production.pod()
    pv = f"restoredrill-audit-hostpath-{production.drill.run_id[:8]}"

    def busybox(name: str, claim: str, volume: str) -> Manifest:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns},
                "spec": {"containers": [{"name": "c", "image": production.drill.busybox_image,
                                         "imagePullPolicy": "IfNotPresent", "command": ["sh", "-c", "exec sleep 86400"],
                                         "volumeMounts": [{"name": volume, "mountPath": "/data"}]}],
                         "volumes": [{"name": volume, "persistentVolumeClaim": {"claimName": claim}}],
                         "terminationGracePeriodSeconds": 0}}

    objects: list[Manifest] = [
        {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv},
         "spec": {"capacity": {"storage": "64Mi"}, "accessModes": ["ReadWriteOnce"], "storageClassName": "",
                  "persistentVolumeReclaimPolicy": "Retain",
                  "hostPath": {"path": f"/tmp/{pv}", "type": "DirectoryOrCreate"},
                  "claimRef": {"namespace": ns, "name": "hostpath-data"}}},
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "hostpath-data", "namespace": ns},
         "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv,
                  "resources": {"requests": {"storage": "64Mi"}}}},
        busybox("hostpath-user", "hostpath-data", "data"),
        # ReadWriteOnce is one node, not one pod: both mount pelican-data on the single node.
        busybox("data-sharer", "pelican-data", "shared"),
    ]
    production.ctx.apply(objects)
    try:
        production.ctx.wait_for_pods_ready(namespace=ns, selector="", what="pods of the skipped-volume fault",
                                           expected=3, timeout_name="pod_ready")
        annotate(production, pod, {EXCLUDES: "logs"})
        try:
            name = str(production.backup()["metadata"]["name"])
            report, _ = production.audit()
        finally:
            annotate(production, pod, remove=[EXCLUDES])
        # Velero really skipped logs and the hostPath claim, and copied pelican-data once.
        copied = production.velero.pod_volume_backups(name)
        assert [(r.volume, r.phase) for r in copied] in ([("data", "Completed")], [("shared", "Completed")]), copied
        assert copied[0].pod in (f"{ns}/{pod}", f"{ns}/data-sharer"), copied
        backup = f"Backup {production.velero.namespace}/{name}"
        (host_path,) = errors_of(production.ours(report), "pod-volumes")
        assert host_path.subject == backup and "volume 'data' (claim hostpath-data) of pod " \
            f"{ns}/hostpath-user is not backed up: claim hostpath-data is bound to a hostPath PersistentVolume" \
            in host_path.problem, host_path.render()
        (opted_out,) = [f for f in production.ours(report) if f.check == "pod-volumes" and f.severity == "warning"]
        assert opted_out.subject == f"Pod {ns}/{pod}" and f"volumes logs are left out of {backup} by its {EXCLUDES}" \
            in opted_out.problem, opted_out.render()
        assert not [f for f in report.findings if "pelican-data" in f.problem], render_text(report)
        unannotated, _ = production.audit()
        lost = f"volume 'logs' (claim pelican-logs) of pod {ns}/{pod} has no PodVolumeBackup"
        missing = [f for f in errors_of(production.ours(unannotated), "pod-volumes") if lost in f.problem]
        assert missing and missing[0].subject == backup, render_text(unannotated)
    finally:
        production.ctx.delete(list(reversed(objects)), wait=True)
        if production.ctx.cluster.provider == "local":
            shutil.rmtree(f"/tmp/{pv}", ignore_errors=True)  # the kubelet made it (DirectoryOrCreate) on this host


def test_a_pod_restarted_after_the_backup_is_still_judged_by_its_claims(production: Production) -> None:
    """The last Backup lacks `logs` (the test above). The app's pod is replaced (a rollout, a node
    drain): the new pod is not in that backup, its claims are, and `logs` is still named missing;
    `pelican-data`, whose PodVolumeBackup names a pod that no longer exists, is found by its claim."""
    last = production.backups[-1]
    assert not [r for r in production.velero.pod_volume_backups(last) if r.volume == "logs"], "precondition"
    old = production.pod()
    production.ctx.kubectl(["-n", production.ns, "delete", "pod", old, "--grace-period=1", "--wait=true"])
    production.ctx.wait_for_pods_ready(namespace=production.ns, selector="app.kubernetes.io/component=panel",
                                       what="pelican's new pod", expected=1, timeout_name="pod_ready")
    new = production.pod()
    assert new != old
    report, _ = production.audit()
    errors = errors_of(production.ours(report), "pod-volumes")
    assert [f.subject for f in errors] == [f"Backup {production.velero.namespace}/{last}"], render_text(report)
    assert f"volume 'logs' (claim pelican-logs) of pod {production.ns}/{new} (started after the backup: looked up " \
           "by its claim's uid) has no PodVolumeBackup" in errors[0].problem, errors[0].render()
