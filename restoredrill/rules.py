"""The static backup-policy rules, each taken from the runbook.

A rule lists its subjects (schedules, namespaces, workloads...) and checks one subject at a time,
returning findings that name the file, the line, the object and the fix. The static suite turns
every (rule, subject) pair into one test, so `pytest -k pelican` selects everything about pelican.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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
    Workload,
    dig,
)
from restoredrill.config import DrillConfig
from restoredrill.errors import SourceLocation
from restoredrill.gosyntax import GoSyntaxError, format_go_duration, parse_go_duration, parse_velero_cron
from restoredrill.schemas import CrdSchemas, cached_schemas, validate

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
        severity = self.severity_under(context.config)
        return [f if f.severity == severity else _with_severity(f, severity) for f in self.check(subject, context)]


def _with_severity(finding: Finding, severity: Severity) -> Finding:
    return Finding(rule=finding.rule, severity=severity, location=finding.location, subject=finding.subject,
                   problem=finding.problem, fix=finding.fix, manifest=finding.manifest)


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


def _stateful_namespace_subjects(context: RuleContext) -> list[Subject]:
    namespaces = sorted({c.namespace for c in context.catalogue.volume_claims
                         if c.namespace and c.manifest.deployed_by is not None})
    catalogue = context.catalogue
    return [Subject(id=ns, app=(app.name if (app := catalogue.app_for_namespace(ns)) else ns), value=ns)
            for ns in namespaces]


_DATABASE_IMAGE = re.compile(r"^(mysql|mariadb|percona|percona-server|postgres|postgresql)$")


def _database_container(workload: Workload) -> tuple[str, str] | None:
    """(container name, engine) of an in-pod database, if the workload runs one."""
    for container in workload.containers:
        repository = container.image.split("@")[0].rsplit(":", 1)[0] if ":" in container.image.rsplit("/", 1)[-1] \
            else container.image.split("@")[0]
        name = repository.rsplit("/", 1)[-1].lower()
        if _DATABASE_IMAGE.match(name):
            engine = "postgresql" if name.startswith("postgres") else "mysql"
            return container.name, engine
    return None


def _database_subjects(context: RuleContext) -> list[Subject]:
    catalogue = context.catalogue
    return [Subject(id=f"{w.namespace}/{w.manifest.name}" + (f"/{w.pod_template_path[-1]}" if
                                                                 w.manifest.kind == "HelmRelease" else ""),
                    app=_app_name(catalogue, w.manifest.path), value=w)
            for w in catalogue.workloads
            if w.manifest.deployed_by is not None and _database_container(w) is not None
            and "cnpg.io/cluster" not in w.pod_labels]


def _cnpg_subjects(context: RuleContext) -> list[Subject]:
    catalogue = context.catalogue
    return [Subject(id=f"{c.namespace}/{c.name}", app=_app_name(catalogue, c.manifest.path), value=c)
            for c in catalogue.cnpg_clusters]


def _flux_subjects(context: RuleContext) -> list[Subject]:
    catalogue = context.catalogue
    return [Subject(id=f"{k.namespace}/{k.name}", app=_app_name(catalogue, k.manifest.path), value=k)
            for k in catalogue.flux_kustomizations]


def _schema_subjects(context: RuleContext) -> list[Subject]:
    catalogue = context.catalogue
    subjects = []
    seen: set[str] = set()
    for m in catalogue.manifests:
        if not m.group.endswith(_SCHEMA_GROUP_SUFFIXES):
            continue
        base = f"{m.kind}/{m.namespace}/{m.name}" if m.namespace else f"{m.kind}/{m.name}"
        subject_id, n = base, 1
        while subject_id in seen:
            n += 1
            subject_id = f"{base}#{n}"
        seen.add(subject_id)
        subjects.append(Subject(id=subject_id, app=_app_name(catalogue, m.path), value=m))
    subjects += [Subject(id=f"Schedule/{s.namespace}/{s.name}", app=_schedule_app(catalogue, s), value=s)
                 for s in catalogue.schedules if s.from_helm_values]
    return subjects


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
      runbook="Adding a Backup Schedule", subjects=_schedule_subjects)
def schedule_referenced(subject: Subject, context: RuleContext) -> list[Finding]:
    schedule: Schedule = subject.value
    catalogue = context.catalogue
    if schedule.manifest.path in catalogue.deployed_files:
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


@rule(id="namespace-covered", title="Every stateful namespace is covered by a Schedule",
      runbook="Backup Schedules", subjects=_stateful_namespace_subjects)
def namespace_covered(subject: Subject, context: RuleContext) -> list[Finding]:
    namespace: str = subject.value
    catalogue = context.catalogue
    override = context.config.apps.get(subject.app or "") or context.config.apps.get(namespace)
    if override is not None and not override.backup_required:
        return []
    if any(_includes_namespace(schedule.template, namespace) for schedule in catalogue.schedules):
        return []
    claims = [c for c in catalogue.volume_claims if c.namespace == namespace and c.manifest.deployed_by]
    first = claims[0]
    what = ", ".join(f"{c.origin} {c.name}" for c in claims[:4])
    schedules_dir = next((s.manifest.path.parent for s in catalogue.schedules if not s.from_helm_values), None)
    where = f" in {schedules_dir}" if schedules_dir else ""
    return [_finding(
        "namespace-covered", first.manifest, first.manifest.location(), f"namespace {namespace}",
        f"holds persistent data ({what}) but no Velero Schedule includes it, so it is never backed up",
        f"add a Schedule for it{where} (copy the runbook's 'Simple App' template with includedNamespaces: "
        f"[{namespace}]) and list it in the Velero kustomization, or set apps.{subject.app or namespace}."
        "backup_required: false with a reason in the drill config")]


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


@_schedule_rule("schedule-fs-backup", "The schedule backs up PVC data with fs-backup")
def schedule_fs_backup(schedule: Schedule, context: RuleContext) -> list[Finding]:
    value = schedule.template.get("defaultVolumesToFsBackup")
    server_default = context.catalogue.velero_defaults.default_volumes_to_fs_backup
    if value is True or (value is None and server_default):
        return []
    why = "is false" if value is False else "is not set and the Velero server does not default it to true"
    return [_schedule_finding("schedule-fs-backup", schedule, ("template", "defaultVolumesToFsBackup"),
                              f"defaultVolumesToFsBackup {why}, so the backup holds the PVC objects but none of "
                              "their data", "set spec.template.defaultVolumesToFsBackup: true")]


@_schedule_rule("schedule-cluster-resources", "The schedule includes cluster resources (PVs)")
def schedule_cluster_resources(schedule: Schedule, context: RuleContext) -> list[Finding]:
    if schedule.template.get("includeClusterResources") is True:
        return []
    value = schedule.template.get("includeClusterResources")
    return [_schedule_finding("schedule-cluster-resources", schedule, ("template", "includeClusterResources"),
                              f"includeClusterResources is {'unset' if value is None else value!r}: the PVs and "
                              "other cluster-scoped objects the namespace depends on are not reliably captured",
                              "set spec.template.includeClusterResources: true (the runbook's template)")]


@_schedule_rule("schedule-storage-location", "The schedule's storageLocation is defined")
def schedule_storage_location(schedule: Schedule, context: RuleContext) -> list[Finding]:
    catalogue = context.catalogue
    wanted = schedule.template.get("storageLocation") or catalogue.velero_defaults.default_storage_location
    names = sorted({s.name for s in catalogue.storage_locations})
    if wanted in names:
        return []
    known = f"defined: {', '.join(names)}" if names else "the repo defines no BackupStorageLocation"
    return [_schedule_finding("schedule-storage-location", schedule, ("template", "storageLocation"),
                              f"storageLocation {wanted!r} is not defined ({known}), so every backup fails",
                              "point storageLocation at a defined location, or define it in the Velero HelmRelease "
                              "values (configuration.backupStorageLocation) or as a BackupStorageLocation")]


@_schedule_rule("schedule-namespaces-exist", "The schedule's includedNamespaces exist in the repo")
def schedule_namespaces_exist(schedule: Schedule, context: RuleContext) -> list[Finding]:
    known = context.catalogue.namespaces
    findings = []
    for index, namespace in enumerate(schedule.template.get("includedNamespaces") or []):
        namespace = str(namespace)
        if namespace == "*" or "*" in namespace or namespace in known:
            continue
        close = difflib.get_close_matches(namespace, sorted(known), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        findings.append(_schedule_finding(
            "schedule-namespaces-exist", schedule, ("template", "includedNamespaces", index),  # type: ignore[arg-type]
            f"includedNamespaces names {namespace!r}, which the repo never creates{hint}: the backup would be empty",
            "correct the namespace name, or remove the Schedule if the app is gone"))
    return findings


@_schedule_rule("schedule-unique-name", "Schedule names are unique")
def schedule_unique_name(schedule: Schedule, context: RuleContext) -> list[Finding]:
    twins = [s for s in context.catalogue.schedules
             if s is not schedule and s.name == schedule.name and s.namespace == schedule.namespace]
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
_HELD_SESSION = re.compile(r"(?<![&|])&(?![&>])|\bnohup\b|\bsetsid\b|mkfifo|\bsleep\s*\(|\bsleep\b", re.IGNORECASE)
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
    for phase in ("pre", "post"):
        command = annotations.get(f"{phase}.hook.backup.velero.io/command")
        if command:
            hooks.append(_Hook(phase, annotations.get(f"{phase}.hook.backup.velero.io/container"), command,
                               workload.manifest.location((*workload.pod_template_path, "metadata", "annotations")),
                               workload.manifest))
    for schedule in context.catalogue.schedules:
        template = schedule.template
        if not _includes_namespace(template, workload.namespace):
            continue
        for index, resource in enumerate(dig(template, ("hooks", "resources")) or []):
            if not isinstance(resource, dict) or not _includes_namespace(resource, workload.namespace):
                continue
            if not _selector_matches(resource.get("labelSelector"), workload.pod_labels):
                continue
            for phase in ("pre", "post"):
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


def _includes_namespace(spec: dict[str, Any], namespace: str | None) -> bool:
    included = [str(n) for n in spec.get("includedNamespaces") or ["*"]]
    excluded = [str(n) for n in spec.get("excludedNamespaces") or []]
    return ("*" in included or namespace in included) and namespace not in excluded


def _selector_matches(selector: Any, labels: dict[str, str] | Any) -> bool:
    if not isinstance(selector, dict):
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != str(value):
            return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = [str(v) for v in expression.get("values") or []]
        present = key in labels
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and present and labels.get(key) in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


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
                    "keep the locking session open for the backup (start the client in the background fed by a "
                    "FIFO, or follow the FLUSH with SELECT SLEEP(n) in the same session) and end it in the post "
                    "hook"))
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
    if ks.path is None:
        findings.append(_finding("flux-kustomization", ks.manifest, ks.manifest.location(("spec",)), ref,
                                 "has no spec.path, so Flux applies the whole repo from its root",
                                 "set spec.path to the app's folder, e.g. ./kubernetes/apps/<namespace>/<app>/app"))
    elif not (catalogue.root / ks.path).is_dir():
        findings.append(_finding("flux-kustomization", ks.manifest, ks.manifest.location(("spec", "path")), ref,
                                 f"spec.path {ks.path!r} is not a folder of the repo, so the Kustomization fails",
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
    manifest: Manifest = subject.value
    schema = schemas.lookup(manifest.group, manifest.version, manifest.kind)
    if schema is None:
        versions = schemas.versions_of(manifest.group, manifest.kind)
        if versions:
            problem = f"apiVersion {manifest.api_version} is not served for {manifest.kind} (served: " \
                      f"{', '.join(f'{manifest.group}/{v}' for v in versions)})"
            fix = f"use apiVersion {manifest.group}/{versions[-1]}"
        elif manifest.group in schemas.groups:
            problem = f"{manifest.group} has no kind {manifest.kind!r}"
            fix = f"use one of: {', '.join(schemas.kinds_of(manifest.group))}"
        else:
            problem = f"no pinned CRD defines {manifest.group}"
            fix = "add the module that ships its CRDs to restoredrill/pins.toml"
        return [_finding("crd-schema", manifest, manifest.location(("apiVersion",)), manifest.ref, problem, fix)]
    source = schemas.sources.get(manifest.group, "the pinned CRD")
    return [_finding("crd-schema", manifest, manifest.location(p.path), manifest.ref, f"{p.dotted}: {p.message}",
                     _schema_fix(p.message, f"{manifest.api_version} {manifest.kind} ({source})", schemas,
                                 manifest.group))
            for p in validate(manifest.obj, schema)]


def _schema_fix(message: str, what: str, schemas: CrdSchemas, group: str) -> str:
    match = re.search(r"did you mean `([^`]+)`", message)
    if match:
        return f"rename the field to `{match.group(1)}` (field names are case-sensitive)"
    return f"correct the value to match the {what} schema ({schemas.sources.get(group, 'pinned CRD')})"


def all_rules() -> Iterable[Rule]:
    return RULES.values()
