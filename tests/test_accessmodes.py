"""Shared-access claims (ReadWriteMany on an NFS class, as cypr0/k8s-cluster's `nas-nfs-store`) on a
drill cluster whose classes local-path provisions: the drill's copy asks ReadWriteOnce, by a Flux
patch, and says so; claims a repo's PersistentVolume serves keep their modes."""

import json
from dataclasses import replace
from typing import Any

from restoredrill.catalogue import Catalogue, Manifest, VolumeClaim
from restoredrill.drill.accessmodes import NodeLocalClasses, shared_access_patches
from restoredrill.yamlio import Document
from tests.conftest import RepoCopy

PELICAN_PVC = "kubernetes/apps/pelican/pelican/app/pvc.yaml"
PELICAN_KS = "kubernetes/apps/pelican/pelican/ks.yaml"
LOCAL = NodeLocalClasses(names=frozenset({"local-path", "nas-nfs-store"}), default="local-path")


def pelican_ks(catalogue: Catalogue) -> dict[str, Any]:
    app = next(a for a in catalogue.apps if a.name == "pelican")
    return dict(app.kustomizations[0].manifest.obj)


def apply_json_patch(obj: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Enough of RFC 6902 for these patches: `replace` and `add` (with `-`) on object and list paths."""
    obj = json.loads(json.dumps(obj))
    for op in ops:
        *parents, last = op["path"].lstrip("/").split("/")
        node: Any = obj
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node.append(op["value"]) if last == "-" else node.__setitem__(int(last), op["value"])
        else:
            assert op["op"] == "add" or last in node, op
            node[last] = op["value"]
    return obj


def test_a_read_write_many_claim_of_a_node_local_class_is_asked_read_write_once(example_repo: RepoCopy) -> None:
    example_repo.replace(PELICAN_PVC, "  accessModes:\n    - ReadWriteOnce\n",
                         "  storageClassName: nas-nfs-store\n  accessModes:\n    - ReadWriteMany\n")
    catalogue = example_repo.catalogue()
    body, notes = shared_access_patches(pelican_ks(catalogue), catalogue=catalogue, classes=LOCAL)
    (patch,) = body["spec"]["patches"]
    assert patch["target"] == {"kind": "PersistentVolumeClaim", "name": "pelican-data"}
    claim = next(m.obj for m in catalogue.manifests if m.kind == "PersistentVolumeClaim" and m.name == "pelican-data")
    assert apply_json_patch(claim, json.loads(patch["patch"]))["spec"]["accessModes"] == ["ReadWriteOnce"]
    (note,) = notes
    assert "PersistentVolumeClaim pelican/pelican-data" in note and "ReadWriteMany" in note
    assert "Kustomization pelican" in note
    # pelican-logs asks ReadWriteOnce: untouched.
    assert "pelican-logs" not in json.dumps(body["spec"]["patches"])


def test_claims_a_repo_volume_serves_or_other_provisioners_keep_their_modes(example_repo: RepoCopy) -> None:
    example_repo.replace(PELICAN_PVC, "  accessModes:\n    - ReadWriteOnce\n",
                         "  storageClassName: media-nfs\n  accessModes:\n    - ReadWriteMany\n")
    example_repo.replace(PELICAN_PVC, "  accessModes:\n    - ReadWriteOnce\n",
                         "  storageClassName: ceph-filesystem\n  accessModes:\n    - ReadWriteMany\n")
    example_repo.write("kubernetes/apps/pelican/pelican/app/pv.yaml", """apiVersion: v1
kind: PersistentVolume
metadata: {name: media}
spec:
  storageClassName: media-nfs
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteMany]
  nfs: {server: nas.lan, path: /media}
