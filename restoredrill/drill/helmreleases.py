"""Helm releases of an app's HelmReleases: what they deployed, and whether Flux adopted them after a restore.

Helm keeps each release revision in a Secret `sh.helm.release.v1.NAME.vREVISION` (labels
`owner=helm`, `name`, `version`, `status`) in the release's storage namespace; its `release` key is
base64 of the gzipped JSON release (Helm's storage/driver/util.go), whose `manifest` is the YAML of
every object the revision applied. helm-controller records the revision it manages in the
HelmRelease's `status.history[0]` (name, namespace, version, digest).

After a namespace restore the Secrets come back with the namespace. helm-controller then adopts the
release only if the restored HelmRelease's history names that same revision; a HelmRelease whose
history is gone (Velero restores no status unless asked) finds "an existing release in storage"
that it does not manage and upgrades it (internal/reconcile/state.go, atomic_release.go of
helm-controller v1.4.3): a new revision made by the restore, which the drill reports.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

RELEASE_SECRET_TYPE = "helm.sh/release.v1"
HELM_RELEASES_RESOURCE = "helmreleases.helm.toolkit.fluxcd.io"
RESTORE_STATUS_FIX = (f"restore the HelmReleases' status with the backup: `velero restore create ... "
                      f"--status-include-resources {HELM_RELEASES_RESOURCE}` in the runbook, and restore_status: "
                      f"[{HELM_RELEASES_RESOURCE}] in the drill config so the drill restores the same way")


@dataclass(frozen=True)
class ReleaseRevision:
    name: str
    namespace: str
    version: int
    status: str
    manifest: str


def decode_release(encoded: str) -> dict[str, Any]:
    """The release JSON of a release Secret's `release` value as the API returns it (base64 of
    Helm's base64 of the gzipped JSON)."""
    helm_text = base64.b64decode(encoded)
    data = base64.b64decode(helm_text)
    if data[:3] == b"\x1f\x8b\x08":
        data = gzip.decompress(data)
    release = json.loads(data)
    if not isinstance(release, dict):
        raise ValueError("a Helm release is a JSON object")
    return release


def latest_revision(secrets: Iterable[Mapping[str, Any]], *, release: str) -> ReleaseRevision | None:
    """The highest revision of `release` among release Secrets (API objects as dicts)."""
    best: ReleaseRevision | None = None
    for secret in secrets:
        labels = (secret.get("metadata") or {}).get("labels") or {}
        if secret.get("type") != RELEASE_SECRET_TYPE or labels.get("name") != release:
            continue
        encoded = (secret.get("data") or {}).get("release")
        if not encoded:
            continue
        decoded = decode_release(str(encoded))
        revision = ReleaseRevision(name=release, namespace=str((secret.get("metadata") or {}).get("namespace")),
                                   version=int(decoded.get("version") or labels.get("version") or 0),
                                   status=str((decoded.get("info") or {}).get("status", "")),
                                   manifest=str(decoded.get("manifest") or ""))
        if best is None or revision.version > best.version:
            best = revision
    return best


def manifest_objects(manifest: str, *, namespace: str) -> list[tuple[str, str, str, str]]:
    """(version, group, kind, name) of the objects of a release manifest that land in `namespace`."""
    objects = []
    for doc in yaml.safe_load_all(manifest):
        if not isinstance(doc, dict) or not doc.get("kind"):
            continue
        metadata = doc.get("metadata") or {}
        if metadata.get("namespace") not in (None, namespace):
            continue
        group, _, version = str(doc.get("apiVersion", "")).rpartition("/")
        objects.append((version, group, str(doc["kind"]), str(metadata.get("name"))))
    return objects


def managed_release(helm_release: Mapping[str, Any]) -> tuple[str, str, int] | None:
    """(release name, storage namespace, revision) helm-controller's status says it manages."""
    history = (helm_release.get("status") or {}).get("history") or []
    if not history:
        return None
    latest = history[0]
    return str(latest.get("name")), str(latest.get("namespace")), int(latest.get("version") or 0)


