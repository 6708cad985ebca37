"""A Flux Kustomization's own spec.patches, namePrefix/nameSuffix and commonMetadata reach what it builds,
as kustomize-controller v1.7.2 (kustomize v5.7.1) applies them; a patch Flux cannot apply is reported.

The repo shapes are those of real home-ops repos (one patch on cluster-apps gives every app's ks.yaml its
sourceRef, decryption and substituteFrom, and spec.patches of its own for the HelmReleases below; a
labelSelector with `notin` leaves some out), cut down to a few files written here."""

from pathlib import Path
from typing import Any

import pytest

from restoredrill.catalogue import Catalogue, Manifest, build_catalogue
from restoredrill.parentpatches import (
    BuiltObject,
    PatchProblem,
    add_name_affixes,
    apply_patches,
    json6902,
    parse_label_selector,
    read_patches,
    strategic_merge,
    with_common_metadata,
)
from tests.conftest import RepoCopy, rendered


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line if line else line for line in text.strip("\n").splitlines())


def built(obj: dict[str, Any], *, namespace: str | None = None, written: str | None = None,
          cluster_scoped: bool = False) -> BuiltObject:
    written = written if written is not None else (obj.get("metadata") or {}).get("namespace")
    return BuiltObject(obj=obj, namespace_as_written=written, namespace=namespace or written,
                       cluster_scoped=cluster_scoped, ref=f"{obj['kind']} {obj['metadata']['name']}")


def patches_of(entries: list[dict[str, Any]]) -> list[Any]:
    patches, problems = read_patches(entries)
    assert problems == []
    return patches


def ks(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
            "metadata": {"name": name, **({"labels": spec.pop("labels")} if "labels" in spec else {})}, "spec": spec}


CHILD_DEFAULTS = """\
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: _
spec:
  interval: 1h
  prune: true
  sourceRef: {kind: GitRepository, name: flux-system, namespace: flux-system}
  decryption: {provider: sops}
  postBuild:
    substituteFrom:
      - {kind: ConfigMap, name: cluster-settings}
"""


# ---------------------------------------------------------------------------------------------
# Label selectors, targets
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("selector", "labels", "matches"), [
    ("substitution.flux.home.arpa/disabled notin (true)", {}, True),  # notin: an absent label matches
    ("substitution.flux.home.arpa/disabled notin (true)", {"substitution.flux.home.arpa/disabled": "true"}, False),
    ("substitution.flux.home.arpa/enabled=true", {"substitution.flux.home.arpa/enabled": "true"}, True),
    ("substitution.flux.home.arpa/enabled=true", {}, False),
    ("a==b,c", {"a": "b"}, False),  # c must exist
    ("a==b,c", {"a": "b", "c": ""}, True),
    ("a!=b", {}, True),
    ("!a", {"a": "x"}, False),
    ("tier in (db, cache)", {"tier": "cache"}, True),
    ("replicas>2", {"replicas": "3"}, True),
    ("replicas<2", {"replicas": "three"}, False),
    ("", {"anything": "x"}, True),
])
def test_label_selectors_match_as_kubernetes_reads_them(selector: str, labels: dict[str, str], matches: bool) -> None:
    assert all(r.matches(labels) for r in parse_label_selector(selector)) is matches


@pytest.mark.parametrize("selector", ["a in b", "a=b=c", "!a=b", "a,", ",a", "a b", "x>y", "Bad_/key=x",
                                      "a in (b c)"])
def test_malformed_label_selectors_are_refused(selector: str) -> None:
    with pytest.raises(ValueError):
        parse_label_selector(selector)


def test_target_names_are_regexes_anchored_at_both_ends() -> None:
    (patch,) = patches_of([{"patch": "[]", "target": {"kind": "Deployment", "name": "(web|api)"}}])
    assert patch.target is not None
    objects = {name: built({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}})
               for name in ("web", "api", "web-2", "my-web")}
    assert {name for name, b in objects.items() if patch.target.selects(b)} == {"web", "api"}