""")
    example_repo.replace("kubernetes/apps/pelican/pelican/app/kustomization.yaml", "  - ./pvc.yaml\n",
                         "  - ./pvc.yaml\n  - ./pv.yaml\n")
    catalogue = example_repo.catalogue()
    classes = NodeLocalClasses(names=frozenset({"local-path", "media-nfs"}), default="local-path")
    body, notes = shared_access_patches(pelican_ks(catalogue), catalogue=catalogue, classes=classes)
    # media-nfs: a static PV of the repo serves it; ceph-filesystem: not a class local-path provisions.
    assert notes == [] and "patches" not in body.get("spec", {})


def test_a_claim_a_chart_renders_is_patched_through_its_release_post_renderers(example_repo: RepoCopy) -> None:
    catalogue = example_repo.catalogue()
    release = next(m for m in catalogue.manifests if m.kind == "HelmRelease" and m.deployed_by)
    rendered = Manifest(document=Document(path=release.document.path, index=release.document.index,
                                          line=release.document.line, data={
                                              "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                                              "metadata": {"name": "media"},
                                              "spec": {"accessModes": ["ReadWriteMany"],
                                                       "resources": {"requests": {"storage": "1Gi"}}}}),
                        namespace=release.namespace, deployed_by=release.deployed_by)
    statefulset = Manifest(document=Document(path=release.document.path, index=release.document.index,
                                             line=release.document.line, data={
                                                 "apiVersion": "apps/v1", "kind": "StatefulSet",
                                                 "metadata": {"name": "db"},
                                                 "spec": {"volumeClaimTemplates": [
                                                     {"metadata": {"name": "a"}, "spec": {"accessModes": [
                                                         "ReadWriteOnce"]}},
                                                     {"metadata": {"name": "b"}, "spec": {"accessModes": [
                                                         "ReadOnlyMany"]}}]}}),
                           namespace=release.namespace, deployed_by=release.deployed_by)
    claims = (VolumeClaim(name="media", namespace=release.namespace, storage_class=None, size="1Gi",
                          origin="PersistentVolumeClaim", manifest=rendered),
              VolumeClaim(name="a-db", namespace=release.namespace, storage_class=None, size=None,
                          origin="StatefulSet volumeClaimTemplate", manifest=statefulset))
    catalogue = replace(catalogue, volume_claims=catalogue.volume_claims + claims)
    owner = next(a.kustomizations[0].manifest.obj for a in catalogue.apps
                 if any(k.name == release.deployed_by for k in a.kustomizations))
    body, notes = shared_access_patches(dict(owner), catalogue=catalogue, classes=LOCAL)
    (patch,) = [p for p in body["spec"]["patches"] if p["target"].get("kind") == "HelmRelease"]
    assert patch["target"] == {"group": "helm.toolkit.fluxcd.io", "kind": "HelmRelease", "name": release.name}
    patched = apply_json_patch(release.obj, json.loads(patch["patch"]))
    (renderer,) = patched["spec"]["postRenderers"][-1:]
    by_kind = {p["target"]["kind"]: json.loads(p["patch"]) for p in renderer["kustomize"]["patches"]}
    assert apply_json_patch(rendered.obj, by_kind["PersistentVolumeClaim"])["spec"]["accessModes"] == ["ReadWriteOnce"]
    templates = apply_json_patch(statefulset.obj, by_kind["StatefulSet"])["spec"]["volumeClaimTemplates"]
    assert [t["spec"]["accessModes"] for t in templates] == [["ReadWriteOnce"], ["ReadWriteOnce"]]
    assert len(notes) == 2 and all(f"HelmRelease {release.namespace}/{release.name}'s post-renderers" in n
                                   for n in notes)


def test_nothing_changes_on_a_cluster_whose_classes_local_path_does_not_provision(example_repo: RepoCopy) -> None:
    example_repo.replace(PELICAN_PVC, "  accessModes:\n    - ReadWriteOnce\n", "  accessModes:\n    - ReadWriteMany\n")
    catalogue = example_repo.catalogue()
    body, notes = shared_access_patches(pelican_ks(catalogue), catalogue=catalogue,
                                        classes=NodeLocalClasses(names=frozenset()))
    assert notes == [] and body == pelican_ks(catalogue)
