"""The static backup-policy rules, each taken from the runbook.

A rule lists its subjects (schedules, namespaces, workloads...) and checks one subject at a time,
returning findings that name the file, the line, the object and the fix. The static suite turns
every (rule, subject) pair into one test, so `pytest -k pelican` selects everything about pelican.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from restoredrill.catalogue import (
    App,
    Catalogue,
    CnpgCluster,
    FluxKustomization,
    KustomizationFile,
    Manifest,
    Schedule,
    VolumeClaim,
    Workload,
    dig,
)
from restoredrill.config import DrillConfig
from restoredrill.errors import RestoreDrillError, SourceLocation
from restoredrill.gosyntax import GoSyntaxError, format_go_duration, parse_go_duration, parse_velero_cron
from restoredrill.schemas import CrdSchemas, cached_schemas, validate
from restoredrill.velero_semantics import (
    HOOK_PHASES,
    Coverage,
    ambiguous_snapshot_providers,
    annotation_hook,
    default_storage_location,
    hook_selects,
    includes_namespace,
    loses_cluster_resources,
    namespace_pattern,
    plugin_snapshot_misses,
    runs_database_server,
    takes_claim,
    volume_coverage,
)

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    location: SourceLocation
    subject: str  # the object, as a person names it: "Schedule velero/pelican-daily"
    problem: str
    fix: str
    manifest: Manifest | None = None
    # The drill config's reason when an `ignore:` entry accepts this finding: reported, never failed.
    suppressed: str | None = None

    def render(self) -> str:
        subject = "" if self.subject == self.location.path else f"{self.subject}: "
        return f"{self.location}: {subject}{self.problem}\n  fix: {self.fix}"


@dataclass(frozen=True)
class Subject:
    id: str  # the pytest id, unique within a rule
    app: str | None  # for report grouping and `-k APP`
    value: Any


@dataclass
class RuleContext:
    catalogue: Catalogue
    config: DrillConfig
    schema_loader: Callable[[], CrdSchemas] = field(repr=False, default=lambda: cached_schemas(fetch=False))

    @cached_property
    def schemas(self) -> CrdSchemas:
        return self.schema_loader()


@dataclass(frozen=True)
class Rule:
    id: str
    title: str
    runbook: str  # the runbook section the rule comes from
    severity: Severity
    subjects: Callable[[RuleContext], list[Subject]]
    check: Callable[[Subject, RuleContext], list[Finding]]

    def severity_under(self, config: DrillConfig) -> Severity:
        if self.id in config.warning_rules:
            return "warning"
        if self.id in config.strict_rules or "all" in config.strict_rules:
            return "error"
        return self.severity

    def evaluate(self, subject: Subject, context: RuleContext) -> list[Finding]:
        """The check's findings at the severity the drill config gives the rule (an advisory a check
        marks as a warning stays one unless the rule is strict), with `ignore:` entries applied."""
        config = context.config
        severity = self.severity_under(config)
        strict = self.id in config.strict_rules or "all" in config.strict_rules
        findings = []
        for finding in self.check(subject, context):
            wanted = "warning" if finding.severity == "warning" and not strict else severity
            entry = next((e for e in config.ignore if e.matches(rule=self.id, file=finding.location.path,
                                                                  subject=finding.subject)), None)
            findings.append(replace(finding, severity=wanted, suppressed=entry.reason if entry else None))
        return findings


RULES: dict[str, Rule] = {}


Check = Callable[[Subject, RuleContext], list[Finding]]
ScheduleCheck = Callable[[Schedule, RuleContext], list[Finding]]


def rule(*, id: str, title: str, runbook: str, severity: Severity = "error",
         subjects: Callable[[RuleContext], list[Subject]]) -> Callable[[Check], Check]:
    """Register a check under a rule id; the static suite picks it up by that id."""
    def register(check: Check) -> Check:
        RULES[id] = Rule(id=id, title=title, runbook=runbook, severity=severity, subjects=subjects, check=check)
        return check
    return register


def _finding(rule_id: str, manifest: Manifest | None, location: SourceLocation, subject: str, problem: str,
             fix: str) -> Finding:
    return Finding(rule=rule_id, severity="error", location=location, subject=subject, problem=problem, fix=fix,
                   manifest=manifest)


# ---------------------------------------------------------------------------------------------
# Subjects
# ---------------------------------------------------------------------------------------------


def _app_subjects(context: RuleContext) -> list[Subject]:
    subjects = [Subject(id=app.name, app=app.name, value=app) for app in context.catalogue.apps]
    return [*subjects, Subject(id="outside-apps", app=None, value=None)]


def _kustomization_subjects(context: RuleContext) -> list[Subject]:
    catalogue = context.catalogue
    return [Subject(id=str(k.document.path), app=_app_name(catalogue, k.document.path), value=k)
            for k in catalogue.kustomization_files]


def _schedule_subjects(context: RuleContext) -> list[Subject]:
    return [Subject(id=s.name, app=_schedule_app(context.catalogue, s), value=s) for s in context.catalogue.schedules]


def _schedule_file_subjects(context: RuleContext) -> list[Subject]:
    """Applied Schedules and those whose file sits, unlisted, in a folder Flux builds."""
    catalogue = context.catalogue
    return [Subject(id=s.name, app=_schedule_app(catalogue, s), value=s)
            for s in (*catalogue.schedules, *catalogue.unreferenced_schedules)]


def _stateful_namespace_subjects(context: RuleContext) -> list[Subject]:
    namespaces = sorted({c.namespace for c in context.catalogue.volume_claims
                         if c.namespace and c.manifest.deployed_by is not None})
    catalogue = context.catalogue
    return [Subject(id=ns, app=(app.name if (app := catalogue.app_for_namespace(ns)) else ns), value=ns)
            for ns in namespaces]


def _database_container(workload: Workload) -> tuple[str, str] | None:
    """(container name, engine) of an in-pod database server, if the workload runs one."""
    for container in workload.containers:
        spec = dig(workload.manifest.obj, container.field_path)
        spec = spec if isinstance(spec, dict) else {}
        command = [str(c) for key in ("command", "args") for c in _as_list(spec.get(key))]
        engine = runs_database_server(kind=workload.manifest.kind, image=container.image, command=command)
        if engine is not None:
            return container.name, engine
    return None


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _database_subjects(context: RuleContext) -> list[Subject]:
    catalogue = context.catalogue
    return [Subject(id=f"{w.namespace}/{w.manifest.name}" + (f"/{w.pod_template_path[-1]}" if
                                                                 w.manifest.kind == "HelmRelease" else ""),
                    app=_app_name(catalogue, w.manifest.path), value=w)
            for w in catalogue.workloads
            if w.manifest.deployed_by is not None and _database_container(w) is not None
            and "cnpg.io/cluster" not in w.pod_labels and _fs_backed_up(w, context)]


def _fs_backed_up(workload: Workload, context: RuleContext) -> bool:
    """Whether some Schedule copies this database's files with fs-backup (the copy a freeze protects;
    a snapshot is crash-consistent and a namespace no Schedule takes is namespace-covered's finding)."""
    server = context.catalogue.velero_defaults.server()
    for schedule in _active_schedules(context.catalogue):
        if not includes_namespace(schedule.template, workload.namespace):
            continue
        volumes: list[str | None] = [*_pod_volume_names(workload)] or [None]
        for volume in volumes:
            coverage = volume_coverage(schedule.template, server, volume=volume,
                                       pod_annotations=workload.pod_annotations)
            if coverage.method == "fs-backup":
                return True
    return False


