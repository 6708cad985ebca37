"""The kind node image when the user chose none: the decision (a pure function of what Docker said),
then the same decision on this machine's real Docker engine, against registries that cannot be
reached and stand-in registries that answer "no".

The messages in the tables are the Docker engine's own words: those marked "here" were printed by
this machine's dockerd 20.10 (no registry reachable; stand-ins on 127.0.0.1), the others are the
forms Go's net/http and the distribution client give for the same failures elsewhere.
"""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures import cluster as cluster_fixtures
from restoredrill.cluster import kind
from restoredrill.cluster.kind import DockerAnswer, choose_node_image
from restoredrill.errors import RestoreDrillError
from tests.conftest import MakeProviderOptions

WANTED = kind.KIND_DEFAULT_NODE_IMAGE

UNREACHABLE = [
    # here: the air-gapped machine's answer for kindest/node
    'Error response from daemon: Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io '
    "on 10.255.255.53:53: no such host",
    # here: nothing listens
    'Error response from daemon: Get "http://127.0.0.1:5999/v2/": dial tcp 127.0.0.1:5999: connect: connection refused',
    # here: a listener that never answers (after 25 s)
    'Error response from daemon: Get "http://127.0.0.1:5998/v2/": net/http: request canceled '
    "(Client.Timeout exceeded while awaiting headers)",
    'Error response from daemon: Get "https://registry-1.docker.io/v2/": dial tcp 54.236.113.205:443: i/o timeout',
    'Error response from daemon: Get "https://registry-1.docker.io/v2/": net/http: TLS handshake timeout',
    'Error response from daemon: Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: '
    "Temporary failure in name resolution",
    'Error response from daemon: Get "https://registry-1.docker.io/v2/": proxyconnect tcp: dial tcp 10.0.0.1:3128: '
    "connect: connection refused",
    'Error response from daemon: Get "https://registry-1.docker.io/v2/": dial tcp 54.236.113.205:443: connect: '
    "network is unreachable",
]

REGISTRY_SAID_NO = [
    "Error response from daemon: manifest unknown",  # here: stand-in registry, 404 MANIFEST_UNKNOWN
    "Error response from daemon: unauthorized",  # here: stand-in registry, 401
    "Error response from daemon: toomanyrequests: rate limit",  # here: stand-in registry, 429
    "Error response from daemon: manifest for kindest/node:v9.9.9 not found: manifest unknown: manifest unknown",
    "Error response from daemon: pull access denied for kindest/nod, repository does not exist or may require "
    "'docker login': denied: requested access to the resource is denied",
    'Error response from daemon: Head "https://registry-1.docker.io/v2/kindest/node/manifests/v1.34.0": '
    "unauthorized: incorrect username or password",
    # here: something on the registry's port speaks TLS with a certificate Docker cannot accept
    'Error response from daemon: Get "https://10.255.255.1:5000/v2/": x509: cannot validate certificate for '
    "10.255.255.1 because it doesn't contain any IP SANs",
    "Error response from daemon: received unexpected HTTP status: 503 Service Unavailable",
    # A failure nobody taught it: never guessed to be "no registry".
    "Error response from daemon: something nobody has seen yet",
]


def pull_failed(message: str) -> DockerAnswer:
    return DockerAnswer(1, message + "\n", seconds=0.1)


def test_an_image_docker_already_has_is_used_without_pulling() -> None:
    choice = choose_node_image(WANTED, present=True, pull=None)

    assert choice.image == WANTED and not choice.local and choice.note is None
    assert "already in Docker" in choice.line


def test_an_image_that_pulls_is_used() -> None:
    choice = choose_node_image(WANTED, present=False, pull=DockerAnswer(0, "Status: Downloaded newer image\n",
                                                                        answered=True, seconds=80))

    assert choice.image == WANTED and choice.note is None
    assert f"pulled {WANTED} in 80s" in choice.line


