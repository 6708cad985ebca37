"""What a namespace drill will do for one app, read from the catalogue (pure, unit-tested).

The plan names the app's namespace, its Flux Kustomizations (as written in its ks.yaml), the
Velero Schedule whose template the drill backs up with (the one the nightly run would use), its
claims, and its databases: in-pod MySQL/MariaDB (the runbook's pricebuddy) and CNPG Clusters
(immich). A plan that cannot be drilled (no Schedule covers the namespace) is an error that
names the fix, raised before anything is touched.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from restoredrill.catalogue import App, Catalogue, Schedule, Workload, dig
from restoredrill.errors import ConfigError
from restoredrill.velero_semantics import EXCLUDES_ANNOTATION, all_namespaces, includes_namespace, runs_database_server


@dataclass(frozen=True)
class MysqlDatabase:
    """An in-pod MySQL/MariaDB: the workload, its container and how to reach it."""

    workload: str  # Deployment/StatefulSet name
    container: str
    selector: Mapping[str, str]  # the pod labels
    database: str
    claims: tuple[str, ...]


@dataclass(frozen=True)
class AppPlan:
    app: str
    namespace: str
    kustomizations: tuple[dict[str, Any], ...]  # the ks.yaml objects, as the repo writes them
    schedule: dict[str, Any]  # the Velero Schedule (manifest shape) the backup is made from
    schedule_source: str  # file:line of the Schedule
    claims: tuple[str, ...]  # PVCs the app's manifests declare
    excluded_volumes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # workload -> pod volumes
    mysql: tuple[MysqlDatabase, ...] = ()
    cnpg_clusters: tuple[str, ...] = ()
    cnpg_databases: Mapping[str, str] = field(default_factory=dict)  # cluster -> application database
    storage_classes: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()  # what the drill changed in what the repo declares, disclosed in its report

    @property
    def kustomization_names(self) -> tuple[str, ...]:
        return tuple(str(k["metadata"]["name"]) for k in self.kustomizations)

    @property
    def kustomization_refs(self) -> tuple[tuple[str, str], ...]:
        """(namespace, name) of the app's Kustomizations: where Flux has them (flux-system, or the
        namespace a kustomization.yaml `namespace:` puts them in: often the app's own)."""
        return tuple((str(k["metadata"].get("namespace") or "flux-system"), str(k["metadata"]["name"]))
                     for k in self.kustomizations)

    @property
    def kustomizations_in_app_namespace(self) -> tuple[str, ...]:
        """Names of the app's Kustomizations that live in its namespace: the backup holds them, and
        the namespace's deletion and restore take them along."""
        return tuple(name for namespace, name in self.kustomization_refs if namespace == self.namespace)

    @property
    def database_claims(self) -> frozenset[str]:
        """Claims whose bytes a running database changes: verified by their rows, not file checksums."""
        return frozenset(claim for db in self.mysql for claim in db.claims)


def schedule_for(catalogue: Catalogue, namespace: str) -> Schedule | None:
    """The Schedule whose template backs up `namespace`: one that names it (the runbook's way), else
    one that takes it among every namespace (`includedNamespaces` empty or `*`, the namespace not
    excluded), as velero_semantics reads the lists. Paused Schedules make no backups."""
    active = [s for s in catalogue.schedules if s.spec.get("paused") is not True]
    named = [s for s in active if namespace in (s.template.get("includedNamespaces") or [])
             and includes_namespace(s.template, namespace)]
    return next(iter(named), None) or next(
        (s for s in active if all_namespaces(s.template) and includes_namespace(s.template, namespace)), None)