def _active_schedules(catalogue: Catalogue) -> list[Schedule]:
    return [s for s in catalogue.schedules if s.spec.get("paused") is not True]


def _pod_volume_names(workload: Workload) -> list[str]:
    """Pod volumes backed by claims (app-template HelmReleases: their persistence keys)."""
    if workload.manifest.kind == "HelmRelease":
        return [volume for volume, _ in workload.volumes]
    spec = dig(workload.manifest.obj, (*workload.pod_template_path, "spec")) or {}
    return [str(v.get("name")) for v in spec.get("volumes") or []
            if isinstance(v, dict) and isinstance(v.get("persistentVolumeClaim"), dict)]


def _cnpg_subjects(context: RuleContext) -> list[Subject]:
    catalogue = context.catalogue
    return [Subject(id=f"{c.namespace}/{c.name}", app=_app_name(catalogue, c.manifest.path), value=c)
            for c in catalogue.cnpg_clusters]


def _flux_subjects(context: RuleContext) -> list[Subject]:
    catalogue = context.catalogue
    return [Subject(id=f"{k.namespace}/{k.name}", app=_app_name(catalogue, k.manifest.path), value=k)
            for k in catalogue.flux_kustomizations]


@dataclass(frozen=True)
class UnservedApiVersion:
    """Objects of one apiVersion and kind the pinned CRDs do not serve: one finding, not one per object."""

    api_version: str
    kind: str
    manifests: tuple[Manifest, ...]


@dataclass(frozen=True)
class UnpinnedGroups:
    """Objects of API groups no pinned CRD defines: one advisory listing them."""

    manifests: tuple[Manifest, ...]


def _schema_subjects(context: RuleContext) -> list[Subject]:
    catalogue = context.catalogue
    try:
        schemas: CrdSchemas | None = context.schemas
    except RestoreDrillError:
        schemas = None  # every object's check then fails, saying how to get the schemas
    subjects = []
    seen: set[str] = set()
    unserved: dict[tuple[str, str], list[Manifest]] = {}
    unpinned: list[Manifest] = []
    for m in catalogue.manifests:
        if not m.group.endswith(_SCHEMA_GROUP_SUFFIXES):
            continue
        if schemas is not None and m.group not in schemas.groups:
            unpinned.append(m)
            continue
        if schemas is not None and schemas.lookup(m.group, m.version, m.kind) is None:
            if schemas.versions_of(m.group, m.kind):
                unserved.setdefault((m.api_version, m.kind), []).append(m)
                continue
            if m.kind in _EXPERIMENTAL_KINDS.get(m.group, ()):
                unpinned.append(m)  # a kind of a channel the pinned release does not ship
                continue
        base = f"{m.kind}/{m.namespace}/{m.name}" if m.namespace else f"{m.kind}/{m.name}"
        subject_id, n = base, 1
        while subject_id in seen:
            n += 1
            subject_id = f"{base}#{n}"
        seen.add(subject_id)
        subjects.append(Subject(id=subject_id, app=_app_name(catalogue, m.path), value=m))
    subjects += [Subject(id=f"apiVersion/{api_version}/{kind}", app=None,
                         value=UnservedApiVersion(api_version, kind, tuple(ms)))
                 for (api_version, kind), ms in sorted(unserved.items())]
    if unpinned:
        subjects.append(Subject(id="unpinned-groups", app=None, value=UnpinnedGroups(tuple(unpinned))))
    subjects += [Subject(id=f"Schedule/{s.namespace}/{s.name}", app=_schedule_app(catalogue, s), value=s)
                 for s in catalogue.schedules if s.from_helm_values]
    return subjects


# Kinds of the Gateway API experimental channel: the pinned CRDs are the standard channel's.
_EXPERIMENTAL_KINDS = {"gateway.networking.k8s.io": frozenset({
    "TLSRoute", "TCPRoute", "UDPRoute", "BackendTLSPolicy", "XListenerSet", "XBackendTrafficPolicy"})}
_SCHEMA_GROUP_SUFFIXES = ("velero.io", "cnpg.io", "toolkit.fluxcd.io", "gateway.networking.k8s.io")


def _app_name(catalogue: Catalogue, path: Path) -> str | None:
    app = catalogue.app_of(path)
    return app.name if app else None


def _schedule_app(catalogue: Catalogue, schedule: Schedule) -> str | None:
    for namespace in schedule.template.get("includedNamespaces") or []:
        app = catalogue.app_for_namespace(str(namespace))
        if app is not None:
            return app.name
    return None


