"""Claims that ask for shared access (ReadWriteMany, ReadOnlyMany) on a drill cluster's node-local storage.

Real repos keep media and documents on NFS classes (`nas-nfs-store`, `nfs-client`) with
ReadWriteMany claims. A drill cluster stands those classes in with local-path-provisioner, which
refuses any claim that is not ReadWriteOnce or ReadWriteOncePod on node paths (v0.0.30
provisioner.go provisionFor: "NodePath only supports ReadWriteOnce..."), so the claim stays Pending
and the app never deploys. Its shared-filesystem mode is no way out: it makes PersistentVolumes
without node affinity, which a `local` volume must have, and a hostPath PV is one Velero's fs-backup
skips.

The drill cluster has one node, and ReadWriteOnce lets every pod on a node mount the volume, so the
app's pods share it as they do in production. The drill's copy of such a claim asks ReadWriteOnce:
a Flux Kustomization patch for a claim in the repo's files (a PVC, a StatefulSet's claim template),
a HelmRelease post-renderer patch for one a chart renders. Flux applies the patch on every
reconcile, so the restored claim and the adopted Kustomization agree. Each is disclosed.

A claim that binds a PersistentVolume the repo declares (a static NFS volume, `volumeName`, a
`selector`, the empty class) keeps its access modes: it is provisioned by nobody, and its PV offers
the modes it asks for.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from restoredrill.catalogue import Catalogue, Manifest, dig

SHARED_MODES = ("ReadWriteMany", "ReadOnlyMany")
NODE_LOCAL_PROVISIONER = "rancher.io/local-path"


@dataclass(frozen=True)
class NodeLocalClasses:
    """The drill cluster's storage classes whose claims local-path provisions on the node."""

    names: frozenset[str]
    # The class a claim without storageClassName gets, when it is node-local.
    default: str | None = None

    def provisions(self, storage_class: Any) -> bool:
        if storage_class is None:
            return self.default is not None
        return isinstance(storage_class, str) and storage_class != "" and storage_class in self.names


@dataclass(frozen=True)
class _Change:
    kind: str
    name: str
    ops: tuple[dict[str, Any], ...]
    what: str
    modes: tuple[str, ...]
    # The HelmRelease that renders the object, or None when the object is in the repo's files.
    release: Manifest | None


def _claim_changes(spec: Any, *, path: str, classes: Callable[[], NodeLocalClasses], static: Collection[str],
                   claim: str) -> dict[str, Any] | None:
    if not isinstance(spec, dict):
        return None
    modes = spec.get("accessModes")
    if not isinstance(modes, list) or not any(mode in SHARED_MODES for mode in modes):
        return None
    if spec.get("volumeName") or spec.get("selector") or not classes().provisions(spec.get("storageClassName")):
        return None
    if claim in static or (spec.get("storageClassName") or "") in static:
        return None
    return {"op": "replace", "path": path, "value": ["ReadWriteOnce"]}


def _static_volumes(catalogue: Catalogue) -> set[str]:
    """Claims and classes that PersistentVolumes of the repo serve: `ns/claim` of a claimRef, and class names."""
    served: set[str] = set()
    for m in catalogue.manifests:
        if m.group == "" and m.kind == "PersistentVolume":
            ref = m.get("spec", "claimRef")
            if isinstance(ref, dict) and ref.get("name"):
                served.add(f"{ref.get('namespace') or ''}/{ref['name']}")
            if m.get("spec", "storageClassName"):
                served.add(str(m.get("spec", "storageClassName")))
    return served


def _releases_by_document(catalogue: Catalogue) -> dict[tuple[str, int], Manifest]:
    return {(str(m.document.path), m.document.index): m for m in catalogue.manifests
            if m.kind == "HelmRelease" and m.group.startswith("helm.toolkit.fluxcd.io")}


