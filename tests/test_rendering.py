"""Rendering a HelmRelease from its chart: the semantics helm-controller applies (pure), and the
chart-render program itself (restoredrill's Go program on the Helm library helm-controller links)
on a chart written here, shaped like the real upstream charts that keep their pods and claims in
templates (a StatefulSet with volumeClaimTemplates, the image in the chart's defaults)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from restoredrill.catalogue import Manifest, build_catalogue
from restoredrill.drill.charts import read_charts_dir
from restoredrill.drill.plan import drillable_apps
from restoredrill.errors import ConfigError
from restoredrill.images.standins import standins_for
from restoredrill.rendering import (
    binary_renderer,
    chart_render_binary,
    merge_values,
    release_name,
    release_values,
    render_releases,
    values_files_defaults,
    with_rendered_releases,
)
from restoredrill.yamlio import Document


def test_release_name_and_namespace_follow_helm_controller() -> None:
    assert release_name({"metadata": {"name": "web"}, "spec": {}}) == "web"
    assert release_name({"metadata": {"name": "web"}, "spec": {"targetNamespace": "apps"}}) == "apps-web"
    assert release_name({"metadata": {"name": "web"}, "spec": {"releaseName": "x", "targetNamespace": "a"}}) == "x"
    long = release_name({"metadata": {"name": "n" * 40}, "spec": {"targetNamespace": "t" * 20}})
    # release.ShortenName: 40 characters, a dash, 12 hex digits of the sha256 of the full name
    assert len(long) == 53 and long[:40] == "t" * 20 + "-" + "n" * 19 and long[40] == "-"


def test_values_merge_as_helm_merges_maps() -> None:
    assert merge_values({"a": {"b": 1, "c": [1]}, "d": 1}, {"a": {"c": [2]}, "d": {"e": 1}}) == {
        "a": {"b": 1, "c": [2]}, "d": {"e": 1}}


STATEFUL_CHART = {
    "Chart.yaml": "apiVersion: v2\nname: idp\nversion: 2.2.1\nappVersion: v9.9.9\nkubeVersion: '>=1.30.0-0'\n",
    "values.yaml": """\
host: ""
migratedAt: "1"
image: {repository: ghcr.io/example/idp, tag: ""}
persistence:
  data: {enabled: true, size: 1Gi, storageClass: ""}
sidecar: {enabled: false}
""",
    "values.schema.json": json.dumps({"type": "object", "properties": {"host": {"type": "string"}}}),
    "templates/_helpers.tpl": '{{- define "idp.fullname" -}}{{ .Release.Name }}{{- end }}\n',
    "templates/statefulset.yaml": """\
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ include "idp.fullname" . }}
  namespace: {{ .Release.Namespace }}
spec:
  selector: {matchLabels: {app: {{ include "idp.fullname" . }}}}
  template:
    metadata:
      labels: {app: {{ include "idp.fullname" . }}}
    spec:
      containers:
        - name: idp
          image: "{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"
          ports: [{name: http, containerPort: 1411}]
          readinessProbe: {httpGet: {path: /healthz, port: http}}
          volumeMounts: [{name: data, mountPath: /app/data}]
        {{- if .Values.sidecar.enabled }}
        - name: sidecar
          image: docker.io/example/sidecar:1.0
        {{- end }}
  volumeClaimTemplates:
    - metadata: {name: data}
      spec:
        accessModes: [ReadWriteOnce]
        resources: {requests: {storage: {{ .Values.persistence.data.size }}}}
        {{- with .Values.persistence.data.storageClass }}
        storageClassName: {{ . }}
        {{- end }}
""",
    "templates/NOTES.txt": "visit {{ .Values.host }}\n",
    "templates/migrate.yaml": """\
apiVersion: batch/v1
kind: Job
metadata:
  name: {{ .Release.Name }}-migrate
  annotations: {"helm.sh/hook": pre-install}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{name: migrate, image: "docker.io/example/migrate:{{ .Values.migratedAt }}"}]
