"""A drill plan is read from the catalogue: the app's Schedule, claims and databases, or an error naming the fix."""

import dataclasses

import pytest

from restoredrill.catalogue import App, Catalogue
from restoredrill.drill.plan import AppPlan, MysqlDatabase, drillable_apps, plan_app
from restoredrill.errors import ConfigError
from tests.conftest import RepoCopy

PELICAN_SCHEDULE = "kubernetes/apps/velero/velero/app/schedules/pelican-schedule.yaml"
VELERO_KUSTOMIZATION = "kubernetes/apps/velero/velero/app/kustomization.yaml"


def app_named(catalogue: Catalogue, name: str) -> App:
    return next(app for app in catalogue.apps if app.name == name)


def plan_of(catalogue: Catalogue, name: str) -> AppPlan:
    return plan_app(catalogue, app_named(catalogue, name))


def test_drillable_apps_are_the_stateful_ones_not_skipped(example_catalogue: Catalogue) -> None:
    names = [app.name for app in drillable_apps(example_catalogue, skip=["seaweedfs"])]
    assert sorted(names) == ["gatus", "immich", "n8n", "obsidian-livesync", "pelican", "pocket-id", "pricebuddy"]


def test_skip_matches_namespaces_too(example_catalogue: Catalogue) -> None:
    names = {app.name for app in drillable_apps(example_catalogue)}
    assert "seaweedfs" in names  # it has claims; only the skip list leaves it out
    assert "velero" not in names and "cloudnative-pg" not in names  # stateless
    assert "pelican" not in {app.name for app in drillable_apps(example_catalogue, skip=["pelican"])}


def test_pricebuddy_has_its_in_pod_mariadb(example_catalogue: Catalogue) -> None:
    plan = plan_of(example_catalogue, "pricebuddy")
    assert plan.namespace == "pricebuddy"
    (database,) = plan.mysql
    assert database == MysqlDatabase(
        workload="pricebuddy-database", container="mariadb",
        selector={"app.kubernetes.io/name": "pricebuddy", "app.kubernetes.io/component": "database"},
        database="pricebuddy", claims=("pricebuddy-database",))
    assert "pricebuddy-database" in plan.claims
    assert plan.database_claims == frozenset({"pricebuddy-database"})
    assert plan.schedule["metadata"]["name"] == "pricebuddy-daily"
    assert plan.schedule["spec"]["template"]["includedNamespaces"] == ["pricebuddy"]
    assert plan.schedule_source.startswith(
        "kubernetes/apps/velero/velero/app/schedules/pricebuddy-schedule.yaml:")
    assert plan.cnpg_clusters == ()


def test_immich_has_its_cnpg_cluster_and_the_excluded_nfs_library(example_catalogue: Catalogue) -> None:
    plan = plan_of(example_catalogue, "immich")
    assert plan.cnpg_clusters == ("immich-postgres",)
    assert plan.cnpg_databases == {"immich-postgres": "immich"}
    # The pod annotation backup.velero.io/backup-volumes-excludes: library on immich-server.
    assert plan.excluded_volumes == {"immich-server": ("library",)}
    # Only the app's own claims; CNPG's instance claim belongs to the Cluster.
    assert plan.claims == ("immich-data", "immich-library")
    assert plan.mysql == () and plan.database_claims == frozenset()


def test_storage_classes_and_kustomizations(example_catalogue: Catalogue) -> None:
    assert "longhorn" in plan_of(example_catalogue, "pocket-id").storage_classes
    pelican = plan_of(example_catalogue, "pelican")
    assert pelican.kustomization_names == ("pelican",)
    assert pelican.kustomizations[0]["kind"] == "Kustomization"
    assert pelican.claims == ("pelican-data", "pelican-logs")
    assert pelican.schedule["metadata"]["name"] == "pelican-daily"
    assert pelican.excluded_volumes == {}


def test_an_app_without_a_schedule_is_an_error_that_names_the_fix(example_repo: RepoCopy) -> None:
    example_repo.delete(PELICAN_SCHEDULE)
    example_repo.replace(VELERO_KUSTOMIZATION, "  - ./schedules/pelican-schedule.yaml\n", "")
    catalogue = example_repo.catalogue()
    assert not catalogue.broken_references
    with pytest.raises(ConfigError) as raised:
        plan_app(catalogue, app_named(catalogue, "pelican"))
    error = raised.value
    assert "app pelican" in error.message
    assert "namespace 'pelican'" in error.message
    assert error.remedy is not None
    assert "includedNamespaces: [pelican]" in error.remedy
    assert "apps.pelican.backup_required: false" in error.remedy
    # The other apps are still drillable.
    assert plan_app(catalogue, app_named(catalogue, "gatus")).schedule["metadata"]["name"] == "gatus-daily"


def test_a_schedule_of_every_namespace_is_drilled_narrowed_to_the_app_and_says_so(example_repo: RepoCopy) -> None:
    # cypr0/k8s-cluster: a weekly Schedule in the Velero HelmRelease values with no includedNamespaces
    # is the only one that backs up the `ai` namespace.
    example_repo.replace(PELICAN_SCHEDULE, "    includedNamespaces:\n      - pelican\n",
                         "    excludedNamespaces: ['kube-*']\n")
    catalogue = example_repo.catalogue()
    plan = plan_of(catalogue, "pelican")
    assert plan.schedule["metadata"]["name"] == "pelican-daily"
    template = plan.schedule["spec"]["template"]
    assert template["includedNamespaces"] == ["pelican"] and "excludedNamespaces" not in template
    assert template["defaultVolumesToFsBackup"] is True  # the rest as written
    (note,) = plan.notes
    assert "Schedule velero/pelican-daily backs up every namespace" in note and "takes only pelican" in note
    # the catalogue's Schedule is left as the repo writes it
    (repo_schedule,) = [s for s in catalogue.schedules if s.name == "pelican-daily"]
    assert "includedNamespaces" not in repo_schedule.template
    # A Schedule that names the namespace wins, and is drilled unchanged; so does an exclusion.
    assert plan_of(example_repo.catalogue(), "gatus").notes == ()
    example_repo.replace(PELICAN_SCHEDULE, "    excludedNamespaces: ['kube-*']\n",
                         "    excludedNamespaces: ['peli*']\n")
    with pytest.raises(ConfigError):
        plan_of(example_repo.catalogue(), "pelican")


