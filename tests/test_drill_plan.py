"""A drill plan is read from the catalogue: the app's Schedule, claims and databases, or an error naming the fix."""

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