def drill_schedule(schedule: Schedule, namespace: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The Schedule (manifest shape) the drill backs up with, and what the drill changed in it. A
    Schedule of every namespace is narrowed to the app's namespace: its backup in the drill cluster
    would take every other drill's namespace and the platform's, whose pod volumes are not this
    drill's; the restore takes only the app's namespace either way."""
    manifest = copy.deepcopy(schedule.manifest.obj if not schedule.from_helm_values else {
        "metadata": {"name": schedule.name, "namespace": schedule.namespace}, "spec": schedule.spec})
    if not all_namespaces(schedule.template):
        return manifest, ()
    template = manifest.setdefault("spec", {}).setdefault("template", {})
    was = template.get("includedNamespaces") or ["*"]
    template["includedNamespaces"] = [namespace]
    template.pop("excludedNamespaces", None)
    return manifest, (f"{schedule.ref} backs up every namespace (includedNamespaces {was}); the drill's Backup "
                      f"takes only {namespace}, the rest of its template as written",)


def _env(container: Mapping[str, Any], name: str) -> str | None:
    for item in container.get("env") or []:
        if isinstance(item, dict) and item.get("name") == name and isinstance(item.get("value"), str):
            return str(item["value"])
    return None


def _mysql(workload: Workload) -> list[MysqlDatabase]:
    found = []
    for container in workload.containers:
        if runs_database_server(kind=workload.manifest.kind, image=container.image) != "mysql":
            continue
        spec = dig(workload.manifest.obj, container.field_path) or {}
        database = _env(spec, "MARIADB_DATABASE") or _env(spec, "MYSQL_DATABASE") or "restoredrill"
        mounted = {str(m.get("name")) for m in spec.get("volumeMounts") or [] if isinstance(m, dict)}
        pod_spec = dig(workload.manifest.obj, (*workload.pod_template_path, "spec")) or {}
        claims = tuple(
            str(v["persistentVolumeClaim"]["claimName"]) for v in pod_spec.get("volumes") or []
            if isinstance(v, dict) and v.get("name") in mounted and isinstance(v.get("persistentVolumeClaim"), dict))
        found.append(MysqlDatabase(workload=workload.manifest.name, container=container.name,
                                   selector=dict(workload.pod_labels), database=database, claims=claims))
    return found


def storage_classes_of(catalogue: Catalogue, namespace: str) -> tuple[str, ...]:
    """The storage classes the claims of `namespace` name."""
    return tuple(sorted({c.storage_class for c in catalogue.volume_claims
                         if c.namespace == namespace and c.storage_class}))


def plan_app(catalogue: Catalogue, app: App) -> AppPlan:
    schedule = schedule_for(catalogue, app.namespace)
    if schedule is None:
        raise ConfigError(
            f"app {app.name}: no Velero Schedule in the repo backs up namespace {app.namespace!r}, so there is "
            "no nightly backup to drill",
            remedy=f"add a Schedule with spec.template.includedNamespaces: [{app.namespace}] (runbook: Adding a "
            f"Backup Schedule), or set apps.{app.name}.backup_required: false in the drill config")
    schedule_manifest, schedule_notes = drill_schedule(schedule, app.namespace)
    if not app.kustomizations:
        raise ConfigError(f"app {app.name}: {app.directory}/ks.yaml holds no Flux Kustomization",
                          remedy="the drill deploys and suspends the app through its Kustomization")
    # What the app's own Kustomizations deploy: another app sharing the namespace (cypr0/k8s-cluster's
    # `ai` holds paperless-ai and openwebui) is not deployed by this drill, so none of its objects is
    # waited for or verified.
    owned = {k.name for k in app.kustomizations}
    workloads = [w for w in catalogue.workloads if w.manifest.namespace == app.namespace
                 and w.manifest.deployed_by in owned]
    claims = tuple(sorted({c.name for c in catalogue.volume_claims if c.namespace == app.namespace
                           and c.origin == "PersistentVolumeClaim" and c.manifest.deployed_by in owned}))
    excluded = {w.manifest.name: tuple(v.strip() for v in w.pod_annotations.get(EXCLUDES_ANNOTATION, "").split(",")
                                       if v.strip())
                for w in workloads if w.pod_annotations.get(EXCLUDES_ANNOTATION)}
    clusters = [c for c in catalogue.cnpg_clusters if c.namespace == app.namespace and c.manifest.deployed_by in owned]
    databases = {c.name: str(c.manifest.get("spec", "bootstrap", "initdb", "database") or "app") for c in clusters}
    return AppPlan(
        app=app.name, namespace=app.namespace,
        kustomizations=tuple(k.manifest.obj for k in app.kustomizations),
        schedule=schedule_manifest, notes=schedule_notes,
        schedule_source=str(schedule.location()),
        claims=claims, excluded_volumes=excluded,
        mysql=tuple(db for w in workloads for db in _mysql(w)),
        cnpg_clusters=tuple(c.name for c in clusters), cnpg_databases=databases,
        storage_classes=storage_classes_of(catalogue, app.namespace),
    )


def drillable_apps(catalogue: Catalogue, *, skip: Sequence[str] = ()) -> list[App]:
    """Apps with state to restore: at least one claim or CNPG Cluster that their own Kustomizations
    deploy (an app sharing a stateful namespace with another has nothing of its own to restore), not
    listed in `skip`."""
    deployers = {c.manifest.deployed_by for c in catalogue.volume_claims} | {
        c.manifest.deployed_by for c in catalogue.cnpg_clusters}
    return [app for app in catalogue.apps if any(k.name in deployers for k in app.kustomizations)
            and app.name not in skip and app.namespace not in skip]
