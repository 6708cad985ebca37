"""The catalogue reads a GitOps repo the way Flux and kustomize build it."""

from pathlib import Path

from restoredrill.catalogue import Catalogue, build_catalogue

RUNBOOK_APPS = {"pricebuddy", "n8n", "immich", "gatus", "obsidian-livesync", "pocket-id", "pelican"}


def test_apps_follow_the_runbook_layout(example_catalogue: Catalogue) -> None:
    apps = {app.name: app for app in example_catalogue.apps}
    assert set(apps) >= RUNBOOK_APPS
    pelican = apps["pelican"]
    assert pelican.namespace == "pelican"
    assert pelican.directory == Path("kubernetes/apps/pelican/pelican")
    assert [ks.name for ks in pelican.kustomizations] == ["pelican"]
    kinds = {(m.kind, m.name) for m in pelican.manifests}
    assert {("PersistentVolumeClaim", "pelican-data"), ("PersistentVolumeClaim", "pelican-logs"),
            ("Deployment", "pelican-panel"), ("Service", "pelican-panel"), ("HTTPRoute", "pelican"),
            ("Secret", "pelican-secrets")} <= kinds
    assert all(m.namespace == "pelican" for m in pelican.manifests)


def test_schedules_and_storage_locations(example_catalogue: Catalogue) -> None:
    names = {s.name for s in example_catalogue.schedules}
    assert names == {f"{app}-daily" for app in RUNBOOK_APPS}
    assert all(s.namespace == "velero" for s in example_catalogue.schedules)
    assert [(bsl.name, bsl.default) for bsl in example_catalogue.storage_locations] == [("default", True)]
    assert example_catalogue.velero_defaults.default_volumes_to_fs_backup is True


def test_volume_claims_include_cnpg_storage_and_classes(example_catalogue: Catalogue) -> None:
    claims = {(c.namespace, c.name): c for c in example_catalogue.volume_claims}
    assert claims[("pocket-id", "pocket-id-data")].storage_class == "longhorn"
    assert claims[("immich", "immich-postgres")].origin == "CNPG Cluster storage"
    assert claims[("immich", "immich-library")].volume_name  # bound to the NFS PV by name
    assert [c.name for c in example_catalogue.cnpg_clusters] == ["immich-postgres"]
    assert example_catalogue.cnpg_clusters[0].object_store_backup is None  # TD-004


def test_workloads_and_images(example_catalogue: Catalogue) -> None:
    database = next(w for w in example_catalogue.workloads if w.manifest.name == "pricebuddy-database")
    assert database.containers[0].image.startswith("docker.io/library/mariadb:")
    assert database.pod_labels["app.kubernetes.io/component"] == "database"
    assert database.claim_names


def test_flux_substitution_is_applied(example_catalogue: Catalogue) -> None:
    deployment = next(w for w in example_catalogue.workloads if w.manifest.name == "pelican-panel").manifest
    assert deployment.get("metadata", "labels", "app.kubernetes.io/instance") == "pelican"


def test_sops_files_are_never_read_as_plaintext(example_catalogue: Catalogue) -> None:
    secrets = [m for m in example_catalogue.manifests if m.kind == "Secret"]
    assert secrets and all(m.encrypted for m in secrets)
    for secret in secrets:
        for key in ("data", "stringData"):
            assert all(value == "<redacted>" for value in (secret.obj.get(key) or {}).values())


def test_components_and_namespace_kustomizations_are_followed(example_catalogue: Catalogue) -> None:
    # Namespaces come from namespace folders reached through kustomization.yaml resources.
    assert example_catalogue.namespaces >= RUNBOOK_APPS
    assert not example_catalogue.broken_references


def test_a_folder_without_kustomization_includes_every_manifest(tmp_path: Path) -> None:
    write(tmp_path, "kubernetes/flux/ks.yaml", FLUX_KS.format(name="apps", path="./kubernetes/apps").replace(
        "  targetNamespace: web\n", ""))
    write(tmp_path, "kubernetes/apps/web/web/ks.yaml", FLUX_KS.format(name="web", path="./kubernetes/apps/web/web/app"))
    write(tmp_path, "kubernetes/apps/web/web/app/pvc.yaml", PVC)
    write(tmp_path, "kubernetes/apps/web/web/app/nested/more.yaml",
          "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n")
    catalogue = build_catalogue(tmp_path)
    assert {m.name for m in catalogue.deployed()} >= {"data", "c"}
    (app,) = catalogue.apps
    assert app.namespace == "web"  # from targetNamespace


