"""Stand-ins replace the apps' own images on the local provider; which ones, and on what ports, comes from the repo."""

import sys
from pathlib import Path

import pytest

from restoredrill.catalogue import Catalogue
from restoredrill.images import BUSYBOX_BINARY
from restoredrill.images.oci import FileEntry, SymlinkEntry
from restoredrill.images.standins import (
    DEFAULT_PORTS,
    STANDIN_PATH,
    StandIn,
    archive_name,
    provided_references,
    standin_image,
    standins_for,
)
from restoredrill.platform.images import MARIADB_REFERENCE, platform_image_set
from tests.conftest import RepoCopy

MARIADB = "docker.io/library/mariadb:11.4.5"
PELICAN = "ghcr.io/pelican-dev/panel:v1.0.0-beta21"
GATUS = "ghcr.io/twin/gatus:v5.17.0"


def platform_images() -> list[str]:
    return list(platform_image_set("local").values())


def test_every_app_image_but_the_platforms_is_stood_in(example_catalogue: Catalogue) -> None:
    standins = {s.reference: s.ports for s in standins_for(example_catalogue, example_catalogue.apps,
                                                           provided=platform_images())}
    assert MARIADB_REFERENCE == MARIADB
    assert MARIADB not in standins  # the real MariaDB runs: the platform builds it
    assert standins[PELICAN] == (80,)
    assert standins[GATUS] == (8080,)
    assert standins["docker.io/n8nio/n8n:1.95.3"] == (5678,)
    assert standins["ghcr.io/immich-app/immich-server:v1.132.3"] == (2283,)
    # CNPG's PostgreSQL is run by the operator from Cluster.spec.imageName, never a stand-in.
    assert not any("postgresql" in reference for reference in standins)
    assert not any("velero" in reference for reference in standins)


def test_without_provided_images_the_database_is_stood_in_too(example_catalogue: Catalogue) -> None:
    standins = {s.reference: s.ports for s in standins_for(example_catalogue, example_catalogue.apps, provided=[])}
    assert standins[MARIADB] == (3306,)


def test_only_the_given_apps_are_stood_in(example_catalogue: Catalogue) -> None:
    pelican = [app for app in example_catalogue.apps if app.name == "pelican"]
    assert standins_for(example_catalogue, pelican, provided=platform_images()) == [StandIn(PELICAN, (80,))]
    assert standins_for(example_catalogue, [], provided=[]) == []


def test_a_container_without_ports_gets_the_default(example_repo: RepoCopy) -> None:
    example_repo.replace("kubernetes/apps/n8n/n8n/app/deployment.yaml",
                         "          ports:\n            - name: http\n              containerPort: 5678\n"
                         "          readinessProbe:\n            tcpSocket:\n              port: 5678\n"
                         "            initialDelaySeconds: 5\n            periodSeconds: 10\n", "")
    catalogue = example_repo.catalogue()
    assert not catalogue.errors
    n8n = [app for app in catalogue.apps if app.name == "n8n"]
    assert standins_for(catalogue, n8n, provided=[]) == [StandIn("docker.io/n8nio/n8n:1.95.3", DEFAULT_PORTS)]


def test_probe_ports_count_as_well_as_container_ports(example_repo: RepoCopy) -> None:
    example_repo.replace("kubernetes/apps/n8n/n8n/app/deployment.yaml",
                         "          readinessProbe:\n            tcpSocket:\n              port: 5678\n",
                         "          readinessProbe:\n            tcpSocket:\n              port: 5678\n"
                         "          livenessProbe:\n            httpGet:\n              path: /healthz\n"
                         "              port: 5679\n")
    catalogue = example_repo.catalogue()
    assert not catalogue.errors
    n8n = [app for app in catalogue.apps if app.name == "n8n"]
    assert standins_for(catalogue, n8n, provided=[]) == [StandIn("docker.io/n8nio/n8n:1.95.3", (5678, 5679))]


