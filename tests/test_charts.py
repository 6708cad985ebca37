"""Charts for HelmRelease apps: reading --charts-dir, what the HelmReleases need, pointing their
sources at the chart server, and the chart server itself (the real binary, run on this host)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import socket
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path
from typing import Any

import pytest
import yaml

from restoredrill.drill.charts import (
    ChartNeed,
    chart_layout_tar,
    chart_needs,
    missing_charts_error,
    package_chart,
    read_charts_dir,
    serve_chart_sources,
)
from restoredrill.drill.helmreleases import adoption_problems, decode_release, latest_revision, manifest_objects
from restoredrill.errors import ConfigError

HOST = "chart-server.flux-system.svc.cluster.local"


def write_chart(folder: Path, name: str = "demo", version: str = "1.2.0") -> Path:
    chart = folder / name
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(f"apiVersion: v2\nname: {name}\nversion: {version}\n")
    (chart / "values.yaml").write_text("replicas: 1\n")
    (chart / "templates" / "cm.yaml").write_text("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n")
    return chart


def test_a_chart_folder_is_packaged_reproducibly_and_reads_back(tmp_path: Path) -> None:
    chart = write_chart(tmp_path)
    assert package_chart(chart) == package_chart(chart)
    (tmp_path / "demo-1.2.0.tgz").write_bytes(package_chart(chart))
    other = tmp_path / "other"
    other.mkdir()
    (other / "demo-1.2.0.tgz").write_bytes(package_chart(chart))
    [package] = read_charts_dir(other)
    assert (package.name, package.version) == ("demo", "1.2.0")
    with tarfile.open(fileobj=io.BytesIO(package.data), mode="r:gz") as tar:
        assert sorted(tar.getnames()) == ["demo/Chart.yaml", "demo/templates/cm.yaml", "demo/values.yaml"]


def test_the_same_chart_twice_is_refused_naming_both(tmp_path: Path) -> None:
    write_chart(tmp_path)
    (tmp_path / "demo-1.2.0.tgz").write_bytes(package_chart(tmp_path / "demo"))
    with pytest.raises(ConfigError, match=r"demo 1.2.0 is in both"):
        read_charts_dir(tmp_path)


@pytest.mark.parametrize(("content", "needle"), [
    (b"not a tarball", "not a gzipped tar"),
    (gzip.compress(b"\0" * 1024, mtime=0), "no CHART/Chart.yaml"),  # an empty tar
], ids=["not-gzip", "empty-tar"])
def test_a_file_that_is_no_chart_is_named_with_the_fix(tmp_path: Path, content: bytes, needle: str) -> None:
    (tmp_path / "broken-1.0.0.tgz").write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        read_charts_dir(tmp_path)
    assert needle in str(caught.value) and "broken-1.0.0.tgz" in str(caught.value)
    assert "helm pull" in str(caught.value)


def test_a_missing_or_empty_charts_folder_says_what_to_put_there(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        read_charts_dir(tmp_path / "nope")
    with pytest.raises(ConfigError, match=r"holds no \.tgz"):
        read_charts_dir(tmp_path)


RELEASES = [
    {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
     "metadata": {"name": "app-template", "namespace": "media"},
     "spec": {"url": "oci://ghcr.io/bjw-s-labs/helm/app-template", "ref": {"tag": "4.1.2"},
              "verify": {"provider": "cosign"}}},
    {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
     "metadata": {"name": "jetstack", "namespace": "flux-system"},
     "spec": {"url": "https://charts.jetstack.io/", "secretRef": {"name": "creds"}}},
    {"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "HelmRepository",
     "metadata": {"name": "oci-charts", "namespace": "flux-system"},
     "spec": {"type": "oci", "url": "oci://ghcr.io/home-operations/charts"}},
    {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
     "metadata": {"name": "plex", "namespace": "media"},
     "spec": {"chartRef": {"kind": "OCIRepository", "name": "app-template"}}},
    {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
     "metadata": {"name": "cert-manager", "namespace": "cert-manager"},
     "spec": {"chart": {"spec": {"chart": "cert-manager", "version": "v1.16.1",
                                 "sourceRef": {"kind": "HelmRepository", "name": "jetstack",
                                               "namespace": "flux-system"}}}}},
    {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease", "metadata": {"name": "local", "namespace": "x"},
     "spec": {"chart": {"spec": {"chart": "./charts/local", "sourceRef": {"kind": "GitRepository",
                                                                           "name": "flux-system"}}}}},
]


def test_what_each_helm_release_installs_and_from_where() -> None:
    needs = {need.release: need for need in chart_needs(RELEASES)}
    assert set(needs) == {"HelmRelease media/plex", "HelmRelease cert-manager/cert-manager"}  # git charts need none
    plex = needs["HelmRelease media/plex"]
    assert (plex.chart, plex.version, plex.source_kind) == ("app-template", "4.1.2", "OCIRepository")
    assert plex.pull_command == "helm pull oci://ghcr.io/bjw-s-labs/helm/app-template --version '4.1.2'"
    cert = needs["HelmRelease cert-manager/cert-manager"]
    assert cert.pull_command == "helm pull cert-manager --repo https://charts.jetstack.io/ --version 'v1.16.1'"


def need(version: str) -> ChartNeed:
    return ChartNeed(release="HelmRelease a/b", chart="demo", version=version, source_kind="HelmRepository",
                     source="flux-system/r", url="https://x/", where="b.yaml")


def test_an_exact_version_must_be_there_a_constraint_needs_the_chart(tmp_path: Path) -> None:
    write_chart(tmp_path)
    packages = read_charts_dir(tmp_path)
    assert need("1.2.0").satisfied_by(packages) and need("v1.2.0").satisfied_by(packages)
    assert not need("1.3.0").satisfied_by(packages)
    assert need("1.x").satisfied_by(packages) and need("*").satisfied_by(packages)
    assert not ChartNeed(**{**need("*").__dict__, "chart": "other"}).satisfied_by(packages)


def test_offline_without_the_charts_the_error_names_each_release_and_the_pull_command(tmp_path: Path) -> None:
    needs = chart_needs(RELEASES)
    error = missing_charts_error(needs, [], charts_dir=None, offline=True)
    assert error is not None
    text = str(error)
    assert "HelmRelease media/plex" in text and "app-template 4.1.2" in text and "reaches no registry" in text
    assert "helm pull oci://ghcr.io/bjw-s-labs/helm/app-template --version '4.1.2' -d CHARTS_DIR" in text
    # Online with no charts folder the cluster pulls the charts itself.
    assert missing_charts_error(needs, [], charts_dir=None, offline=False) is None


def test_sources_point_at_the_chart_server_and_lose_credentials_and_signatures() -> None:
    documents = json.loads(json.dumps(RELEASES))
    changed = serve_chart_sources(documents, host=HOST)
    oci, http, oci_repo = documents[0]["spec"], documents[1]["spec"], documents[2]["spec"]
    assert oci["url"] == f"oci://{HOST}/charts/app-template" and oci["insecure"] is True and "verify" not in oci
    assert http["url"] == f"http://{HOST}/helm/" and "secretRef" not in http
    assert oci_repo["url"] == f"oci://{HOST}/charts" and oci_repo["insecure"] is True
    assert any("HelmRepository jetstack: https://charts.jetstack.io/ served by the drill's chart server" in line
               and "secretRef dropped" in line for line in changed)
    assert any("verify dropped" in line for line in changed)


def test_a_digest_only_pin_cannot_be_served_and_says_so() -> None:
    documents: list[dict[str, Any]] = [{"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "OCIRepository",
                                        "metadata": {"name": "a"},
                  "spec": {"url": "oci://ghcr.io/x/a", "ref": {"digest": "sha256:" + "0" * 64}}}]
    with pytest.raises(ConfigError, match="pins digest"):
        serve_chart_sources(documents, host=HOST)
    documents[0]["spec"]["ref"]["tag"] = "1.0.0"
    assert any("ref.digest sha256:" in line for line in serve_chart_sources(documents, host=HOST))


def release_secret(name: str, version: int, manifest: str) -> dict[str, Any]:
    payload = json.dumps({"name": name, "version": version, "info": {"status": "deployed"}, "manifest": manifest})
    helm = base64.b64encode(gzip.compress(payload.encode()))
    return {"type": "helm.sh/release.v1", "metadata": {"name": f"sh.helm.release.v1.{name}.v{version}",
                                                     "namespace": "media", "labels": {"name": name, "owner": "helm"}},
            "data": {"release": base64.b64encode(helm).decode()}}


def test_the_latest_release_revision_and_its_objects_are_read_from_helms_secrets() -> None:
    manifest = ("---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: plex\n---\n"
                "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: plex-config\n  namespace: media\n"
                "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: elsewhere\n  namespace: other\n")
    secrets = [release_secret("plex", 1, "{}"), release_secret("plex", 2, manifest), release_secret("sonarr", 9, "")]
    latest = latest_revision(secrets, release="plex")
    assert latest is not None and latest.version == 2 and latest.status == "deployed"
    assert manifest_objects(latest.manifest, namespace="media") == [
        ("v1", "apps", "Deployment", "plex"), ("v1", "", "PersistentVolumeClaim", "plex-config")]
    assert latest_revision(secrets, release="radarr") is None
    assert decode_release(str(secrets[0]["data"]["release"]))["version"] == 1


def test_a_new_revision_after_the_restore_is_an_upgrade_the_drill_names() -> None:
    status = {"conditions": [{"type": "Ready", "reason": "UpgradeSucceeded", "message": "Helm upgrade succeeded"}]}
    assert adoption_problems(helm_release="HelmRelease media/plex", before=3, after=3, status=status) == []
    [problem] = adoption_problems(helm_release="HelmRelease media/plex", before=3, after=4, status=status)
    assert "made release revision 4 after the restore (the backup held revision 3)" in problem
    assert "UpgradeSucceeded" in problem
    [missing] = adoption_problems(helm_release="HelmRelease media/plex", before=3, after=None, status={})
    assert "no Helm release revision is in storage" in missing


# ---- the chart server binary, on this host ---------------------------------------------------------
@pytest.fixture(scope="module")
def chart_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, bytes]]:
    from restoredrill.images.chartserver import chart_server_binary

    try:
        binary = chart_server_binary()
    except Exception as error:  # no Go here: the binary cannot be built
        pytest.fail(f"the chart server could not be built: {error}")
    folder = tmp_path_factory.mktemp("charts")
    root = tmp_path_factory.mktemp("served")
    package = package_chart(write_chart(tmp_path_factory.mktemp("source")))
    (folder / "demo-1.2.0.tgz").write_bytes(package)
    layout = chart_layout_tar(read_charts_dir(folder))
    subprocess.run([str(binary), "untar", str(root)], input=layout, check=True, timeout=30)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([str(binary), str(root), f"127.0.0.1:{port}"], stdout=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{base}/healthz", timeout=1)
            break
        except OSError:
            time.sleep(0.05)
    yield base, package
    server.terminate()
    server.wait(timeout=10)


def get(url: str, method: str = "GET") -> tuple[int, Message, bytes]:
    """Status, headers (looked up case-insensitively: Go writes `Docker-Distribution-Api-Version`)
    and body."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_the_chart_server_is_a_helm_repository(chart_server: tuple[str, bytes]) -> None:
    base, package = chart_server
    status, _, body = get(f"{base}/helm/index.yaml")
    index = yaml.safe_load(body)
    [entry] = index["entries"]["demo"]
    assert status == 200 and entry["version"] == "1.2.0" and entry["urls"] == ["demo-1.2.0.tgz"]
    assert entry["digest"] == hashlib.sha256(package).hexdigest()
    assert get(f"{base}/helm/demo-1.2.0.tgz")[2] == package