def test_target_group_version_and_kind_must_all_match() -> None:
    (patch,) = patches_of([{"patch": "[]", "target": {"group": "kustomize.toolkit.fluxcd.io", "version": "v1beta2",
                                                       "kind": "Kustomization"}}])
    assert patch.target is not None
    assert not patch.target.selects(built(ks("app")))  # a v1 object is not a v1beta2 one
    assert patch.target.selects(built({**ks("app"), "apiVersion": "kustomize.toolkit.fluxcd.io/v1beta2"}))


def test_target_namespace_matches_the_written_or_the_current_namespace_and_unset_is_default() -> None:
    (patch,) = patches_of([{"patch": "[]", "target": {"namespace": "media"}}])
    assert patch.target is not None
    target = patch.target
    assert target.selects(built(ks("a"), written="media", namespace="other"))
    assert target.selects(built(ks("a"), written=None, namespace="media"))
    assert not target.selects(built(ks("a"), written=None, namespace=None))
    (default,) = patches_of([{"patch": "[]", "target": {"namespace": "default"}}])
    assert default.target is not None
    assert default.target.selects(built(ks("a"), written=None, namespace=None))
    assert not default.target.selects(built(ks("a"), cluster_scoped=True))


# ---------------------------------------------------------------------------------------------
# Strategic merge and JSON6902
# ---------------------------------------------------------------------------------------------


def test_strategic_merge_on_a_custom_resource_replaces_lists_and_keeps_its_identity() -> None:
    child = ks("web", path="./apps/web", patches=[{"patch": "own"}],
               postBuild={"substitute": {"APP": "web"}, "substituteFrom": [{"kind": "Secret", "name": "mine"}]})
    child["metadata"]["namespace"] = "web"
    patch = {"apiVersion": "kustomize.toolkit.fluxcd.io/v1beta2", "kind": "Kustomization",
             "metadata": {"name": "_", "namespace": "not-used", "labels": {"from": "parent"}},
             "spec": {"patches": [{"patch": "parent's"}],
                      "postBuild": {"substituteFrom": [{"kind": "ConfigMap", "name": "cluster-settings"}]}}}
    merged = strategic_merge(child, patch)
    assert merged is not None
    assert merged["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1"
    assert merged["metadata"] == {"name": "web", "namespace": "web", "labels": {"from": "parent"}}
    assert merged["spec"]["patches"] == [{"patch": "parent's"}]  # no merge key: the list is replaced whole
    assert merged["spec"]["postBuild"] == {"substitute": {"APP": "web"},
                                           "substituteFrom": [{"kind": "ConfigMap", "name": "cluster-settings"}]}
    assert child["spec"]["patches"] == [{"patch": "own"}]  # the input is not changed


def test_strategic_merge_null_deletes_and_directives_apply() -> None:
    child = ks("web", path="./apps/web", decryption={"provider": "sops"}, postBuild={"substitute": {"A": "1"}})
    merged = strategic_merge(child, {"kind": "Kustomization", "metadata": {"name": "_"},
                                     "spec": {"decryption": None, "postBuild": {"$patch": "replace", "substitute": {
                                         "B": "2"}}, "healthChecks": {"$patch": "delete"}}})
    assert merged is not None
    assert "decryption" not in merged["spec"]
    assert merged["spec"]["postBuild"] == {"substitute": {"B": "2"}}
    assert "healthChecks" not in merged["spec"]
    assert strategic_merge(child, {"$patch": "delete", "kind": "Kustomization", "metadata": {"name": "_"}}) is None


def test_strategic_merge_on_a_deployment_merges_containers_by_name_patch_first() -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "finalizers": ["a"]},
                  "spec": {"template": {"spec": {
                      "containers": [{"name": "app", "image": "app:1", "env": [{"name": "X", "value": "1"}]},
                                     {"name": "sidecar", "image": "side:1"}],
                      "tolerations": [{"key": "a"}]}}}}
    patch = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "_", "finalizers": ["b"]},
             "spec": {"template": {"spec": {
                 "containers": [{"name": "sidecar", "resources": {"limits": {"memory": "2Gi"}}},
                                {"name": "app", "env": [{"name": "Y", "value": "2"}]}],
                 "tolerations": [{"key": "b"}]}}}}
    merged = strategic_merge(deployment, patch)
    assert merged is not None
    containers = merged["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["sidecar", "app"]  # kustomize issue #5904: the patch's order first
    assert containers[0] == {"name": "sidecar", "image": "side:1", "resources": {"limits": {"memory": "2Gi"}}}
    assert containers[1]["image"] == "app:1"
    assert containers[1]["env"] == [{"name": "Y", "value": "2"}, {"name": "X", "value": "1"}]
    assert merged["spec"]["template"]["spec"]["tolerations"] == [{"key": "b"}]  # no merge key: replaced
    assert merged["metadata"]["finalizers"] == ["b", "a"]


def test_strategic_merge_deletes_a_container_by_name() -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                  "spec": {"template": {"spec": {"containers": [{"name": "app"}, {"name": "debug"}]}}}}
    merged = strategic_merge(deployment, {"kind": "Deployment", "metadata": {"name": "web"}, "spec": {"template": {
        "spec": {"containers": [{"name": "debug", "$patch": "delete"}]}}}})
    assert merged is not None
    assert merged["spec"]["template"]["spec"]["containers"] == [{"name": "app"}]


