"""A HelmRelease app drilled end to end, offline: charts from --charts-dir served in the cluster.
Its Flux Kustomization lives in the app's own namespace, as in most real repos.

The repo (written here, shaped like real home-ops repos) has one app with two HelmReleases of a
chart written here in app-template's shape (`controllers`, `persistence`): one from an
OCIRepository in the app's own folder (`chartRef`), one from a HelmRepository in flux-system that
another Kustomization deploys (`chart.spec.sourceRef`), both naming registries this cluster cannot
reach. The second `dependsOn` a HelmRelease outside the app (rook-ceph-cluster, as real repos
write it), which the drill stands in for; the first depends on the second. The drill serves the
chart from its chart server, deploys, backs up, destroys, restores, verifies and checks that Flux
adopts both releases (same Helm revision, same object UIDs).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from fixtures.drills import app_image_loader, remove_app
from restoredrill.catalogue import build_catalogue
from restoredrill.cluster import ClusterProvider
from restoredrill.drill.charts import read_charts_dir
from restoredrill.drill.gitops import GitOpsDeployment
from restoredrill.drill.namespace import DrillFailed, NamespaceDrill
from restoredrill.drill.plan import plan_app
from restoredrill.pins import cache_dir
from restoredrill.platform import CloudNativePG, Flux, PlatformContext, Velero
from restoredrill.platform.flux import HELM_GROUP, HELM_VERSION
from restoredrill.rendering import binary_renderer, chart_render_binary, render_releases, with_rendered_releases

pytestmark = [pytest.mark.cluster, pytest.mark.platform, pytest.mark.drill]

APP = "helmdemo"
SOURCE = "helm-demo"  # the GitRepository: not flux-system, so the session's example repo is untouched

CHART_YAML = "apiVersion: v2\nname: drill-template\nversion: 1.2.0\nappVersion: '1.0'\n"
CHART_VALUES = "controllers: {}\npersistence: {}\n"
# The shape of bjw-s app-template's output the catalogue reads: one Deployment per controller,
# pods labelled name/instance/controller, one PVC per persistence item named RELEASE-KEY.
CHART_CONTROLLERS = """\
{{- range $name, $controller := .Values.controllers }}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ $.Release.Name }}
spec:
  replicas: 1
  strategy:
    type: Recreate
  selector:
    matchLabels:
      app.kubernetes.io/name: {{ $.Release.Name }}
      app.kubernetes.io/instance: {{ $.Release.Name }}
      app.kubernetes.io/controller: {{ $name }}
  template:
    metadata:
      labels:
        app.kubernetes.io/name: {{ $.Release.Name }}
        app.kubernetes.io/instance: {{ $.Release.Name }}
        app.kubernetes.io/controller: {{ $name }}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      {{- range $cname, $container := $controller.containers }}
        - name: {{ $cname }}
          image: "{{ $container.image.repository }}:{{ $container.image.tag }}"
          volumeMounts:
          {{- range $pname, $item := $.Values.persistence }}
          {{- range $item.globalMounts }}
            - name: {{ $pname }}
              mountPath: {{ .path }}
          {{- end }}
          {{- end }}
      {{- end }}
      volumes:
      {{- range $pname, $item := $.Values.persistence }}
        - name: {{ $pname }}
          persistentVolumeClaim:
            claimName: {{ $.Release.Name }}-{{ $pname }}
      {{- end }}
{{- end }}
"""
CHART_PERSISTENCE = """\
{{- range $name, $item := .Values.persistence }}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ $.Release.Name }}-{{ $name }}
spec:
  accessModes: ["ReadWriteOnce"]
  resources:
    requests:
      storage: {{ $item.size }}
{{- end }}
"""

# A chart of the other common shape (pocket-id's, home-assistant's): the pod, its image (from the
# chart's defaults and appVersion), its port and its claim (a volumeClaimTemplate) are in the
# templates, not in the release's values. The catalogue knows them only by rendering the chart.
STATEFUL_CHART_YAML = "apiVersion: v2\nname: drill-statefulset\nversion: 0.4.0\nappVersion: v2.4.0\n"
STATEFUL_CHART_VALUES = ("image: {repository: ghcr.io/restoredrill-test/idp, tag: ''}\n"
                         "persistence: {data: {size: 1Gi}}\n")
STATEFUL_CHART_TEMPLATE = """\
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ .Release.Name }}
spec:
  serviceName: {{ .Release.Name }}
  replicas: 1
  selector: {matchLabels: {app.kubernetes.io/instance: {{ .Release.Name }}}}
  template:
    metadata:
      labels: {app.kubernetes.io/instance: {{ .Release.Name }}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
        - name: idp
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
          ports: [{name: http, containerPort: 1411}]
          readinessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 2}
          volumeMounts: [{name: data, mountPath: /app/data}]
  volumeClaimTemplates:
    - metadata: {name: data}
      spec:
        accessModes: [ReadWriteOnce]
        resources: {requests: {storage: {{ .Values.persistence.data.size }}}}
