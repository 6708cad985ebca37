"""The read-only audit of a cluster's backups: are last night's backups there, whole and recent?

Pure checks over API objects (dicts, as the API returns them) give findings that name the object
and the fix; a small reader lists those objects with GET requests only; `restoredrill audit` and
the `audit` suite (suites/audit) both call `audit_cluster`. What Velero backs up of a pod is
decided by `velero_semantics`, as for the static rules and the drill.

The checks, each with the fault it exists to catch:
- storage-locations: every BackupStorageLocation Available and validated within its
  validationFrequency plus a grace (a stale time means the server stopped validating).
- schedules: not paused, valid; its last finished Backup Completed, not PartiallyFailed/Failed;
  the last Completed one no older than the next activation after it (robfig/cron, as Velero's
  schedule controller computes it) plus a grace: the RPO; warnings, and hooks that failed.
- pod-volumes: in that Backup, one Completed PodVolumeBackup per pod volume fs-backup should
  take (nothing silently skipped: hostPath, opt-outs, a node with no node-agent), with bytes
  where the claim is not empty. A claim is judged once (Velero copies a claim several pods mount
  from one of them) and found by its uid when another pod, or one started since the backup (a
  rollout), mounts it; PodVolumeBackups belong to their Backup by its uid label.
- node-agent: a Running, Ready node-agent pod on every node.
- cnpg: every CNPG Cluster ContinuousArchiving, its last successful base backup recent enough.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from restoredrill.errors import ConfigError, RestoreDrillError
from restoredrill.gosyntax import (
    GoSyntaxError,
    activation_interval,
    format_go_duration,
    next_activation,
    parse_go_duration,
    parse_velero_cron,
)
from restoredrill.velero_semantics import (
    EXCLUDES_ANNOTATION,
    PodVolumePlan,
    VeleroServer,
    all_namespaces,
    fs_backup_plan,
    includes_namespace,
    selector_matches,
)

Severity = Literal["error", "warning"]

CHECKS: dict[str, str] = {
    "storage-locations": "every BackupStorageLocation is Available and recently validated",
    "schedules": "every Schedule runs, its last backup Completed within its interval plus grace (RPO)",
    "pod-volumes": "every pod volume fs-backup should take has a Completed PodVolumeBackup with data",
    "node-agent": "a node-agent pod runs on every node",
    "cnpg": "every CNPG Cluster archives WAL and has a recent base backup",
}

SCHEDULE_LABEL = "velero.io/schedule-name"
BACKUP_LABEL = "velero.io/backup-name"
BACKUP_UID_LABEL = "velero.io/backup-uid"
PVC_UID_LABEL = "velero.io/pvc-uid"
NODE_AGENT_LABEL = ("role", "node-agent")  # what Velero's nodeagent.IsRunningInNode looks for
FINISHED = frozenset({"Completed", "PartiallyFailed", "Failed", "FailedValidation"})
# Velero's --store-validation-frequency default, used when a BSL sets no validationFrequency.
DEFAULT_VALIDATION_FREQUENCY = timedelta(minutes=1)


@dataclass(frozen=True)
class AuditFinding:
    """One problem, in the words of the static rules' findings: the object, what is wrong, the fix."""

    check: str  # a key of CHECKS
    severity: Severity
    subject: str  # "Schedule velero/pelican-daily"
    problem: str
    fix: str
    app: str | None = None  # the namespace it concerns, for `-k APP` and report grouping

    def render(self) -> str:
        return f"{self.subject}: {self.problem}\n  fix: {self.fix}"

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "severity": self.severity, "subject": self.subject, "problem": self.problem,
                "fix": self.fix, "app": self.app}


@dataclass(frozen=True)
class AuditSettings:
    """How much lateness the audit forgives."""

    # After the moment a backup was due, how long it may take to start and finish.
    grace: timedelta = timedelta(hours=1)
    # Beyond a BSL's validationFrequency before its lastValidationTime counts as stale.
    validation_grace: timedelta = timedelta(minutes=5)
    # The oldest a CNPG Cluster's last successful base backup may be (a daily ScheduledBackup + grace).
    cnpg_backup_max_age: timedelta = timedelta(hours=26)
    # A claim whose kubelet-reported usage is above this holds data (an empty file system's own
    # metadata: a directory's blocks, ext4's lost+found, stays below it).
    empty_claim_bytes: int = 1 << 20


@dataclass
class ClusterState:
    """The objects the audit reads; None where the API has no such resource (CRD not installed)."""

    now: datetime
    storage_locations: list[dict[str, Any]] | None = None
    schedules: list[dict[str, Any]] | None = None
    backups: list[dict[str, Any]] = field(default_factory=list)
    pod_volume_backups: list[dict[str, Any]] = field(default_factory=list)
    snapshot_locations: list[dict[str, Any]] = field(default_factory=list)
    velero_deployments: list[dict[str, Any]] = field(default_factory=list)
    node_agent_daemonsets: list[dict[str, Any]] = field(default_factory=list)
    pods: list[dict[str, Any]] = field(default_factory=list)
    nodes: list[dict[str, Any]] = field(default_factory=list)
    claims: list[dict[str, Any]] = field(default_factory=list)
    volumes: list[dict[str, Any]] = field(default_factory=list)
    cnpg_clusters: list[dict[str, Any]] | None = None
    # usedBytes by (namespace, claim) from the kubelets' stats; None: not readable.
    claim_usage: dict[tuple[str, str], int] | None = None
    notes: list[str] = field(default_factory=list)  # what could not be read, and so was not judged
    # Lists grouped by a key, made once per state (see _grouped): per-Schedule scans stay linear.
    groups: dict[str, dict[Any, list[dict[str, Any]]]] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class AuditReport:
    findings: tuple[AuditFinding, ...]
    checked: Mapping[str, int]  # what was looked at, per kind of object
    notes: tuple[str, ...] = ()
    # Per Schedule (namespace/name), the age in seconds of its last Completed Backup.
    backup_ages: Mapping[str, float] = field(default_factory=dict)

    @property
    def errors(self) -> list[AuditFinding]:
        return [f for f in self.findings if f.severity == "error"]

    def of(self, check: str) -> list[AuditFinding]:
        return [f for f in self.findings if f.check == check]


