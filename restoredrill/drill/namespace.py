"""The namespace drill: the runbook's "Restoring an Application", end to end, on evidence.

deploy (Flux, from the repo) -> seed files and rows -> take inventories -> back up from the app's
own Schedule template -> write sentinels -> suspend the app's Kustomizations -> delete the
namespace and wait until it is gone -> restore (includedNamespaces, restorePVs) -> wait for every
PodVolumeRestore -> verify -> resume Flux -> prove adoption.

Verification gathers every problem before failing, so one report names all of them: the
PodVolumeBackups/Restores one for one and Completed, every file equal, the sentinels absent,
rows and their digest equal, claims Bound, pods Ready, every object Flux had applied present,
no restore errors and warnings only from the allow-list; after resume, the Kustomization Ready at
the source's revision and every object it manages with the UID the restore gave it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, cast

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from restoredrill.cluster.namespaces import delete_owned_namespace
from restoredrill.drill import data
from restoredrill.drill.checks import (
    Check,
    CheckResult,
    CheckRunError,
    SqlCheck,
    claims_of,
    file_size_command,
    parse_file_size,
    parse_wget_status,
    resolve_database,
    run_checks,
    single_value,
    wget_status_command,
)
from restoredrill.drill.checks import problems as check_failures
from restoredrill.drill.gitops import GitOpsDeployment
from restoredrill.drill.helmreleases import (
    HELM_RELEASES_RESOURCE,
    adoption_problems,
    latest_revision,
    managed_release,
    manifest_objects,
    release_name,
    storage_namespace,
)
from restoredrill.drill.plan import AppPlan
from restoredrill.drill.snapshot import repository_access, verify_against_snapshots, volume_snapshots
from restoredrill.errors import CommandError, RestoreDrillError
from restoredrill.images.gitserver import GIT_SERVER_PATH
from restoredrill.platform import CloudNativePG, Flux, Velero
from restoredrill.platform.base import PlatformContext, pod_is_ready
from restoredrill.platform.flux import GIT_SERVER, KUSTOMIZE_GROUP, SOURCE_GROUP, SOURCE_VERSION
from restoredrill.platform.velero import GROUP, VERSION, restore_failure
from restoredrill.podvolumes import compare_pod_volumes, compare_restored_bytes
from restoredrill.timeline import drill_timeline
from restoredrill.velero_semantics import HookRun, backup_hook_runs, hook_selects_pod
from restoredrill.verify import (
    VELERO_DONE_DIR,
    Entry,
    compare_drift,
    compare_uids,
    compare_volume,
    content_digest,
    diff_volume,
    fs_backup_volumes,
    parse_inventory,
    unexpected_warnings,
)
from restoredrill.waits import wait_until

# Restore warnings a healthy namespace restore produces (substring match); anything else fails.
DEFAULT_WARNING_ALLOW_LIST = (
    # Kubernetes creates these in every new namespace before Velero gets to them.
    "could not restore, ConfigMap:kube-root-ca.crt already exists",
    "could not restore, ServiceAccount:default already exists",
)
INSPECTOR = "restoredrill-inspector"


class DrillFailed(RestoreDrillError, AssertionError):
    """A drill whose evidence does not prove the restore; `problems` names each finding.

    An AssertionError too, so reports count it as a failed check, not a broken test."""

    def __init__(self, app: str, step: str, problems: Sequence[str], remedy: str | None = None) -> None:
        self.app, self.step, self.problems = app, step, list(problems)
        listing = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{app}: {step} failed:\n{listing}", remedy=remedy)


class RunbookStepWarning(UserWarning):
    """A drill passed only because it did a runbook step for the operator (a manual step a real
    restore needs too): the outcome is "passed with runbook steps", never a plain pass."""


PASSED_WITH_RUNBOOK_STEPS = "passed-with-runbook-steps"


@dataclass
class DrillRecord:
    """What the drill did and found: summary.json's facts and the report's evidence."""

    app: str
    namespace: str
    scenario: str = "namespace-restore"
    backup: str = ""
    backup_completed_at: str = ""
    backup_age_s: float | None = None
    restore: str = ""
    rto_s: float | None = None
    pod_volume_backups: int = 0
    pod_volume_restores: int = 0
    # Volumes Velero restored and the drill compared; volumes that survive without a restore (an NFS
    # library) are verified intact but counted apart: they prove nothing about the backup.
    volumes_verified: int = 0
    volumes_survived: int = 0
    files_verified: int = 0
    rows_verified: int = 0
    hooks: dict[str, Any] = field(default_factory=dict)
    steps: list[tuple[str, float]] = field(default_factory=list)
    manual_steps: list[str] = field(default_factory=list)
    standins: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    backup_warnings: list[str] = field(default_factory=list)
    snapshot_check: dict[str, Any] | None = None
    timeline: dict[str, Any] | None = None  # restoredrill.timeline: the backup's and the restore's parts
    notes: list[str] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)  # the drill config's checks, each a CheckResult

    def facts(self) -> dict[str, Any]:
        return {
            "app": self.app, "scenario": self.scenario, "namespace": self.namespace, "backup": self.backup,
            "backup_age_s": self.backup_age_s, "restore": self.restore, "rto_s": self.rto_s,
            "pod_volume_backups": self.pod_volume_backups, "pod_volume_restores": self.pod_volume_restores,
            "volumes_verified": self.volumes_verified, "volumes_survived": self.volumes_survived,
            "files_verified": self.files_verified,
            "rows_verified": self.rows_verified, "hooks": self.hooks or None,
            "steps": {name: seconds for name, seconds in self.steps},
            "manual_steps": self.manual_steps or None, "restore_warnings": self.warnings or None,
            "backup_warnings": self.backup_warnings or None,
            "notes": self.notes or None, "stand_ins": self.standins or None, "checks": self.checks or None,
            "snapshot_check": self.snapshot_check, "timeline": self.timeline,
            "rto_objects_s": ((self.timeline or {}).get("restore") or {}).get("rto_s"),
        }

    def runbook_steps_warning(self) -> RunbookStepWarning | None:
        """The warning a passing drill that needed runbook steps done for it must raise."""
        if not self.manual_steps:
            return None
        steps = "\n".join(f"  - {step}" for step in self.manual_steps)
        return RunbookStepWarning(f"{self.app}: {PASSED_WITH_RUNBOOK_STEPS}: the restore needed these steps, which the "
                                  f"drill did and a real restore needs too:\n{steps}")


@dataclass
class Snapshot:
    """The app's state recorded at backup time."""

    inventories: dict[str, dict[str, Entry]] = field(default_factory=dict)  # claim -> entries
    kept: dict[str, dict[str, Entry]] = field(default_factory=dict)  # claims not restored (NFS)
    tables: dict[str, data.TableCheck] = field(default_factory=dict)  # "mysql:workload" / "cnpg:cluster"
    objects: list[tuple[str, str, str, str]] = field(default_factory=list)  # (version, group, kind, name)
    # "HelmRelease NS/NAME" -> (release, storage namespace, revision) helm-controller managed at backup time.
    helm_releases: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    pod_volumes: list[tuple[str, str]] = field(default_factory=list)  # (namespace/pod, volume)
    # (namespace/pod, volume) -> the claim it mounts: what each PodVolumeBackup's snapshot holds.
    pod_volume_claims: dict[tuple[str, str], str] = field(default_factory=dict)


