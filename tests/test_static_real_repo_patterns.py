"""Patterns seen on real homelab GitOps repos that the static suite once reported falsely (or must keep
reporting), each as a small change to a copy of the bundled example: report only what Flux,
kustomize and Velero 1.16 would really do."""

from pathlib import Path

import pytest

from restoredrill.config import build_config
from restoredrill.errors import ConfigError
from restoredrill.rules import Finding
from restoredrill.velero_semantics import (
    PVC_RESOURCE,
    VeleroServer,
    default_storage_location,
    hook_selects,
    includes_resource,
    runs_database_server,
    volume_coverage,
)
from restoredrill.yamlio import load_documents
from tests.conftest import RepoCopy, rendered

VELERO_APP = "kubernetes/apps/velero/velero/app"
PELICAN_SCHEDULE = f"{VELERO_APP}/schedules/pelican-schedule.yaml"
PELICAN_KS = "kubernetes/apps/pelican/pelican/ks.yaml"
PELICAN_APP = "kubernetes/apps/pelican/pelican/app"
VELERO_RELEASE = f"{VELERO_APP}/helmrelease.yaml"


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error" and f.suppressed is None]


# -- 1. what Flux applies -------------------------------------------------------------------------


def test_files_nothing_applies_are_not_checked(example_repo: RepoCopy) -> None:
    # archive/, Ansible and Talos files, and a commented-out ks.yaml: nothing applies them.
    example_repo.write("archive/apps/old/ks.yaml", FLUX_KS.format(name="old", path="./kubernetes/apps/old/app"))
    example_repo.write("ansible/host_vars/node.sops.yml", "kind: Whatever\nsops: {}\n")
    example_repo.write("talos/patch.yaml", "apiVersion: v1alpha1\nkind: UserVolumeConfig\n")
    example_repo.write("kubernetes/apps/pelican/retired/ks.yaml",
                       FLUX_KS.format(name="retired", path="./kubernetes/apps/pelican/gone"))
    example_repo.write("kubernetes/apps/pelican/retired/app/broken.yaml", "a: [\n")
    example_repo.replace("kubernetes/apps/pelican/kustomization.yaml", "  - ./pelican/ks.yaml\n",
                         "  - ./pelican/ks.yaml\n  # - ./retired/ks.yaml\n")
    for rule_id in ("manifests-parse", "flux-kustomization", "kustomization-references"):
        assert errors(example_repo.findings(rule_id)) == [], rule_id
    catalogue = example_repo.catalogue()
    assert Path("archive/apps/old/ks.yaml") in catalogue.unapplied_files


def test_a_kustomization_of_another_repository_contributes_nothing(example_repo: RepoCopy) -> None:
    # An upstream operator's source: its path is a folder of that repository, and this repo's files
    # under the same path are not what it applies.
    example_repo.write("kubernetes/apps/pelican/operator/ks.yaml", """apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata: {name: upstream-operator, namespace: flux-system}
spec: {interval: 1h, url: https://example.org/operator.git, ref: {tag: v1.0.0}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: upstream-operator, namespace: flux-system}
spec:
  interval: 1h
  path: ./deploy/controller
  prune: true
  sourceRef: {kind: GitRepository, name: upstream-operator}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: upstream-root, namespace: flux-system}
spec:
  interval: 1h
  path: ./
  prune: true
  sourceRef: {kind: GitRepository, name: upstream-operator}
""")
    example_repo.replace("kubernetes/apps/pelican/kustomization.yaml", "  - ./pelican/ks.yaml\n",
                         "  - ./pelican/ks.yaml\n  - ./operator/ks.yaml\n")
    example_repo.write("hack/stray-pvc.yaml", "apiVersion: v1\nkind: PersistentVolumeClaim\n"
                       "metadata: {name: stray, namespace: nowhere}\nspec: {resources: {requests: {storage: 1Gi}}}\n")
    assert errors(example_repo.findings("flux-kustomization")) == []
    assert errors(example_repo.findings("namespace-covered")) == []  # hack/ is not applied by the root build
    catalogue = example_repo.catalogue()
    operator = next(k for k in catalogue.flux_kustomizations if k.name == "upstream-operator")
    assert not operator.local_source