# ---------------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------------


@rule(id="manifests-parse", title="Every manifest parses", runbook="(all)", subjects=_app_subjects)
def manifests_parse(subject: Subject, context: RuleContext) -> list[Finding]:
    app: App | None = subject.value
    findings = []
    for error in context.catalogue.errors:
        path = Path(error.location.path)
        owner = context.catalogue.app_of(path)
        if (app is None and owner is None) or (app is not None and owner is app):
            findings.append(_finding("manifests-parse", None, error.location, error.location.path,
                                     error.message.split(": ", 1)[-1], error.remedy or "fix the file"))
    return findings


@rule(id="kustomization-references", title="Every kustomization entry exists",
      runbook="Adding a Backup Schedule", subjects=_kustomization_subjects)
def kustomization_references(subject: Subject, context: RuleContext) -> list[Finding]:
    kfile: KustomizationFile = subject.value
    findings = []
    for broken in context.catalogue.broken_references:
        if broken.kustomization is kfile:
            findings.append(_finding(
                "kustomization-references", None, kfile.document.location(broken.field_path),
                str(kfile.document.path),
                f"`{broken.field_path[0]}` entry {broken.entry!r} names nothing that exists "
                f"(looked for {kfile.directory / broken.entry})",
                "create the file, correct the entry's path, or remove the entry; Flux refuses to build "
                "a kustomization with a missing resource, so nothing in it is applied"))
    return findings


@rule(id="schedule-referenced", title="Every schedule file is referenced from the Velero kustomization",
      runbook="Adding a Backup Schedule", subjects=_schedule_file_subjects)
def schedule_referenced(subject: Subject, context: RuleContext) -> list[Finding]:
    schedule: Schedule = subject.value
    catalogue = context.catalogue
    if schedule.manifest.deployed_by is not None or schedule.manifest.path in catalogue.deployed_files \
            or not catalogue.flux_kustomizations:
        return []
    kfile = _nearest_kustomization(catalogue, schedule.manifest.path)
    if kfile is not None:
        entry = "./" + str(schedule.manifest.path.relative_to(kfile.directory))
        fix = f"add `- {entry}` to `resources:` in {kfile.document.path}"
    else:
        fix = "reference the file from the Velero app's kustomization.yaml resources"
    return [_finding("schedule-referenced", schedule.manifest, schedule.location(), schedule.ref,
                     "the schedule's file is not referenced by any kustomization that Flux applies, "
                     "so this Schedule never reaches the cluster and no backup is taken", fix)]


def _nearest_kustomization(catalogue: Catalogue, path: Path) -> KustomizationFile | None:
    by_dir = {k.directory: k for k in catalogue.kustomization_files}
    for folder in path.parents:
        if folder in by_dir:
            return by_dir[folder]
    return None


def _other_backup(claim: VolumeClaim, catalogue: Catalogue) -> str | None:
    """What backs a claim up besides Velero, where the repo shows it: a CNPG Cluster's object-store
    backups with a ScheduledBackup, or a VolSync ReplicationSource of the claim."""
    if claim.origin == "CNPG Cluster storage":
        cluster = next((c for c in catalogue.cnpg_clusters if c.manifest is claim.manifest), None)
        if cluster is not None and cluster.object_store_backup and _has_scheduled_backup(catalogue, cluster):
            return f"CNPG {cluster.object_store_backup} with a ScheduledBackup"
        return None
    for m in catalogue.manifests:
        if m.kind == "ReplicationSource" and m.group == "volsync.backube" and m.namespace == claim.namespace:
            source = str(m.get("spec", "sourcePVC") or "")
            if source == claim.name or ("${" in source and m.deployed_by == claim.manifest.deployed_by):
                return f"VolSync ReplicationSource {m.name}"
    return None


def _has_scheduled_backup(catalogue: Catalogue, cluster: CnpgCluster) -> bool:
    """Whether a ScheduledBackup, not suspended, takes base backups of the Cluster to the object
    store it archives to: its `method` (default barmanObjectStore) must be the Cluster's
    (`plugin` with pluginConfiguration naming the Cluster's barman-cloud plugin). A volumeSnapshot
    ScheduledBackup leaves only WALs in the object store, nothing to recover from, and its snapshots
    are VolumeSnapshots of the namespace the drill deletes (CNPG api/v1 ScheduledBackupSpec)."""
    store = cluster.object_store_backup or ""
    for m in catalogue.manifests:
        if not (m.group == "postgresql.cnpg.io" and m.kind == "ScheduledBackup" and m.namespace == cluster.namespace
                and m.get("spec", "cluster", "name") == cluster.name and m.get("spec", "suspend") is not True):
            continue
        method = str(m.get("spec", "method") or "barmanObjectStore")
        if method == "barmanObjectStore" and store == "barmanObjectStore":
            return True
        if method == "plugin" and store == f"plugin {m.get('spec', 'pluginConfiguration', 'name')}":
            return True
    return False


def _exemption_names(claim: VolumeClaim, catalogue: Catalogue) -> list[str]:
    """The drill config's `apps.NAME` keys that exempt the claim: its app's name, and its namespace's
    when that app is the namespace's own (or no app owns it)."""
    app = catalogue.app_of(claim.manifest.path) or next(
        (a for a in catalogue.apps if claim.manifest.deployed_by in {k.name for k in a.kustomizations}), None)
    names = [app.name] if app else []
    if app is None or catalogue.app_for_namespace(str(claim.namespace)) is app:
        names.append(str(claim.namespace))
    return names


def _exempt(claim: VolumeClaim, context: RuleContext) -> bool:
    """Whether the drill config exempts the app that owns this claim (not its whole namespace)."""
    return any((o := context.config.apps.get(n)) is not None and not o.backup_required
               for n in _exemption_names(claim, context.catalogue))


@rule(id="namespace-covered", title="Every stateful namespace is covered by a Schedule",
      runbook="Backup Schedules", subjects=_stateful_namespace_subjects)