def test_strategic_merge_of_a_mapping_onto_a_scalar_is_a_problem() -> None:
    with pytest.raises(PatchProblem, match=r"at spec.path it sets a mapping where the object has the scalar"):
        strategic_merge(ks("web", path="./a"), {"kind": "Kustomization", "metadata": {"name": "_"},
                                                "spec": {"path": {"x": 1}}})


def test_json6902_operations() -> None:
    obj: dict[str, Any] = {"kind": "Deployment", "metadata": {"name": "web", "annotations": {"a/b": "1"}},
           "spec": {"template": {"spec": {"containers": [{"name": "app", "args": ["--x"]}]}}}}
    patched = json6902(obj, [
        {"op": "add", "path": "/spec/template/spec/containers/0/args/-", "value": "--concurrent=12"},
        {"op": "add", "path": "/spec/template/spec/containers/0/args/0", "value": "--first"},
        {"op": "replace", "path": "/metadata/annotations/a~1b", "value": "2"},
        {"op": "copy", "from": "/metadata/name", "path": "/metadata/labels"},
        {"op": "move", "from": "/metadata/labels", "path": "/metadata/label"},
        {"op": "remove", "path": "/spec/template/spec/containers/0/args/-1"},
        {"op": "test", "path": "/metadata/label", "value": "web"},
    ])
    assert patched["spec"]["template"]["spec"]["containers"][0]["args"] == ["--first", "--x"]
    assert patched["metadata"] == {"name": "web", "annotations": {"a/b": "2"}, "label": "web"}
    assert obj["metadata"]["annotations"] == {"a/b": "1"}


@pytest.mark.parametrize(("operation", "message"), [
    ({"op": "replace", "path": "/spec/missing", "value": 1}, "missing /spec/missing"),
    ({"op": "add", "path": "/spec/no/such/parent", "value": 1}, "missing /spec/no/such/parent"),
    ({"op": "remove", "path": "/metadata/labels"}, "cannot be removed"),
    ({"op": "add", "path": "/spec/list/5", "value": 1}, "index 5 is out of range"),
    ({"op": "test", "path": "/spec/path", "value": "./b"}, "is './a', not './b'"),
    ({"op": "frobnicate", "path": "/spec"}, "unknown op 'frobnicate'"),
    ({"op": "add", "path": "spec/path", "value": 1}, "does not start with '/'"),
])
def test_json6902_operations_that_do_not_apply(operation: dict[str, Any], message: str) -> None:
    with pytest.raises(PatchProblem, match=message) as raised:
        json6902(ks("web", path="./a", list=[1]), [operation], ref="Kustomization flux-system/web")
    assert "cannot be applied to Kustomization flux-system/web: operation 0" in raised.value.message