def test_an_absent_image_needs_the_pull_result() -> None:
    with pytest.raises(ValueError, match="needs the result of pulling it"):
        choose_node_image(WANTED, present=False, pull=None)


@pytest.mark.parametrize("message", UNREACHABLE)
def test_no_registry_assembles_the_node_image_here_and_says_why(message: str) -> None:
    choice = choose_node_image(WANTED, present=False, pull=pull_failed(message))

    assert choice.local and choice.image == kind.LOCAL_NODE_IMAGE
    # One line saying what it does and why, with the registry's own words; the same in the report.
    assert "assembling the node image here, as --kind-image local does" in choice.line
    assert message in choice.line
    assert choice.note is not None and message in choice.note and WANTED in choice.note


@pytest.mark.parametrize("message", REGISTRY_SAID_NO)
def test_a_registry_that_answered_no_is_an_error_with_its_words(message: str) -> None:
    with pytest.raises(RestoreDrillError) as error:
        choose_node_image(WANTED, present=False, pull=pull_failed(message))

    assert message in str(error.value)
    assert "--kind-image local" in str(error.value)  # the way out, for a user who wants it


def test_a_docker_engine_that_does_not_answer_is_an_error_about_docker() -> None:
    message = "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?"
    with pytest.raises(RestoreDrillError, match="docker info"):
        choose_node_image(WANTED, present=False, pull=pull_failed(message))
    with pytest.raises(RestoreDrillError, match="could not say whether it holds"):
        kind.image_present(WANTED, DockerAnswer(1, message))


def test_silence_counts_as_no_registry_but_a_stalled_download_does_not() -> None:
    silent = choose_node_image(WANTED, present=False, pull=DockerAnswer(None, "", answered=False, seconds=45))
    assert silent.local and "no answer within 45s" in silent.line

    with pytest.raises(RestoreDrillError, match="began but did not finish in 300s"):
        choose_node_image(WANTED, present=False,
                          pull=DockerAnswer(None, "abc123: Downloading\n", answered=True, seconds=300))


def test_the_image_kind_would_use_is_the_configs_else_kinds_default() -> None:
    import yaml

    shipped = yaml.safe_load(kind.DEFAULT_CONFIG.read_text())
    assert kind.config_node_image(shipped) == shipped["nodes"][0]["image"]
    assert kind.config_node_image({"kind": "Cluster", "nodes": [{"role": "control-plane"}]}) == WANTED
    assert kind.config_node_image({}) == WANTED


@pytest.mark.skipif(shutil.which("go") is None, reason="reads kind's source from the Go module cache: needs Go")
def test_kinds_default_node_image_is_the_one_kind_v0_30_0_ships() -> None:
    from restoredrill.cluster import kindnode

    source = (kindnode.kind_module_dir() / "pkg/apis/config/defaults/image.go").read_text()
    assert f'const Image = "{WANTED}"' in source


# ---- make_provider: who decides ----
def kind_options(**values: Any) -> MakeProviderOptions:
    return MakeProviderOptions(cluster_provider="kind", **values)


def test_with_no_image_chosen_the_provider_chooses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cluster_fixtures.KIND_IMAGE_ENV, raising=False)
    provider = cluster_fixtures.make_provider(kind_options())  # type: ignore[arg-type]

    assert isinstance(provider, kind.KindCluster)
    assert provider.choose_node_image and provider.node_image is None


@pytest.mark.parametrize("how", ["flag", "environment"])
@pytest.mark.parametrize("image", ["local", "kindest/node:v1.34.0"])
def test_a_chosen_image_is_strict(how: str, image: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cluster_fixtures.KIND_IMAGE_ENV, raising=False)
    if how == "environment":
        monkeypatch.setenv(cluster_fixtures.KIND_IMAGE_ENV, image)
    options = kind_options(kind_image=image) if how == "flag" else kind_options()
    provider = cluster_fixtures.make_provider(options)  # type: ignore[arg-type]

    assert isinstance(provider, kind.KindCluster)
    assert not provider.choose_node_image and provider.node_image == image