"""
STATEFUL_RELEASE = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: helmdemo-idp
spec:
  interval: 1h
  chart:
    spec:
      chart: drill-statefulset
      version: 0.4.0
      sourceRef: {kind: HelmRepository, name: drill-charts, namespace: flux-system}
  values:
    persistence:
      data: {size: 64Mi}
"""


def release(name: str, chart_source: str, image: str, *, depends_on: str = "") -> str:
    return f"""\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: {name}
spec:
  interval: 1h
{chart_source}
{depends_on}  values:
    controllers:
      main:
        containers:
          main:
            image:
              repository: {image}
              tag: 1.0.0
    persistence:
      data:
        size: 64Mi
        globalMounts:
          - path: /data
"""


def kustomization(name: str, path: str, *, target: str | None = None, wait: bool = False) -> str:
    extra = f"  targetNamespace: {target}\n" if target else ""
    source = "    namespace: flux-system\n" if target else ""
    return f"""\
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: {name}
  namespace: flux-system
spec:
  interval: 1h
  path: {path}
  prune: true
  wait: {str(wait).lower()}
  timeout: 5m
{extra}  sourceRef:
    kind: GitRepository
    name: {SOURCE}
{source}"""


def files() -> dict[str, str]:
    oci_release = release("helmdemo-web", "  chartRef:\n    kind: OCIRepository\n    name: drill-template",
                          "ghcr.io/restoredrill-test/helmdemo-web",
                          depends_on="  dependsOn:\n    - name: helmdemo-worker\n")
    repo_release = release("helmdemo-worker", "  chart:\n    spec:\n      chart: drill-template\n      version: 1.x\n"
                           "      sourceRef:\n        kind: HelmRepository\n        name: drill-charts\n"
                           "        namespace: flux-system", "ghcr.io/restoredrill-test/helmdemo-worker",
                           # As real repos write it: a storage chart the drill does not deploy.
                           depends_on="  dependsOn:\n    - name: rook-ceph-cluster\n      namespace: rook-ceph\n")
    return {
        "kubernetes/flux/cluster/gitrepository.yaml": (
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n"
            f"  name: {SOURCE}\n  namespace: flux-system\nspec:\n  interval: 1h\n"
            "  url: https://example.invalid/home-ops.git\n  ref:\n    branch: main\n"),
        "kubernetes/flux/cluster/ks.yaml": (kustomization("cluster-repos", "./kubernetes/flux/repos")
                                            + kustomization("cluster-apps", "./kubernetes/apps")),
        "kubernetes/flux/repos/kustomization.yaml": "resources:\n  - ./drill-charts.yaml\n",
        "kubernetes/flux/repos/drill-charts.yaml": (
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: drill-charts\n"
            "  namespace: flux-system\nspec:\n  interval: 1h\n  url: https://charts.example.invalid/\n"
            "  secretRef:\n    name: chart-credentials\n"),
        "kubernetes/apps/kustomization.yaml": "resources:\n  - ./velero/helmdemo-schedule.yaml\n  - ./helmdemo\n",
        # As in most real repos (onedr0p's layout): the namespace folder's `namespace:` puts the app's
        # Flux Kustomization into the app's own namespace, so the backup holds it.
        f"kubernetes/apps/{APP}/kustomization.yaml": f"namespace: {APP}\nresources:\n  - ./namespace.yaml\n"
                                                   f"  - ./{APP}/ks.yaml\n",
        f"kubernetes/apps/{APP}/namespace.yaml": f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {APP}\n",
        "kubernetes/apps/velero/helmdemo-schedule.yaml": (
            "apiVersion: velero.io/v1\nkind: Schedule\nmetadata:\n  name: helmdemo-daily\n  namespace: velero\n"
            "spec:\n  schedule: '0 3 * * *'\n  template:\n    includedNamespaces: [helmdemo]\n"
            "    defaultVolumesToFsBackup: true\n    storageLocation: default\n    ttl: 720h0m0s\n"),
        f"kubernetes/apps/{APP}/{APP}/ks.yaml": kustomization(APP, f"./kubernetes/apps/{APP}/{APP}/app", target=APP,
                                                             wait=True),
        f"kubernetes/apps/{APP}/{APP}/app/kustomization.yaml": (
            "resources:\n  - ./ocirepository.yaml\n  - ./web.yaml\n  - ./worker.yaml\n  - ./idp.yaml\n"),
        f"kubernetes/apps/{APP}/{APP}/app/ocirepository.yaml": (
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: OCIRepository\nmetadata:\n  name: drill-template\n"
            "spec:\n  interval: 1h\n  layerSelector:\n"
            "    mediaType: application/vnd.cncf.helm.chart.content.v1.tar+gzip\n    operation: copy\n"
            "  ref:\n    tag: 1.2.0\n"
            "  url: oci://ghcr.io/restoredrill-test/charts/drill-template\n"),
        f"kubernetes/apps/{APP}/{APP}/app/web.yaml": oci_release,
        f"kubernetes/apps/{APP}/{APP}/app/worker.yaml": repo_release,
        f"kubernetes/apps/{APP}/{APP}/app/idp.yaml": STATEFUL_RELEASE,
    }


