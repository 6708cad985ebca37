"""The static backup-policy suite: the runbook's rules, checked against the GitOps repo.

Run it with `pytest suites -m static --gitops-repo PATH`. Every test is one rule applied to one
schedule, namespace, workload or object, so `-k pelican` selects everything about pelican and a
failure names the file, the line, the object and the fix.
"""

import pytest

from fixtures.static import PolicyCheck

pytestmark = pytest.mark.static


@pytest.mark.rule("manifests-parse")
def test_manifests_parse(policy: PolicyCheck) -> None:
    """Every YAML file of the app parses as Kubernetes objects (a bad file hides its objects)."""
    policy.assert_holds()


@pytest.mark.rule("kustomization-references")
def test_kustomization_entries_exist(policy: PolicyCheck) -> None:
    """Every resources/components entry of a kustomization.yaml names a file or folder that exists."""
    policy.assert_holds()


@pytest.mark.rule("schedule-referenced")
def test_schedule_file_is_referenced(policy: PolicyCheck) -> None:
    """A Schedule file that no kustomization lists never reaches the cluster."""
    policy.assert_holds()


@pytest.mark.rule("namespace-covered")
def test_stateful_namespace_is_backed_up(policy: PolicyCheck) -> None:
    """Every namespace with PVCs, volumeClaimTemplates or a CNPG Cluster is in some Schedule."""
    policy.assert_holds()


@pytest.mark.rule("schedule-cron")
def test_schedule_cron_is_valid(policy: PolicyCheck) -> None:
    """Velero accepts the schedule (robfig/cron ParseStandard: five fields, descriptors, @every)."""
    policy.assert_holds()


@pytest.mark.rule("schedule-ttl")
def test_schedule_keeps_minimum_retention(policy: PolicyCheck) -> None:
    """The TTL (or the server default a 0s/absent TTL means) is at least min_ttl."""
    policy.assert_holds()


@pytest.mark.rule("schedule-fs-backup")
def test_schedule_backs_up_volume_data(policy: PolicyCheck) -> None:
    """Every volume the Schedule includes has its data taken (fs-backup, opt-in annotation or snapshot)."""
    policy.assert_holds()


@pytest.mark.rule("schedule-cluster-resources")
def test_schedule_includes_cluster_resources(policy: PolicyCheck) -> None:
    """includeClusterResources is not false, so PVs come with their claims."""
    policy.assert_holds()


@pytest.mark.rule("schedule-paused")
def test_schedule_is_not_paused(policy: PolicyCheck) -> None:
    """A paused Schedule takes no backups."""
    policy.assert_holds()


@pytest.mark.rule("schedule-storage-location")
def test_schedule_storage_location_is_defined(policy: PolicyCheck) -> None:
    """The storageLocation the backups go to is defined in the repo."""
    policy.assert_holds()


@pytest.mark.rule("schedule-namespaces-exist")
def test_schedule_namespaces_exist(policy: PolicyCheck) -> None:
    """Every includedNamespaces entry is a namespace the repo creates."""
    policy.assert_holds()


@pytest.mark.rule("schedule-unique-name")
def test_schedule_name_is_unique(policy: PolicyCheck) -> None:
    """No two Schedules share a name."""
    policy.assert_holds()


@pytest.mark.rule("database-hooks")
def test_in_pod_database_is_frozen_for_backup(policy: PolicyCheck) -> None:
    """An in-pod MySQL/MariaDB/PostgreSQL has pre and post hooks that freeze and thaw it."""
    policy.assert_holds()


@pytest.mark.rule("cnpg-object-store-backup")
def test_cnpg_cluster_has_object_store_backup(policy: PolicyCheck) -> None:
    """A CNPG Cluster without barman backups is a warning (TD-004) unless made strict."""
    policy.assert_holds()


@pytest.mark.rule("flux-kustomization")
def test_flux_kustomization_path_and_dependencies_exist(policy: PolicyCheck) -> None:
    """Each Flux Kustomization's path is a folder and its dependsOn names exist."""
    policy.assert_holds()


@pytest.mark.rule("crd-schema")
def test_object_matches_crd_schema(policy: PolicyCheck) -> None:
    """Velero, Flux, CNPG and Gateway API objects validate against the pinned CRDs."""
    policy.assert_holds()