# ---------------------------------------------------------------------------------------------
# Small readers of API objects
# ---------------------------------------------------------------------------------------------


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _name(obj: Mapping[str, Any]) -> str:
    metadata = _meta(obj)
    namespace = metadata.get("namespace")
    return f"{namespace}/{metadata.get('name')}" if namespace else str(metadata.get("name"))


def _status(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("status") or {}


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _age(now: datetime, then: datetime) -> str:
    return format_go_duration(now - then)


def _started(backup: Mapping[str, Any]) -> datetime | None:
    return _time(_status(backup).get("startTimestamp")) or _time(_meta(backup).get("creationTimestamp"))


def _describe(kind: str, obj: Mapping[str, Any]) -> str:
    namespace = _meta(obj).get("namespace") or "velero"
    return f"`kubectl -n {namespace} describe {kind} {_meta(obj).get('name')}`"


def velero_server(state: ClusterState) -> VeleroServer:
    """The server settings that decide fs-backup, read from the velero Deployment's flags."""
    args: list[str] = []
    for deployment in state.velero_deployments:
        for container in ((deployment.get("spec") or {}).get("template") or {}).get("spec", {}).get(
                "containers") or []:
            args += [str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
    default_fs = False
    features: list[str] = []
    for arg in args:
        flag, _, value = arg.partition("=")
        if flag in ("--default-volumes-to-fs-backup", "--default-volumes-to-restic"):
            default_fs = value.lower() in ("", "true", "1", "t")
        if flag == "--features":
            features += [f.strip() for f in value.split(",")]
    providers = tuple(sorted({str((v.get("spec") or {}).get("provider")) for v in state.snapshot_locations
                              if (v.get("spec") or {}).get("provider") not in (None, "csi", "velero.io/csi")}))
    return VeleroServer(default_volumes_to_fs_backup=default_fs, node_agent=bool(state.node_agent_daemonsets),
                        csi="EnableCSI" in features, snapshot_providers=providers)


# ---------------------------------------------------------------------------------------------
# The checks
# ---------------------------------------------------------------------------------------------


def check_storage_locations(state: ClusterState, settings: AuditSettings) -> list[AuditFinding]:
    if state.storage_locations is None:
        return [AuditFinding("storage-locations", "error", "Velero", "is not installed: the API has no "
                             "backupstoragelocations.velero.io", "install Velero (its CRDs and server) or audit the "
                             "cluster that runs it (--context)")]
    if not state.storage_locations:
        return [AuditFinding("storage-locations", "error", "Velero", "has no BackupStorageLocation: no backup can "
                             "be stored", "define one (the Helm chart's configuration.backupStorageLocation)")]
    findings = []
    for bsl in state.storage_locations:
        subject = f"BackupStorageLocation {_name(bsl)}"
        status = _status(bsl)
        phase = str(status.get("phase") or "")
        if phase != "Available":
            message = status.get("message")
            findings.append(AuditFinding(
                "storage-locations", "error", subject,
                f"is {phase or 'not validated (no status.phase)'}" + (f": {message}" if message else ""),
                "check its bucket, prefix, s3Url and the credentials Secret it names with "
                f"{_describe('backupstoragelocations.velero.io', bsl)}, and the velero server's log"))
        frequency_text = (bsl.get("spec") or {}).get("validationFrequency")
        try:
            frequency = parse_go_duration(str(frequency_text)) if frequency_text else DEFAULT_VALIDATION_FREQUENCY
        except GoSyntaxError:
            frequency = DEFAULT_VALIDATION_FREQUENCY
        validated = _time(status.get("lastValidationTime"))
        allowed = frequency + settings.validation_grace
        if frequency == timedelta(0):
            findings.append(AuditFinding(
                "storage-locations", "error", subject, "is never validated (validationFrequency: 0s): a broken "
                "store goes unnoticed until a restore", "set spec.validationFrequency (e.g. 1m) in its manifest"))
        elif validated is None or state.now - validated > allowed:
            seen = "never" if validated is None else f"{_age(state.now, validated)} ago ({validated.isoformat()})"
            findings.append(AuditFinding(
                "storage-locations", "error", subject,
                f"was last validated {seen}; Velero validates it every {format_go_duration(frequency)}, so its "
                f"status is stale (allowed {format_go_duration(allowed)})",
                "check that the velero server runs (`kubectl -n "
                f"{_meta(bsl).get('namespace') or 'velero'} get deployment velero`) and its log"))
    return findings


def _schedule_backups(state: ClusterState, schedule: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Schedule's Backups, newest first."""
    key = (_meta(schedule).get("namespace"), _meta(schedule).get("name"))
    return _grouped(state, "backups", lambda b: (_meta(b).get("namespace"),
                                                 (_meta(b).get("labels") or {}).get(SCHEDULE_LABEL))).get(key, [])


def _grouped(state: ClusterState, attribute: str, key: Callable[[dict[str, Any]], Any], *,
             by: str = "") -> dict[Any, list[Any]]:
    """The objects of one list grouped by `key` (named `by`, when one list is grouped more than one
    way), computed once per state (Backups newest first)."""
    cache = state.groups
    name = f"{attribute}:{by}"
    if name not in cache:
        groups: dict[Any, list[dict[str, Any]]] = {}
        for item in getattr(state, attribute):
            groups.setdefault(key(item), []).append(item)
        if attribute == "backups":
            for items in groups.values():
                items.sort(key=lambda b: _started(b) or datetime.min.replace(tzinfo=UTC), reverse=True)
        cache[name] = groups
    return cache[name]


def last_finished_backup(state: ClusterState, schedule: Mapping[str, Any]) -> dict[str, Any] | None:
    return next((b for b in _schedule_backups(state, schedule) if _status(b).get("phase") in FINISHED), None)


def _app_of(template: Mapping[str, Any]) -> str | None:
    included = [str(n) for n in template.get("includedNamespaces") or [] if n != "*"]
    return included[0] if len(included) == 1 else None


def check_schedules(state: ClusterState, settings: AuditSettings) -> list[AuditFinding]:
    findings: list[AuditFinding] = []
    for schedule in state.schedules or []:
        subject = f"Schedule {_name(schedule)}"
        spec = schedule.get("spec") or {}
        app = _app_of(spec.get("template") or {})

        def finding(problem: str, fix: str, severity: Severity = "error", subject: str = subject,
                    app: str | None = app) -> None:
            findings.append(AuditFinding("schedules", severity, subject, problem, fix, app=app))

        if spec.get("paused") is True:
            finding("is paused (spec.paused: true): it takes no backups",
                    "set spec.paused: false in its manifest in Git (or `velero schedule unpause "
                    f"{_meta(schedule).get('name')}`)")
            continue
        if _status(schedule).get("phase") == "FailedValidation":
            errors = "; ".join(str(e) for e in _status(schedule).get("validationErrors") or []) or "no detail"
            finding(f"failed Velero's validation ({errors}): it takes no backups", "correct the Schedule's spec")
            continue
        try:
            cron = parse_velero_cron(str(spec.get("schedule") or ""))
        except GoSyntaxError as error:
            finding(f"has a schedule Velero rejects ({spec.get('schedule')!r}: {error})",
                    "write a five-field cron expression or @every/@daily (robfig/cron ParseStandard)")
            continue
        backups = _schedule_backups(state, schedule)
        finished = next((b for b in backups if _status(b).get("phase") in FINISHED), None)
        if finished is not None:
            status = _status(finished)
            backup = f"Backup {_name(finished)}"
            phase = status.get("phase")
            counts = f"{status.get('errors') or 0} errors, {status.get('warnings') or 0} warnings"
            if phase != "Completed":
                reason = f": {status['failureReason']}" if status.get("failureReason") else ""
                finding(f"its last finished backup {_name(finished)} (started {status.get('startTimestamp')}) is "
                        f"{phase} ({counts}){reason}",
                        f"read `velero backup describe {_meta(finished).get('name')} --details` and `velero backup "
                        f"logs {_meta(finished).get('name')}`; fix the cause, then let the next run prove it")
            elif status.get("warnings"):
                finding(f"Completed with {status['warnings']} warning(s); it is the last backup of {subject}",
                        f"read them with `velero backup describe {_meta(finished).get('name')} --details`",
                        severity="warning", subject=backup)
            hooks = status.get("hookStatus") or {}
            if hooks.get("hooksFailed"):
                finding(f"{hooks['hooksFailed']} of {hooks.get('hooksAttempted', '?')} backup hooks failed in its "
                        f"last backup {_name(finished)}: a database may have been copied without its freeze",
                        f"find the hook errors in `velero backup logs {_meta(finished).get('name')}` (hook "
                        "command, container, timeout) and correct the pod's hook annotations or the Schedule's "
                        "hooks")
            elif (spec.get("template") or {}).get("hooks", {}).get("resources") and not hooks.get("hooksAttempted"):
                finding(f"declares backup hooks but its last backup {_name(finished)} ran none: no pod matched "
                        "them (label selector, namespaces, container name)",
                        "compare the hooks' labelSelector and includedNamespaces with the pods' labels",
                        severity="warning")
        completed = next((b for b in backups if _status(b).get("phase") == "Completed"), None)
        since = _started(completed) if completed is not None else _time(_meta(schedule).get("creationTimestamp"))
        if since is None:
            continue
        due = next_activation(cron, since)
        if due is None or state.now <= due + settings.grace:
            continue
        interval = activation_interval(cron, since)
        every = f", every {format_go_duration(interval)}" if interval else ""
        if completed is None:
            problem = (f"has no Completed backup since it was created {_age(state.now, since)} ago; the first was "
                       f"due at {due.isoformat()} (schedule {spec.get('schedule')!r}{every}, grace "
                       f"{format_go_duration(settings.grace)}): RPO exceeded")
        else:
            problem = (f"its last Completed backup {_name(completed)} started {_age(state.now, since)} ago; the next "
                       f"was due at {due.isoformat()} (schedule {spec.get('schedule')!r}{every}) and the grace of "
                       f"{format_go_duration(settings.grace)} has passed: RPO exceeded")
        finding(problem, "check that the velero server runs and read its log for this Schedule (`kubectl -n "
                f"{_meta(schedule).get('namespace')} logs deployment/velero | grep {_meta(schedule).get('name')}`); "
                "a backup that keeps failing also leaves the last good one ageing")
    return findings


def _host_path_claims(state: ClusterState) -> set[tuple[str, str]]:
    host_volumes = {_meta(v).get("name") for v in state.volumes if (v.get("spec") or {}).get("hostPath") is not None}
    return {(str(_meta(c).get("namespace")), str(_meta(c).get("name"))) for c in state.claims
            if (c.get("spec") or {}).get("volumeName") in host_volumes}


def _node_agent_nodes(state: ClusterState) -> set[str]:
    """Nodes with a Running, Ready node-agent pod."""
    key, value = NODE_AGENT_LABEL
    return {str((p.get("spec") or {}).get("nodeName")) for p in state.pods
            if (_meta(p).get("labels") or {}).get(key) == value and _running_and_ready(p)}


def _running_and_ready(pod: Mapping[str, Any]) -> bool:
    status = _status(pod)
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return status.get("phase") == "Running" and ready


def _pods_in_scope(state: ClusterState, spec: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Running pods in the backup's namespaces and label selectors, oldest first (those the backup
    took come before those started since)."""
    resources = [str(r) for r in spec.get("includedResources") or []]
    if (resources and not {"*", "pods", "pod"} & set(resources)) or {"pods", "pod"} & set(
            str(r) for r in spec.get("excludedResources") or []):
        return []
    selectors = [s for s in [spec.get("labelSelector"), *(spec.get("orLabelSelectors") or [])] if s]
    by_namespace = _grouped(state, "pods", lambda p: _meta(p).get("namespace"))
    candidates = state.pods if all_namespaces(spec) else [
        pod for namespace in dict.fromkeys(str(n) for n in spec.get("includedNamespaces") or [])
        for pod in by_namespace.get(namespace, [])]
    pods = []
    for pod in candidates:
        labels = _meta(pod).get("labels") or {}
        if (_status(pod).get("phase") == "Running" and includes_namespace(spec, _meta(pod).get("namespace"))
                and (not selectors or any(selector_matches(s, labels) for s in selectors))):
            pods.append(pod)
    return sorted(pods, key=lambda p: _time(_meta(p).get("creationTimestamp")) or datetime.max.replace(tzinfo=UTC))


def _backup_pod_volume_backups(state: ClusterState, backup: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The Backup's PodVolumeBackups, by its uid (velero.io/backup-uid, which the backup sync
    controller rewrites for synced ones); by name where they carry no uid label. The name label is
    no key for a name over 63 characters: Velero shortens it (label.GetValidName) with a hash."""
    uid = _meta(backup).get("uid")
    by_uid = _grouped(state, "pod_volume_backups", lambda p: (_meta(p).get("labels") or {}).get(BACKUP_UID_LABEL),
                      by="backup-uid")
    if uid and uid in by_uid:
        return list(by_uid[uid])
    by_name = _grouped(state, "pod_volume_backups", lambda p: (_meta(p).get("labels") or {}).get(BACKUP_LABEL),
                       by="backup-name")
    return [p for p in by_name.get(_meta(backup).get("name"), []) if BACKUP_UID_LABEL not in (_meta(p).get("labels")
                                                                                                or {})]


def _total_bytes(pvb: Mapping[str, Any]) -> int:
    return int((_status(pvb).get("progress") or {}).get("totalBytes") or 0)


def check_pod_volumes(state: ClusterState, settings: AuditSettings) -> list[AuditFinding]:
    server = velero_server(state)
    on_host = _host_path_claims(state)
    agents = _node_agent_nodes(state)
    claim_uids = {(str(_meta(c).get("namespace")), str(_meta(c).get("name"))): str(_meta(c).get("uid"))
                  for c in state.claims}
    findings: list[AuditFinding] = []
    for schedule in state.schedules or []:
        if (schedule.get("spec") or {}).get("paused") is True:
            continue
        backup = next((b for b in _schedule_backups(state, schedule)
                       if _status(b).get("phase") in ("Completed", "PartiallyFailed")), None)
        started = _started(backup) if backup is not None else None
        if backup is None or started is None:
            continue
        spec = backup.get("spec") or {}
        by_volume: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        by_claim: dict[str, list[dict[str, Any]]] = {}
        for pvb in _backup_pod_volume_backups(state, backup):
            pod_ref = (pvb.get("spec") or {}).get("pod") or {}
            key = (str(pod_ref.get("namespace")), str(pod_ref.get("name")), str((pvb.get("spec") or {}).get("volume")))
            by_volume.setdefault(key, []).append(pvb)
            if (_meta(pvb).get("labels") or {}).get(PVC_UID_LABEL):
                by_claim.setdefault(str(_meta(pvb)["labels"][PVC_UID_LABEL]), []).append(pvb)
        # A claim fs-backup takes is judged once per backup: Velero copies a claim mounted by several
        # pods (RWX, or RWO pods on one node) from one of them only (item_backupper.go: "already been
        # backed up from another pod").
        judged: set[tuple[str, str]] = set()
        for pod in _pods_in_scope(state, spec):
            namespace, pod_name = str(_meta(pod).get("namespace")), str(_meta(pod).get("name"))
            node = str((pod.get("spec") or {}).get("nodeName"))
            created = _time(_meta(pod).get("creationTimestamp"))
            # A pod started after the backup (a rollout, a restart) is not in it; its claims are, if
            # they existed then: those are looked up by the claim's uid (velero.io/pvc-uid).
            newer = created is None or created >= started
            hosted = {claim for ns, claim in on_host if ns == namespace}
            plans = [plan for plan in fs_backup_plan(spec, server, pod, host_path_claims=hosted)
                     if not newer or (plan.claim is not None and _claim_existed(state, namespace, plan.claim, started))]
            for plan in plans:
                if plan.claim is not None and plan.expects_pod_volume_backup:
                    if (namespace, plan.claim) in judged:
                        continue
                    judged.add((namespace, plan.claim))
                claim_uid = claim_uids.get((namespace, plan.claim or ""))
                found = [] if newer else by_volume.get((namespace, pod_name, plan.volume), [])
                if not found and plan.claim is not None and claim_uid:
                    found = by_claim.get(claim_uid, [])
                findings += _judge_volume(state, settings, plan=plan, backup=backup, namespace=namespace,
                                          pod=pod_name, node=node, has_agent=node in agents, found=found,
                                          claim_uid=claim_uid, started_after=newer)
            opted_out = [p.volume for p in plans if p.coverage.excluded and p.claim is not None
                         and EXCLUDES_ANNOTATION in p.coverage.detail]
            if opted_out:
                findings.append(AuditFinding(
                    "pod-volumes", "warning", f"Pod {namespace}/{pod_name}",
                    f"volumes {', '.join(opted_out)} are left out of Backup {_name(backup)} by its "
                    f"{EXCLUDES_ANNOTATION} annotation: their data is not in any Velero backup",
                    "make sure another copy exists (the runbook's NFS library), or remove them from the annotation",
                    app=namespace))
    return findings


def _claim_existed(state: ClusterState, namespace: str, claim: str, moment: datetime) -> bool:
    """Whether the claim was created before `moment` (a claim of unknown age counts as older)."""
    found = _grouped(state, "claims", lambda c: (_meta(c).get("namespace"), _meta(c).get("name"))).get(
        (namespace, claim), [])
    created = _time(_meta(found[0]).get("creationTimestamp")) if found else None
    return bool(found) and (created is None or created < moment)


def _judge_volume(state: ClusterState, settings: AuditSettings, *, plan: PodVolumePlan, backup: Mapping[str, Any],
                  namespace: str, pod: str, node: str, has_agent: bool, found: Sequence[Mapping[str, Any]],
                  claim_uid: str | None, started_after: bool = False) -> list[AuditFinding]:
    subject = f"Backup {_name(backup)}"
    what = f"volume {plan.volume!r}" + (f" (claim {plan.claim})" if plan.claim else "") + f" of pod {namespace}/{pod}"
    if started_after:
        what += " (started after the backup: looked up by its claim's uid)"

    def finding(problem: str, fix: str, severity: Severity = "error") -> list[AuditFinding]:
        return [AuditFinding("pod-volumes", severity, subject, problem, fix, app=namespace)]

    if plan.skipped:
        return finding(f"{what} is not backed up: {plan.skipped}",
                       "give the app a StorageClass whose PVs are local or CSI (not hostPath)" if plan.claim else
                       "move the data to a PersistentVolumeClaim, or accept that it is not backed up",
                       severity="error" if plan.claim else "warning")
    if plan.claim is not None and plan.coverage.loses_data:
        return finding(f"{what} is taken by nothing: {plan.coverage.detail}",
                       "opt the volume in (backup.velero.io/backup-volumes) or set defaultVolumesToFsBackup: true "
                       "in the Schedule's template")
    if not plan.expects_pod_volume_backup:
        return []
    if not found:
        why = (f"; node {node} runs no node-agent pod, so Velero could not copy it"
               if not has_agent and not started_after else "")
        return finding(f"{what} has no PodVolumeBackup: its data is not in the backup{why}",
                       f"start the node-agent on node {node} (its DaemonSet's tolerations and nodeSelector)"
                       if not has_agent and not started_after else
                       f"read `velero backup logs {_meta(backup).get('name')}` for "
                       + ("the pod that mounted the claim then (no pod mounting it Running at backup time, an "
                          "opt-out, a volume policy)" if started_after else
                          "this pod (a pod not Running at backup time, a volume policy, a skipped volume)"))
    problems: list[AuditFinding] = []
    if len(found) > 1:
        problems += finding(f"{what} has {len(found)} PodVolumeBackups: "
                            f"{', '.join(str(_meta(p).get('name')) for p in found)}",
                            "read the velero server log for this backup", severity="warning")
    for pvb in found:
        pvb_name = f"PodVolumeBackup {_name(pvb)}"
        phase = _status(pvb).get("phase")
        if phase != "Completed":
            message = _status(pvb).get("message")
            problems += finding(f"{pvb_name} of {what} is {phase or 'pending'}" + (f": {message}" if message else ""),
                                f"read {_describe('podvolumebackups.velero.io', pvb)} and the node-agent log on "
                                f"node {node}")
        elif _total_bytes(pvb) == 0 and plan.claim is not None and not _known_empty(
                state, settings, namespace=namespace, claim=plan.claim):
            evidence = _claim_holds_data(state, settings, namespace=namespace, claim=plan.claim, claim_uid=claim_uid,
                                         before=pvb)
            if evidence:
                problems += finding(f"{pvb_name} of {what} Completed with 0 bytes, but {evidence}: the backup "
                                    "holds none of its data",
                                    "check that the node-agent sees the pod's volume under /host_pods (its "
                                    "hostPath mount of /var/lib/kubelet/pods) and read its log")
            else:
                problems += finding(f"{pvb_name} of {what} Completed with 0 bytes and nothing shows whether the "
                                    "claim is empty (no kubelet volume stats, no earlier backup with data)",
                                    "look inside the claim; if it should hold data, the backup has none of it",
                                    severity="warning")
    return problems


def _known_empty(state: ClusterState, settings: AuditSettings, *, namespace: str, claim: str) -> bool:
    used = (state.claim_usage or {}).get((namespace, claim))
    return used is not None and used <= settings.empty_claim_bytes


def _claim_holds_data(state: ClusterState, settings: AuditSettings, *, namespace: str, claim: str,
                      claim_uid: str | None, before: Mapping[str, Any]) -> str | None:
    """Evidence that a claim is not empty, in words, or None."""
    used = (state.claim_usage or {}).get((namespace, claim))
    if used is not None and used > settings.empty_claim_bytes:
        return f"the kubelet reports {used} bytes used in claim {claim}"
    if not claim_uid:
        return None
    stamp = _time(_meta(before).get("creationTimestamp"))
    earlier = [(created, p) for p in state.pod_volume_backups
               if (_meta(p).get("labels") or {}).get(PVC_UID_LABEL) == claim_uid and _total_bytes(p) > 0
               and (created := _time(_meta(p).get("creationTimestamp"))) is not None
               and (stamp is None or created < stamp)]
    if not earlier:
        return None
    _, newest = max(earlier, key=lambda pair: pair[0])
    return f"the earlier PodVolumeBackup {_name(newest)} of that claim copied {_total_bytes(newest)} bytes"


def check_node_agent(state: ClusterState, settings: AuditSettings) -> list[AuditFinding]:
    if state.storage_locations is None:
        return []  # no Velero: check_storage_locations has said so
    if not state.node_agent_daemonsets:
        return [AuditFinding("node-agent", "error", "Velero", "has no node-agent DaemonSet: fs-backup copies no "
                             "volume data", "deploy the node-agent (the Helm chart's deployNodeAgent: true)")]
    agents = _node_agent_nodes(state)
    findings = []
    for node in state.nodes:
        name = str(_meta(node).get("name"))
        if name in agents:
            continue
        taints = [t for t in (node.get("spec") or {}).get("taints") or []
                  if t.get("effect") in ("NoSchedule", "NoExecute")]
        hosts_pods = any((p.get("spec") or {}).get("nodeName") == name and _status(p).get("phase") == "Running"
                         and any(v.get("persistentVolumeClaim") for v in (p.get("spec") or {}).get("volumes") or [])
                         for p in state.pods)
        severity: Severity = "warning" if taints and not hosts_pods else "error"
        findings.append(AuditFinding(
            "node-agent", severity, f"Node {name}",
            "runs no Running, Ready node-agent pod: fs-backup skips the volumes of every pod on it"
            + (" (it is tainted and runs no pod with a claim)" if severity == "warning" else ""),
            f"`kubectl -n {_meta(state.node_agent_daemonsets[0]).get('namespace')} get pods -l role=node-agent "
            "-o wide`; give the node-agent DaemonSet tolerations for the node's taints"))
    return findings


def check_cnpg(state: ClusterState, settings: AuditSettings) -> list[AuditFinding]:
    findings = []
    for cluster in state.cnpg_clusters or []:
        subject = f"CNPG Cluster {_name(cluster)}"
        namespace = str(_meta(cluster).get("namespace"))
        status = _status(cluster)
        condition = next((c for c in status.get("conditions") or [] if c.get("type") == "ContinuousArchiving"), None)
        if condition is None:
            findings.append(AuditFinding(
                "cnpg", "error", subject, "has no ContinuousArchiving condition: WAL is not archived, so a restore "
                "is only as recent as the last copy of its volumes", "configure spec.backup.barmanObjectStore (or "
                "the barman-cloud plugin) so WAL is archived", app=namespace))
        elif condition.get("status") != "True":
            findings.append(AuditFinding(
                "cnpg", "error", subject, f"is not archiving WAL (ContinuousArchiving {condition.get('status')}: "
                f"{condition.get('reason', '')} {condition.get('message', '')}".rstrip() + ")",
                f"read `kubectl -n {namespace} logs -l cnpg.io/cluster={_meta(cluster).get('name')}` for "
                "barman-cloud-wal-archive errors (object store credentials, endpoint, bucket)", app=namespace))
        last = _time(status.get("lastSuccessfulBackup"))
        if last is None:
            findings.append(AuditFinding(
                "cnpg", "error", subject, "has no successful base backup (status.lastSuccessfulBackup): WAL alone "
                f"cannot be restored (first recoverability point: {status.get('firstRecoverabilityPoint') or 'none'})",
                "create a ScheduledBackup for it, or run a Backup now", app=namespace))
        elif state.now - last > settings.cnpg_backup_max_age:
            findings.append(AuditFinding(
                "cnpg", "error", subject, f"last base backup succeeded {_age(state.now, last)} ago "
                f"({last.isoformat()}), more than {format_go_duration(settings.cnpg_backup_max_age)}",
                f"check its ScheduledBackup and the latest Backups (`kubectl -n {namespace} get "
                "backups.postgresql.cnpg.io`)", app=namespace))
    return findings


AUDIT_CHECKS: dict[str, Callable[[ClusterState, AuditSettings], list[AuditFinding]]] = {
    "storage-locations": check_storage_locations,
    "schedules": check_schedules,
    "pod-volumes": check_pod_volumes,
    "node-agent": check_node_agent,
    "cnpg": check_cnpg,
}


def audit(state: ClusterState, settings: AuditSettings | None = None) -> AuditReport:
    """Every check over `state`; findings in check order."""
    settings = settings or AuditSettings()
    findings = [finding for check in AUDIT_CHECKS.values() for finding in check(state, settings)]
    ages = {}
    for schedule in state.schedules or []:
        completed = next((b for b in _schedule_backups(state, schedule) if _status(b).get("phase") == "Completed"),
                         None)
        started = _started(completed) if completed is not None else None
        if started is not None:
            ages[_name(schedule)] = (state.now - started).total_seconds()
    checked = {"storage_locations": len(state.storage_locations or []), "schedules": len(state.schedules or []),
               "backups": len(state.backups), "pod_volume_backups": len(state.pod_volume_backups),
               "nodes": len(state.nodes), "cnpg_clusters": len(state.cnpg_clusters or [])}
    return AuditReport(findings=tuple(findings), checked=checked, notes=tuple(state.notes), backup_ages=ages)


# ---------------------------------------------------------------------------------------------
# The reader: GET requests only
# ---------------------------------------------------------------------------------------------

# (attribute, path, field selector); every one a LIST across namespaces.
_LISTS: tuple[tuple[str, str, str | None], ...] = (
    ("storage_locations", "/apis/velero.io/v1/backupstoragelocations", None),
    ("schedules", "/apis/velero.io/v1/schedules", None),
    ("backups", "/apis/velero.io/v1/backups", None),
    ("pod_volume_backups", "/apis/velero.io/v1/podvolumebackups", None),
    ("snapshot_locations", "/apis/velero.io/v1/volumesnapshotlocations", None),
    ("velero_deployments", "/apis/apps/v1/deployments", "metadata.name=velero"),
    ("node_agent_daemonsets", "/apis/apps/v1/daemonsets", "metadata.name=node-agent"),
    ("pods", "/api/v1/pods", None),
    ("nodes", "/api/v1/nodes", None),
    ("claims", "/api/v1/persistentvolumeclaims", None),
    ("volumes", "/api/v1/persistentvolumes", None),
    ("cnpg_clusters", "/apis/postgresql.cnpg.io/v1/clusters", None),
)
# Lists that stay None when the API has no such resource (Velero or CNPG not installed).
_OPTIONAL = frozenset({"storage_locations", "schedules", "cnpg_clusters"})


class AuditReadError(RestoreDrillError):
    """The API refused a read the audit needs."""


def _get(api: Any, path: str, query: Sequence[tuple[str, str]] = ()) -> tuple[int, Any]:
    """(status, decoded body) of one GET through `api` (a kubernetes.client.ApiClient)."""
    params = api.param_serialize(method="GET", resource_path=path, query_params=list(query),
                                 header_params={"Accept": "application/json"}, auth_settings=["BearerToken"])
    response = api.call_api(*params)
    body = response.read()
    try:
        return int(response.status), json.loads(body) if body else None
    except ValueError:
        return int(response.status), None


def read_cluster(api: Any, *, now: datetime | None = None, volume_stats: bool = True) -> ClusterState:
    """List what the audit needs, with GET requests only (no watch, no write)."""
    from kubernetes.client.exceptions import ApiException

    state = ClusterState(now=now or datetime.now(UTC))
    for attribute, path, field_selector in _LISTS:
        query = [("fieldSelector", field_selector)] if field_selector else []
        try:
            code, body = _get(api, path, query)
        except ApiException as error:
            code, body = int(error.status or 0), None
        if code == 404:
            if attribute in _OPTIONAL:
                setattr(state, attribute, None)
                state.notes.append(f"{path}: not served (CRD not installed); not audited")
                continue
            raise AuditReadError(f"the API server has no {path}", remedy="audit a cluster with Velero installed")
        if code in (401, 403):
            raise AuditReadError(f"the API server refused to list {path} ({code})",
                                 remedy="give the kubeconfig's user get/list on it (a read-only ClusterRole)")
        if code != 200 or not isinstance(body, dict):
            raise AuditReadError(f"listing {path} answered {code}", remedy="check the API server's health")
        setattr(state, attribute, list(body.get("items") or []))
    if volume_stats:
        state.claim_usage = _claim_usage(api, state)
    return state


def _claim_usage(api: Any, state: ClusterState) -> dict[tuple[str, str], int] | None:
    """usedBytes per claim from each node's kubelet summary (GET nodes/NAME/proxy/stats/summary)."""
    from kubernetes.client.exceptions import ApiException

    usage: dict[tuple[str, str], int] = {}
    for node in state.nodes:
        name = _meta(node).get("name")
        try:
            code, body = _get(api, f"/api/v1/nodes/{name}/proxy/stats/summary")
        except (ApiException, OSError) as error:
            code, body = 0, str(error)
        if code != 200 or not isinstance(body, dict):
            state.notes.append(f"kubelet volume stats of node {name} not readable ({code}): a zero-byte "
                               "PodVolumeBackup is judged on earlier backups only")
            return None
        for pod in body.get("pods") or []:
            for volume in pod.get("volume") or []:
                ref = volume.get("pvcRef") or {}
                if ref.get("name") and volume.get("usedBytes") is not None:
                    usage[(str(ref.get("namespace")), str(ref["name"]))] = int(volume["usedBytes"])
    return usage


def audit_cluster(kubeconfig: Path, context: str | None, *, settings: AuditSettings | None = None,
                  volume_stats: bool = True, now: datetime | None = None) -> AuditReport:
    """Read the cluster of `context` in `kubeconfig` and audit it, as at `now` (default: the clock;
    a later moment shows what the audit will say of today's backups then: objects cannot be aged)."""
    from restoredrill.kube import load_api_client

    api = load_api_client(kubeconfig, context)
    try:
        return audit(read_cluster(api, now=now, volume_stats=volume_stats), settings)
    finally:
        api.close()  # type: ignore[no-untyped-call]


# ---------------------------------------------------------------------------------------------
# Output: text, JSON, Prometheus
# ---------------------------------------------------------------------------------------------


def render_text(report: AuditReport) -> str:
    checked = ", ".join(f"{count} {kind.replace('_', ' ')}" for kind, count in report.checked.items())
    lines = [f"audited {checked}"]
    for check, title in CHECKS.items():
        found = report.of(check)
        mark = "FAIL" if any(f.severity == "error" for f in found) else ("WARN" if found else "ok")
        lines.append(f"{mark:<5} {check}: {title}")
        lines += [f"  {f.severity}: " + f.render().replace("\n", "\n  ") for f in found]
    lines += [f"note: {note}" for note in report.notes]
    errors, warnings = len(report.errors), len(report.findings) - len(report.errors)
    lines.append(f"{errors} errors, {warnings} warnings")
    return "\n".join(lines)


def as_json(report: AuditReport, *, seconds: float | None = None) -> dict[str, Any]:
    return {"ok": not report.errors, "checked": dict(report.checked),
            "findings": [f.as_dict() for f in report.findings], "notes": list(report.notes),
            "backup_age_seconds": dict(report.backup_ages),
            **({"duration_s": round(seconds, 3)} if seconds is not None else {})}


def prometheus_text(report: AuditReport, *, finished: float, seconds: float) -> str:
    """The audit as Prometheus text format, for a node-exporter textfile collector."""
    def label(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    lines = ["# HELP restoredrill_audit_findings Findings of the last audit, by check and severity.",
             "# TYPE restoredrill_audit_findings gauge"]
    for check in CHECKS:
        for severity in ("error", "warning"):
            count = sum(1 for f in report.of(check) if f.severity == severity)
            lines.append(f'restoredrill_audit_findings{{check="{check}",severity="{severity}"}} {count}')
    lines += ["# HELP restoredrill_audit_backup_age_seconds Age of each Schedule's last Completed Backup.",
              "# TYPE restoredrill_audit_backup_age_seconds gauge"]
    lines += [f'restoredrill_audit_backup_age_seconds{{schedule="{label(name)}"}} {age:.0f}'
              for name, age in sorted(report.backup_ages.items())]
    lines += ["# HELP restoredrill_audit_last_run_timestamp_seconds When the last audit finished.",
              "# TYPE restoredrill_audit_last_run_timestamp_seconds gauge",
              f"restoredrill_audit_last_run_timestamp_seconds {finished:.0f}",
              "# HELP restoredrill_audit_duration_seconds How long the last audit took.",
              "# TYPE restoredrill_audit_duration_seconds gauge",
              f"restoredrill_audit_duration_seconds {seconds:.3f}"]
    return "\n".join(lines) + "\n"


def write_atomically(path: Path, text: str) -> None:
    """Write via a rename, so a textfile collector never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(text)
    partial.replace(path)


def _duration(text: str, flag: str) -> timedelta:
    try:
        return parse_go_duration(text)
    except GoSyntaxError as error:
        raise ConfigError(f"{flag} {text!r}: {error}", remedy="write a Go duration such as 1h30m or 90m") from None


def _command(args: argparse.Namespace) -> int:
    settings = AuditSettings(grace=_duration(args.grace, "--grace"),
                             cnpg_backup_max_age=_duration(args.cnpg_max_age, "--cnpg-max-age"))
    started = time.monotonic()
    report = audit_cluster(Path(args.kubeconfig), args.context, settings=settings,
                           volume_stats=not args.no_volume_stats)
    seconds = time.monotonic() - started
    if args.json:
        print(json.dumps(as_json(report, seconds=seconds), indent=2))
    else:
        print(render_text(report))
    if args.metrics:
        write_atomically(Path(args.metrics), prometheus_text(report, finished=time.time(), seconds=seconds))
    return 1 if report.errors else 0


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "audit", help="audit a cluster's Velero and CNPG backups, read-only",
        description="Check, with read requests only, that a cluster's backups are there, whole and recent: "
        + "; ".join(CHECKS.values()) + ". Exits 1 when any error-severity finding is reported.")
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG"), required="KUBECONFIG" not in os.environ,
                        help="the cluster's kubeconfig (default: $KUBECONFIG)")
    parser.add_argument("--context", help="kubeconfig context (default: its current context)")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON, for machines")
    parser.add_argument("--grace", default="1h", help="how late a scheduled backup may be (Go duration; default 1h)")
    parser.add_argument("--cnpg-max-age", default="26h",
                        help="oldest acceptable CNPG base backup (Go duration; default 26h)")
    parser.add_argument("--metrics", metavar="FILE", help="also write the result as Prometheus text format")
    parser.add_argument("--no-volume-stats", action="store_true",
                        help="do not read the kubelets' volume stats (nodes/proxy), used to tell an empty claim")
    parser.set_defaults(func=_command)