def test_the_chart_server_is_an_oci_registry_as_helm_pushes_charts(chart_server: tuple[str, bytes]) -> None:
    base, package = chart_server
    status, headers, _ = get(f"{base}/v2/")
    assert status == 200 and headers["Docker-Distribution-API-Version"] == "registry/2.0"
    assert json.loads(get(f"{base}/v2/charts/demo/tags/list")[2]) == {"name": "charts/demo", "tags": ["1.2.0"]}
    status, headers, body = get(f"{base}/v2/charts/demo/manifests/1.2.0")
    assert status == 200 and headers["Content-Type"] == "application/vnd.oci.image.manifest.v1+json"
    assert headers["Docker-Content-Digest"] == "sha256:" + hashlib.sha256(body).hexdigest()
    manifest = json.loads(body)
    assert manifest["config"]["mediaType"] == "application/vnd.cncf.helm.config.v1+json"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
    assert get(f"{base}/v2/charts/demo/blobs/{layer['digest']}")[2] == package
    assert get(f"{base}/v2/charts/demo/manifests/{headers['Docker-Content-Digest']}")[2] == body
    head = get(f"{base}/v2/charts/demo/manifests/1.2.0", method="HEAD")
    assert head[0] == 200 and head[2] == b"" and head[1]["Docker-Content-Digest"] == headers["Docker-Content-Digest"]