def namespace_covered(subject: Subject, context: RuleContext) -> list[Finding]:
    namespace: str = subject.value
    catalogue = context.catalogue
    schedules = _active_schedules(catalogue)
    claims = [c for c in catalogue.volume_claims if c.namespace == namespace and c.manifest.deployed_by
              and not any(_takes(s, c, catalogue) for s in schedules)
              and not _exempt(c, context) and _other_backup(c, catalogue) is None]
    if not claims:
        return []
    first = claims[0]
    what = ", ".join(f"{c.origin} {c.name}" for c in claims[:4]) + (f" and {len(claims) - 4} more"
                                                                   if len(claims) > 4 else "")
    filtered = [s for s in schedules if includes_namespace(s.template, namespace)]
    if filtered:
        return [_finding(
            "namespace-covered", first.manifest, first.manifest.location(), f"namespace {namespace}",
            f"holds persistent data ({what}) that {', '.join(s.ref for s in filtered)} leaves out: the Schedule "
            "includes the namespace, but its includedResources/excludedResources or labelSelector do not take "
            "these claims (nor a pod that mounts them), and no other backup the repo shows covers them",
            "add persistentvolumeclaims (and pods, for fs-backup) to the Schedule's includedResources and give "
            "the claims the labels its labelSelector selects, or add a Schedule for them, or exempt "
            + ", ".join(f"apps.{name}.backup_required: false" for name in dict.fromkeys(
                (_exemption_names(c, catalogue) or [namespace])[0] for c in claims)) + " with a reason")]
    schedules_dir = next((s.manifest.path.parent for s in catalogue.schedules if not s.from_helm_values), None)
    where = f" in {schedules_dir}" if schedules_dir else ""
    owners = list(dict.fromkeys((_exemption_names(c, catalogue) or [namespace])[0] for c in claims))
    return [_finding(
        "namespace-covered", first.manifest, first.manifest.location(), f"namespace {namespace}",
        f"holds persistent data ({what}) that no Velero Schedule includes and no other backup the repo shows "
        "(a CNPG object-store backup with a ScheduledBackup, a VolSync ReplicationSource) covers, so it is never "
        "backed up",
        f"add a Schedule for it{where} (copy the runbook's 'Simple App' template with includedNamespaces: "
        f"[{namespace}]) and list it in the Velero kustomization, or exempt "
        f"{'the apps that own them' if len(owners) > 1 else 'the app that owns it'} in the drill config: "
        + ", ".join(f"apps.{name}.backup_required: false" for name in owners) + " with a reason")]


def _schedule_rule(rule_id: str, title: str) -> Callable[[ScheduleCheck], Check]:
    """A rule over every Schedule, whose check takes the Schedule itself."""
    def register(check: ScheduleCheck) -> Check:
        def run(subject: Subject, context: RuleContext) -> list[Finding]:
            return check(subject.value, context)
        return rule(id=rule_id, title=title, runbook="Adding a Backup Schedule", subjects=_schedule_subjects)(run)
    return register


def _schedule_finding(rule_id: str, schedule: Schedule, path: tuple[str, ...], problem: str, fix: str) -> Finding:
    return _finding(rule_id, schedule.manifest, schedule.location(*path), schedule.ref, problem, fix)


@_schedule_rule("schedule-cron", "The schedule's cron expression is one Velero accepts")
def schedule_cron(schedule: Schedule, context: RuleContext) -> list[Finding]:
    spec = schedule.spec.get("schedule")
    try:
        parse_velero_cron("" if spec is None else str(spec))
    except GoSyntaxError as error:
        return [_schedule_finding("schedule-cron", schedule, ("schedule",),
                                  f"Velero rejects schedule {spec!r}: {error}",
                                  "use five cron fields (minute hour day-of-month month day-of-week, Sunday is 0), "
                                  "a descriptor such as @daily, or @every 24h; the runbook uses \"0 2 * * *\"")]
    return []


@_schedule_rule("schedule-ttl", "The schedule keeps backups at least the minimum retention")
def schedule_ttl(schedule: Schedule, context: RuleContext) -> list[Finding]:
    minimum = context.config.min_ttl
    raw = schedule.template.get("ttl")
    defaults = context.catalogue.velero_defaults
    fix_min = f"set spec.template.ttl to {format_go_duration(minimum)} or more"
    try:
        ttl = parse_go_duration(str(raw)) if raw is not None else timedelta(0)
    except GoSyntaxError as error:
        return [_schedule_finding("schedule-ttl", schedule, ("template", "ttl"),
                                  f"ttl {raw!r} is not a Go duration ({error}), so Velero cannot read the Schedule",
                                  f"{fix_min} (Go durations have no 'd' unit: 30 days is 720h0m0s)")]
    note = ""
    if ttl == timedelta(0):
        # Velero gives a backup without a TTL the server's --default-backup-ttl.
        try:
            ttl = parse_go_duration(defaults.default_ttl)
        except GoSyntaxError:
            ttl = timedelta(hours=720)
        note = f" (ttl {'unset' if raw is None else repr(raw)} means the server default, {defaults.default_ttl})"
    if ttl < minimum:
        return [_schedule_finding("schedule-ttl", schedule, ("template", "ttl"),
                                  f"keeps backups for {format_go_duration(ttl)}{note}, less than the required "
                                  f"{format_go_duration(minimum)}",
                                  f"{fix_min}, or lower min_ttl in the drill config if shorter retention is intended")]
    return []


def _claims_of(schedule: Schedule, catalogue: Catalogue) -> list[VolumeClaim]:
    return [c for c in catalogue.volume_claims if c.manifest.deployed_by is not None
            and _takes(schedule, c, catalogue) and _other_backup(c, catalogue) is None]


