"""Which of the deployment's stand-ins a drill of one app discloses.

The repo is published once per session with every stand-in it needs (each ExternalSecret and SOPS
file of every app stood in, every app's Kustomization as applied), and one app's drill deploys only
that app's Kustomizations. Its report lists the stand-ins that can touch what it deployed: those of
the files its Kustomizations apply, of those Kustomizations and of what they depend on, and every
stand-in that belongs to no app (the platform's, a shared folder's, a cluster-wide Secret's). Left
out: a stand-in that names another app's file or object and none of this app's, and one of a file
no Flux Kustomization applies (an example, a Talos secret).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from restoredrill.catalogue import Catalogue
from restoredrill.drill.helmreleases import release_dependencies

# "path/of/file.yaml: what was stood in" (publishable_tree's notes: the path is relative to the repo root).
_FILE_NOTE = re.compile(r"^(?P<path>[^\s:]+\.ya?ml): ")
# "Kustomization ns/name ..." and "HelmRelease ns/name ...".
_OBJECT_NOTE = re.compile(r"^(?P<kind>Kustomization|HelmRelease) (?P<namespace>[^/\s]+)/(?P<name>[^\s:(]+)")


def app_standins(notes: Iterable[str], *, catalogue: Catalogue,
                 kustomizations: Sequence[Mapping[str, Any]]) -> list[str]:
    """The `notes` a drill deploying `kustomizations` (the app's Flux Kustomization objects) discloses."""
    names = {str((k.get("metadata") or {}).get("name")) for k in kustomizations}
    needed = names | {str(d.get("name")) for k in kustomizations
                      for d in (k.get("spec") or {}).get("dependsOn") or [] if isinstance(d, Mapping)}
    releases = [{**m.obj, "metadata": {**(m.obj.get("metadata") or {}), "namespace": m.namespace or "default"}}
                for m in catalogue.manifests if m.kind == "HelmRelease" and m.deployed_by in names]
    own_releases = {(str(r["metadata"]["namespace"]), str(r["metadata"].get("name"))) for r in releases}
    own_releases |= {(namespace, name) for namespace, name, _ in release_dependencies(releases)}
    file_owners: dict[Path, set[str]] = {}
    release_owners: dict[tuple[str, str], set[str]] = {}
    for manifest in catalogue.manifests:
        if manifest.deployed_by is None:
            continue
        file_owners.setdefault(manifest.document.path, set()).add(manifest.deployed_by)
        if manifest.kind == "HelmRelease":
            key = (manifest.namespace or "default", str((manifest.obj.get("metadata") or {}).get("name")))
            release_owners.setdefault(key, set()).add(manifest.deployed_by)
    others = {k.name for k in catalogue.flux_kustomizations} - needed

    def concerns_app(note: str) -> bool:
        if found := _FILE_NOTE.match(note):
            path = Path(found["path"])
            if path not in catalogue.deployed_files:
                return False  # no Flux Kustomization applies the file: it reaches no cluster
            owners = file_owners.get(path)
            return not owners or bool(owners & needed)
        if found := _OBJECT_NOTE.match(note):
            if found["kind"] == "Kustomization":
                return found["name"] in needed or found["name"] not in others
            key = (found["namespace"], found["name"])
            return key in own_releases or not (release_owners.get(key, set()) - needed)
        return True

    return [note for note in dict.fromkeys(notes) if concerns_app(note)]