""",
}

REPO = {
    "kubernetes/flux/cluster/ks.yaml": """\
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: cluster-apps, namespace: flux-system}
spec:
  path: ./kubernetes/apps
  interval: 1h
  prune: true
  sourceRef: {kind: GitRepository, name: flux-system}
""",
    "kubernetes/apps/kustomization.yaml": """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [flux-system/repos/ks.yaml, idp/idp/ks.yaml, velero/schedules/ks.yaml]
""",
    "kubernetes/apps/flux-system/repos/ks.yaml": """\
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: repos, namespace: flux-system}
spec:
  path: ./kubernetes/apps/flux-system/repos/app
  interval: 1h
  prune: true
  sourceRef: {kind: GitRepository, name: flux-system}
""",
    "kubernetes/apps/flux-system/repos/app/repo.yaml": """\
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata: {name: example, namespace: flux-system}
spec: {url: "https://charts.example.org", interval: 1h}
""",
    "kubernetes/apps/idp/idp/ks.yaml": """\
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: idp, namespace: idp}
spec:
  path: ./kubernetes/apps/idp/idp/app
  targetNamespace: idp
  interval: 1h
  prune: true
  sourceRef: {kind: GitRepository, name: flux-system, namespace: flux-system}
""",
    "kubernetes/apps/idp/idp/app/kustomization.yaml": """\
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [helmrelease.yaml, values.yaml]
""",
    "kubernetes/apps/idp/idp/app/values.yaml": """\
apiVersion: v1
kind: ConfigMap
metadata: {name: idp-values}
data:
  values.yaml: |
    sidecar: {enabled: true}
    persistence: {data: {size: 3Gi}}
    migratedAt: 2026-12-01
""",
    "kubernetes/apps/idp/idp/app/helmrelease.yaml": """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: idp}
spec:
  interval: 1h
  chart:
    spec:
      chart: idp
      version: 2.2.1
      sourceRef: {kind: HelmRepository, name: example, namespace: flux-system}
  valuesFrom:
    - {kind: ConfigMap, name: idp-values}
    - {kind: Secret, name: idp-secret-values, optional: true}
  values:
    host: auth.example.org
    image: {tag: v2.4.0}
    persistence:
      data: {storageClass: longhorn}
""",
    "kubernetes/apps/velero/schedules/ks.yaml": """\
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: schedules, namespace: velero}
spec:
  path: ./kubernetes/apps/velero/schedules/app
  interval: 1h
  prune: true
  sourceRef: {kind: GitRepository, name: flux-system, namespace: flux-system}
""",
    "kubernetes/apps/velero/schedules/app/idp.yaml": """\
apiVersion: velero.io/v1
kind: Schedule
metadata: {name: idp-daily, namespace: velero}
spec:
  schedule: "0 2 * * *"
  template: {includedNamespaces: [idp], defaultVolumesToFsBackup: true, ttl: 720h0m0s}