def _takes(schedule: Schedule, claim: VolumeClaim, catalogue: Catalogue) -> bool:
    """Whether the Schedule's backups take the claim (velero_semantics.takes_claim), with the labels of
    the pods that mount it (unknown for a HelmRelease known from its values only)."""
    pods = [None if w.manifest.kind == "HelmRelease" else w.pod_labels for w in catalogue.workloads
            if w.namespace == claim.namespace and _volumes_of_claim(w, claim)]
    return takes_claim(schedule.template, namespace=claim.namespace, labels=claim.labels, pod_labels=pods,
                       unknown_prefix=claim.unknown_label_prefix)


def _claim_coverage(claim: VolumeClaim, schedule: Schedule, catalogue: Catalogue) -> Coverage:
    """How `schedule` takes the claim's data, through the pods that mount it."""
    server = catalogue.velero_defaults.server()
    mounts = [(w, v) for w in catalogue.workloads if w.namespace == claim.namespace
              for v in _volumes_of_claim(w, claim)]
    if not mounts:
        return _by_plugin_snapshot(volume_coverage(schedule.template, server), claim, catalogue)
    coverages = [volume_coverage(schedule.template, server, volume=v, pod_annotations=w.pod_annotations)
                 for w, v in mounts]
    return _by_plugin_snapshot(next((c for c in coverages if c.covered), coverages[0]), claim, catalogue)


def _by_plugin_snapshot(coverage: Coverage, claim: VolumeClaim, catalogue: Catalogue) -> Coverage:
    """A cloud plugin's snapshot covers only that cloud's disks: otherwise the claim's data is lost."""
    if not (coverage.method or "").startswith("volume snapshot"):
        return coverage
    provisioner = next((str(m.get("provisioner")) for m in catalogue.manifests if m.kind == "StorageClass"
                        and m.name == claim.storage_class and m.get("provisioner")), None)
    why = plugin_snapshot_misses(catalogue.velero_defaults.server().snapshot_providers,
                                 storage_class=claim.storage_class, provisioner=provisioner)
    return coverage if why is None else Coverage(None, why)


def _volumes_of_claim(workload: Workload, claim: VolumeClaim) -> list[str]:
    if workload.manifest.kind == "HelmRelease":
        return [volume for volume, name in workload.volumes if name == claim.name]
    spec = dig(workload.manifest.obj, (*workload.pod_template_path, "spec")) or {}
    names = [str(v.get("name")) for v in spec.get("volumes") or [] if isinstance(v, dict)
             and dig(v, ("persistentVolumeClaim", "claimName")) == claim.name]
    if claim.origin == "StatefulSet volumeClaimTemplate" and claim.manifest is workload.manifest:
        names.append(claim.name.removesuffix(f"-{workload.manifest.name}"))
    return names


@_schedule_rule("schedule-fs-backup", "The schedule takes the data of the volumes it includes")
def schedule_fs_backup(schedule: Schedule, context: RuleContext) -> list[Finding]:
    catalogue = context.catalogue
    lost = [(c, coverage) for c in _claims_of(schedule, catalogue)
            if (coverage := _claim_coverage(c, schedule, catalogue)).loses_data]
    if not lost:
        return []
    names = ", ".join(f"{c.namespace}/{c.name}" for c, _ in lost[:5]) + (f" and {len(lost) - 5} more"
                                                                          if len(lost) > 5 else "")
    field_name = ("defaultVolumesToFsBackup" if "defaultVolumesToFsBackup" in schedule.template
                  else "snapshotVolumes" if "snapshotVolumes" in schedule.template else "defaultVolumesToFsBackup")
    fix = ("set spec.template.defaultVolumesToFsBackup: true (the runbook's template)"
           if catalogue.velero_defaults.node_agent else
           "deploy the node-agent (deployNodeAgent: true in the Velero HelmRelease values) and set "
           "spec.template.defaultVolumesToFsBackup: true")
    return [_schedule_finding("schedule-fs-backup", schedule, ("template", field_name),
                              f"backs up the PVC objects of {names} but none of their data: {lost[0][1].detail}",
                              fix)]


@_schedule_rule("schedule-cluster-resources", "The schedule includes cluster resources (PVs)")
def schedule_cluster_resources(schedule: Schedule, context: RuleContext) -> list[Finding]:
    if not loses_cluster_resources(schedule.template):
        return []
    return [_schedule_finding("schedule-cluster-resources", schedule, ("template", "includeClusterResources"),
                              "includeClusterResources is false: the PVs of the namespace's claims are left out, so a "
                              "restore cannot bring back their bindings or snapshot-backed data",
                              "remove includeClusterResources (unset takes the cluster-scoped objects the namespace's "
                              "objects need) or set it to true (the runbook's template)")]


@_schedule_rule("schedule-storage-location", "The schedule's storageLocation is defined")
def schedule_storage_location(schedule: Schedule, context: RuleContext) -> list[Finding]:
    catalogue = context.catalogue
    defaults = catalogue.velero_defaults
    wanted = schedule.template.get("storageLocation") or default_storage_location(
        ((s.name, s.default) for s in catalogue.storage_locations), defaults.default_storage_location)
    names = sorted({s.name for s in catalogue.storage_locations})
    findings = []
    if wanted not in names and (names or defaults.source is not None):
        known = f"defined: {', '.join(names)}" if names else "the repo defines no BackupStorageLocation"
        findings.append(_schedule_finding(
            "schedule-storage-location", schedule, ("template", "storageLocation"),
            f"storageLocation {wanted!r} is not defined ({known}), so every backup fails",
            "point storageLocation at a defined location, or define it in the Velero HelmRelease values "
            "(configuration.backupStorageLocation) or as a BackupStorageLocation"))
    if schedule.template.get("snapshotVolumes") is not False and not schedule.template.get("volumeSnapshotLocations"):
        for provider in ambiguous_snapshot_providers(defaults.snapshot_locations, defaults.default_snapshot_locations):
            findings.append(_schedule_finding(
                "schedule-storage-location", schedule, ("template",),
                f"the repo defines more than one VolumeSnapshotLocation for provider {provider!r} and neither the "
                "Schedule nor the server names one, so Velero fails every backup",
                "list the location in spec.template.volumeSnapshotLocations, or set "
                "configuration.defaultVolumeSnapshotLocations (provider:name) in the Velero values"))
    named = schedule.template.get("volumeSnapshotLocations")
    if schedule.template.get("snapshotVolumes") is not False and isinstance(named, list):
        # backup_controller validateAndGetSnapshotLocations: one named location per provider.
        providers = dict(defaults.snapshot_locations)
        chosen: dict[str, str] = {}
        for name in map(str, named):
            of = providers.get(name)
            if of is None:
                continue
            if chosen.setdefault(of, name) != name:
                findings.append(_schedule_finding(
                    "schedule-storage-location", schedule, ("template", "volumeSnapshotLocations"),
                    f"volumeSnapshotLocations names more than one location of provider {of!r} "
                    f"({chosen[of]}, {name}): Velero takes one per provider and fails every backup "
                    "(\"more than one VolumeSnapshotLocation name specified for provider\")",
                    f"keep one location of provider {of!r} in spec.template.volumeSnapshotLocations"))
    return findings