def write_tree(root: Path, tree: dict[str, str]) -> None:
    for name, text in tree.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.fixture(scope="module")
def helm_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("helm-repo")
    repo, charts = root / "repo", root / "charts"
    write_tree(repo, files())
    write_tree(charts / "drill-template", {"Chart.yaml": CHART_YAML, "values.yaml": CHART_VALUES,
                                           "templates/controllers.yaml": CHART_CONTROLLERS,
                                           "templates/persistence.yaml": CHART_PERSISTENCE})
    write_tree(charts / "drill-statefulset", {"Chart.yaml": STATEFUL_CHART_YAML, "values.yaml": STATEFUL_CHART_VALUES,
                                              "templates/statefulset.yaml": STATEFUL_CHART_TEMPLATE})
    return repo, charts


@pytest.fixture(scope="module")
def helm_deployment(helm_repo: tuple[Path, Path], platform_context: PlatformContext, flux: Flux,
                    cluster_provider: ClusterProvider, run_id: str, worker_id: str) -> Iterator[GitOpsDeployment]:
    """The repo published on the session's cluster beside the example (its own GitRepository)."""
    repo, charts = helm_repo
    catalogue = build_catalogue(repo)
    # As the session's catalogue is made (fixtures.gitops): the releases whose charts are given, rendered.
    catalogue = with_rendered_releases(catalogue, render_releases(catalogue, read_charts_dir(charts),
                                                                  binary_renderer(chart_render_binary())))
    deployment = GitOpsDeployment(ctx=platform_context, flux=flux, catalogue=catalogue, run_id=run_id,
                                  worker_id=worker_id, sops_age_key=None, charts_dir=charts,
                                  load_images=cluster_provider.load_images, repo_name=SOURCE)
    with FileLock(str(cache_dir() / "drill-gitops.lock")):
        deployment.publish()
    yield deployment
    platform_context.delete([{"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": kind,
                              "metadata": {"name": name, "namespace": "flux-system"}}
                             for kind, name in (("HelmRepository", "drill-charts"), ("GitRepository", SOURCE))])