# ---------------------------------------------------------------------------------------------
# Reading spec.patches, applying a list of patches
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("entries", "field", "message"), [
    ({"patch": "x"}, (), "`spec.patches` must be a list"),
    (["patch: x"], (), "must be a mapping"),
    ([{"target": {"kind": "Kustomization"}}], ("patch",), "has no `patch` text"),
    ([{"patch": "kind: Kustomization\nspec: {}\n", "target": {"kind": "Kustomization"}}], ("patch",),
     "neither a strategic-merge patch nor a JSON6902 patch"),
    ([{"patch": "- op: add\n  path: /spec/x\n  value: 1\n"}], (), "JSON6902 patch without a `target`"),
    ([{"patch": "kind: A\nmetadata: {name: a}\n---\nkind: B\nmetadata: {name: b}\n", "target": {"kind": "A"}}],
     ("patch",), "several strategic-merge objects and a `target`"),
    ([{"patch": "[]", "target": {"name": "(unclosed"}}], ("target", "name"), "is not a regular expression"),
    ([{"patch": "kind: A\nmetadata: {name: [unclosed\n", "target": {"kind": "A"}}], ("patch",), "is not YAML"),
])
def test_patches_kustomize_refuses_are_problems(entries: Any, field: tuple[str, ...], message: str) -> None:
    patches, problems = read_patches(entries)
    assert patches == []
    ((_, problem),) = problems
    assert message in problem.message
    assert problem.field_path == field
    assert problem.remedy


def test_a_patch_without_target_must_match_exactly_one_object_by_id() -> None:
    objects = [built(ks("web"), written="flux-system"), built(ks("api"), written=None, namespace="apps")]
    patch = "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata: {{name: {name}{ns}}}\n" \
            "spec: {{suspend: true}}\n"
    problems = apply_patches(objects, patches_of([
        {"patch": patch.format(name="web", ns=", namespace: flux-system")},
        {"patch": patch.format(name="api", ns=", namespace: apps")},  # the namespace a kustomization.yaml gave it
        {"patch": patch.format(name="web", ns="")},  # unset is `default`, and web is in flux-system
    ]))
    assert [o.obj["spec"] for o in objects if o.obj] == [{"suspend": True}, {"suspend": True}]
    ((index, problem),) = problems
    assert index == 2
    assert "no object matches kustomize.toolkit.fluxcd.io/v1 Kustomization web" in problem.message


def test_a_target_that_selects_nothing_is_fine_and_a_bad_selector_fails_only_when_evaluated() -> None:
    objects = [built(ks("web"))]
    assert apply_patches(objects, patches_of([
        {"patch": CHILD_DEFAULTS, "target": {"kind": "HelmRelease"}},
        {"patch": CHILD_DEFAULTS, "target": {"kind": "HelmRelease", "labelSelector": "a in b"}},
    ])) == []
    ((index, problem),) = apply_patches(objects, patches_of([
        {"patch": CHILD_DEFAULTS, "target": {"kind": "Kustomization", "labelSelector": "a in b"}}]))
    assert (index, problem.field_path) == (0, ("target", "labelSelector"))
    assert "does not parse" in problem.message
    assert objects[0].patched_by == []


def test_a_later_patch_sees_what_an_earlier_one_set() -> None:
    objects = [built(ks("web"))]
    apply_patches(objects, patches_of([
        {"patch": "- {op: add, path: /metadata/labels, value: {tier: apps}}", "target": {"kind": "Kustomization"}},
        {"patch": CHILD_DEFAULTS, "target": {"labelSelector": "tier=apps"}},
    ]))
    assert objects[0].obj is not None
    assert objects[0].obj["spec"]["interval"] == "1h"
    assert objects[0].patched_by == [0, 1]