""",
}


def write_tree(root: Path, files: Mapping[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_release_values_compose_values_from_then_inline_values_and_name_what_is_left_out(tmp_path: Path) -> None:
    catalogue = build_catalogue(write_tree(tmp_path, REPO))
    [release] = [m for m in catalogue.deployed() if m.kind == "HelmRelease"]
    values, notes = release_values(release, catalogue.manifests)
    assert values["sidecar"] == {"enabled": True}
    assert values["migratedAt"] == "2026-12-01"  # a timestamp stays a string, as sigs.k8s.io/yaml reads it
    assert values["persistence"] == {"data": {"size": "3Gi", "storageClass": "longhorn"}}
    assert notes == ["valuesFrom Secret idp/idp-secret-values key values.yaml left out (not in the repo, optional)"]


@pytest.fixture(scope="module")
def renderer() -> Any:
    return binary_renderer(chart_render_binary())


def test_a_chart_that_keeps_its_pods_in_templates_is_rendered_into_workloads_claims_and_images(
        tmp_path: Path, renderer: Any) -> None:
    repo = write_tree(tmp_path / "repo", REPO)
    charts = write_tree(tmp_path / "charts" / "idp", STATEFUL_CHART).parent
    catalogue = build_catalogue(repo)
    # From the values alone nothing is known: `persistence:` means app-template's claims only for app-template.
    assert [c.name for c in catalogue.volume_claims if c.namespace == "idp"] == []
    rendered = render_releases(catalogue, read_charts_dir(charts), renderer)
    [release] = rendered
    # NOTES.txt is no object; the pre-install hook's Job is one (an install creates it)
    assert [m.kind for m in release.manifests] == ["StatefulSet", "Job"]
    assert release.notes == ("valuesFrom Secret idp/idp-secret-values key values.yaml left out "
                             "(not in the repo, optional)",)
    with_chart = with_rendered_releases(catalogue, rendered)
    [claim] = [c for c in with_chart.volume_claims if c.namespace == "idp"]
    assert (claim.name, claim.size, claim.storage_class) == ("data-idp", "3Gi", "longhorn")
    [workload, hook] = [w for w in with_chart.workloads if w.manifest.namespace == "idp"]
    assert [c.image for c in hook.containers] == ["docker.io/example/migrate:2026-12-01"]
    assert [c.image for c in workload.containers] == ["ghcr.io/example/idp:v2.4.0", "docker.io/example/sidecar:1.0"]
    assert str(workload.manifest.location()).endswith("helmrelease.yaml:1")  # named at the HelmRelease
    [app] = [a for a in drillable_apps(with_chart) if a.name == "idp"]
    standins = {s.reference: s.ports for s in standins_for(with_chart, [app], provided=())}
    assert standins["ghcr.io/example/idp:v2.4.0"] == (1411,)


def test_values_the_charts_schema_refuses_name_the_release_and_helms_reason(tmp_path: Path, renderer: Any) -> None:
    release = "kubernetes/apps/idp/idp/app/helmrelease.yaml"
    files = {**REPO, release: REPO[release].replace("host: auth.example.org", "host: 443")}
    repo = write_tree(tmp_path / "repo", files)
    charts = write_tree(tmp_path / "charts" / "idp", STATEFUL_CHART).parent
    with pytest.raises(ConfigError) as error:
        render_releases(build_catalogue(repo), read_charts_dir(charts), renderer)
    message = str(error.value)
    assert "idp-2.2.1.tgz does not render for release idp/idp" in message and "host" in message
    unchecked = files[release].replace("  values:\n", "  install: {disableSchemaValidation: true}\n  values:\n")
    repo = write_tree(tmp_path / "unchecked", {**files, release: unchecked})
    assert render_releases(build_catalogue(repo), read_charts_dir(charts), renderer)  # as helm-controller skips it


def test_a_release_whose_chart_is_not_given_keeps_what_its_values_say(tmp_path: Path, renderer: Any) -> None:
    repo = write_tree(tmp_path / "repo", REPO)
    charts = write_tree(tmp_path / "charts" / "idp", {**STATEFUL_CHART, "Chart.yaml": STATEFUL_CHART[
        "Chart.yaml"].replace("2.2.1", "2.3.0")}).parent
    catalogue = build_catalogue(repo)
    assert render_releases(catalogue, read_charts_dir(charts), renderer) == []


def test_a_chart_whose_dependencies_are_not_vendored_is_refused_with_the_fix(tmp_path: Path, renderer: Any) -> None:
    repo = write_tree(tmp_path / "repo", REPO)
    chart_yaml = STATEFUL_CHART["Chart.yaml"] + "dependencies:\n  - {name: common, version: 1.0.0, repository: x}\n"
    charts = write_tree(tmp_path / "charts" / "idp", {**STATEFUL_CHART, "Chart.yaml": chart_yaml}).parent
    with pytest.raises(ConfigError) as error:
        render_releases(build_catalogue(repo), read_charts_dir(charts), renderer)
    assert "missing in charts/ directory: common" in str(error.value) and "helm dependency build" in str(error.value)


def test_a_chart_in_the_repo_itself_is_rendered_from_its_folder(tmp_path: Path, renderer: Any) -> None:
    release = "kubernetes/apps/idp/idp/app/helmrelease.yaml"
    local = REPO[release].replace("chart: idp\n      version: 2.2.1\n", "chart: ./charts/idp\n").replace(
        "{kind: HelmRepository, name: example, namespace: flux-system}", "{kind: GitRepository, name: flux-system, "
        "namespace: flux-system}")
    files = {**REPO, release: local, **{f"charts/idp/{name}": text for name, text in STATEFUL_CHART.items()}}
    catalogue = build_catalogue(write_tree(tmp_path / "repo", files))
    [rendered] = render_releases(catalogue, [], renderer)
    assert rendered.package.path == (tmp_path / "repo" / "charts" / "idp").resolve()
    [claim] = [c for c in with_rendered_releases(catalogue, [rendered]).volume_claims if c.namespace == "idp"]
    assert claim.name == "data-idp"


VALUES_FILES_RELEASE = REPO["kubernetes/apps/idp/idp/app/helmrelease.yaml"].replace(
    "      sourceRef: {kind: HelmRepository", "      valuesFiles: [values.yaml, values-small.yaml, ci/absent.yaml]\n"
    "      sourceRef: {kind: HelmRepository")
SMALL = "persistence: {data: {size: 100Mi}}\nimage: {repository: ghcr.io/example/idp-small}\n"


def test_values_files_replace_the_charts_defaults_in_order_as_source_controller_merges_them(tmp_path: Path) -> None:
    repo = write_tree(tmp_path / "repo", {**REPO, "kubernetes/apps/idp/idp/app/helmrelease.yaml": VALUES_FILES_RELEASE})
    [package] = read_charts_dir(write_tree(tmp_path / "charts" / "idp", {**STATEFUL_CHART,
                                                                         "values-small.yaml": SMALL}).parent)
    catalogue = build_catalogue(repo)
    [release] = [m for m in catalogue.deployed() if m.kind == "HelmRelease"]
    defaults, notes = values_files_defaults(release, package, root=repo, from_repo=False)
    # values.yaml is the chart's own; the later file overrides it key by key (MergeMaps)
    assert defaults["persistence"] == {"data": {"enabled": True, "size": "100Mi", "storageClass": ""}}
    assert defaults["image"] == {"repository": "ghcr.io/example/idp-small", "tag": ""}
    assert notes == ["spec.chart.spec.valuesFiles ci/absent.yaml not found in the chart: source-controller fails the "
                     "chart without it"]
    ignoring = VALUES_FILES_RELEASE.replace("      valuesFiles:",
                                            "      ignoreMissingValuesFiles: true\n      valuesFiles:")
    repo = write_tree(tmp_path / "ignoring", {**REPO, "kubernetes/apps/idp/idp/app/helmrelease.yaml": ignoring})
    [release] = [m for m in build_catalogue(repo).deployed() if m.kind == "HelmRelease"]
    assert values_files_defaults(release, package, root=repo, from_repo=False)[1] == []
    # Without values.yaml in the list, the chart's own defaults are not included (the HelmChart API's word).
    only = VALUES_FILES_RELEASE.replace("[values.yaml, values-small.yaml, ci/absent.yaml]", "[values-small.yaml]")
    repo = write_tree(tmp_path / "only", {**REPO, "kubernetes/apps/idp/idp/app/helmrelease.yaml": only})
    [release] = [m for m in build_catalogue(repo).deployed() if m.kind == "HelmRelease"]
    assert values_files_defaults(release, package, root=repo, from_repo=False)[0] == {
        "persistence": {"data": {"size": "100Mi"}}, "image": {"repository": "ghcr.io/example/idp-small"}}


def test_a_repo_charts_values_files_are_read_from_the_repos_root(tmp_path: Path) -> None:
    local = REPO["kubernetes/apps/idp/idp/app/helmrelease.yaml"].replace(
        "chart: idp\n      version: 2.2.1\n", "chart: ./charts/idp\n      valuesFiles: [charts/idp/values.yaml, "
        "envs/small.yaml]\n").replace("{kind: HelmRepository, name: example, namespace: flux-system}",
                                      "{kind: GitRepository, name: flux-system, namespace: flux-system}")
    files = {**REPO, "kubernetes/apps/idp/idp/app/helmrelease.yaml": local, "envs/small.yaml": SMALL,
             **{f"charts/idp/{name}": text for name, text in STATEFUL_CHART.items()}}
    repo = write_tree(tmp_path / "repo", files)
    catalogue = build_catalogue(repo)
    [release] = [m for m in catalogue.deployed() if m.kind == "HelmRelease"]
    package = read_charts_dir(repo / "charts")[0]
    defaults, notes = values_files_defaults(release, package, root=repo, from_repo=True)
    assert defaults["persistence"]["data"]["size"] == "100Mi" and defaults["host"] == "" and notes == []


def test_a_values_file_decides_what_the_chart_renders(tmp_path: Path, renderer: Any) -> None:
    release = VALUES_FILES_RELEASE.replace("[values.yaml, values-small.yaml, ci/absent.yaml]",
                                           "[values.yaml, values-small.yaml]")
    repo = write_tree(tmp_path / "repo", {**REPO, "kubernetes/apps/idp/idp/app/helmrelease.yaml": release})
    charts = write_tree(tmp_path / "charts" / "idp", {**STATEFUL_CHART, "values-small.yaml": SMALL}).parent
    catalogue = build_catalogue(repo)
    [rendered] = render_releases(catalogue, read_charts_dir(charts), renderer)
    [claim] = [c for c in with_rendered_releases(catalogue, [rendered]).volume_claims if c.namespace == "idp"]
    # the ConfigMap's values (3Gi) still win over the values files: they are the release's values
    [statefulset] = [m for m in rendered.manifests if m.kind == "StatefulSet"]
    assert statefulset.obj["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "3Gi"
    images = [c["image"] for c in statefulset.obj["spec"]["template"]["spec"]["containers"]]
    assert images[0] == "ghcr.io/example/idp-small:v2.4.0"  # the file's repository, the release's tag
    assert claim.name == "data-idp" and not [note for note in rendered.notes if "valuesFiles" in note]


def test_values_from_a_target_path_are_set_as_helm_set_sets_them(tmp_path: Path) -> None:
    # fluxcd/pkg chartutil v1.15.0 ReplacePathValue: `--set path=text`, typed unless quoted; the inline
    # values are merged in before it and again last.
    files = dict(REPO)
    files["kubernetes/apps/idp/idp/app/values.yaml"] += """  replicas: "3"
  claim: data-idp
  quoted: "'0042'"