def test_kustomize_namespace_moves_flux_kustomizations_and_dependsOn_follows(example_repo: RepoCopy) -> None:
    # kustomize's `namespace:` overrides the Flux Kustomization's own metadata.namespace.
    example_repo.replace("kubernetes/apps/pelican/kustomization.yaml", "kind: Kustomization\n",
                         "kind: Kustomization\nnamespace: pelican\n")
    example_repo.replace(PELICAN_KS, "  postBuild:", "  dependsOn:\n    - name: pelican-db\n  postBuild:")
    example_repo.write("kubernetes/apps/pelican/pelican/db.yaml",
                       FLUX_KS.format(name="pelican-db", path="./kubernetes/apps/pelican/pelican/app"))
    example_repo.replace("kubernetes/apps/pelican/kustomization.yaml", "  - ./pelican/ks.yaml\n",
                         "  - ./pelican/ks.yaml\n  - ./pelican/db.yaml\n")
    assert errors(example_repo.findings("flux-kustomization")) == []
    pelican = next(k for k in example_repo.catalogue().flux_kustomizations if k.name == "pelican")
    assert pelican.namespace == "pelican"


def test_a_leading_slash_path_is_the_same_folder(example_repo: RepoCopy) -> None:
    example_repo.replace(PELICAN_KS, "path: ./kubernetes/apps/pelican/pelican/app",
                         "path: /kubernetes/apps/pelican/pelican/app")
    assert errors(example_repo.findings("flux-kustomization")) == []
    assert any(m.name == "pelican-data" for m in example_repo.catalogue().deployed())


def test_a_patch_file_is_not_an_object(example_repo: RepoCopy) -> None:
    example_repo.write(f"{PELICAN_APP}/patches/release.yaml", "apiVersion: helm.toolkit.fluxcd.io/v2\n"
                       "kind: HelmRelease\nmetadata: {name: pelican}\nspec: {values: {replicas: 2}}\n")
    example_repo.replace(f"{PELICAN_APP}/kustomization.yaml", "  - ./httproute.yaml\n",
                         "  - ./httproute.yaml\npatches:\n  - path: ./patches/release.yaml\n")
    assert errors(example_repo.findings("crd-schema")) == []


def test_a_flux_instance_values_file_is_an_entry_point(example_repo: RepoCopy) -> None:
    example_repo.delete("kubernetes/flux/cluster/ks.yaml")
    example_repo.write("bootstrap/flux-instance-values.yaml",
                       "instance:\n  sync:\n    kind: GitRepository\n    url: https://example.org/repo.git\n"
                       "    ref: refs/heads/main\n    path: kubernetes/apps\n")
    catalogue = example_repo.catalogue()
    assert any("flux-instance values" in e for e in catalogue.entry_points)
    assert {s.name for s in catalogue.schedules} >= {"pelican-daily"}


# -- 2. YAML as kustomize reads it ---------------------------------------------------------------