APP_TEMPLATE_RELEASE = """\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: jellyfin
spec:
  chartRef: {kind: OCIRepository, name: app-template}
  values:
    controllers:
      jellyfin:
        containers:
          app:
            image: {repository: ghcr.io/home-operations/jellyfin, tag: 10.10.7}
            probes:
              liveness: {enabled: true, custom: true, spec: {httpGet: {path: /health, port: 8097}}}
      sidecar:
        containers:
          app:
            image: {repository: ghcr.io/example/sidecar, tag: 1.0.0}
    service:
      app:
        controller: jellyfin
        ports:
          http: {port: 8096}
      other:
        controller: sidecar
        ports:
          metrics: {port: 80, targetPort: 9090}
"""


def test_app_template_releases_serve_their_services_and_probes_ports(tmp_path: Path) -> None:
    """app-template's default probes are TCP checks of the controller's primary Service port: the
    stand-in must answer there (a stand-in on 8080 alone never becomes Ready)."""
    from restoredrill.catalogue import build_catalogue

    folder = tmp_path / "kubernetes" / "apps" / "media" / "jellyfin"
    (folder / "app").mkdir(parents=True)
    (tmp_path / "kubernetes" / "apps" / "kustomization.yaml").write_text("resources:\n  - ./media/jellyfin/ks.yaml\n")
    (folder / "ks.yaml").write_text(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: jellyfin\n"
        "  namespace: flux-system\nspec:\n  path: ./kubernetes/apps/media/jellyfin/app\n  targetNamespace: media\n"
        "  sourceRef: {kind: GitRepository, name: flux-system}\n")
    (folder / "app" / "kustomization.yaml").write_text("resources:\n  - ./helmrelease.yaml\n")
    (folder / "app" / "helmrelease.yaml").write_text(APP_TEMPLATE_RELEASE)
    (tmp_path / "kubernetes" / "flux" / "cluster").mkdir(parents=True)
    (tmp_path / "kubernetes" / "flux" / "cluster" / "ks.yaml").write_text(
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: cluster-apps\n"
        "  namespace: flux-system\nspec:\n  path: ./kubernetes/apps\n"
        "  sourceRef: {kind: GitRepository, name: flux-system}\n")
    catalogue = build_catalogue(tmp_path)
    standins = {s.reference: s.ports for s in standins_for(catalogue, catalogue.apps, provided=[])}
    assert standins == {"ghcr.io/home-operations/jellyfin:10.10.7": (8096, 8097),
                        "ghcr.io/example/sidecar:1.0.0": (9090,)}


def test_provided_references_are_the_platform_images() -> None:
    images = platform_image_set("local")
    assert provided_references(images) == set(images.values())
    assert MARIADB in provided_references(images)


@pytest.mark.parametrize("reference", [PELICAN, "docker.io/library/mariadb@sha256:" + "a" * 64,
                                       "registry.local:5000/team/app:1.0 beta"])
def test_archive_name_is_a_safe_file_name(reference: str) -> None:
    name = archive_name(reference)
    assert name.startswith("standin-") and name.endswith(".tar")
    assert "/" not in name and ":" not in name and " " not in name and "@" not in name
    assert Path(name).name == name


def test_archive_names_keep_references_apart() -> None:
    assert archive_name(PELICAN) == "standin-ghcr.io_pelican-dev_panel_v1.0.0-beta21.tar"
    assert archive_name(PELICAN) != archive_name(GATUS)


def test_standin_image_runs_the_server_on_the_declared_ports() -> None:
    if not BUSYBOX_BINARY.is_file():
        pytest.skip(f"{BUSYBOX_BINARY} is missing (busybox-static)")
    binary = Path(sys.executable)
    spec = standin_image(StandIn(PELICAN, (80, 8443)), binary=binary)
    assert spec.reference == PELICAN
    assert spec.entrypoint == (STANDIN_PATH,)
    assert "STANDIN_PORTS=80,8443" in spec.env
    assert f"STANDIN_IMAGE={PELICAN}" in spec.env
    files = {e.path: e for e in spec.entries if isinstance(e, FileEntry)}
    assert files[STANDIN_PATH].source == binary
    assert files["/bin/busybox"].source == BUSYBOX_BINARY
    links = {e.path: e.target for e in spec.entries if isinstance(e, SymlinkEntry)}
    assert links["/bin/sh"] == "busybox"  # `kubectl exec ... sh` works in a stand-in