def pod_volume_claims(namespace: str, pods: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], str]:
    """(namespace/pod, volume) -> the claim it mounts: what each PodVolumeBackup's snapshot holds."""
    return {(f"{namespace}/{pod['metadata']['name']}", str(volume["name"])):
            str(volume["persistentVolumeClaim"]["claimName"])
            for pod in pods for volume in (pod.get("spec") or {}).get("volumes") or []
            if volume.get("persistentVolumeClaim")}


def describe_hook_runs(runs: Sequence[HookRun]) -> str:
    """`pre hook 'freeze' in db/db-0, post annotation hook in db/db-0`, for a problem's text."""
    return ", ".join(f"{run.phase} {'annotation hook' if run.source == 'annotation' else f'hook {run.source!r}'} "
                     f"in {run.pod}" for run in runs)


def _iso(moment: str) -> datetime:
    return datetime.strptime(moment, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


@dataclass(frozen=True)
class RestoredAppChecks:
    """The namespace drill's CheckRunner: SQL through the app's database pods, HTTP and files from
    the inspector pod `pod` (in the app's namespace, mounting `mounted`); None: it has none, `why`."""

    drill: NamespaceDrill
    pod: str | None
    mounted: tuple[str, ...]
    why: str = ""

    def sql(self, database: str | None, query: str) -> str:
        plan = self.drill.plan
        target = resolve_database(database, cnpg=plan.cnpg_clusters, mysql=[db.workload for db in plan.mysql])
        try:
            output = (self.drill.psql(target.name, query) if target.kind == "cnpg"
                      else self.drill.mysql(target.name, query))
        except DrillFailed as error:  # mysql() fails the drill; here it fails the check
            raise CheckRunError("; ".join(error.problems)) from error
        return single_value(output, query=query)

    def http_status(self, url: str) -> int:
        seconds = int(self.drill.ctx.timeout("command"))
        try:
            output = self.drill.ctx.kubectl(["-n", self.drill.ns, "exec", self.inspector(), "--",
                                             *wget_status_command(url, seconds=seconds)], timeout=seconds + 15)
        except CommandError as error:  # busybox wget exits 1 on a 4xx/5xx, having printed it
            return parse_wget_status(error.output, url=url, returncode=error.returncode)
        return parse_wget_status(output, url=url)

    def file_size(self, claim: str, path: str) -> int | None:
        if claim not in self.mounted:
            raise CheckRunError(f"there is no PersistentVolumeClaim {claim} in {self.drill.ns} after the restore",
                                remedy="name a claim of the app in file: CLAIM:PATH")
        output = self.drill.ctx.kubectl(["-n", self.drill.ns, "exec", self.inspector(), "--",
                                         *file_size_command(claim, path)])
        return parse_file_size(output, claim=claim, path=path)

    def inspector(self) -> str:
        if self.pod is None:
            raise CheckRunError(self.why or "no inspector pod to run the check from")
        return self.pod


class NamespaceDrill:
    # A restored object Flux changes on resume is drift from Git: a failure when the drill took the
    # backup from the repo's own state minutes earlier; a note for last night's backup (Git moved on).
    drift_fails = True

    def __init__(self, *, plan: AppPlan, ctx: PlatformContext, velero: Velero, flux: Flux, cnpg: CloudNativePG,
                 gitops: GitOpsDeployment, run_id: str, busybox_image: str,
                 warning_allow_list: Iterable[str] = DEFAULT_WARNING_ALLOW_LIST,
                 checks: Sequence[Check] = (), restore_status: Sequence[str] = (),
                 out: Callable[[str], None] = print) -> None:
        self.plan, self.ctx, self.velero, self.flux, self.cnpg, self.gitops = plan, ctx, velero, flux, cnpg, gitops
        self.run_id, self.busybox_image, self.out = run_id, busybox_image, out
        self.allow = list(warning_allow_list)
        self.checks = tuple(checks)  # the drill config's apps.<app>.checks
        # Resources whose status the restore brings back (drill config restore_status).
        self.restore_status = tuple(restore_status)
        self.ns = plan.namespace
        self.record = DrillRecord(app=plan.app, namespace=plan.namespace)
        self.snapshot = Snapshot()
        self.step_name = "start"
        self.created_namespace = False  # only then may clean-up delete it
        self.tag = uuid.uuid4().hex[:4]  # several drills of one app in a run get distinct Backups/Restores

    # ---- the whole drill --------------------------------------------------------------------
    def run(self) -> DrillRecord:
        self.step("deploy", self.deploy)
        self.step("seed", self.seed)
        self.step("record", self.take_snapshot)
        self.step("backup", self.backup)
        self.step("sentinel", self.write_sentinels)
        self.step("suspend", self.suspend)
        self.step("destroy", self.destroy)
        self.step("restore", self.restore)
        self.step("verify", self.verify)
        self.step("adopt", self.resume_and_adopt)
        return self.record

    # Entered around each step as step_observer(app, step): fixtures/reporting.py makes it an Allure step
    # (the step's duration and outcome in the report), so the drill itself knows nothing of reports. A
    # staticmethod, so that instances call it unbound.
    step_observer: ClassVar[staticmethod[[str | None, str], AbstractContextManager[object]] | None] = None

    def step(self, name: str, action: Callable[[], None]) -> None:
        self.step_name = name
        self.out(f"[drill {self.plan.app}] {name} ...")
        started = time.monotonic()
        try:
            with self.step_observer(self.plan.app, name) if self.step_observer else nullcontext():
                action()
        finally:  # what the step stood in for (a dependency at deploy, say) is disclosed even when it fails
            if self.gitops is not None:  # None only where a drill is made to test its report
                self.record.standins += [note for note in self.gitops.app_standins(self.plan.kustomizations)
                                         if note not in self.record.standins]
        seconds = round(time.monotonic() - started, 1)
        self.record.steps.append((name, seconds))
        self.out(f"[drill {self.plan.app}] {name} done in {seconds} s")

    def fail(self, problems: Sequence[str], remedy: str | None = None) -> None:
        if problems:
            raise DrillFailed(self.plan.app, self.step_name, problems, remedy=remedy)

    # ---- deploy and seed -------------------------------------------------------------------
    def deploy(self) -> None:
        self.gitops.create_namespace(self.ns, kustomizations=self.plan.kustomization_refs)
        self.created_namespace = True
        for pv in self.released_volumes():
            self.release_volume(pv, manual=False)
            self.record.notes.append(f"PersistentVolume {pv} was Released, still bound to a claim of an earlier "
                                     f"{self.ns} namespace; its claimRef was removed so the app's claim can bind")
        self.gitops.deploy(self.plan.kustomizations)
        self.wait_healthy()

    def wait_healthy(self) -> None:
        """Every pod of the namespace Ready (a workload with replicas has pods), every CNPG Cluster healthy."""
        for cluster in self.plan.cnpg_clusters:
            self.cnpg.wait_for_cluster_healthy(name=cluster, namespace=self.ns)
        workloads = self.ctx.as_manifests([*self.ctx.apps.list_namespaced_deployment(self.ns).items,
                                *self.ctx.apps.list_namespaced_stateful_set(self.ns).items])
        expected = sum(int(w["spec"].get("replicas", 1)) for w in workloads) + len(self.plan.cnpg_clusters)
        self.ctx.wait_for_pods_ready(namespace=self.ns, selector=f"{data.INSPECTOR_LABEL}!=inspector",
                                     what=f"{self.plan.app} pods", expected=expected, timeout_name="pod_ready")
        pending = [f"PersistentVolumeClaim {c['metadata']['name']} is {c.get('status', {}).get('phase')}"
                   for c in self.claims() if c.get("status", {}).get("phase") != "Bound"]
        self.fail(pending)

    def claims(self) -> list[dict[str, Any]]:
        return self.ctx.as_manifests(self.ctx.core.list_namespaced_persistent_volume_claim(self.ns).items)

    def claim_groups(self) -> tuple[list[str], list[str]]:
        """(file claims, kept claims), each sorted. File claims: the bytes the drill seeds and compares
        (not a database's, not excluded). Kept claims: mounted only through volumes the pods opt out of
        fs-backup (the NFS library), so they must survive on their own."""
        mounted: dict[str, bool] = {}  # claim -> copied by fs-backup through some pod volume
        for pod in self.app_pods():
            copied = set(fs_backup_volumes(pod, default_volumes_to_fs_backup=self.fs_backup_default()))
            for volume in (pod.get("spec") or {}).get("volumes") or []:
                claim = (volume.get("persistentVolumeClaim") or {}).get("claimName")
                if claim:
                    mounted[claim] = mounted.get(claim, False) or volume["name"] in copied
        kept = sorted(claim for claim, copied in mounted.items() if not copied)
        live = sorted(str(c["metadata"]["name"]) for c in self.claims()
                      if not (c["metadata"].get("labels") or {}).get("cnpg.io/cluster"))
        return [c for c in live if c not in self.plan.database_claims and c not in kept], kept

    def fs_backup_default(self) -> bool:
        template = self.plan.schedule.get("spec", {}).get("template", {})
        value = template.get("defaultVolumesToFsBackup")
        return bool(value) if value is not None else bool(self.gitops.catalogue.velero_defaults
                                                          .default_volumes_to_fs_backup)

    def app_pods(self) -> list[dict[str, Any]]:
        pods = self.ctx.core.list_namespaced_pod(self.ns, label_selector=f"{data.INSPECTOR_LABEL}!=inspector").items
        return [p for p in self.ctx.as_manifests(pods) if (p.get("status") or {}).get("phase") == "Running"]

    def seed(self) -> None:
        files, kept = self.claim_groups()
        claims = files + kept
        if claims:
            self.with_inspector(claims, lambda pod: [self.seed_claim(pod, claim) or claim for claim in claims])
        for db in self.plan.mysql:
            self.mysql(db.workload, data.MYSQL_SEED)
        for cluster in self.plan.cnpg_clusters:
            self.psql(cluster, data.POSTGRES_SEED)

    def seed_claim(self, pod: str, claim: str) -> bytes:
        archive = data.seed_archive(app=self.plan.app, claim=claim)
        return self.ctx.kubectl_bytes(["-n", self.ns, "exec", "-i", pod, "--", "sh", "-c",
                                "rm -rf /tmp/rd && mkdir -p /tmp/rd && tar -x -f - -C /tmp/rd && "
                                f"sh /tmp/rd/seed.sh {data.mount_path(claim)} {self.plan.app}/{claim} && "
                                "rm -rf /tmp/rd"],
                               input=archive, timeout=self.ctx.timeout("command"))

    def with_inspector(self, claims: Sequence[str], action: Callable[[str], Any]) -> Any:
        """Run `action(pod)` with an inspector pod mounting `claims`, deleted afterwards."""
        pod = data.inspector_pod(name=INSPECTOR, namespace=self.ns, image=self.busybox_image, claims=claims)
        self.ctx.apply([pod])
        try:
            self.ctx.wait_for_pods_ready(namespace=self.ns, selector=f"{data.INSPECTOR_LABEL}=inspector",
                                         what="inspector pod", expected=1, timeout_name="pod_ready")
            return action(INSPECTOR)
        finally:
            self.delete_inspector()

    def delete_inspector(self) -> None:
        try:
            self.ctx.core.delete_namespaced_pod(INSPECTOR, self.ns, grace_period_seconds=0)
        except ApiException as error:
            if error.status != 404:
                raise

        def gone() -> tuple[bool | None, str]:
            try:
                self.ctx.core.read_namespaced_pod(INSPECTOR, self.ns)
            except ApiException as error:
                if error.status == 404:
                    return True, "gone"
                raise
            return None, "still there"

        wait_until(f"inspector pod in {self.ns} to go", gone, timeout=self.ctx.timeout("pod_ready"), interval=1.0)

    def inventory(self, pod: str, claim: str) -> dict[str, Entry]:
        text = self.ctx.kubectl(["-n", self.ns, "exec", pod, "--", "sh", "-c", data.INVENTORY_SCRIPT, "inventory",
                                 data.mount_path(claim)], timeout=self.ctx.timeout("command") * 3)
        return parse_inventory(text)

    # ---- databases -------------------------------------------------------------------------
    def mysql_pod(self, workload: str) -> tuple[str, str]:
        db = next(d for d in self.plan.mysql if d.workload == workload)
        selector = ",".join(f"{k}={v}" for k, v in sorted(db.selector.items()))
        pods = [p for p in self.ctx.core.list_namespaced_pod(self.ns, label_selector=selector).items
                if p.status and p.status.phase == "Running" and pod_is_ready(p)]
        if not pods:
            raise DrillFailed(self.plan.app, self.step_name, [f"no Ready pod of database {workload} ({selector})"])
        return str(self.ctx.as_manifests(pods)[0]["metadata"]["name"]), db.container

    def mysql(self, workload: str, sql: str) -> str:
        db = next(d for d in self.plan.mysql if d.workload == workload)
        pod, container = self.mysql_pod(workload)

        def attempt() -> tuple[str | None, str]:
            try:
                return self.ctx.kubectl(["-n", self.ns, "exec", pod, "-c", container, "--",
                                         *data.mysql_command(sql, database=db.database)]), "ok"
            except CommandError as error:
                if "Can't connect" in error.output or "ERROR 2002" in error.output or "ERROR 2013" in error.output:
                    return None, error.output.strip()[-300:]  # still starting after the pod is Ready
                raise DrillFailed(self.plan.app, self.step_name,
                                  [f"SQL on {self.ns}/{pod} failed: {error.output.strip()[-400:]}"]) from error

        return wait_until(f"MariaDB in {self.ns}/{pod} to answer", attempt, timeout=self.ctx.timeout("database_ready"),
                          interval=3.0)

    def psql(self, cluster: str, sql: str) -> str:
        return self.cnpg.psql(cluster=cluster, namespace=self.ns, sql=sql,
                              database=self.plan.cnpg_databases.get(cluster, "app"))

    def tables(self) -> dict[str, data.TableCheck]:
        checks = {f"mysql:{db.workload}": data.TableCheck.parse(self.mysql(db.workload, data.MYSQL_CHECK))
                  for db in self.plan.mysql}
        checks |= {f"cnpg:{cluster}": data.TableCheck.parse(self.psql(cluster, data.POSTGRES_CHECK))
                   for cluster in self.plan.cnpg_clusters}
        return checks

    # ---- backup ----------------------------------------------------------------------------
    def take_snapshot(self) -> None:
        files, kept = self.claim_groups()
        if files or kept:
            def read(pod: str) -> None:
                self.snapshot.inventories = {claim: self.inventory(pod, claim) for claim in files}
                self.snapshot.kept = {claim: self.inventory(pod, claim) for claim in kept}

            self.with_inspector(files + kept, read)
        self.snapshot.tables = self.tables()
        self.snapshot.objects = self.flux_objects()
        self.snapshot.helm_releases, helm_objects = self.helm_releases()
        self.snapshot.objects = sorted({*self.snapshot.objects, *helm_objects})
        default = self.fs_backup_default()
        pods = self.app_pods()
        self.snapshot.pod_volumes = sorted(
            (f"{self.ns}/{pod['metadata']['name']}", volume) for pod in pods
            for volume in fs_backup_volumes(pod, default_volumes_to_fs_backup=default))
        self.snapshot.pod_volume_claims = pod_volume_claims(self.ns, pods)
        self.fail(self.evidence_problems())

    def evidence_problems(self) -> list[str]:
        """A drill with nothing to compare would pass on nothing: every declared claim must be live and
        accounted for, and there must be volumes or rows and Flux-applied objects to check."""
        live = {str(c["metadata"]["name"]) for c in self.claims()}
        problems = [f"PersistentVolumeClaim {self.ns}/{claim}, declared in the repo, does not exist in the cluster "
                    "(is the app deployed into another namespace?)" for claim in self.plan.claims if claim not in live]
        accounted = {*self.snapshot.inventories, *self.snapshot.kept, *self.plan.database_claims}
        problems += [f"PersistentVolumeClaim {self.ns}/{claim} is neither compared file by file, nor a database's, "
                     "nor excluded from the backup"
                     for claim in self.plan.claims if claim in live and claim not in accounted]
        if self.plan.claims and not self.snapshot.pod_volumes:
            problems.append(self.no_volume_data())
        if not (self.snapshot.inventories or self.snapshot.kept or self.snapshot.tables):
            problems.append(f"nothing in {self.ns} to verify: no volume inventories and no database tables")
        if not self.snapshot.objects:
            problems.append(f"the app's Kustomizations applied no object in {self.ns}")
        return problems

    def no_volume_data(self) -> str:
        """Why the backup would hold none of the app's volume data, naming the Schedule and the fix."""
        mounted = sorted(set(self.snapshot.pod_volume_claims.values()) & set(self.plan.claims))
        schedule = self.plan.schedule.get("metadata", {}).get("name")
        if not mounted:
            return f"no running pod of {self.ns} mounts a volume fs-backup would copy: the backup would hold no data"
        server = self.gitops.catalogue.velero_defaults
        if self.fs_backup_default():
            where = ("its template" if self.plan.schedule.get("spec", {}).get("template", {})
                     .get("defaultVolumesToFsBackup") is not None else "the server's default")
            return (f"the app's pods mount {', '.join(mounted)}, and Schedule {schedule} ({self.plan.schedule_source}) "
                    f"copies every pod volume by default ({where}), but each pod that mounts them excludes them in "
                    "backup.velero.io/backup-volumes-excludes, so the backup holds none of their data. Fix: take "
                    "the app's data volumes out of that annotation (it is for volumes kept outside the backup, "
                    "such as an NFS library)")
        agent = "" if server.node_agent else (
            "; the repo's Velero deploys no node-agent (deployNodeAgent: false), so no fs-backup runs in production "
            "either")
        return (f"the app's pods mount {', '.join(mounted)}, but Velero's fs-backup would copy none of them: Schedule "
                f"{schedule} ({self.plan.schedule_source}) sets no defaultVolumesToFsBackup, the server does not "
                "default to it, and no pod names them in backup.velero.io/backup-volumes, so the backup holds none "
                f"of their data{agent}. Fix: set defaultVolumesToFsBackup: true in the Schedule's template (with the "
                "node-agent deployed), or annotate the pods")

    def flux_objects(self) -> list[tuple[str, str, str, str]]:
        """The namespaced objects the app's Kustomizations applied: (version, group, kind, name)."""
        objects = []
        for home, name in self.plan.kustomization_refs:
            status = (self.flux.in_namespace(home).get_kustomization(name) or {}).get("status") or {}
            for entry in (status.get("inventory") or {}).get("entries") or []:
                namespace, object_name, group, kind = str(entry["id"]).split("_", 3)
                if namespace == self.ns:
                    objects.append((str(entry.get("v", "v1")), group, kind, object_name))
        return sorted(set(objects))

    def helm_release_objects(self) -> list[tuple[str, dict[str, Any]]]:
        """("HelmRelease NS/NAME", object) of the app's HelmReleases in its namespace."""
        found = []
        for home, name in self.plan.kustomization_refs:
            for namespace, release in self.flux.in_namespace(home).helm_releases(name):
                if namespace == self.ns:
                    found.append((f"HelmRelease {namespace}/{release}", self.flux.get_helm_release(namespace, release)
                                  or {}))
        return found

    def release_revision(self, release: str, namespace: str) -> Any:
        secrets = self.ctx.core.list_namespaced_secret(namespace, label_selector=f"owner=helm,name={release}").items
        return latest_revision(self.ctx.as_manifests(secrets), release=release)

    def helm_releases(self) -> tuple[dict[str, tuple[str, str, int]], list[tuple[str, str, str, str]]]:
        """The Helm release revision each HelmRelease manages, and the objects that revision applied in
        the namespace (they are Flux's too: the adoption check covers them)."""
        releases: dict[str, tuple[str, str, int]] = {}
        objects: list[tuple[str, str, str, str]] = []
        for label, helm_release in self.helm_release_objects():
            managed = managed_release(helm_release)
            name, namespace = managed[:2] if managed else (release_name(helm_release), storage_namespace(helm_release))
            revision = self.release_revision(name, namespace)
            if revision is None:
                self.fail([f"{label}: no Helm release {namespace}/{name} in storage before the backup"])
            releases[label] = (name, namespace, revision.version)
            objects += manifest_objects(revision.manifest, namespace=self.ns)
        return releases, objects

    def helm_adoption_problems(self) -> list[str]:
        """After Flux's reconcile: every HelmRelease Ready, its release at the revision the backup held."""
        problems = []
        for label, (release, namespace, before) in self.snapshot.helm_releases.items():
            name = label.rsplit("/", 1)[1]
            helm_release = self.flux.wait_for_helm_release_ready(self.ns, name)
            after = self.release_revision(release, namespace)
            problems += adoption_problems(helm_release=label, before=before, after=after.version if after else None,
                                          status=helm_release.get("status") or {},
                                          status_restored=HELM_RELEASES_RESOURCE in self.restore_status
                                          or "*" in self.restore_status)
        return problems

    def backup(self) -> None:
        schedule = self.plan.schedule
        name = f"{schedule['metadata']['name']}-{self.run_id}-{self.tag}"[:63].rstrip("-")
        self.record.backup = name
        self.record.notes += [note for note in self.plan.notes if note not in self.record.notes]
        self.velero.create_backup_from_schedule(schedule, name)
        backup = self.velero.wait_for_backup(name, require_completed=False)
        status = backup.get("status") or {}
        self.record.backup_completed_at = str(status.get("completionTimestamp", ""))
        self.record.hooks = dict(status.get("hookStatus") or {})
        problems = []
        if status.get("phase") != "Completed":
            problems.append(f"Backup {name} ended {status.get('phase')}: {status.get('failureReason', '')} "
                            f"(errors {status.get('errors', 0)}, warnings {status.get('warnings', 0)}; "
                            f"validation errors: {status.get('validationErrors') or 'none'})")
        records = self.velero.pod_volume_backups(name)
        self.record.pod_volume_backups = len(records)
        problems += compare_pod_volumes(operation="backup", expected=self.snapshot.pod_volumes, records=records)
        problems += self.hook_problems(status, self.app_pods())
        problems += self.backup_result_problems(name)
        self.fail(problems, remedy=f"`velero backup describe {name} --details` and `velero backup logs {name}`")

    def hook_problems(self, status: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> list[str]:
        """Every backup hook Velero should have run (the Schedule's, and the pods' own annotation hooks,
        which replace the Schedule's for their phase) attempted once per pod, none failed: else what
        the hooks freeze was copied unfrozen and the backup is not consistent."""
        resources = [r for r in ((self.plan.schedule.get("spec") or {}).get("template") or {})
                     .get("hooks", {}).get("resources") or [] if isinstance(r, dict)]
        runs = backup_hook_runs(resources, pods)
        hooks = status.get("hookStatus") or {}
        attempted, failed = int(hooks.get("hooksAttempted", 0)), int(hooks.get("hooksFailed", 0))
        problems = [f"backup hook {r.get('name')!r} of the Schedule selects no running pod: it never ran, so what it "
                    "should freeze was copied unfrozen (does its labelSelector match the database pod?)"
                    for r in resources
                    if (r.get("pre") or r.get("post")) and not any(hook_selects_pod(r, p) for p in pods)]
        if not runs and not resources:
            return problems
        declared = sum(1 for r in resources for phase in ("pre", "post") for hook in r.get(phase) or []
                       if isinstance(hook, dict) and hook.get("exec"))
        if not runs and declared:
            problems.append(f"the Schedule declares {declared} backup hooks, none of which runs in a pod of the "
                            f"backup, and the Backup attempted {attempted}: the database was not frozen for the copy, "
                            "so the backup is not consistent (do the hooks' labelSelector and container match the "
                            "database pod?)")
        elif attempted != len(runs):
            problems.append(f"{len(runs)} backup hook runs were due ({describe_hook_runs(runs) or 'none'}) and the "
                            f"Backup attempted {attempted}: the database was not frozen for the copy, so the backup is "
                            "not consistent (do the hooks' labelSelector and container match the database pod?)")
        if failed:
            problems.append(f"{failed} of {attempted} backup hooks failed ({describe_hook_runs(runs)}): the backup is "
                            "not consistent (the Backup's errors and `velero backup logs` name the command)")
        return problems

    def write_sentinels(self) -> None:
        """Change the live data after the backup: none of it may come back."""
        files, _ = self.claim_groups()
        if files:
            self.with_inspector(files, lambda pod: [self.ctx.kubectl(
                ["-n", self.ns, "exec", pod, "--", "sh", "-c",
                 f"echo written-after-backup > {data.mount_path(claim)}/{data.SENTINEL}"]) for claim in files])
        for db in self.plan.mysql:
            self.mysql(db.workload, data.MYSQL_SENTINEL)
        for cluster in self.plan.cnpg_clusters:
            self.psql(cluster, data.POSTGRES_SENTINEL)

    # ---- destroy and restore ---------------------------------------------------------------
    def suspend(self) -> None:
        """`flux suspend kustomization`, then wait until no reconcile is still running: one already in
        flight could otherwise apply objects after the namespace is deleted."""
        for home, name in self.plan.kustomization_refs:
            self.flux.in_namespace(home).suspend(name)
        self.fail([f"Kustomization {h}/{n} is not suspended" for h, n in self.plan.kustomization_refs
                   if not self.flux.in_namespace(h).is_suspended(n)])
        for home, name in self.plan.kustomization_refs:
            def idle(name: str = name, home: str = home) -> tuple[bool | None, str]:
                conditions = ((self.flux.in_namespace(home).get_kustomization(name) or {}).get("status") or {}).get(
                    "conditions") or []
                busy = [c for c in conditions if c.get("type") == "Reconciling" and c.get("status") == "True"]
                return (None, f"reconciling: {busy[0].get('message')}") if busy else (True, "idle")

            wait_until(f"Kustomization {name} to finish its reconcile before the namespace goes", idle,
                       timeout=self.ctx.timeout("flux_reconcile"), interval=1.0)

    def destroy(self) -> None:
        # Only PVs whose data Velero does not copy (the NFS library) are kept for the restored claim;
        # a freed PV of a copied volume could be bound instead of the restored copy.
        released = self.bound_retained_volumes(claims=set(self.snapshot.kept))
        delete_owned_namespace(self.ctx.api, self.ns, run_id=self.run_id, worker_id=self.gitops.worker_id,
                               wait_timeout=self.ctx.timeout("namespace_deleted"))
        for pv in released:
            self.release_volume(pv)
            # It survived, so the restore finds it in place: expected, and only for this volume.
            self.allow.append(f"could not restore, PersistentVolume:{pv} already exists")

    def bound_retained_volumes(self, *, claims: set[str]) -> list[str]:
        volumes = self.ctx.as_manifests(client.CoreV1Api(self.ctx.api).list_persistent_volume().items)
        return [str(pv["metadata"]["name"]) for pv in volumes
                if (pv["spec"].get("claimRef") or {}).get("namespace") == self.ns
                and (pv["spec"].get("claimRef") or {}).get("name") in claims
                and pv["spec"].get("persistentVolumeReclaimPolicy") == "Retain"]

    def released_volumes(self) -> list[str]:
        """PVs left Released by an earlier namespace of this name (a kept cluster)."""
        volumes = self.ctx.as_manifests(client.CoreV1Api(self.ctx.api).list_persistent_volume().items)
        return [str(pv["metadata"]["name"]) for pv in volumes
                if (pv["spec"].get("claimRef") or {}).get("namespace") == self.ns
                and (pv.get("status") or {}).get("phase") == "Released"]

    def release_volume(self, name: str, *, manual: bool = True) -> None:
        """A Retain PV outlives its namespace (the NFS library): free it for the restored claim."""
        core = client.CoreV1Api(self.ctx.api)
        core.patch_persistent_volume(name, [{"op": "remove", "path": "/spec/claimRef"}])
        if not manual:
            return
        self.record.manual_steps.append(
            f"PersistentVolume {name} (reclaim policy Retain) kept its data but stayed bound to the deleted claim; "
            f"its claimRef was removed so the restored claim binds to it: `kubectl patch pv {name} --type json "
            "-p '[{\"op\":\"remove\",\"path\":\"/spec/claimRef\"}]'`")

    @property
    def suspend_modifier_name(self) -> str:
        return f"restoredrill-{self.run_id}-{self.tag}-suspended"[:63]

    def restore_suspended_kustomizations(self) -> None:
        """Kustomizations in the app's own namespace are in its backup, taken before they were
        suspended: restored as they are, Flux would apply the repo while the volumes are restored (the
        race the runbook's suspend step exists to prevent). They are restored suspended, by a Velero
        resource modifier, and a real restore needs the same step: recorded as one."""
        names = self.plan.kustomizations_in_app_namespace
        rules = {"version": "v1", "resourceModifierRules": [{
            "conditions": {"groupResource": f"kustomizations.{KUSTOMIZE_GROUP}", "namespaces": [self.ns]},
            "mergePatches": [{"patchData": json.dumps({"spec": {"suspend": True}})}]}]}
        self.ctx.apply([{"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": self.suspend_modifier_name, "namespace": self.velero.namespace,
                                      "labels": {"app.kubernetes.io/part-of": "restoredrill"}},
                         "data": {"rules.yaml": yaml.safe_dump(rules, sort_keys=False)}}])
        self.record.manual_steps.append(
            f"Kustomization(s) {', '.join(names)} live in the app's namespace {self.ns}, so the backup holds them "
            "unsuspended and the restore would bring them back reconciling while the volumes restore: the drill "
            f"restored them suspended with a Velero resource modifier (ConfigMap {self.velero.namespace}/"
            f"{self.suspend_modifier_name}: kustomizations spec.suspend=true); a real restore needs the same, "
            "`velero restore create ... --resource-modifier-configmap NAME`, then `flux resume kustomization`")

    def restore(self) -> None:
        name = f"{self.plan.app}-restore-{self.run_id}-{self.tag}"[:63].rstrip("-")
        self.record.restore = name
        started = time.monotonic()
        modifier = self.restore_modifier()
        if modifier is None and self.plan.kustomizations_in_app_namespace:
            self.restore_suspended_kustomizations()
            modifier = self.suspend_modifier_name
        try:
            self.velero.create_restore(name, backup_name=self.record.backup, included_namespaces=[self.ns],
                                       restore_pvs=True, resource_modifier=modifier,
                                       restore_status=self.restore_status)
            self.velero.wait_for_pod_volume_restores(name, expected=self.record.pod_volume_backups)
        finally:
            if modifier == self.suspend_modifier_name:
                self.ctx.delete([{"apiVersion": "v1", "kind": "ConfigMap",
                                  "metadata": {"name": modifier, "namespace": self.velero.namespace}}])
        restore = self.velero.get_restore(name)
        phase = (restore.get("status") or {}).get("phase")
        if phase in ("Failed", "FailedValidation"):
            # Nothing was restored: waiting for pods would end only in a timeout that names nothing.
            self.restored = restore
            self.fail([restore_failure(restore, self.restore_bsl())],
                      remedy=f"`velero restore describe {name} --details`; `velero backup describe "
                             f"{self.record.backup}`, and take a new backup if its objects are gone from the store")
        self.wait_healthy()
        self.record.rto_s = round(time.monotonic() - started, 1)
        self.record_timeline(name)
        completed = (self.record.backup_completed_at and _iso(self.record.backup_completed_at))
        if completed:
            self.record.backup_age_s = round((datetime.now(UTC) - completed).total_seconds(), 1)
        self.restored = restore

    def restore_modifier(self) -> str | None:
        """The Velero resource-modifier ConfigMap the restore applies (none: restored as backed up)."""
        return None

    def restore_bsl(self) -> Mapping[str, Any] | None:
        """The BackupStorageLocation the backup is read from (named when a restore cannot read it)."""
        return self.velero.bsl()

    def record_timeline(self, restore_name: str) -> None:
        """The RTO and the backup from the objects' own timestamps, read now: the pods as they came
        up, before any inspector pod of the checks."""
        pods = self.ctx.as_manifests(self.ctx.core.list_namespaced_pod(self.ns).items)
        self.record.timeline = drill_timeline(
            backup=self.velero.get_backup(self.record.backup),
            pod_volume_backups=self.velero.list_pod_volume_backups(self.record.backup),
            restore=self.velero.get_restore(restore_name),
            pod_volume_restores=self.velero.list_pod_volume_restores(restore_name), pods=pods)

    # ---- verify ----------------------------------------------------------------------------
    def verify(self) -> None:
        problems: list[str] = []
        status = self.restored.get("status") or {}
        if status.get("phase") != "Completed":
            problems.append(f"Restore {self.record.restore} ended {status.get('phase')} "
                            f"({status.get('errors', 0)} errors): {status.get('failureReason', '')}")
        records = self.velero.pod_volume_restores(self.record.restore)
        self.record.pod_volume_restores = len(records)
        problems += compare_pod_volumes(operation="restore", expected=self.snapshot.pod_volumes, records=records)
        short, differ = compare_restored_bytes(backups=self.velero.pod_volume_backups(self.record.backup),
                                               restores=records)
        problems += short
        self.record.notes += differ
        problems += self.restore_result_problems()
        problems += self.object_problems()
        problems += self.volume_problems()
        problems += self.snapshot_problems()
        problems += self.table_problems()
        problems += self.check_problems()
        self.fail(problems, remedy=f"`velero restore describe {self.record.restore} --details`; the evidence "
                                   "attached to this test")

    def snapshot_problems(self) -> list[str]:
        """The backup itself as ground truth: each PodVolumeBackup's Kopia snapshot verified (every
        file read) and compared, entry by entry with owners, modes and times, with the volume
        restored from it. Files written after the restore started are reported, not failed: the
        app runs again (a database writes at once); the drill's own inventory above stays strict."""
        if "kopia" not in self.ctx.images:
            self.record.notes.append("snapshot check not run: this provider has no kopia image")
            return []
        snapshots, problems = volume_snapshots(self.velero.pod_volume_backups(self.record.backup),
                                               claims=self.snapshot.pod_volume_claims)
        if not snapshots:
            return problems
        access = repository_access(self.ctx, velero_namespace=self.velero.namespace, bsl_name=self.snapshot_bsl())
        result = verify_against_snapshots(
            self.ctx, namespace=self.ns, snapshots=snapshots, bsl=access.bsl, password=access.password,
            credentials=access.credentials, image=self.ctx.images["kopia"],
            restore_uid=str(self.restored["metadata"].get("uid", "")),
            restore_started=self.restore_started())
        self.record.snapshot_check = result.facts()
        self.record.notes += [f"written by the app after the restore: {w}" for w in result.written_by_app]
        self.record.notes += result.notes
        return [*problems, *result.problems]

    def snapshot_bsl(self) -> str:
        """The BackupStorageLocation whose Kopia repository holds the backup's snapshots."""
        return self.velero.bsl_name

    def restore_started(self) -> float | None:
        """When Velero started the restore (epoch seconds): whatever is newer was written after it."""
        started = (self.restored.get("status") or {}).get("startTimestamp")
        return _iso(str(started)).timestamp() if started else None

    def backup_result_problems(self, name: str) -> list[str]:
        """The Backup's own errors fail the drill (a hook's command, an item Velero could not read);
        its warnings are recorded, and fail unless the allow-list has them, as a restore's do."""
        results = self.velero.backup_results(name, fetch=self.fetch_in_cluster)
        problems = [f"backup error ({scope}): {m}" for scope, messages in
                    self._scoped(results.get("errors") or {}).items() for m in messages]
        warnings = self._scoped(results.get("warnings") or {})
        self.record.backup_warnings = [f"{scope}: {m}" for scope, messages in warnings.items() for m in messages]
        problems += [f"backup warning not in the allow-list: {w}" for w in unexpected_warnings(warnings,
                                                                                                 allowed=self.allow)]
        return problems

    def restore_result_problems(self) -> list[str]:
        results = self.velero.restore_results(self.record.restore, fetch=self.fetch_in_cluster)
        problems = []
        for scope, messages in self._scoped(results.get("errors") or {}).items():
            problems += [f"restore error ({scope}): {m}" for m in messages]
        warnings = self._scoped(results.get("warnings") or {})
        self.record.warnings = [f"{scope}: {m}" for scope, messages in warnings.items() for m in messages]
        problems += [f"restore warning not in the allow-list: {w}" for w in unexpected_warnings(warnings,
                                                                                                  allowed=self.allow)]
        return problems

    @staticmethod
    def _scoped(section: Mapping[str, Any]) -> dict[str, list[str]]:
        scoped: dict[str, list[str]] = {}
        for scope in ("velero", "cluster"):
            if section.get(scope):
                scoped[scope] = [str(m) for m in section[scope]]
        for namespace, messages in (section.get("namespaces") or {}).items():
            scoped[f"namespace {namespace}"] = [str(m) for m in messages]
        return scoped

    def fetch_in_cluster(self, url: str) -> bytes:
        """GET `url` from the git-server pod, which resolves the object store's in-cluster name."""
        pods = self.ctx.core.list_namespaced_pod(self.flux.namespace,
                                                 label_selector=f"app.kubernetes.io/name={GIT_SERVER}").items
        running = [str(p["metadata"]["name"]) for p in self.ctx.as_manifests(pods)
                   if p.get("status", {}).get("phase") == "Running"]
        if not running:
            raise RestoreDrillError("no Running git-server pod to fetch Velero's restore results with")
        return self.ctx.kubectl_bytes(["-n", self.flux.namespace, "exec", "-i", running[0], "--", GIT_SERVER_PATH,
                                       "fetch", url], input=b"", timeout=self.ctx.timeout("command"))

    def object_problems(self) -> list[str]:
        problems = []
        for version, group, kind, name in self.snapshot.objects:
            if self.object_uid(version, group, kind, name) is None:
                problems.append(f"{kind} {self.ns}/{name} ({group or 'core'}/{version}), applied by Flux before the "
                                "backup, is missing after the restore")
        return problems

    def read_object(self, version: str, group: str, kind: str, name: str) -> dict[str, Any] | None:
        api_version = f"{group}/{version}" if group else version
        try:
            found = self.ctx.kubectl(["-n", self.ns, "get", f"{kind}.{version}.{group}" if group else kind, name,
                                      "-o", "json", "--ignore-not-found"])
        except CommandError as error:
            raise RestoreDrillError(f"could not read {kind} {name} ({api_version}): {error.output.strip()}") from error
        return cast(dict[str, Any], json.loads(found)) if found.strip() else None

    def object_uid(self, version: str, group: str, kind: str, name: str) -> str | None:
        obj = self.read_object(version, group, kind, name)
        return str(obj["metadata"]["uid"]) if obj else None

    def object_states(self) -> dict[str, tuple[str, str]]:
        """`Kind/namespace/name` -> (UID, content digest) of every object Flux manages in the namespace."""
        states = {}
        for version, group, kind, name in self.snapshot.objects:
            obj = self.read_object(version, group, kind, name)
            if obj:
                states[f"{kind}/{self.ns}/{name}"] = (str(obj["metadata"]["uid"]), content_digest(obj))
        return states

    def volume_problems(self) -> list[str]:
        problems: list[str] = []
        claims = sorted({*self.snapshot.inventories, *self.snapshot.kept})
        if not claims:
            return problems

        def read(pod: str) -> None:
            restore_uid = str(self.restored["metadata"].get("uid"))
            for claim, expected in self.snapshot.inventories.items():
                actual = self.inventory(pod, claim)
                if f"{VELERO_DONE_DIR}/{restore_uid}" in actual:
                    self.record.notes.append(f"PVC {claim}: Velero's done-file {VELERO_DONE_DIR}/<restore UID> was "
                                             "left in the volume (not counted)")
                # diff_volume allows Velero's bookkeeping of this restore by exact path, and reports what the
                # app wrote after the restore started (see verify.py).
                diff = diff_volume(volume=f"PVC {self.ns}/{claim}", expected=expected, actual=actual,
                                   sentinel=data.SENTINEL, restore_uid=restore_uid,
                                   restore_started=self.restore_started())
                problems.extend(diff.problems)
                self.record.notes.extend(diff.notes)
                self.record.files_verified += sum(1 for e in expected.values() if e.kind == "file")
                self.record.volumes_verified += 1
            for claim, expected in self.snapshot.kept.items():
                actual = self.inventory(pod, claim)
                problems.extend(f"{p} (this volume is not restored by Velero: it must survive on its own)"
                                for p in compare_volume(volume=f"PVC {self.ns}/{claim}", expected=expected,
                                                        actual=actual))
                self.record.volumes_survived += 1

        self.with_inspector(claims, read)
        return problems

    def table_problems(self) -> list[str]:
        try:
            after = self.tables()
        except (RestoreDrillError, ValueError) as error:  # e.g. the table is gone: a fresh initdb
            return [f"the restored databases could not be read: {error}"]
        problems = []
        for key, before in self.snapshot.tables.items():
            problems += data.compare_table(where=key, before=before, after=after[key])
            self.record.rows_verified += before.rows
        if not problems and not self.record.rows_verified and not self.record.volumes_verified:
            problems.append("nothing was verified: no volume Velero restored and no database row"
                            + (f" ({self.record.volumes_survived} volumes survived without a restore, which proves "
                               "nothing about the backup)" if self.record.volumes_survived else ""))
        return problems

    def check_problems(self) -> list[str]:
        """The drill config's own checks of the app, on the restored namespace: every result in the
        record, the failed ones as problems. HTTP and file checks share one inspector pod, mounting
        the claims the file checks name."""
        if not self.checks:
            return []
        live = {str(c["metadata"]["name"]) for c in self.claims()}
        mounted = tuple(claim for claim in claims_of(self.checks) if claim in live)
        results: list[CheckResult] = []

        def run(pod: str | None, why: str = "") -> None:
            results[:] = run_checks(self.checks, RestoredAppChecks(self, pod=pod, mounted=mounted, why=why))

        if all(isinstance(check, SqlCheck) for check in self.checks):
            run(None)
        else:
            try:
                self.with_inspector(mounted, run)
            except (RestoreDrillError, ApiException) as error:
                if results:  # the checks ran; removing the inspector failed
                    raise
                run(None, why=f"the inspector pod did not start: {error}")
        self.record.checks = [result.facts() for result in results]
        return check_failures(results)

    # ---- hand back to Flux -----------------------------------------------------------------
    def resume_and_adopt(self) -> None:
        before = self.object_states()
        problems = []
        for home, name in self.plan.kustomization_refs:
            token = self.flux.in_namespace(home).resume(name)
            kustomization = self.flux.in_namespace(home).wait_for_reconciled(name, token=token)
            problems += self.revision_problems(kustomization)
        problems += self.helm_adoption_problems()
        after = self.object_states()
        problems += compare_uids(before={k: uid for k, (uid, _) in before.items()},
                                 after={k: uid for k, (uid, _) in after.items()})
        drift = compare_drift(before={k: digest for k, (_, digest) in before.items()},
                              after={k: digest for k, (_, digest) in after.items()})
        if self.drift_fails:
            problems += drift
        else:
            self.record.notes += drift
        self.fail(problems, remedy="Flux recreated or changed what the restore brought back: compare the restored "
                                   "objects with the repo (`flux diff kustomization`)")
        self.wait_healthy()

    def revision_problems(self, kustomization: Mapping[str, Any]) -> list[str]:
        spec, status = kustomization.get("spec") or {}, kustomization.get("status") or {}
        source = spec.get("sourceRef") or {}
        repo = self.ctx.get_object(SOURCE_GROUP, SOURCE_VERSION, "gitrepositories",
                                   str(source.get("namespace") or kustomization["metadata"].get("namespace")
                                       or self.flux.namespace), str(source.get("name"))) or {}
        revision = ((repo.get("status") or {}).get("artifact") or {}).get("revision")
        applied = status.get("lastAppliedRevision")
        name = kustomization["metadata"]["name"]
        if not revision or applied != revision:
            return [f"Kustomization {name} applied revision {applied!r}, the source is at {revision!r}"]
        return []

    # ---- evidence --------------------------------------------------------------------------
    def evidence(self) -> dict[str, str]:
        """What a failed drill attaches to its report; every part collected on a best-effort basis."""
        parts: dict[str, Callable[[], Any]] = {
            "drill record": lambda: self.record.facts(),
            "Backup": lambda: self.ctx.get_object(GROUP, VERSION, "backups", self.velero.namespace,
                                                  self.record.backup) if self.record.backup else None,
            "Restore": lambda: self.ctx.get_object(GROUP, VERSION, "restores", self.velero.namespace,
                                                   self.record.restore) if self.record.restore else None,
            "PodVolumeBackups": lambda: self.velero.list_pod_volume_backups(self.record.backup)
            if self.record.backup else None,
            "PodVolumeRestores": lambda: self.velero.list_pod_volume_restores(self.record.restore)
            if self.record.restore else None,
            "backup results": lambda: self.velero.backup_results(self.record.backup, fetch=self.fetch_in_cluster)
            if self.record.backup else None,
            "restore results": lambda: self.velero.restore_results(self.record.restore, fetch=self.fetch_in_cluster)
            if self.record.restore else None,
            "Flux Kustomizations": lambda: [self.flux.in_namespace(h).get_kustomization(n)
                                            for h, n in self.plan.kustomization_refs],
            "events": lambda: self.ctx.kubectl(["-n", self.ns, "get", "events", "--sort-by=.lastTimestamp"]),
            "pods and claims": lambda: self.ctx.kubectl(["-n", self.ns, "get", "pods,pvc", "-o", "wide"]),
            "pod logs": self.pod_logs,
            "velero server log (this drill)": lambda: self.component_log("velero", "deploy/velero"),
            "node-agent log (this drill)": lambda: self.component_log("velero", "daemonset/node-agent"),
        }
        collected: dict[str, str] = {}
        for title, collect in parts.items():
            try:
                value = collect()
            except Exception as error:  # evidence is best effort: record why a part is missing
                value = f"(could not collect: {error})"
            if value is None:
                continue
            collected[title] = value if isinstance(value, str) else json.dumps(value, indent=2, default=str)
        return collected

    def pod_logs(self) -> str:
        chunks = []
        for pod in self.ctx.as_manifests(self.ctx.core.list_namespaced_pod(self.ns).items):
            name = str(pod["metadata"]["name"])
            try:
                log = self.ctx.kubectl(["-n", self.ns, "logs", name, "--all-containers", "--tail=200"])
            except CommandError as error:
                log = error.output
            chunks.append(f"==== {name}\n{log}")
        return "\n".join(chunks)

    def component_log(self, namespace: str, target: str) -> str:
        log = self.ctx.kubectl(["-n", namespace, "logs", target, "--tail=5000"], timeout=self.ctx.timeout("command"))
        names = [n for n in (self.record.backup, self.record.restore) if n]
        lines = [line for line in log.splitlines() if any(n in line for n in names)]
        return "\n".join(lines[-400:])