def test_velero_helm_values_schedules_are_catalogued(tmp_path: Path) -> None:
    write(tmp_path, "kubernetes/apps/velero/velero/app/helmrelease.yaml", """
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: velero, namespace: velero}
spec:
  chart: {spec: {chart: velero, sourceRef: {kind: HelmRepository, name: vmware-tanzu}}}
  values:
    configuration:
      backupStorageLocation:
        name: default
        provider: aws
    schedules:
      web-daily:
        schedule: "0 3 * * *"
        template: {includedNamespaces: [web], ttl: 240h}
      retired: {disabled: true, schedule: "@daily"}
""")
    catalogue = build_catalogue(tmp_path)
    (schedule,) = catalogue.schedules
    assert schedule.name == "velero-web-daily"
    assert schedule.from_helm_values
    assert schedule.template["ttl"] == "240h"
    assert str(schedule.location("template", "ttl")).endswith("helmrelease.yaml:15")
    assert [s.name for s in catalogue.storage_locations] == ["default"]  # the chart's pre-5.0 mapping form


def test_a_broken_file_is_reported_and_the_rest_still_read(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n")
    write(tmp_path, "b.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: [unclosed\n")
    write(tmp_path, "c.yaml", "kind: ConfigMap\nmetadata: {name: no-api-version}\n")
    catalogue = build_catalogue(tmp_path)
    assert [m.name for m in catalogue.manifests] == ["ok"]
    problems = sorted(str(e) for e in catalogue.errors)
    assert problems[0].startswith("b.yaml:")
    assert problems[1].startswith("c.yaml:1: looks like a Kubernetes object but has no `apiVersion`")


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


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_persistence_values_are_claims_only_for_app_template(tmp_path: Path) -> None:
    release = """apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {{name: {name}, namespace: web}}
spec:
  chart: {{spec: {{chart: {chart}, sourceRef: {{kind: HelmRepository, name: charts}}}}}}
  values:
{values}
"""
    write(tmp_path, "a.yaml", release.format(name="idp", chart="pocket-id",  # a StatefulSet template's values
                                             values="    persistence: {data: {enabled: true, size: 5Gi}}"))
    write(tmp_path, "b.yaml", release.format(name="web", chart="app-template",
                                             values="    persistence: {config: {size: 1Gi}}"))
    # The common library's first shape (`controller:`): an item counts only with `enabled: true`, and
    # a chart other than app-template 1.x names its claims RELEASE-CHART-KEY (names.fullname).
    write(tmp_path, "c.yaml", release.format(name="old", chart="common-chart",
                                             values="    controller: {type: statefulset}\n"
                                                    "    persistence: {media: {enabled: true, size: 2Gi}, "
                                                    "cache: {size: 1Gi}}"))
    one = release.replace("chart: {chart}, ", "chart: {chart}, version: 1.2.0, ")
    write(tmp_path, "d.yaml", one.format(name="red", chart="app-template",  # app-template 1.x: RELEASE-KEY
                                         values="    persistence: {data: {enabled: true}, tmp: {size: 1Gi}}"))
    claims = sorted(c.name for c in build_catalogue(tmp_path).volume_claims)
    assert claims == ["old-common-chart-media", "red-data", "web-config"]


def test_a_component_every_namespace_folder_names_is_built_into_each_namespace(tmp_path: Path) -> None:
    # endsys-gitops' layout: kubernetes/apps/<ns>/kustomization.yaml sets `namespace:` and names
    # components/common (a Namespace and the cluster-secrets Secret) for each namespace.
    write(tmp_path, "kubernetes/flux/ks.yaml", FLUX_KS.format(name="apps", path="./kubernetes/apps").replace(
        "  targetNamespace: web\n", ""))
    write(tmp_path, "kubernetes/apps/kustomization.yaml", "resources: [./web, ./db]\n")
    for namespace in ("web", "db"):
        write(tmp_path, f"kubernetes/apps/{namespace}/kustomization.yaml",
              f"namespace: {namespace}\ncomponents: [../../components/common]\nresources: []\n")
    write(tmp_path, "kubernetes/components/common/kustomization.yaml",
          "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\nresources: [namespace.yaml, secret.yaml]\n")
    write(tmp_path, "kubernetes/components/common/namespace.yaml",
          "apiVersion: v1\nkind: Namespace\nmetadata: {name: _}\n")
    write(tmp_path, "kubernetes/components/common/secret.yaml",
          "apiVersion: v1\nkind: Secret\nmetadata: {name: cluster-secrets}\nstringData: {SECRET_DOMAIN: x}\n")
    catalogue = build_catalogue(tmp_path)
    assert sorted(m.name for m in catalogue.manifests if m.kind == "Namespace") == ["db", "web"]
    assert sorted(str(m.namespace) for m in catalogue.manifests if m.name == "cluster-secrets") == ["db", "web"]