def release_name(helm_release: Mapping[str, Any]) -> str:
    """The Helm release name helm-controller uses (api/v2 GetReleaseName): spec.releaseName, else
    `TARGETNAMESPACE-NAME` with a targetNamespace, else the HelmRelease's name (shortened over 53
    characters, which this drill does not need: it then reads the status' name)."""
    spec = helm_release.get("spec") or {}
    name = str((helm_release.get("metadata") or {}).get("name"))
    if spec.get("releaseName"):
        return str(spec["releaseName"])
    if spec.get("targetNamespace"):
        return f"{spec['targetNamespace']}-{name}"
    return name


def storage_namespace(helm_release: Mapping[str, Any]) -> str:
    spec = helm_release.get("spec") or {}
    return str(spec.get("storageNamespace") or (helm_release.get("metadata") or {}).get("namespace"))


def adoption_problems(*, helm_release: str, before: int, after: int | None, status: Mapping[str, Any],
                      status_restored: bool = True) -> list[str]:
    """What is wrong with a release's revision after the restore and Flux's reconcile; without
    `status_restored` (the restore brought no HelmRelease status back) the fix is named."""
    if after is None:
        return [f"{helm_release}: no Helm release revision is in storage after the restore (the release Secrets "
                "did not come back)"]
    if after == before:
        return []
    ready: Mapping[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    return [f"{helm_release}: helm-controller made release revision {after} after the restore (the backup held "
            f"revision {before}): it upgraded the restored release instead of adopting it "
            f"({ready.get('reason', '')}: {ready.get('message', '')})"
            + ("" if status_restored else f"; the restored HelmRelease had no status.history, so helm-controller "
               f"found a release it did not manage: {RESTORE_STATUS_FIX}")]


# ---- dependsOn stand-ins -------------------------------------------------------------------------
# helm-controller v1.4.3 (internal/controller/helmrelease_controller.go checkDependencies) installs a
# HelmRelease only once each `spec.dependsOn` HelmRelease exists, has status.observedGeneration equal
# to its generation and a Ready condition True (a `readyExpr` is evaluated on the same object). A
# suspended HelmRelease is never reconciled (the controller only adds its finalizer, and on deletion
# removes it without uninstalling anything), so a suspended stand-in keeps the status the drill gives it.
STANDIN_REASON = "RestoredrillStandIn"


def release_dependencies(releases: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """`(namespace, name, dependent)` for every `spec.dependsOn` of `releases` (HelmRelease objects)
    that is not itself one of them; a reference without a namespace means the dependent's own."""
    own = {(str((r.get("metadata") or {}).get("namespace") or "default"), str((r.get("metadata") or {}).get("name")))
           for r in releases}
    found: list[tuple[str, str, str]] = []
    for release in releases:
        metadata = release.get("metadata") or {}
        home = str(metadata.get("namespace") or "default")
        for reference in (release.get("spec") or {}).get("dependsOn") or []:
            if not isinstance(reference, Mapping) or not reference.get("name"):
                continue
            key = (str(reference.get("namespace") or home), str(reference["name"]))
            if key not in own and not any(entry[:2] == key for entry in found):
                found.append((*key, f"{home}/{metadata.get('name')}"))
    return found


def dependency_standin(*, namespace: str, name: str, labels: Mapping[str, str]) -> dict[str, Any]:
    """A suspended HelmRelease that helm-controller never installs (its chartRef names nothing)."""
    return {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {"interval": "1h", "suspend": True,
                     "chartRef": {"kind": "OCIRepository", "name": f"{name}-restoredrill-stand-in"}}}


def ready_as_dependency(helm_release: Mapping[str, Any]) -> bool:
    """What helm-controller requires of a dependency: observedGeneration current, Ready True."""
    status = helm_release.get("status") or {}
    generation = (helm_release.get("metadata") or {}).get("generation")
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return ready and generation is not None and status.get("observedGeneration") == generation


def dependency_ready_status(helm_release: Mapping[str, Any], *, now: str) -> dict[str, Any]:
    """The status patch that makes a stand-in ready as a dependency (at its current generation)."""
    generation = int((helm_release.get("metadata") or {}).get("generation") or 1)
    return {"status": {"observedGeneration": generation, "conditions": [{
        "type": "Ready", "status": "True", "reason": STANDIN_REASON, "observedGeneration": generation,
        "lastTransitionTime": now,
        "message": "a restoredrill stand-in for a HelmRelease the drill does not deploy"}]}}