"""
    release_file = "kubernetes/apps/idp/idp/app/helmrelease.yaml"
    files[release_file] = files[release_file].replace(
        "    - {kind: Secret, name: idp-secret-values, optional: true}\n",
        "    - {kind: ConfigMap, name: idp-values, valuesKey: replicas, targetPath: controllers.main.replicas}\n"
        "    - {kind: ConfigMap, name: idp-values, valuesKey: claim, targetPath: persistence.data.existingClaim}\n"
        "    - {kind: ConfigMap, name: idp-values, valuesKey: quoted, targetPath: 'pins[0].code'}\n"
        "    - {kind: ConfigMap, name: idp-values, valuesKey: claim, targetPath: host}\n")
    catalogue = build_catalogue(write_tree(tmp_path, files))
    [release] = [m for m in catalogue.deployed() if m.kind == "HelmRelease"]
    values, notes = release_values(release, catalogue.manifests)
    assert notes == []
    assert values["controllers"] == {"main": {"replicas": 3}}
    assert values["persistence"]["data"] == {"size": "3Gi", "storageClass": "longhorn", "existingClaim": "data-idp"}
    assert values["pins"] == [{"code": "0042"}]
    assert values["host"] == "auth.example.org"  # the inline values are merged last, as helm-controller does


@pytest.mark.parametrize(("path", "value", "expected"), [
    ("a.b", "true", {"a": {"b": True}}),
    ("a.b", "007", {"a": {"b": "007"}}),
    ("a.b", "null", {"a": {"b": None}}),
    ("a\\.b", "x", {"a.b": "x"}),
    ("list[1]", "x", {"list": [None, "x"]}),  # strvals setIndex pads with nulls
    ("a[0][1]", "x", {"a": [[None, "x"]]}),
    ("a[1].b", "x", {"a": [None, {"b": "x"}]}),
    ("a", "{x,7}", {"a": ["x", 7]}),
    ("a", "'{x}'", {"a": ["x"]}),  # quoted: strings, but strvals still reads a list
    ("a", "x\\,y\\z", {"a": "x,yz"}),  # a backslash takes the next character as it is
    ("a", "'", {"a": ""}),
    ("a", "x,y", "a value with a comma is split by helm's --set parser; not rendered here"),
])
def test_replace_path_value_follows_helm_strvals(path: str, value: str, expected: Any) -> None:
    from restoredrill.rendering import replace_path_value

    values: dict[str, Any] = {}
    problem = replace_path_value(values, path, value)
    assert (problem if isinstance(expected, str) else values) == expected


def test_a_target_path_through_a_value_that_is_not_a_map_or_list_is_refused_as_helm_refuses_it() -> None:
    from restoredrill.rendering import replace_path_value

    values: dict[str, Any] = {"a": "scalar", "l": ["x"]}
    assert "helm-controller fails the release" in str(replace_path_value(values, "a.b", "1"))
    assert "helm-controller fails the release" in str(replace_path_value(values, "a[0]", "1"))
    assert replace_path_value(values, "l[0].b", "1") is None  # a list entry that is not a map is replaced
    assert values == {"a": "scalar", "l": [{"b": 1}]}


def test_a_target_path_wins_over_the_inline_values_where_helm_controller_shares_them() -> None:
    # fluxcd/pkg chartutil v1.15.0 values_test.go "target path precedence over all": MergeMaps takes
    # the inline values' nested maps and lists as they are, ReplacePathValue changes them in place,
    # so the inline values merged last carry the change; a top-level scalar of the inline values wins.
    release = Manifest(Document(path=Path("hr.yaml"), index=0, line=1, data={
        "apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
        "metadata": {"name": "app", "namespace": "apps"},
        "spec": {"values": {"nested": {"configuration": ["list", "item", "option"]}, "top": "inline"},
                 "valuesFrom": [
                     {"kind": "ConfigMap", "name": "cm", "valuesKey": "v", "targetPath": "nested.configuration[0]"},
                     {"kind": "ConfigMap", "name": "cm", "valuesKey": "v", "targetPath": "top"}]}}),
        namespace="apps")
    source = Manifest(Document(path=Path("cm.yaml"), index=0, line=1, data={
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "apps"},
        "data": {"v": "value"}}), namespace="apps")
    values, notes = release_values(release, [source])
    assert notes == []
    assert values == {"nested": {"configuration": ["value", "item", "option"]}, "top": "inline"}
    assert release.get("spec", "values", "nested", "configuration") == ["list", "item", "option"]