def _changes(catalogue: Catalogue, kustomization: str, classes: Callable[[], NodeLocalClasses]) -> list[_Change]:
    static = _static_volumes(catalogue)
    releases = _releases_by_document(catalogue)
    changes: list[_Change] = []
    seen: set[tuple[str, str, str | None]] = set()
    for claim in catalogue.volume_claims:
        m = claim.manifest
        if m.deployed_by != kustomization or claim.origin not in ("PersistentVolumeClaim",
                                                                  "StatefulSet volumeClaimTemplate"):
            continue
        release = releases.get((str(m.document.path), m.document.index))
        key = (m.kind, m.name, f"{release.namespace}/{release.name}" if release else None)
        if key in seen:
            continue
        seen.add(key)
        ops: list[dict[str, Any]] = []
        specs = [m.get("spec")] if m.kind == "PersistentVolumeClaim" else [
            dig(t, ("spec",)) for t in m.get("spec", "volumeClaimTemplates") or []]
        modes = tuple(sorted({mode for spec in specs if isinstance(spec, dict)
                              for mode in spec.get("accessModes") or [] if mode in SHARED_MODES}))
        if m.kind == "PersistentVolumeClaim":
            op = _claim_changes(m.get("spec"), path="/spec/accessModes", classes=classes, static=static,
                                claim=f"{m.namespace or ''}/{m.name}")
            ops += [op] if op else []
        else:
            for index, template in enumerate(m.get("spec", "volumeClaimTemplates") or []):
                name = f"{dig(template, ('metadata', 'name'))}-{m.name}"
                op = _claim_changes(dig(template, ("spec",)), classes=classes, static=static,
                                    path=f"/spec/volumeClaimTemplates/{index}/spec/accessModes",
                                    claim=f"{m.namespace or ''}/{name}")
                ops += [op] if op else []
        if ops:
            what = (f"PersistentVolumeClaim {m.namespace}/{m.name}" if m.kind == "PersistentVolumeClaim"
                    else f"StatefulSet {m.namespace}/{m.name}'s claim templates")
            changes.append(_Change(kind=m.kind, name=m.name, ops=tuple(ops), what=what, modes=modes,
                                   release=release))
    return changes


def _patch(change: _Change) -> dict[str, Any]:
    return {"target": {"kind": change.kind, "name": change.name}, "patch": json.dumps(list(change.ops))}


def shared_access_patches(
        body: dict[str, Any], *, catalogue: Catalogue,
        classes: NodeLocalClasses | Callable[[], NodeLocalClasses]) -> tuple[dict[str, Any], list[str]]:
    """The Kustomization `body` with patches that make its shared-access claims ReadWriteOnce; what changed.

    `classes` may be a function: it is called only when a claim asks for shared access."""
    name = str(dig(body, ("metadata", "name")) or "")
    changes = _changes(catalogue, name, classes if callable(classes) else lambda: classes)
    if not changes:
        return body, []
    patches: list[dict[str, Any]] = []
    by_release: dict[tuple[str, str], list[_Change]] = {}
    for change in changes:
        if change.release is None:
            patches.append(_patch(change))
        else:
            by_release.setdefault((str(change.release.namespace or ""), change.release.name), []).append(change)
    for (_, release_name), release_changes in by_release.items():
        release = release_changes[0].release
        assert release is not None
        renderer = {"kustomize": {"patches": [_patch(c) for c in release_changes]}}
        has = isinstance(release.get("spec", "postRenderers"), list) and release.get("spec", "postRenderers")
        op = ({"op": "add", "path": "/spec/postRenderers/-", "value": renderer} if has
              else {"op": "add", "path": "/spec/postRenderers", "value": [renderer]})
        patches.append({"target": {"group": "helm.toolkit.fluxcd.io", "kind": "HelmRelease", "name": release_name},
                        "patch": json.dumps([op])})
    spec = dict(body.get("spec") or {})
    spec["patches"] = [*(spec.get("patches") or []), *patches]
    notes = [f"{c.what}: asks {' and '.join(c.modes)} of a class local-path provisions on the drill's one node, "
             "which serves ReadWriteOnce only; the drill's copy asks ReadWriteOnce (every pod on the node shares it "
             f"as before), by a patch of Kustomization {name}"
             + (f" on HelmRelease {c.release.namespace}/{c.release.name}'s post-renderers" if c.release else "")
             for c in changes]
    return {**body, "spec": spec}, notes