def test_a_paused_schedule_is_not_the_one_drilled(example_repo: RepoCopy) -> None:
    example_repo.replace(PELICAN_SCHEDULE, "spec:\n", "spec:\n  paused: true\n", count=1)
    with pytest.raises(ConfigError):
        plan_of(example_repo.catalogue(), "pelican")


def test_an_app_sharing_a_namespace_owns_only_what_its_kustomizations_deploy(example_repo: RepoCopy) -> None:
    # cypr0/k8s-cluster's `ai` namespace holds paperless-ai and openwebui (with its CNPG Cluster): a
    # drill of one waited 600 s for the other's Cluster, which it never deploys.
    folder = "kubernetes/apps/pelican/wings"
    example_repo.write(f"{folder}/ks.yaml", """apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: wings, namespace: flux-system}
spec:
  path: ./kubernetes/apps/pelican/wings/app
  targetNamespace: pelican
  sourceRef: {kind: GitRepository, name: flux-system}
  prune: true
  interval: 1h
""")
    example_repo.write(f"{folder}/app/kustomization.yaml",
                       "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n"
                       "  - ./cluster.yaml\n  - ./deployment.yaml\n")
    example_repo.write(f"{folder}/app/cluster.yaml", """apiVersion: postgresql.cnpg.io/v1
kind: Cluster
metadata: {name: wings-db}
spec:
  instances: 1
  storage: {size: 1Gi}
""")
    example_repo.write(f"{folder}/app/deployment.yaml", """apiVersion: apps/v1
kind: Deployment
metadata: {name: wings}
spec:
  selector: {matchLabels: {app: wings}}
  template:
    metadata: {labels: {app: wings}}
    spec:
      containers: [{name: wings, image: ghcr.io/pelican-dev/wings:v1}]
""")
    example_repo.write("kubernetes/apps/pelican/ui/ks.yaml", """apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: pelican-ui, namespace: flux-system}
spec:
  path: ./kubernetes/apps/pelican/ui/app
  targetNamespace: pelican
  sourceRef: {kind: GitRepository, name: flux-system}
  prune: true
  interval: 1h
""")
    example_repo.write("kubernetes/apps/pelican/ui/app/kustomization.yaml",
                       "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: []\n")
    example_repo.replace("kubernetes/apps/pelican/kustomization.yaml", "  - ./pelican/ks.yaml\n",
                         "  - ./pelican/ks.yaml\n  - ./wings/ks.yaml\n  - ./ui/ks.yaml\n")
    catalogue = example_repo.catalogue()
    pelican, wings = plan_of(catalogue, "pelican"), plan_of(catalogue, "wings")
    assert pelican.cnpg_clusters == () and wings.cnpg_clusters == ("wings-db",)
    assert pelican.claims == ("pelican-data", "pelican-logs") and wings.claims == ()
    names = {app.name for app in drillable_apps(catalogue)}
    # pelican-ui shares the stateful namespace but deploys nothing stateful of its own.
    assert {"pelican", "wings"} <= names and "pelican-ui" not in names


def test_a_backup_that_takes_no_volume_data_is_named_with_its_schedule_and_fix(example_repo: RepoCopy) -> None:
    # cypr0/k8s-cluster: the all-namespace Schedule sets no defaultVolumesToFsBackup and the repo's
    # Velero deploys no node-agent, so paperless-ai's claim is in no backup.
    from types import SimpleNamespace

    from restoredrill.catalogue import VeleroServerDefaults
    from restoredrill.drill.namespace import NamespaceDrill, Snapshot

    plan = plan_of(example_repo.catalogue(), "pelican")
    template = {k: v for k, v in plan.schedule["spec"]["template"].items() if k != "defaultVolumesToFsBackup"}
    drill = NamespaceDrill.__new__(NamespaceDrill)
    spec = {**plan.schedule["spec"], "template": template}
    drill.plan = dataclasses.replace(plan, schedule={**plan.schedule, "spec": spec})
    drill.ns, drill.snapshot = plan.namespace, Snapshot()
    drill.gitops = SimpleNamespace(catalogue=SimpleNamespace(velero_defaults=VeleroServerDefaults(node_agent=False)))  # type: ignore[assignment]
    drill.snapshot.pod_volume_claims = {("pelican/pelican-0", "data"): "pelican-data"}
    message = drill.no_volume_data()
    assert "mount pelican-data" in message and "Schedule pelican-daily (" in message
    assert "deployNodeAgent: false" in message and "defaultVolumesToFsBackup: true" in message
    drill.snapshot.pod_volume_claims = {}
    assert drill.no_volume_data().startswith("no running pod of pelican mounts")
    # The Schedule copies every volume by default: the pods' backup-volumes-excludes left them out.
    drill.plan = plan
    drill.snapshot.pod_volume_claims = {("pelican/pelican-0", "data"): "pelican-data"}
    message = drill.no_volume_data()
    assert "backup.velero.io/backup-volumes-excludes" in message and "(its template)" in message
    assert "sets no defaultVolumesToFsBackup" not in message