def test_name_affixes_rename_all_but_namespaces_and_crds_and_follow_claim_names() -> None:
    objects = [built({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"}},
                     namespace="web"),
               built({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {
                   "template": {"spec": {"volumes": [
                       {"name": "d", "persistentVolumeClaim": {"claimName": "data"}},
                       {"name": "o", "persistentVolumeClaim": {"claimName": "other"}}]}}}}, namespace="web"),
               built({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "web"}}, cluster_scoped=True),
               built({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                      "metadata": {"name": "things.example.com"}}, cluster_scoped=True)]
    original = objects[1].obj
    add_name_affixes(objects, prefix="p-", suffix="-s")
    assert [o.obj["metadata"]["name"] for o in objects if o.obj] == ["p-data-s", "p-web-s", "web",
                                                                     "things.example.com"]
    assert objects[1].obj is not None
    volumes = objects[1].obj["spec"]["template"]["spec"]["volumes"]
    assert [v["persistentVolumeClaim"]["claimName"] for v in volumes] == ["p-data-s", "other"]
    assert original is not None and original["metadata"]["name"] == "web"  # renamed on a copy


def test_common_metadata_overrides_labels_and_annotations() -> None:
    obj = with_common_metadata({"kind": "X", "metadata": {"name": "x", "labels": {"a": "1", "b": "1"}}},
                               {"labels": {"b": "2"}, "annotations": {"c": "3"}})
    assert obj["metadata"] == {"name": "x", "labels": {"a": "1", "b": "2"}, "annotations": {"c": "3"}}


# ---------------------------------------------------------------------------------------------
# The catalogue: a repo laid out as real home-ops repos lay it out
# ---------------------------------------------------------------------------------------------

CLUSTER_APPS = """\
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: cluster-apps, namespace: flux-system}}
spec:
  interval: 1h
  path: ./kubernetes/apps
  prune: true
  sourceRef: {{kind: GitRepository, name: flux-system}}
  patches:
{patches}
"""
NESTED_HELM_DEFAULTS = """\
- patch: |-
    apiVersion: kustomize.toolkit.fluxcd.io/v1
    kind: Kustomization
    metadata:
      name: _
    spec:
      patches:
        - patch: |-
            apiVersion: helm.toolkit.fluxcd.io/v2
            kind: HelmRelease
            metadata: {name: _}
            spec:
              interval: 1h
              upgrade: {remediation: {retries: 2}}
          target: {group: helm.toolkit.fluxcd.io, kind: HelmRelease}
  target: {group: kustomize.toolkit.fluxcd.io, kind: Kustomization}
"""
SHARED_SETTINGS = f"""\
- patch: |-
{indent(CHILD_DEFAULTS, 4)}
  target:
    group: kustomize.toolkit.fluxcd.io
    kind: Kustomization
    labelSelector: substitution.flux.home.arpa/disabled notin (true)
"""
HELMRELEASE = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata: {name: web}
spec:
  chart: {spec: {chart: app-template, sourceRef: {kind: HelmRepository, name: bjw-s, namespace: flux-system}}}
  values:
    persistence:
      data: {size: "${SIZE:=1Gi}", storageClass: "${CLASS}"}
"""


def home_ops(root: Path, *, patches: str) -> None:
    """kubernetes/flux/cluster/ks.yaml (cluster-apps) builds kubernetes/apps: one namespace folder whose
    kustomization.yaml sets `namespace: media`, with the ks.yaml of app `web` and of app `tool`."""
    write(root, "kubernetes/flux/cluster/ks.yaml", CLUSTER_APPS.format(patches=indent(patches, 4)))
    write(root, "kubernetes/apps/kustomization.yaml", "resources: [./media]\n")
    write(root, "kubernetes/apps/media/kustomization.yaml",
          "namespace: media\nresources: [./namespace.yaml, ./web/ks.yaml, ./tool/ks.yaml]\n")
    write(root, "kubernetes/apps/media/namespace.yaml", "apiVersion: v1\nkind: Namespace\nmetadata: {name: media}\n")
    write(root, "kubernetes/apps/media/web/ks.yaml", """\
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {name: web}
spec:
  targetNamespace: media
  path: ./kubernetes/apps/media/web/app
  postBuild:
    substitute: {CLASS: longhorn}