@pytest.fixture
def helm_drill(helm_deployment: GitOpsDeployment, platform_context: PlatformContext, flux: Flux, velero: Velero,
               cnpg: CloudNativePG, cluster_provider: ClusterProvider, run_id: str, worker_id: str,
               platform_images: dict[str, str]) -> Iterator[Callable[[Sequence[str]], NamespaceDrill]]:
    """`helm_drill(restore_status)`: a drill of the app, cleaned up afterwards."""
    catalogue = helm_deployment.catalogue
    app = next(a for a in catalogue.apps if a.name == APP)
    loaded = app_image_loader(cluster_provider, catalogue, platform_images).load(app)
    made: list[NamespaceDrill] = []

    def make(restore_status: Sequence[str]) -> NamespaceDrill:
        drill = NamespaceDrill(plan=plan_app(catalogue, app), ctx=platform_context, velero=velero, flux=flux,
                               cnpg=cnpg, gitops=helm_deployment, run_id=run_id,
                               busybox_image=platform_images["busybox"], restore_status=restore_status)
        drill.record.standins = [*platform_context.cluster.notes, *helm_deployment.standins, *loaded]
        made.append(drill)
        return drill

    yield make
    for drill in made:
        remove_app(drill, platform_context, flux, run_id=run_id, worker_id=worker_id)


def helm_release(drill: NamespaceDrill, name: str) -> dict[str, Any]:
    found = drill.ctx.get_object(HELM_GROUP, HELM_VERSION, "helmreleases", drill.ns, name)
    assert found is not None, f"HelmRelease {drill.ns}/{name} is missing"
    return found


def test_the_runbooks_restore_makes_helm_controller_upgrade_every_release_and_the_drill_names_it(
        helm_drill: Callable[[Sequence[str]], NamespaceDrill]) -> None:
    """The runbook's `velero restore create` brings no status back: each restored HelmRelease has no
    history, helm-controller finds a release in storage it does not manage and upgrades it
    (helm-controller v1.4.3 internal/reconcile/state.go). The data is fine; adoption is not."""
    drill = helm_drill(())
    with pytest.raises(DrillFailed) as caught:
        drill.run()
    failure = caught.value
    assert failure.step == "adopt", failure
    message = str(failure)
    for name in ("web", "worker", "idp"):
        assert (f"HelmRelease {APP}/helmdemo-{name}: helm-controller made release revision 2 after the restore "
                "(the backup held revision 1)") in message
    assert "--status-include-resources helmreleases.helm.toolkit.fluxcd.io" in message
    assert drill.record.files_verified > 0  # verify passed before adoption failed
    assert any(f"live in the app's namespace {APP}" in step for step in drill.record.manual_steps)


def test_helm_release_app_is_drilled_offline_from_the_charts_folder_and_adopted(
        helm_drill: Callable[[Sequence[str]], NamespaceDrill]) -> None:
    drill = helm_drill(("helmreleases.helm.toolkit.fluxcd.io",))
    try:
        record = drill.run()
    except DrillFailed as failure:
        pytest.fail(f"the HelmRelease app's drill failed: {failure}")
    standins = "\n".join(record.standins)
    assert "served by the drill's chart server" in standins
    assert "HelmRepository flux-system/drill-charts" in standins and "secretRef dropped" in standins
    # helm-controller installs neither release without its dependency: the outside one is stood in
    # for, the app's own (web on worker) is not.
    assert f"HelmRelease rook-ceph/rook-ceph-cluster (a dependency of HelmRelease {APP}/helmdemo-worker)" in standins
    assert "HelmRelease helmdemo/helmdemo-worker (a dependency" not in standins
    assert set(drill.snapshot.helm_releases) == {f"HelmRelease {APP}/helmdemo-{name}"
                                                 for name in ("web", "worker", "idp")}
    objects = {(g, k, n) for _, g, k, n in drill.snapshot.objects}
    assert {("apps", "Deployment", "helmdemo-web"), ("apps", "StatefulSet", "helmdemo-idp")} <= objects
    # The StatefulSet's claim, known only from the rendered chart, is backed up, restored and verified.
    assert record.pod_volume_restores == 3 and record.files_verified > 0
    # The Kustomization lives in the app's namespace: restored suspended, as a real restore must, and said so.
    [step] = record.manual_steps
    assert f"Kustomization(s) {APP} live in the app's namespace {APP}" in step and "--resource-modifier" in step
    for label, (_, _, revision) in drill.snapshot.helm_releases.items():
        history = (helm_release(drill, label.rsplit("/", 1)[1]).get("status") or {}).get("history") or []
        assert history and history[0]["version"] == revision == 1