# ---- the same decision on this machine's Docker engine ----
def _docker_answers() -> bool:
    docker = shutil.which("docker")
    return docker is not None and subprocess.run([docker, "info"], capture_output=True, timeout=60).returncode == 0


needs_docker = pytest.mark.skipif(not _docker_answers(), reason="needs a running Docker engine (`docker info`)")


class StandInRegistry(http.server.BaseHTTPRequestHandler):
    """A registry that answers, and says no: 401 under /v2/private/, 404 MANIFEST_UNKNOWN elsewhere."""

    def do_GET(self) -> None:
        if self.path == "/v2/":
            code, body = 200, {}
        elif self.path.startswith("/v2/private/"):
            code, body = 401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        else:
            code, body = 404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_HEAD = do_GET

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def registry() -> Iterator[str]:
    """A stand-in registry on 127.0.0.1 (Docker speaks plain http to loopback registries)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StandInRegistry)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    yield listener.getsockname()[1]
    listener.close()


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def real_choice(image: str, *, answer_timeout: float = 30) -> kind.NodeImageChoice:
    docker = shutil.which("docker")
    assert docker is not None
    present = kind.image_present(image, kind.docker_inspect_image(docker, image, timeout=60))
    pull = None if present else kind.docker_pull(docker, image, answer_timeout=answer_timeout, pull_timeout=120)
    return choose_node_image(image, present=present, pull=pull)


@needs_docker
def test_real_docker_a_name_that_does_not_resolve_means_no_registry() -> None:
    # `.invalid` never resolves (RFC 6761), with or without a registry on the network.
    choice = real_choice("restoredrill.invalid/kind-node:v1")

    assert choice.local and "no such host" in choice.line


@needs_docker
def test_real_docker_connection_refused_means_no_registry() -> None:
    choice = real_choice(f"127.0.0.1:{_closed_port()}/kind-node:v1")

    assert choice.local and "connection refused" in choice.line


@needs_docker
def test_real_docker_a_registry_that_never_answers_means_no_registry(silent_port: int) -> None:
    choice = real_choice(f"127.0.0.1:{silent_port}/kind-node:v1", answer_timeout=3)

    assert choice.local and "no answer within 3s" in choice.line


@needs_docker
@pytest.mark.parametrize("path,said", [("kind/node:v9", "manifest unknown"), ("private/node:v1", "unauthorized")])
def test_real_docker_a_registry_that_says_no_fails_with_its_words(registry: str, path: str, said: str) -> None:
    with pytest.raises(RestoreDrillError, match=said) as error:
        real_choice(f"{registry}/{path}")

    assert "assembl" not in str(error.value).split("fix:")[0]


@needs_docker
def test_real_docker_an_engine_that_is_not_there_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")
    with pytest.raises(RestoreDrillError, match="Docker could not say"):
        real_choice("restoredrill.invalid/kind-node:v1")


@needs_docker
def test_real_docker_the_provider_says_it_assembles_here_and_notes_it(tmp_path: Path) -> None:
    """The provider's own choice, up to the point where it would build: the shipped config's node
    image made unreachable (a name that never resolves), nothing chosen."""
    config = tmp_path / "kind.yaml"
    config.write_text("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\nnodes:\n  - role: control-plane\n"
                      "    image: restoredrill.invalid/kind-node:v1.34.0\n")
    lines: list[str] = []
    provider = kind.KindCluster(work_dir=tmp_path / "work", run_id="run1", config=config, choose_node_image=True,
                                out=lines.append)

    choice = provider.resolve_node_image()

    assert choice.local
    assert any("restoredrill.invalid/kind-node:v1.34.0 is not in Docker; trying to pull it" in line for line in lines)
    assert "no such host" in choice.line and choice.note is not None and "no such host" in choice.note