""")
    write(root, "kubernetes/apps/media/web/app/helmrelease.yaml", HELMRELEASE)
    write(root, "kubernetes/apps/media/tool/ks.yaml", """\
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: tool
  labels: {substitution.flux.home.arpa/disabled: "true"}
spec:
  targetNamespace: media
  path: ./kubernetes/apps/media/tool/app
  interval: 1h
  prune: true
  sourceRef: {kind: GitRepository, name: flux-system, namespace: flux-system}
""")
    write(root, "kubernetes/apps/media/tool/app/configmap.yaml",
          "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: tool}\ndata: {size: '${SIZE}'}\n")
    # substituteFrom names objects in the Kustomization's own namespace, where the kustomization.yaml put it.
    write(root, "kubernetes/apps/media/cluster-settings.yaml",
          "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cluster-settings, namespace: media}\n"
          "data: {SIZE: 5Gi}\n")


def flux(catalogue: Catalogue, name: str) -> Manifest:
    return next(ks.manifest for ks in catalogue.flux_kustomizations if ks.name == name)


def built_object(catalogue: Catalogue, kind: str, name: str) -> Manifest:
    return next(m for m in catalogue.manifests if m.kind == kind and m.name == name and m.deployed_by)


def test_a_parent_patch_gives_child_kustomizations_their_shared_settings(tmp_path: Path) -> None:
    home_ops(tmp_path, patches=SHARED_SETTINGS + NESTED_HELM_DEFAULTS)
    catalogue = build_catalogue(tmp_path)
    assert catalogue.errors == ()
    web = next(ks for ks in catalogue.flux_kustomizations if ks.name == "web")
    # What the drill applies is the patched object, in the namespace kustomize puts it in.
    assert web.manifest.obj["metadata"] == {"name": "web", "namespace": "media"}
    assert web.namespace == "media"
    spec = web.manifest.obj["spec"]
    assert spec["sourceRef"] == {"kind": "GitRepository", "name": "flux-system", "namespace": "flux-system"}
    assert spec["decryption"] == {"provider": "sops"}
    assert spec["postBuild"] == {"substitute": {"CLASS": "longhorn"},
                                 "substituteFrom": [{"kind": "ConfigMap", "name": "cluster-settings"}]}
    assert web.post_build and web.local_source and not web.unknown_substitutions
    assert web.substitutions == {"CLASS": "longhorn", "SIZE": "5Gi"}
    assert [p["target"]["kind"] for p in spec["patches"]] == ["HelmRelease"]
    assert web.manifest.patched_by == (
        "kubernetes/flux/cluster/ks.yaml:10 (Kustomization flux-system/cluster-apps spec.patches[0])",
        "kubernetes/flux/cluster/ks.yaml:27 (Kustomization flux-system/cluster-apps spec.patches[1])")

    # The child builds with its patched spec: its own (inherited) patch reaches the HelmRelease, and the
    # substituteFrom the parent gave it substitutes ${SIZE}.
    release = built_object(catalogue, "HelmRelease", "web")
    assert release.obj["spec"]["interval"] == "1h"
    assert release.obj["spec"]["upgrade"] == {"remediation": {"retries": 2}}
    assert release.obj["metadata"]["namespace"] == "media"
    assert release.patched_by == (
        "Kustomization media/web spec.patches[0], set by one of kubernetes/flux/cluster/ks.yaml:10 (Kustomization "
        "flux-system/cluster-apps spec.patches[0]); kubernetes/flux/cluster/ks.yaml:27 (Kustomization "
        "flux-system/cluster-apps spec.patches[1])",)
    (claim,) = [c for c in catalogue.volume_claims if c.name == "web-data"]
    assert (claim.size, claim.storage_class) == ("5Gi", "longhorn")


def test_a_label_selector_with_notin_leaves_the_labelled_child_out(tmp_path: Path) -> None:
    home_ops(tmp_path, patches=SHARED_SETTINGS)
    catalogue = build_catalogue(tmp_path)
    tool = next(ks for ks in catalogue.flux_kustomizations if ks.name == "tool")
    assert "decryption" not in tool.manifest.obj["spec"] and not tool.post_build
    assert tool.manifest.patched_by == ()
    assert built_object(catalogue, "ConfigMap", "tool").obj["data"] == {"size": "${SIZE}"}  # no substitution


def test_without_the_patch_the_children_are_as_written(tmp_path: Path) -> None:
    home_ops(tmp_path, patches="[]")
    web = next(ks for ks in build_catalogue(tmp_path).flux_kustomizations if ks.name == "web")
    assert "sourceRef" not in web.manifest.obj["spec"] and web.substitutions == {"CLASS": "longhorn"}


def test_a_patch_sees_the_namespace_of_the_folders_below_spec_path_not_the_one_the_parent_sets(tmp_path: Path) -> None:
    """kustomize runs the patches before the namespace transformer of the kustomization.yaml at spec.path
    (and targetNamespace, which replaces it)."""
    suspend = ("- patch: |-\n    apiVersion: kustomize.toolkit.fluxcd.io/v1\n    kind: Kustomization\n"
               "    metadata: {name: _}\n    spec: {suspend: true}\n"
               "  target: {kind: Kustomization, namespace: media}\n")
    home_ops(tmp_path, patches=suspend)
    assert all(ks.suspend for ks in build_catalogue(tmp_path).flux_kustomizations if ks.name in ("web", "tool"))

    # The same namespace set by the top kustomization.yaml of the parent's own path: too late for the patch.
    home_ops(tmp_path, patches=suspend)
    write(tmp_path, "kubernetes/flux/cluster/ks.yaml", CLUSTER_APPS.format(patches=indent(suspend, 4)).replace(
        "./kubernetes/apps", "./kubernetes/apps/media"))
    catalogue = build_catalogue(tmp_path)
    web = next(ks for ks in catalogue.flux_kustomizations if ks.name == "web")
    assert web.namespace == "media" and not web.suspend


def test_a_patch_can_delete_an_object_from_the_build(tmp_path: Path) -> None:
    home_ops(tmp_path, patches="- patch: |-\n    $patch: delete\n    apiVersion: kustomize.toolkit.fluxcd.io/v1\n"
                               "    kind: Kustomization\n    metadata: {name: tool, namespace: media}\n")
    catalogue = build_catalogue(tmp_path)
    assert catalogue.errors == ()
    assert {ks.name for ks in catalogue.flux_kustomizations} == {"cluster-apps", "web"}
    assert not any(m.name == "tool" for m in catalogue.manifests if m.deployed_by)


def test_common_metadata_and_name_affixes_of_a_parent(tmp_path: Path) -> None:
    home_ops(tmp_path, patches="[]")
    write(tmp_path, "kubernetes/flux/cluster/ks.yaml", CLUSTER_APPS.format(patches="    []").replace(
        "  patches:", "  namePrefix: home-\n  commonMetadata:\n    labels: {app.kubernetes.io/part-of: home}\n"
                      "  patches:"))
    catalogue = build_catalogue(tmp_path)
    names = {ks.name for ks in catalogue.flux_kustomizations}
    assert names == {"cluster-apps", "home-web", "home-tool"}
    namespace = built_object(catalogue, "Namespace", "media")  # a Namespace keeps its name
    assert namespace.obj["metadata"]["labels"] == {"app.kubernetes.io/part-of": "home"}
    assert flux(catalogue, "home-tool").obj["metadata"]["labels"] == {
        "substitution.flux.home.arpa/disabled": "true", "app.kubernetes.io/part-of": "home"}
    # The child's own build is not the parent's: its objects keep their names and labels.
    assert built_object(catalogue, "ConfigMap", "tool").obj["metadata"] == {"name": "tool", "namespace": "media"}


def test_a_patch_flux_cannot_apply_is_an_error_naming_the_parents_field(tmp_path: Path) -> None:
    bad_path = ("- patch: |-\n    - op: replace\n      path: /spec/postBuild/substitute/APP\n      value: x\n"
                "  target: {kind: Kustomization}\n")
    home_ops(tmp_path, patches=bad_path)
    catalogue = build_catalogue(tmp_path)
    (error,) = catalogue.errors
    assert str(error.location) == "kubernetes/flux/cluster/ks.yaml:10"
    assert error.message.startswith(
        "kubernetes/flux/cluster/ks.yaml:10: Kustomization flux-system/cluster-apps: spec.patches[0] cannot be "
        "applied to Kustomization media/web: operation 0 (replace /spec/postBuild/substitute/APP): the object is "
        "missing /spec/postBuild/substitute/APP")
    assert "Flux applies nothing this Kustomization builds" in error.message
    assert error.remedy and "narrow the `target`" in error.remedy
    # The rest is still catalogued, so every other check still runs.
    assert {ks.name for ks in catalogue.flux_kustomizations} == {"cluster-apps", "web", "tool"}


def test_a_patch_error_in_a_child_points_at_the_parent_that_gave_it_the_patch(tmp_path: Path) -> None:
    inherited = ("- patch: |-\n    apiVersion: kustomize.toolkit.fluxcd.io/v1\n    kind: Kustomization\n"
                 "    metadata: {name: _}\n    spec:\n      patches:\n        - patch: '- {op: remove, path: /nope}'\n"
                 "          target: {kind: HelmRelease}\n  target: {kind: Kustomization, name: web}\n")
    home_ops(tmp_path, patches=inherited)
    (error,) = build_catalogue(tmp_path).errors
    assert error.location.path == "kubernetes/apps/media/web/ks.yaml"
    assert "Kustomization media/web: spec.patches[0] cannot be applied to HelmRelease media/web" in error.message
    assert ("(this Kustomization is itself patched by kubernetes/flux/cluster/ks.yaml:10 (Kustomization "
            "flux-system/cluster-apps spec.patches[0]))") in error.message


def test_the_example_objects_carry_the_namespace_they_land_in(example_catalogue: Catalogue) -> None:
    for m in example_catalogue.deployed():
        if m.namespace and m.kind != "Namespace":
            assert m.obj["metadata"]["namespace"] == m.namespace, m.ref


# ---------------------------------------------------------------------------------------------
# What the rules see
# ---------------------------------------------------------------------------------------------

CLUSTER_APPS_FILE = "kubernetes/flux/cluster/ks.yaml"
PELICAN_KS = "kubernetes/apps/pelican/pelican/ks.yaml"


def test_a_field_a_parent_patch_sets_satisfies_the_crd_schema(example_repo: RepoCopy) -> None:
    example_repo.replace(PELICAN_KS, "  interval: 1h\n", "")
    assert [f.subject for f in example_repo.findings("crd-schema")] == ["Kustomization flux-system/pelican"]
    example_repo.replace(CLUSTER_APPS_FILE, "    name: flux-system\n", """    name: flux-system
  patches:
    - patch: |-
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        metadata: {name: _}
        spec: {interval: 1h}
      target: {kind: Kustomization, labelSelector: "!keep-interval"}
""")
    errors = [f for f in example_repo.findings("crd-schema") if f.severity == "error"]
    assert errors == [], rendered(errors)


def test_a_broken_parent_patch_fails_manifests_parse_at_its_line(example_repo: RepoCopy) -> None:
    example_repo.replace(CLUSTER_APPS_FILE, "    name: flux-system\n", """    name: flux-system
  patches:
    - patch: |-
        apiVersion: kustomize.toolkit.fluxcd.io/v1
        kind: Kustomization
        spec: {interval: 1h}
      target: {kind: Kustomization}
""")
    (finding,) = example_repo.findings("manifests-parse")
    assert (finding.location.path, finding.location.line) == (CLUSTER_APPS_FILE, 20)
    assert finding.problem.startswith("Kustomization flux-system/cluster-apps: spec.patches[0] `patch` is neither a "
                                      "strategic-merge patch nor a JSON6902 patch")
    assert "`metadata.name`" in finding.fix
