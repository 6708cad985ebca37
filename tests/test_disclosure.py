"""One app's drill discloses the stand-ins that can touch what it deploys, not the whole repo's."""

from __future__ import annotations

from pathlib import Path

from restoredrill.catalogue import App, Catalogue, build_catalogue
from restoredrill.drill.disclosure import app_standins
from restoredrill.drill.gitops import publishable_tree
from restoredrill.drill.secretstandins import StandinValues
from tests.conftest import RepoCopy

PELICAN_SECRET = "kubernetes/apps/pelican/pelican/app/secret.sops.yaml"
IMMICH_PV = "kubernetes/apps/immich/immich/app/library-pv.yaml"


def app(apps: tuple[App, ...], name: str) -> App:
    return next(a for a in apps if a.name == name)


def test_a_drill_discloses_its_own_files_stand_ins_and_those_of_no_app(example_repo: RepoCopy,
                                                                        tmp_path: Path) -> None:
    notes = publishable_tree(example_repo.root, tmp_path / "published", nfs=tmp_path / "nfs",
                             standin_values=StandinValues(seed="s"), sops_standins=True)
    catalogue = build_catalogue(example_repo.root)
    pelican = [k.manifest.obj for k in app(catalogue.apps, "pelican").kustomizations]
    immich = [k.manifest.obj for k in app(catalogue.apps, "immich").kustomizations]
    assert any(n.startswith(f"{PELICAN_SECRET}: ") for n in notes)
    assert any(n.startswith(f"{IMMICH_PV}: ") for n in notes)
    for_pelican = app_standins(notes, catalogue=catalogue, kustomizations=pelican)
    assert any(n.startswith(f"{PELICAN_SECRET}: ") for n in for_pelican)
    assert not any(n.startswith(f"{IMMICH_PV}: ") for n in for_pelican)
    assert not any(n.startswith("kubernetes/apps/pricebuddy/") for n in for_pelican)
    assert any("not a git checkout" in n for n in for_pelican)  # belongs to no app: every drill says it
    unapplied = "talos/secret.sops.yaml: Secret talos: SOPS-encrypted, generated values"
    assert unapplied not in app_standins([*notes, unapplied], catalogue=catalogue, kustomizations=pelican)
    for_immich = app_standins(notes, catalogue=catalogue, kustomizations=immich)
    assert any(n.startswith(f"{IMMICH_PV}: ") for n in for_immich)
    assert not any(n.startswith(f"{PELICAN_SECRET}: ") for n in for_immich)


def test_kustomization_and_release_notes_follow_the_apps_dependencies(example_catalogue: Catalogue) -> None:
    immich = [k.manifest.obj for k in app(example_catalogue.apps, "immich").kustomizations]
    pelican = [k.manifest.obj for k in app(example_catalogue.apps, "pelican").kustomizations]
    assert any((d.get("name") == "cloudnative-pg") for k in immich for d in k["spec"].get("dependsOn", []))
    notes = ["Kustomization flux-system/immich: spec.decryption (sops) dropped",
             "Kustomization flux-system/pelican: spec.decryption (sops) dropped",
             "Kustomization flux-system/cloudnative-pg (a dependency of immich): an empty stand-in",
             "Kustomization flux-system/not-in-the-repo: stood in",
             "HelmRelease storage/longhorn (a dependency of HelmRelease media/jellyfin): a suspended stand-in",
             "Gateway API CRDs installed (standard channel)"]
    assert app_standins(notes, catalogue=example_catalogue, kustomizations=immich) == [
        notes[0], notes[2], notes[3], notes[4], notes[5]]
    assert app_standins(notes, catalogue=example_catalogue, kustomizations=pelican) == [
        notes[1], notes[3], notes[4], notes[5]]