@_schedule_rule("schedule-paused", "The schedule is not paused")
def schedule_paused(schedule: Schedule, context: RuleContext) -> list[Finding]:
    if schedule.spec.get("paused") is not True:
        return []
    return [_schedule_finding("schedule-paused", schedule, ("paused",),
                              "spec.paused is true, so the Schedule takes no backups",
                              "remove spec.paused (or set it to false), or delete the Schedule if it is retired")]


@_schedule_rule("schedule-namespaces-exist", "The schedule's includedNamespaces exist in the repo")
def schedule_namespaces_exist(schedule: Schedule, context: RuleContext) -> list[Finding]:
    known = context.catalogue.namespaces
    findings = []
    for index, namespace in enumerate(schedule.template.get("includedNamespaces") or []):
        namespace = str(namespace)
        if namespace_pattern(namespace) and not _velero_at_least(context.catalogue, (1, 18)):
            tag = context.catalogue.velero_defaults.image_tag
            findings.append(_schedule_finding(
                "schedule-namespaces-exist", schedule, ("template", "includedNamespaces", index),  # type: ignore[arg-type]
                f"includedNamespaces entry {namespace!r} is a pattern, and Velero before 1.18 "
                f"({'this repo runs ' + tag if tag else 'the version restoredrill models, 1.16'}) takes it as a "
                "namespace name: the backup looks for a namespace literally named so, logs an error and takes "
                "nothing from it (patterns work only in excludedNamespaces there; velero #1874)",
                "list the namespaces by name, or use includedNamespaces: ['*'] with excludedNamespaces patterns "
                "for the rest, or upgrade Velero to 1.18 or later"))
            continue
        if namespace == "*" or namespace_pattern(namespace) or namespace in known:
            continue
        close = difflib.get_close_matches(namespace, sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        findings.append(_schedule_finding(
            "schedule-namespaces-exist", schedule, ("template", "includedNamespaces", index),  # type: ignore[arg-type]
            f"includedNamespaces names {namespace!r}, which the repo never creates{hint}: the backup would be empty",
            "correct the namespace name, or remove the Schedule if the app is gone"))
    return findings


def _velero_at_least(catalogue: Catalogue, version: tuple[int, int]) -> bool:
    """Whether the repo's Velero release names an image tag of this version or later."""
    match = re.match(r"v?(\d+)\.(\d+)", catalogue.velero_defaults.image_tag or "")
    return match is not None and (int(match.group(1)), int(match.group(2))) >= version


@_schedule_rule("schedule-unique-name", "Schedule names are unique")
def schedule_unique_name(schedule: Schedule, context: RuleContext) -> list[Finding]:
    def source(s: Schedule) -> tuple[object, ...]:
        return (s.manifest.document.path, s.manifest.document.index, s.spec_path)

    # The same document applied by two Kustomizations (a parent building every folder, and the app's
    # own) is one Schedule reaching the cluster twice, identical: nothing is replaced.
    twins = [s for s in context.catalogue.schedules
             if s is not schedule and s.name == schedule.name and s.namespace == schedule.namespace
             and source(s) != source(schedule)]
    if not twins:
        return []
    where = ", ".join(str(t.location()) for t in twins)
    return [_schedule_finding("schedule-unique-name", schedule, (),
                              f"another Schedule has the same name ({where}); one replaces the other",
                              "give each Schedule its own metadata.name, e.g. <app>-daily")]


# -- in-pod database hooks -------------------------------------------------------------------------

_FREEZE = {
    "mysql": re.compile(r"flush\s+tables\s+with\s+read\s+lock", re.IGNORECASE),
    "postgresql": re.compile(r"pg_(start_backup|backup_start)|fsfreeze\s+(-f|--freeze)", re.IGNORECASE),
}
_THAW = {
    "mysql": re.compile(r"\bkill\b|\bpkill\b|unlock\s+tables", re.IGNORECASE),
    "postgresql": re.compile(r"pg_(stop_backup|backup_stop)|fsfreeze\s+(-u|--unfreeze)", re.IGNORECASE),
}
# A session that outlives the hook: backgrounded, fed from a FIFO, or kept alive by a sleep.
# Velero waits for a pre hook to return before it copies: a session kept in the foreground (even by a
# SELECT SLEEP(n)) has ended, and its lock with it, by the time the copy starts.
_HELD_SESSION = re.compile(r"(?<![&|])&(?![&>])|\bnohup\b|\bsetsid\b|mkfifo", re.IGNORECASE)
_ENDS_SESSION = re.compile(r"\bkill\b|\bpkill\b|>\s*\S*fifo|\bSHUTDOWN\b", re.IGNORECASE)


@dataclass(frozen=True)
class _Hook:
    phase: str  # "pre" or "post"
    container: str | None
    command: str
    location: SourceLocation
    manifest: Manifest


def _hooks_for(workload: Workload, context: RuleContext) -> list[_Hook]:
    """Backup hooks that would run in this workload's pods: from Schedules and pod annotations."""
    hooks: list[_Hook] = []
    annotations = workload.pod_annotations
    annotated = set()  # phases the pod's own hook takes: the Schedule's hooks of that phase do not run in it
    for phase in HOOK_PHASES:
        command = annotation_hook(annotations, phase)
        if command:
            annotated.add(phase)
            container = annotations.get(f"{phase}.hook.backup.velero.io/container")
            if container is None and phase == "pre" and not annotations.get("pre.hook.backup.velero.io/command"):
                container = annotations.get("hook.backup.velero.io/container")
            hooks.append(_Hook(phase, container, command,
                               workload.manifest.location((*workload.pod_template_path, "metadata", "annotations")),
                               workload.manifest))
    for schedule in _active_schedules(context.catalogue):
        template = schedule.template
        if not includes_namespace(template, workload.namespace):
            continue
        for index, resource in enumerate(dig(template, ("hooks", "resources")) or []):
            if not isinstance(resource, dict):
                continue
            if not hook_selects(resource, namespace=workload.namespace, labels=workload.pod_labels):
                continue
            for phase in HOOK_PHASES:
                if phase in annotated:
                    continue
                for position, hook in enumerate(resource.get(phase) or []):
                    exec_hook = hook.get("exec") if isinstance(hook, dict) else None
                    if not isinstance(exec_hook, dict):
                        continue
                    raw = exec_hook.get("command") or []
                    text = " ".join(str(c) for c in raw) if isinstance(raw, list) else str(raw)
                    hooks.append(_Hook(phase, exec_hook.get("container"), text,
                                       schedule.location("template", "hooks", "resources", index, phase, position),
                                       schedule.manifest))
    return hooks


@rule(id="database-hooks", title="In-pod databases are frozen and thawed by backup hooks",
      runbook="App with Database Hooks", subjects=_database_subjects)
def database_hooks(subject: Subject, context: RuleContext) -> list[Finding]:
    workload: Workload = subject.value
    found = _database_container(workload)
    assert found is not None
    container, engine = found
    ref = f"{workload.manifest.kind} {workload.namespace}/{workload.manifest.name}"
    hooks = [h for h in _hooks_for(workload, context) if h.container in (None, container)]
    pre = [h for h in hooks if h.phase == "pre" and _FREEZE[engine].search(h.command)]
    post = [h for h in hooks if h.phase == "post" and _THAW[engine].search(h.command)]
    example = ("FLUSH TABLES WITH READ LOCK held by a session that stays open for the backup, ended by the post hook"
               if engine == "mysql" else "pg_backup_start()/pg_backup_stop() or fsfreeze --freeze/--unfreeze")
    location = workload.manifest.location(workload.containers[0].field_path if workload.containers else ())
    findings = []
    if not pre:
        findings.append(_finding(
            "database-hooks", workload.manifest, location, ref,
            f"runs {engine} in container {container!r} but no pre-backup hook freezes it, so the backup copies "
            "database files mid-write",
            f"add a pre hook on container {container!r} to the Schedule's template.hooks.resources "
            f"({example}); see the runbook's pricebuddy schedule"))
    if not post:
        findings.append(_finding(
            "database-hooks", workload.manifest, location, ref,
            f"no post-backup hook thaws {engine} in container {container!r}",
            f"add a post hook on container {container!r} that ends the freeze ({example})"))
    if engine == "mysql":
        for hook in pre:
            if not _HELD_SESSION.search(hook.command):
                findings.append(_finding(
                    "database-hooks", hook.manifest, hook.location, ref,
                    "the pre hook runs FLUSH TABLES WITH READ LOCK in a client that exits when the hook returns, "
                    "and MySQL releases the lock as soon as that session ends: the backup is not frozen at all",
                    "keep the locking session open for the backup: start the client in the background (fed by a "
                    "FIFO, or FLUSH ... ; SELECT SLEEP(n) in a backgrounded session) so the hook returns while "
                    "the lock holds, and end that session in the post hook"))
        for hook in post:
            if not _ENDS_SESSION.search(hook.command):
                findings.append(_finding(
                    "database-hooks", hook.manifest, hook.location, ref,
                    "the post hook runs UNLOCK TABLES in a new session, which releases nothing: the lock belongs "
                    "to the pre hook's session",
                    "end the pre hook's session in the post hook (kill its client, or write to its FIFO)"))
    return findings


@rule(id="cnpg-object-store-backup", title="CNPG clusters back up to an object store", severity="warning",
      runbook="CNPG Database Recovery, Option B (TD-004)", subjects=_cnpg_subjects)
def cnpg_object_store_backup(subject: Subject, context: RuleContext) -> list[Finding]:
    cluster: CnpgCluster = subject.value
    if cluster.object_store_backup is not None:
        return []
    return [Finding(
        rule="cnpg-object-store-backup", severity="warning", manifest=cluster.manifest,
        location=cluster.manifest.location(("spec",)), subject=f"Cluster {cluster.namespace}/{cluster.name}",
        problem="has no object-store backup (spec.backup.barmanObjectStore or the barman-cloud plugin): only "
                "Velero's copy of its PVC can restore it, and Option B (bootstrap.recovery) is unavailable",
        fix="configure spec.backup.barmanObjectStore with a destinationPath and s3Credentials (runbook TD-004); "
            "list cnpg-object-store-backup in strict_rules to make this a failure")]


@rule(id="flux-kustomization", title="Flux Kustomization paths and dependsOn exist",
      runbook="Full Cluster Recovery Sequence", subjects=_flux_subjects)
def flux_kustomization(subject: Subject, context: RuleContext) -> list[Finding]:
    ks: FluxKustomization = subject.value
    catalogue = context.catalogue
    ref = f"Kustomization {ks.namespace}/{ks.name}"
    findings = []
    if not ks.local_source:
        pass  # its path is a folder of another repository's source, not of this one
    elif ks.path is None:
        findings.append(_finding("flux-kustomization", ks.manifest, ks.manifest.location(("spec",)), ref,
                                 "has no spec.path, so Flux applies the whole repo from its root",
                                 "set spec.path to the app's folder, e.g. ./kubernetes/apps/<namespace>/<app>/app"))
    elif not (catalogue.root / ks.path).is_dir():
        written = str(ks.manifest.get("spec", "path"))
        findings.append(_finding("flux-kustomization", ks.manifest, ks.manifest.location(("spec", "path")), ref,
                                 f"spec.path {written!r} is not a folder of the repo, so the Kustomization fails",
                                 "point spec.path at an existing folder (paths are relative to the repo root)"))
    known = {(k.name, k.namespace) for k in catalogue.flux_kustomizations}
    for name, namespace, field_path in ks.depends_on:
        if (name, namespace) not in known:
            names = sorted(n for n, ns in known if ns == namespace)
            close = difflib.get_close_matches(name, names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            findings.append(_finding(
                "flux-kustomization", ks.manifest, ks.manifest.location(field_path), ref,
                f"dependsOn names Kustomization {namespace}/{name}, which the repo does not define{hint}: "
                "Flux waits for it forever and never applies this app",
                "correct the name (and namespace) in dependsOn, or remove the entry"))
    return findings


@rule(id="crd-schema", title="Velero, Flux, CNPG and Gateway objects match their CRD schemas",
      runbook="(all: an unknown field is dropped silently)", subjects=_schema_subjects)
def crd_schema(subject: Subject, context: RuleContext) -> list[Finding]:
    schemas = context.schemas
    if isinstance(subject.value, Schedule):
        schedule: Schedule = subject.value
        schema = schemas.lookup("velero.io", "v1", "Schedule")
        spec_schema = (schema or {}).get("properties", {}).get("spec", {})
        values = {k: v for k, v in schedule.spec.items() if k not in ("disabled", "labels", "annotations")}
        problems = validate(values, spec_schema)
        return [_finding("crd-schema", schedule.manifest, schedule.location(*p.path), schedule.ref,
                         f"spec.{p.dotted}: {p.message}", _schema_fix(p.message, "velero.io/v1 Schedule", schemas,
                                                                     "velero.io"))
                for p in problems]
    if isinstance(subject.value, UnservedApiVersion):
        group: UnservedApiVersion = subject.value
        first = group.manifests[0]
        versions = schemas.versions_of(first.group, first.kind)
        source = schemas.sources.get(first.group, "the pinned CRDs")
        objects = ", ".join(f"{m.ref} ({m.location()})" for m in group.manifests[:5])
        more = f" and {len(group.manifests) - 5} more" if len(group.manifests) > 5 else ""
        finding = _finding(
            "crd-schema", first, first.location(("apiVersion",)), f"apiVersion {group.api_version}",
            f"{group.kind} {group.api_version} is not served by {source} (served: "
            f"{', '.join(f'{first.group}/{v}' for v in versions)}), so Flux of that release rejects "
            f"{len(group.manifests)} object(s): {objects}{more}",
            f"move them to apiVersion {first.group}/{versions[-1]} (if the cluster runs an older Flux that still "
            "serves it, upgrade first or list this rule in warning_rules)")
        running = context.catalogue.flux_version
        if running is not None and _older_than_pinned_flux(running):
            # The repo installs an older Flux, which may still serve the apiVersion: say so, do not fail.
            return [replace(finding, severity="warning",
                            problem=f"{finding.problem}; the repo installs Flux {running}, older than the pinned "
                                    f"{'.'.join(map(str, PINNED_FLUX))}, which this check cannot judge")]
        return [finding]
    if isinstance(subject.value, UnpinnedGroups):
        unpinned: UnpinnedGroups = subject.value
        by_group: dict[str, list[Manifest]] = {}
        for m in unpinned.manifests:
            by_group.setdefault(f"{m.api_version} {m.kind}", []).append(m)
        listing = "; ".join(f"{key} ({len(ms)}: {', '.join(m.ref for m in ms[:3])}{', ...' if len(ms) > 3 else ''})"
                            for key, ms in sorted(by_group.items()))
        first = unpinned.manifests[0]
        return [Finding(rule="crd-schema", severity="warning", location=first.location(("apiVersion",)),
                        subject="objects without a pinned CRD", manifest=None,
                        problem=f"not checked, no pinned CRD defines them: {listing}",
                        fix="nothing to do unless these matter for backups; restoredrill/pins.toml names the CRD "
                            "modules the schemas come from")]
    manifest: Manifest = subject.value
    schema = schemas.lookup(manifest.group, manifest.version, manifest.kind)
    if schema is None:
        close = difflib.get_close_matches(manifest.kind, schemas.kinds_of(manifest.group), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        return [_finding("crd-schema", manifest, manifest.location(("kind",)), manifest.ref,
                         f"{manifest.group} has no kind {manifest.kind!r}, so the API server rejects the object",
                         f"{hint}kinds of {manifest.group}: {', '.join(schemas.kinds_of(manifest.group))}")]
    source = schemas.sources.get(manifest.group, "the pinned CRD")
    return [_finding("crd-schema", manifest, manifest.location(p.path), manifest.ref, f"{p.dotted}: {p.message}",
                     _schema_fix(p.message, f"{manifest.api_version} {manifest.kind} ({source})", schemas,
                                 manifest.group))
            for p in validate(manifest.obj, schema)]


# The Flux distribution the pinned controllers (source-controller 1.7, kustomize-controller 1.7,
# helm-controller 1.4) belong to.
PINNED_FLUX = (2, 7)


def _older_than_pinned_flux(version: str) -> bool:
    match = re.match(r"v?(\d+)\.(\d+)", version)
    return match is not None and (int(match.group(1)), int(match.group(2))) < PINNED_FLUX


def _schema_fix(message: str, what: str, schemas: CrdSchemas, group: str) -> str:
    match = re.search(r"did you mean `([^`]+)`", message)
    if match:
        return f"rename the field to `{match.group(1)}` (field names are case-sensitive)"
    return f"correct the value to match the {what} schema ({schemas.sources.get(group, 'pinned CRD')})"


def all_rules() -> Iterable[Rule]:
    return RULES.values()