def test_the_chart_server_is_read_only_and_stays_in_its_folder(chart_server: tuple[str, bytes]) -> None:
    base, _ = chart_server
    assert get(f"{base}/v2/charts/demo/manifests/1.2.0", method="PUT")[0] == 405
    assert get(f"{base}/v2/charts/missing/manifests/1.0.0")[0] == 404
    assert get(f"{base}/v2/charts/demo/manifests/..%2f..%2fhttp%2findex.yaml")[0] == 404


# ---- HelmRelease dependsOn stand-ins ---------------------------------------------------------------
def _release(name: str, namespace: str, *depends: dict[str, str]) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": namespace}, "spec": {"dependsOn": list(depends)}}


def test_release_dependencies_are_those_the_app_does_not_deploy() -> None:
    from restoredrill.drill.helmreleases import release_dependencies

    releases = [_release("immich", "media", {"name": "immich-redis"}, {"name": "rook-ceph-cluster",
                                                                       "namespace": "rook-ceph"}),
                _release("immich-redis", "media"),
                _release("immich-ml", "media", {"name": "rook-ceph-cluster", "namespace": "rook-ceph"},
                         {"name": "intel-device-plugin"})]
    assert release_dependencies(releases) == [("rook-ceph", "rook-ceph-cluster", "media/immich"),
                                              ("media", "intel-device-plugin", "media/immich-ml")]


def test_a_dependency_stand_in_is_ready_only_with_the_status_helm_controller_checks() -> None:
    from restoredrill.drill.helmreleases import dependency_ready_status, dependency_standin, ready_as_dependency

    standin = dependency_standin(namespace="rook-ceph", name="rook-ceph-cluster", labels={"x": "y"})
    assert standin["spec"]["suspend"] is True and "chartRef" in standin["spec"]
    created = {**standin, "metadata": {**standin["metadata"], "generation": 2}}
    assert not ready_as_dependency(created)
    patched = {**created, **dependency_ready_status(created, now="2026-12-02T00:00:00Z")}
    assert ready_as_dependency(patched)
    stale = {**patched, "metadata": {**patched["metadata"], "generation": 3}}
    assert not ready_as_dependency(stale), "helm-controller also wants the generation observed"