def test_yaml_reads_as_go_yaml_v3(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text("a: &x 1\nb: *x\nc: &x 2\nd: *x\nhuge_pages: off\nwal: yes\nday: 2024-01-01\n"
                    "env: !env_var API_KEY\n=: value\nm: {<<: {p: 1}, q: 2}\n")
    (document,) = load_documents(path, root=tmp_path)
    assert document.data == {"a": 1, "b": 1, "c": 2, "d": 2, "huge_pages": "off", "wal": "yes",
                             "day": "2024-01-01", "env": "API_KEY", "=": "value", "m": {"p": 1, "q": 2}}


def test_a_cnpg_parameter_off_is_a_string_for_the_schema(example_repo: RepoCopy) -> None:
    example_repo.replace("kubernetes/apps/immich/immich/app/cluster.yaml", "  storage:",
                         "  postgresql:\n    parameters:\n      huge_pages: off\n  storage:")
    assert errors(example_repo.findings("crd-schema")) == []


# -- 4. Velero 1.16 semantics -------------------------------------------------------------------


def test_include_cluster_resources_unset_keeps_pvs(example_repo: RepoCopy) -> None:
    example_repo.replace(PELICAN_SCHEDULE, "    includeClusterResources: true\n", "")
    assert example_repo.findings("schedule-cluster-resources") == []
    example_repo.replace(PELICAN_SCHEDULE, "    ttl: 720h0m0s\n",
                         "    ttl: 720h0m0s\n    includeClusterResources: false\n")
    (finding,) = example_repo.findings("schedule-cluster-resources")
    assert "includeClusterResources is false" in finding.problem


def test_an_omitted_storage_location_is_the_default_bsl_whatever_its_name(example_repo: RepoCopy) -> None:
    example_repo.replace(VELERO_RELEASE, "        - name: default\n", "        - name: minio\n")
    example_repo.replace(PELICAN_SCHEDULE, "    storageLocation: default\n", "")
    findings = example_repo.findings("schedule-storage-location")
    assert [f.subject for f in findings if "pelican" in f.subject] == []
    assert default_storage_location([("offsite", False), ("minio", True)], "default") == "minio"


def test_csi_snapshots_cover_volumes_when_fs_backup_is_off(example_repo: RepoCopy) -> None:
    example_repo.replace(PELICAN_SCHEDULE, "defaultVolumesToFsBackup: true", "defaultVolumesToFsBackup: false")
    assert len(example_repo.findings("schedule-fs-backup")) == 1
    example_repo.replace(VELERO_RELEASE, "      defaultVolumesToFsBackup: true",
                         "      defaultVolumesToFsBackup: true\n      features: EnableCSI")
    assert example_repo.findings("schedule-fs-backup") == []


def test_fs_backup_without_the_node_agent_backs_up_nothing(example_repo: RepoCopy) -> None:
    text = example_repo.path(VELERO_RELEASE).read_text()
    assert "deployNodeAgent: true" in text
    example_repo.replace(VELERO_RELEASE, "deployNodeAgent: true", "deployNodeAgent: false")
    findings = example_repo.findings("schedule-fs-backup")
    assert findings and all("node-agent is not deployed" in f.problem for f in findings), rendered(findings)


def test_volume_coverage_by_opt_in_annotation_and_restic_default() -> None:
    server = VeleroServer()
    assert volume_coverage({}, server, volume="data").loses_data
    opted = volume_coverage({}, server, volume="data", pod_annotations={"backup.velero.io/backup-volumes": "data"})
    assert opted.method == "fs-backup"
    assert volume_coverage({"defaultVolumesToRestic": True}, server, volume="data").method == "fs-backup"
    assert volume_coverage({"snapshotVolumes": False}, VeleroServer(csi=True), volume="data").loses_data


def test_more_than_one_snapshot_location_for_a_provider_fails_every_backup(example_repo: RepoCopy) -> None:
    example_repo.write(f"{VELERO_APP}/vsl.yaml", "".join(
        f"---\napiVersion: velero.io/v1\nkind: VolumeSnapshotLocation\nmetadata: {{name: {n}, namespace: velero}}\n"
        "spec: {provider: aws}\n" for n in ("one", "two")))
    example_repo.replace(f"{VELERO_APP}/kustomization.yaml", "resources:\n", "resources:\n  - ./vsl.yaml\n")
    findings = example_repo.findings("schedule-storage-location")
    assert findings and all("more than one VolumeSnapshotLocation for provider 'aws'" in f.problem for f in findings)


def test_a_schedule_naming_two_locations_of_one_provider_fails_every_backup(example_repo: RepoCopy) -> None:
    # jfrazx/home-ops: two `provider: csi` locations listed in one Schedule.
    example_repo.write(f"{VELERO_APP}/vsl.yaml", "".join(
        f"---\napiVersion: velero.io/v1\nkind: VolumeSnapshotLocation\nmetadata: {{name: {n}, namespace: velero}}\n"
        "spec: {provider: csi}\n" for n in ("fast", "slow")))
    example_repo.replace(f"{VELERO_APP}/kustomization.yaml", "resources:\n", "resources:\n  - ./vsl.yaml\n")
    example_repo.replace(PELICAN_SCHEDULE, "    storageLocation: default\n",
                         "    storageLocation: default\n    volumeSnapshotLocations: [fast]\n")
    assert [f for f in example_repo.findings("schedule-storage-location") if "pelican" in f.subject] == []
    example_repo.replace(PELICAN_SCHEDULE, "volumeSnapshotLocations: [fast]", "volumeSnapshotLocations: [fast, slow]")
    (finding,) = [f for f in example_repo.findings("schedule-storage-location") if "pelican" in f.subject]
    assert "more than one location of provider 'csi' (fast, slow)" in finding.problem


STATUS_4 = """apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: status}
spec:
  interval: 1h
  chartRef: {kind: OCIRepository, name: app-template}
  values:
    controllers:
      gatus:
        pod: {annotations: {backup.velero.io/backup-volumes: data}}
        containers: {app: {image: {repository: ghcr.io/twin/gatus, tag: v5.17.0}}}
      other:
        containers: {app: {image: {repository: ghcr.io/example/other, tag: "1.0"}}}
    persistence:
      data: {existingClaim: status-data}
      scratch:
        size: 1Gi
        advancedMounts: {other: {app: [{path: /scratch}]}}
"""
STATUS_1 = """apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: status}
spec:
  interval: 1h
  chart: {spec: {chart: app-template, version: 1.2.0, sourceRef: {kind: HelmRepository, name: bjw-s}}}
  values:
    podAnnotations: {backup.velero.io/backup-volumes: "data,cache"}
    image: {repository: ghcr.io/twin/gatus, tag: v5.17.0}
    persistence:
      data: {enabled: true, existingClaim: status-data}
      cache: {enabled: true, size: 1Gi}
"""


@pytest.mark.parametrize("release", [STATUS_4, STATUS_1], ids=["app-template-4", "app-template-1"])
def test_an_app_template_pods_opt_in_covers_the_claims_its_persistence_mounts(example_repo: RepoCopy,
                                                                              release: str) -> None:
    # MarcoMihaiCondrache/infrastructure: podAnnotations opt the `config` volume (an existingClaim) in.
    example_repo.write("kubernetes/apps/pelican/status/ks.yaml",
                       FLUX_KS.format(name="status", path="./kubernetes/apps/pelican/status/app").replace(
                           "targetNamespace: web", "targetNamespace: pelican"))
    example_repo.write("kubernetes/apps/pelican/status/app/kustomization.yaml",
                       "resources: [helmrelease.yaml, pvc.yaml]\n")
    example_repo.write("kubernetes/apps/pelican/status/app/helmrelease.yaml", release)
    example_repo.write("kubernetes/apps/pelican/status/app/pvc.yaml", PVC.replace("name: data", "name: status-data"))
    example_repo.replace("kubernetes/apps/pelican/kustomization.yaml", "  - ./pelican/ks.yaml\n",
                         "  - ./pelican/ks.yaml\n  - ./status/ks.yaml\n")
    example_repo.replace(PELICAN_SCHEDULE, "defaultVolumesToFsBackup: true", "defaultVolumesToFsBackup: false")
    catalogue = example_repo.catalogue()
    [workload] = [w for w in catalogue.workloads if w.manifest.name == "status" and
                  w.pod_annotations.get("backup.velero.io/backup-volumes")]
    assert dict(workload.volumes)["data"] == "status-data" and workload.namespace == "pelican"
    (finding,) = example_repo.findings("schedule-fs-backup")  # pelican's own Deployment does not opt in
    assert "status-data" not in finding.problem and "pelican/pelican-data" in finding.problem, finding.problem
    if release is STATUS_4:  # `scratch` is mounted only in `other`, which does not opt in
        assert "pelican/status-scratch" in finding.problem
    else:
        assert "status-cache" not in finding.problem
    example_repo.replace("kubernetes/apps/pelican/status/app/helmrelease.yaml", "backup.velero.io/backup-volumes",
                         "example.org/not-velero")
    (finding,) = example_repo.findings("schedule-fs-backup")
    assert "pelican/status-data" in finding.problem


def test_a_paused_schedule_takes_no_backups(example_repo: RepoCopy) -> None:
    example_repo.replace(PELICAN_SCHEDULE, '  schedule: "0 2 * * *"', '  schedule: "0 2 * * *"\n  paused: true')
    (finding,) = example_repo.findings("schedule-paused")
    assert finding.subject == "Schedule velero/pelican-daily"


def test_hook_selection_honours_match_expressions_and_excluded_namespaces() -> None:
    resource = {"includedNamespaces": ["*"], "excludedNamespaces": ["kube-system"],
                "labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["db"]}]}}
    assert hook_selects(resource, namespace="shop", labels={"app": "db"})
    assert not hook_selects(resource, namespace="shop", labels={"app": "web"})
    assert not hook_selects(resource, namespace="kube-system", labels={"app": "db"})


def test_a_foreground_sleep_is_not_a_freeze(example_repo: RepoCopy) -> None:
    from tests.test_rules import _simple_pricebuddy_hooks
    example_repo.write("kubernetes/apps/velero/velero/app/schedules/pricebuddy-schedule.yaml", _simple_pricebuddy_hooks(
        pre='mariadb -uroot -e "FLUSH TABLES WITH READ LOCK; SELECT SLEEP(5)"', post='pkill mariadb'))
    problems = [f.problem for f in example_repo.findings("database-hooks")]
    assert any("releases the lock as soon as that session ends" in p for p in problems), problems


def test_a_database_image_running_a_client_is_not_a_database() -> None:
    assert runs_database_server(kind="CronJob", image="postgres:16") is None
    assert runs_database_server(kind="Deployment", image="postgres:16", command=["sh", "-c", "pg_dump app"]) is None
    assert runs_database_server(kind="Deployment", image="docker.io/library/mariadb:11") == "mysql"


# -- 5. other backup mechanisms -----------------------------------------------------------------


def test_cnpg_object_store_backups_and_volsync_cover_a_namespace(example_repo: RepoCopy) -> None:
    example_repo.replace("kubernetes/apps/velero/velero/app/kustomization.yaml",
                         "  - ./schedules/immich-schedule.yaml\n", "")
    assert [f.subject for f in example_repo.findings("namespace-covered")] == ["namespace immich"]
    example_repo.replace("kubernetes/apps/immich/immich/app/cluster.yaml", "  storage:",
                         "  backup:\n    barmanObjectStore:\n      destinationPath: s3://cnpg/immich\n  storage:")
    example_repo.write("kubernetes/apps/immich/immich/app/backup.yaml", """apiVersion: postgresql.cnpg.io/v1
kind: ScheduledBackup
metadata: {name: immich-postgres}
spec: {schedule: "0 0 3 * * *", cluster: {name: immich-postgres}}
---
apiVersion: volsync.backube/v1alpha1
kind: ReplicationSource
metadata: {name: immich}
spec: {sourcePVC: immich-data}
---
apiVersion: volsync.backube/v1alpha1
kind: ReplicationSource
metadata: {name: library}
spec: {sourcePVC: immich-library}
""")
    example_repo.replace("kubernetes/apps/immich/immich/app/kustomization.yaml", "resources:\n",
                         "resources:\n  - ./backup.yaml\n")
    findings = example_repo.findings("namespace-covered")
    assert errors(findings) == [], rendered(findings)
    # A ScheduledBackup that is suspended, or takes volume snapshots, puts no base backup in the store.
    backup = "kubernetes/apps/immich/immich/app/backup.yaml"
    for change in ("spec: {suspend: true, ", "spec: {method: volumeSnapshot, "):
        example_repo.replace(backup, "spec: {schedule:", change + "schedule:", count=1)
        (finding,) = errors(example_repo.findings("namespace-covered"))
        assert "CNPG Cluster storage immich-postgres" in finding.problem, finding.render()
        example_repo.replace(backup, change + "schedule:", "spec: {schedule:")
    # The barman-cloud plugin's backups are taken with method: plugin naming it.
    example_repo.replace("kubernetes/apps/immich/immich/app/cluster.yaml",
                         "  backup:\n    barmanObjectStore:\n      destinationPath: s3://cnpg/immich\n",
                         "  plugins:\n    - name: barman-cloud.cloudnative-pg.io\n      isWALArchiver: true\n")
    assert errors(example_repo.findings("namespace-covered")), "method barmanObjectStore on a plugin Cluster"
    example_repo.replace(backup, "spec: {schedule:",
                         "spec: {method: plugin, pluginConfiguration: {name: barman-cloud.cloudnative-pg.io},"
                         " schedule:")
    assert errors(example_repo.findings("namespace-covered")) == []


# -- 6. schema noise -----------------------------------------------------------------------------


def test_an_unresolved_variable_skips_pattern_checks(example_repo: RepoCopy) -> None:
    text = example_repo.path(f"{PELICAN_APP}/httproute.yaml").read_text()
    assert "hostnames:" in text
    example_repo.replace(f"{PELICAN_APP}/httproute.yaml", "hostnames:\n",
                         "hostnames:\n    - \"pelican.${SECRET_DOMAIN}\"\n")
    assert errors(example_repo.findings("crd-schema")) == []


def test_objects_of_unpinned_groups_get_one_advisory(example_repo: RepoCopy) -> None:
    example_repo.write(f"{PELICAN_APP}/receiver.yaml", "".join(
        f"---\napiVersion: notification.toolkit.fluxcd.io/v1\nkind: Receiver\nmetadata: {{name: r{i}}}\n"
        "spec: {type: github}\n" for i in range(3)))
    example_repo.replace(f"{PELICAN_APP}/kustomization.yaml", "resources:\n", "resources:\n  - ./receiver.yaml\n")
    findings = example_repo.findings("crd-schema")
    assert len(findings) == 1 and findings[0].severity == "warning", rendered(findings)
    assert "Receiver (3:" in findings[0].problem


def test_an_api_version_an_older_installed_flux_serves_is_a_warning(example_repo: RepoCopy) -> None:
    example_repo.replace(PELICAN_SCHEDULE, "apiVersion: velero.io/v1", "apiVersion: velero.io/v2")
    (finding,) = example_repo.findings("crd-schema")
    assert finding.severity == "error"
    example_repo.write("kubernetes/flux/cluster/flux.yaml", "apiVersion: source.toolkit.fluxcd.io/v1\n"
                       "kind: OCIRepository\nmetadata: {name: flux-manifests, namespace: flux-system}\n"
                       "spec: {interval: 1h, url: oci://ghcr.io/fluxcd/flux-manifests, ref: {tag: v2.0.1}}\n")
    (finding,) = example_repo.findings("crd-schema")
    assert finding.severity == "warning" and "installs Flux v2.0.1" in finding.problem


# -- 7. suppressions users can live with --------------------------------------------------------


def test_ignore_entries_need_a_reason_and_are_reported_as_suppressed(example_repo: RepoCopy) -> None:
    example_repo.replace(PELICAN_SCHEDULE, "ttl: 720h0m0s", "ttl: 24h")
    config = example_repo.path("restoredrill.yaml")
    config.write_text(config.read_text() + "ignore:\n  - rule: schedule-ttl\n    object: Schedule velero/pelican-*\n"
                      "    reason: pelican keeps a day; its data is rebuilt from upstream\n")
    (finding,) = example_repo.findings("schedule-ttl")
    assert finding.suppressed == "pelican keeps a day; its data is rebuilt from upstream"
    config.write_text(config.read_text().replace("    reason: pelican keeps a day; its data is rebuilt from upstream\n",
                                                 ""))
    with pytest.raises(ConfigError, match="gives no reason"):
        build_config(defaults={"gitops_repo": example_repo.root, "reports_dir": "r"}, ini={}, cli={},
                     base_dir=example_repo.root)


def test_exempting_one_app_does_not_silence_the_others_of_its_namespace(example_repo: RepoCopy) -> None:
    # A second app in pelican's namespace, with its own claim, and pelican's Schedule gone.
    example_repo.write("kubernetes/apps/pelican/wiki/ks.yaml",
                       FLUX_KS.format(name="wiki", path="./kubernetes/apps/pelican/wiki/app").replace(
                           "targetNamespace: web", "targetNamespace: pelican"))
    example_repo.write("kubernetes/apps/pelican/wiki/app/pvc.yaml", PVC.replace("name: data", "name: wiki-data"))
    example_repo.replace("kubernetes/apps/pelican/kustomization.yaml", "  - ./pelican/ks.yaml\n",
                         "  - ./pelican/ks.yaml\n  - ./wiki/ks.yaml\n")
    example_repo.replace(f"{VELERO_APP}/kustomization.yaml", "  - ./schedules/pelican-schedule.yaml\n", "")
    example_repo.delete(PELICAN_SCHEDULE)
    config = example_repo.path("restoredrill.yaml")
    config.write_text(config.read_text().replace("apps:\n", "apps:\n  pelican:\n    backup_required: false\n"
                                                 "    reason: rebuilt from upstream\n", 1))
    (finding,) = example_repo.findings("namespace-covered")
    assert "wiki-data" in finding.problem and "pelican-data" not in finding.problem
    # The fix names the app that owns the claim (samuelbartels20/home-ops: it named the namespace's first app).
    assert "apps.wiki.backup_required: false" in finding.fix and "apps.pelican." not in finding.fix, finding.fix


FLUX_KS = """apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: {name}, namespace: flux-system}}
spec:
  path: {path}
  targetNamespace: web
  interval: 1h
  prune: true
  sourceRef: {{kind: GitRepository, name: flux-system}}
"""
PVC = """apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
"""


def test_one_schedule_applied_by_two_kustomizations_is_not_two_schedules(tmp_path: Path) -> None:
    # j0sh3rs/home-ops: kubernetes/apps has no kustomization.yaml, so cluster-apps applies every folder
    # that has one (fluxcd/pkg generateKustomization), velero/app included, which velero's own applies too.
    repo = RepoCopy(tmp_path)
    repo.write("kubernetes/flux/cluster/apps.yaml", FLUX_KS.format(name="cluster-apps", path="./kubernetes/apps")
               .replace("  targetNamespace: web\n", ""))
    repo.write("kubernetes/apps/velero/ks.yaml", FLUX_KS.format(name="velero", path="./kubernetes/apps/velero/app")
               .replace("targetNamespace: web", "targetNamespace: velero"))
    repo.write("kubernetes/apps/velero/app/kustomization.yaml", "resources: [./schedule.yaml]\n")
    schedule = ("apiVersion: velero.io/v1\nkind: Schedule\nmetadata: {name: daily-backup, namespace: velero}\n"
                "spec: {schedule: '0 2 * * *', template: {ttl: 720h, includedNamespaces: ['*']}}\n")
    repo.write("kubernetes/apps/velero/app/schedule.yaml", schedule)
    assert len([s for s in repo.catalogue().schedules if s.name == "daily-backup"]) == 2
    assert repo.findings("schedule-unique-name") == []
    repo.write("kubernetes/apps/velero/app/other.yaml", schedule)  # a second document of the same name
    repo.write("kubernetes/apps/velero/app/kustomization.yaml", "resources: [./schedule.yaml, ./other.yaml]\n")
    assert repo.findings("schedule-unique-name")


def test_an_aws_snapshot_location_snapshots_only_ebs_volumes(example_repo: RepoCopy) -> None:
    # skogstorpet/hemma-kluster: velero chart 3.x, configuration.provider aws, a VSL without its own
    # provider (the chart gives it configuration.provider), longhorn claims, fs-backup off.
    example_repo.replace(VELERO_RELEASE, "      volumeSnapshotLocation: []\n",
                         "      provider: aws\n      volumeSnapshotLocation:\n        name: aws\n"
                         "        config: {region: eu-west-1}\n")
    example_repo.replace(VELERO_RELEASE, "    snapshotsEnabled: false\n", "    snapshotsEnabled: true\n")
    assert ("aws", "aws") in example_repo.catalogue().velero_defaults.snapshot_locations
    example_repo.replace(PELICAN_SCHEDULE, "defaultVolumesToFsBackup: true", "defaultVolumesToFsBackup: false")
    (finding,) = [f for f in example_repo.findings("schedule-fs-backup") if "pelican" in f.subject]
    assert "snapshots only ebs.csi.aws.com or kubernetes.io/aws-ebs volumes" in finding.problem, finding.problem
    # A claim of a StorageClass the repo shows to be EBS is snapshotted.
    example_repo.write(f"{PELICAN_APP}/sc.yaml", "apiVersion: storage.k8s.io/v1\nkind: StorageClass\n"
                       "metadata: {name: gp3}\nprovisioner: ebs.csi.aws.com\n")
    example_repo.replace(f"{PELICAN_APP}/kustomization.yaml", "  - ./pvc.yaml\n", "  - ./pvc.yaml\n  - ./sc.yaml\n")
    pvc = example_repo.path(f"{PELICAN_APP}/pvc.yaml").read_text()
    assert "  storageClassName:" not in pvc  # both claims of the default class
    example_repo.write(f"{PELICAN_APP}/pvc.yaml", pvc.replace("spec:\n", "spec:\n  storageClassName: gp3\n"))
    assert [f for f in example_repo.findings("schedule-fs-backup") if "pelican" in f.subject] == []


# -- 7. what a Schedule's filters take ----------------------------------------------------------

IMMICH_SCHEDULE = f"{VELERO_APP}/schedules/immich-schedule.yaml"
IMMICH_CLUSTER = "kubernetes/apps/immich/immich/app/cluster.yaml"


def test_a_schedule_that_filters_claims_out_leaves_their_namespace_uncovered(example_repo: RepoCopy) -> None:
    # rafal11ck/home-ops: includedResources [persistentvolumeclaims] and a labelSelector that only the
    # library claim carries; the CNPG Cluster's claims and the others are never backed up.
    example_repo.replace(IMMICH_SCHEDULE, "    includedResources:\n      - '*'\n",
                         "    includedResources:\n      - persistentvolumeclaims\n"
                         "    labelSelector:\n      matchLabels:\n        backup: immich-library\n")
    (finding,) = errors(example_repo.findings("namespace-covered"))
    assert finding.subject == "namespace immich"
    assert "Schedule velero/immich-daily leaves out" in finding.render()
    assert "CNPG Cluster storage immich-postgres" in finding.render()
    assert "PersistentVolumeClaim immich-data" in finding.render()


def test_a_pod_the_schedule_selects_brings_its_claims_but_a_cnpg_cluster_needs_inherited_labels(
        example_repo: RepoCopy) -> None:
    # The Deployment's pods carry app.kubernetes.io/name: immich, so their claims come as the pod's
    # additional items; CNPG's pods and claims carry only cnpg.io/ labels and spec.inheritedMetadata's.
    example_repo.replace(IMMICH_SCHEDULE, "    includedResources:\n      - '*'\n",
                         "    labelSelector:\n      matchLabels:\n        app.kubernetes.io/name: immich\n")
    (finding,) = errors(example_repo.findings("namespace-covered"))
    assert "CNPG Cluster storage immich-postgres" in finding.render()
    assert "immich-data" not in finding.render()
    example_repo.replace(IMMICH_CLUSTER, "spec:\n",
                         "spec:\n  inheritedMetadata:\n    labels:\n      app.kubernetes.io/name: immich\n", count=1)
    assert errors(example_repo.findings("namespace-covered")) == []


def test_a_selector_on_the_operators_own_labels_is_taken_to_match(example_repo: RepoCopy) -> None:
    example_repo.replace(IMMICH_SCHEDULE, "    includedResources:\n      - '*'\n",
                         "    orLabelSelectors:\n      - matchLabels: {app.kubernetes.io/name: immich}\n"
                         "      - matchExpressions: [{key: cnpg.io/instanceRole, operator: In, values: [primary]}]\n")
    assert errors(example_repo.findings("namespace-covered")) == []


@pytest.mark.parametrize(("template", "taken"), [
    ({}, True),
    ({"includedResources": ["*"]}, True),
    ({"includedResources": ["pvc"]}, True),
    ({"includedResources": ["persistentvolumeclaims.v1"]}, True),
    ({"includedResources": ["deployments", "pods"]}, False),
    ({"excludedResources": ["persistentvolumeclaims"]}, False),
    ({"includedNamespaceScopedResources": ["persistentvolumeclaims"], "includedResources": ["pods"]}, True),
    ({"excludedNamespaceScopedResources": ["pvc"]}, False),
])
def test_which_resource_lists_take_a_claim(template: dict[str, list[str]], taken: bool) -> None:
    assert includes_resource(template, PVC_RESOURCE) is taken


# -- 8. namespace patterns ----------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "namespace", "hook", "taken"), [
    ({"excludedNamespaces": ["kube-*"]}, "kube-system", False, False),
    ({"excludedNamespaces": ["kube-*"]}, "immich", False, True),
    ({"includedNamespaces": ["*"], "excludedNamespaces": ["{velero,flux-system}"]}, "flux-system", False, False),
    ({"excludedNamespaces": ["ns[a-c]"]}, "nsb", False, False),
    ({"excludedNamespaces": ["ns[!a]"]}, "nsa", False, True),
    ({"excludedNamespaces": ["ns?"]}, "ns10", False, True),
    # a backup lists its includes by name: a pattern there takes nothing before Velero 1.18
    ({"includedNamespaces": ["media-*"]}, "media-jellyfin", False, False),
    ({"includedNamespaces": ["media-*"]}, "media-*", False, True),
    # a hook resource's namespaces are matched, not listed
    ({"includedNamespaces": ["media-*"]}, "media-jellyfin", True, True),
    ({"excludedNamespaces": ["ns["]}, "ns[", False, True),  # gobwas refuses it: matches nothing
])
def test_namespace_lists_as_velero_reads_them(spec: dict[str, list[str]], namespace: str, hook: bool,
                                              taken: bool) -> None:
    from restoredrill.velero_semantics import includes_namespace
    assert includes_namespace(spec, namespace, patterns=hook) is taken


def test_a_pattern_in_included_namespaces_is_named_unless_velero_is_new_enough(example_repo: RepoCopy) -> None:
    example_repo.replace(IMMICH_SCHEDULE, "      - immich\n", "      - immi*\n")
    findings = errors(example_repo.findings("schedule-namespaces-exist"))
    assert ["'immi*' is a pattern" in f.problem and "runs v1.16.2" in f.problem for f in findings] == [True], \
        rendered(findings)
    # the namespace is no longer covered either: one semantics for both rules
    assert [f.subject for f in errors(example_repo.findings("namespace-covered"))] == ["namespace immich"]
    example_repo.replace(VELERO_RELEASE, "      tag: v1.16.2\n", "      tag: v1.18.0\n")
    assert errors(example_repo.findings("schedule-namespaces-exist")) == []
