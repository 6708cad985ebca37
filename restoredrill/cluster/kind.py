"""The `kind` provider: a cluster in Docker containers, for users who have Docker.

Built on pytest-kind's `KindCluster`, with two changes that matter here: `kind` and `kubectl` are
taken from PATH (pytest-kind downloads them from the internet when its paths do not exist; we
never download, and say how to get them instead), and every command runs with a timeout.

A fresh kind cluster's default StorageClass (`standard`, rancher local-path-provisioner) makes
hostPath PVs, which Velero's fs-backup silently skips: a backup would "complete" with no volume
data. So `up` installs `kind-config/storageclass-local.yaml`, whose PVs are `local` volumes, makes
it the only default, and (unless told not to) provisions one probe volume to prove its PV really
has `spec.local`.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import secrets
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock
from kubernetes import client
from pytest_kind.cluster import KindCluster as PytestKindCluster

from restoredrill.cluster import ClusterHandle, ClusterProvider
from restoredrill.cluster.namespaces import (
    NOT_DISTRIBUTED,
    create_owned_namespace,
    delete_owned_namespace,
    worker_scoped_name,
)
from restoredrill.errors import CommandError, ConfigError, MissingToolError, RestoreDrillError
from restoredrill.kube import KUBECTL_REMEDY, find_kubectl, load_api_client, run_kubectl
from restoredrill.pins import cache_dir
from restoredrill.process import run
from restoredrill.timeouts import active
from restoredrill.waits import wait_until

log = logging.getLogger(__name__)

# The kind release the configs and the nightly workflow are written and pinned for.
KIND_VERSION = "v0.30.0"
# `restoredrill/kind-config` links to the checkout's kind-config/, so the configs ship inside the
# package (package-data) and are found the same way from a checkout and from an installed wheel.
KIND_CONFIG_DIR = Path(__file__).resolve().parents[1] / "kind-config"
DEFAULT_CONFIG = KIND_CONFIG_DIR / "default.yaml"
LOCAL_STORAGE_CLASS_MANIFEST = KIND_CONFIG_DIR / "storageclass-local.yaml"
LOCAL_STORAGE_CLASS = "local-path"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
# local-path-provisioner reads the PV type from this StorageClass *annotation* (provisioner.go,
# `opts.StorageClass.GetAnnotations()["defaultVolumeType"]`), not from a parameter.
VOLUME_TYPE_ANNOTATION = "defaultVolumeType"
# kind names the node container (and so its hostname, at most 63 characters) "<name>-control-plane".
MAX_CLUSTER_NAME_LENGTH = 63 - len("-control-plane")
# Used only by the storage probe pod. kind v0.30's node images hold the sandbox image its containerd
# config names (images/base/files/etc/containerd/config.toml: pause:3.10); kubeadm's own pause tag
# (3.10.1) is filtered out of the node build (pkg/build/nodeimage/buildcontext.go), so it is not there.
PROBE_IMAGE = "registry.k8s.io/pause:3.10"
# `--kind-image local`: assemble the node image here (restoredrill/cluster/kindnode.py), for machines
# with no registry; every platform image is then built here and loaded too.
LOCAL_NODE_IMAGE = "local"
# The ConfigMap `up` leaves in a cluster it created, so that a kept cluster is known as ours later.
OWNER_CONFIGMAP = "restoredrill-owner"
OWNER_NAMESPACE = "kube-system"

KIND_REMEDY = (
    f"install kind ({KIND_VERSION}) and put it on PATH, or build it with `restoredrill toolchain --only kind` "
    f"(or `go install sigs.k8s.io/kind@{KIND_VERSION}`); it also needs a running Docker (or Podman) engine. "
    "restoredrill never downloads a kind release; with Go installed it builds the pinned one from the Go "
    "module proxy"
)


def find_kind(explicit: str | None = None) -> str:
    """kind: `--kind-bin`, else the first on PATH, else the one `restoredrill toolchain --only kind` built."""
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise MissingToolError("kind", remedy=f"--kind-bin {explicit} is not an executable file; " + KIND_REMEDY)
        return explicit
    found = shutil.which("kind")
    if found is not None:
        return found
    from restoredrill.toolchain.gobuild import GoToolchain

    toolchain = GoToolchain()
    try:
        return str(toolchain.binary("kind"))
    except MissingToolError:
        pass
    if shutil.which("go") is None:
        raise MissingToolError("kind", remedy=KIND_REMEDY)
    # The pinned kind builds from the Go module proxy in well under a minute.
    toolchain.ensure(["kind"])
    return str(toolchain.binary("kind"))


def pinned_kubectl() -> str | None:
    """The kubectl of the pinned Kubernetes build, when `restoredrill toolchain` made one: the same
    minor as the cluster (a kubectl on PATH may be any version, or a dispatcher that fetches one)."""
    if os.environ.get("RESTOREDRILL_KUBECTL"):
        return None
    from restoredrill.toolchain.gobuild import GoToolchain

    try:
        return str(GoToolchain().binary("kubectl"))
    except MissingToolError:
        return None


def kind_cluster_name(base: str, worker_id: str) -> str:
    """The cluster name for one xdist worker: `restoredrill-gw0` (`restoredrill` when not distributed)."""
    return worker_scoped_name(base, worker_id, max_length=MAX_CLUSTER_NAME_LENGTH)


@dataclass(frozen=True)
class KindCommands:
    """Every kind command line the provider runs, built in one place and tested without Docker."""

    kind: str
    cluster_name: str
    kubeconfig: Path

    def get_clusters(self) -> list[str]:
        return [self.kind, "get", "clusters"]

    def create_cluster(self, *, config: Path, wait_seconds: float, image: str | None = None) -> list[str]:
        # --retain keeps a failed node so its logs can be exported before we delete it.
        command = [
            self.kind,
            "create",
            "cluster",
            f"--name={self.cluster_name}",
            f"--kubeconfig={self.kubeconfig}",
            f"--config={config}",
            f"--wait={int(wait_seconds)}s",
            "--retain",
        ]
        if image:
            command.append(f"--image={image}")
        return command

    def export_kubeconfig(self) -> list[str]:
        return [
            self.kind,
            "export",
            "kubeconfig",
            f"--name={self.cluster_name}",
            f"--kubeconfig={self.kubeconfig}",
        ]

    def load_image_archive(self, archive: Path) -> list[str]:
        return [self.kind, "load", "image-archive", str(archive), f"--name={self.cluster_name}"]

    def load_docker_image(self, image: str) -> list[str]:
        return [self.kind, "load", "docker-image", image, f"--name={self.cluster_name}"]

    def export_logs(self, destination: Path) -> list[str]:
        return [self.kind, "export", "logs", str(destination), f"--name={self.cluster_name}"]

    def delete_cluster(self) -> list[str]:
        return [
            self.kind,
            "delete",
            "cluster",
            f"--name={self.cluster_name}",
            f"--kubeconfig={self.kubeconfig}",
        ]


def run_command(command: Sequence[str], *, timeout: float, remedy: str | None = None) -> str:
    """Run `command`, return stdout; `CommandError` with its output on failure or timeout."""
    return run(command, timeout=timeout, remedy=remedy)


class PathToolsKindCluster(PytestKindCluster):  # type: ignore[misc]
    """pytest-kind's `KindCluster`, with kind/kubectl from PATH and a timeout on every command.

    It keeps pytest-kind's interface (`create`, `delete`, `kubectl`, `load_docker_image`,
    `port_forward`, `kubeconfig_path`) so code written for pytest-kind's `kind_cluster` works on it.
    `__init__` does not call pytest-kind's, which would create `./.pytest-kind/<name>` in the
    working directory and aim `kind_path`/`kubectl_path` at files it then downloads.
    """

    def __init__(
        self,
        *,
        name: str,
        kubeconfig: Path,
        kind_path: Path,
        kubectl_path: Path,
        image: str | None = None,
        timeouts: Mapping[str, float] | None = None,
    ) -> None:
        self.name = name
        self.image = image
        self.path = kubeconfig.parent
        self.kubeconfig_path = kubeconfig
        self.kind_path = kind_path
        self.kubectl_path = kubectl_path
        self.platform = platform.system().lower()
        self.timeouts = timeouts if timeouts is not None else active()
        self.commands = KindCommands(kind=str(kind_path), cluster_name=name, kubeconfig=kubeconfig)

    def ensure_kind(self) -> None:
        if not os.access(self.kind_path, os.X_OK):
            raise MissingToolError("kind", remedy=f"{self.kind_path} is not executable; " + KIND_REMEDY)

    def ensure_kubectl(self) -> None:
        if not os.access(self.kubectl_path, os.X_OK):
            raise MissingToolError("kubectl", remedy=f"{self.kubectl_path} is not executable; " + KUBECTL_REMEDY)

    def exists(self) -> bool:
        self.ensure_kind()
        output = run_command(self.commands.get_clusters(), timeout=self.timeouts["command"], remedy=_DOCKER_REMEDY)
        return self.name in output.split()

    def create(self, config_file: str | Path | None = None) -> bool:
        """Create the cluster (`kind create cluster`), or export the kubeconfig of an existing one.

        Returns whether it created the cluster (pytest-kind's returns nothing).
        """
        self.ensure_kind()
        self.path.mkdir(parents=True, exist_ok=True)
        if self.exists():
            self.export_kubeconfig()
            return False
        if config_file is None:
            raise ConfigError("a kind cluster config is required", remedy=f"pass one of {KIND_CONFIG_DIR}/*.yaml")
        log.info("creating kind cluster %s from %s", self.name, config_file)
        run_command(
            self.commands.create_cluster(
                config=Path(config_file), wait_seconds=self.timeouts["node_ready"], image=self.image
            ),
            # kind pulls the node image on first use, then boots and waits for the node itself.
            timeout=self.timeouts["cluster_up"] + self.timeouts["node_ready"],
            remedy=_DOCKER_REMEDY,
        )
        return True

    def export_kubeconfig(self) -> None:
        self.ensure_kind()
        self.path.mkdir(parents=True, exist_ok=True)
        run_command(self.commands.export_kubeconfig(), timeout=self.timeouts["command"])

    def load_docker_image(self, docker_image: str) -> None:
        self.ensure_kind()
        run_command(self.commands.load_docker_image(docker_image), timeout=_image_load_timeout(self.timeouts))

    def load_image_archive(self, archive: Path) -> None:
        self.ensure_kind()
        run_command(self.commands.load_image_archive(archive), timeout=_image_load_timeout(self.timeouts))

    def export_logs(self, destination: Path) -> None:
        self.ensure_kind()
        destination.mkdir(parents=True, exist_ok=True)
        run_command(self.commands.export_logs(destination), timeout=self.timeouts["command"])

    def kubectl(self, *args: str, timeout: float | None = None, input: str | None = None) -> str:
        self.ensure_kubectl()
        return run_kubectl(
            args,
            kubeconfig=self.kubeconfig_path,
            context=None,
            timeout=timeout or self.timeouts["command"],
            input=input,
            kubectl=str(self.kubectl_path),
        )

    def delete(self) -> None:
        self.ensure_kind()
        log.info("deleting kind cluster %s", self.name)
        run_command(self.commands.delete_cluster(), timeout=self.timeouts["command"])


_DOCKER_REMEDY = (
    "kind needs a running Docker (or Podman, with KIND_EXPERIMENTAL_PROVIDER=podman) engine: "
    "check `docker info`; for a half-created cluster see `kind get clusters`; `make test KIND=0` leaves the "
    "kind tests out"
)


def _image_load_timeout(timeouts: Mapping[str, float]) -> float:
    return timeouts["image_load"]


def default_storage_classes(storage_classes: Mapping[str, Any]) -> list[str]:
    """Names of the StorageClasses marked default in a `kubectl get storageclass -o json` list."""
    return sorted(
        item["metadata"]["name"]
        for item in storage_classes.get("items", [])
        if (item["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"
    )


def check_local_storage_class(storage_class: Mapping[str, Any]) -> None:
    """Raise unless `storage_class` makes `local` PVs through local-path-provisioner."""
    name = storage_class.get("metadata", {}).get("name")
    annotations = storage_class.get("metadata", {}).get("annotations") or {}
    problems = []
    if storage_class.get("provisioner") != "rancher.io/local-path":
        problems.append(f"provisioner is {storage_class.get('provisioner')!r}, not 'rancher.io/local-path'")
    if annotations.get(VOLUME_TYPE_ANNOTATION) != "local":
        problems.append(
            f"annotation {VOLUME_TYPE_ANNOTATION} is {annotations.get(VOLUME_TYPE_ANNOTATION)!r}, "
            "not 'local' (without it local-path-provisioner makes hostPath PVs)"
        )
    if problems:
        raise RestoreDrillError(
            f"StorageClass {name!r} would not give Velero-backable volumes: " + "; ".join(problems),
            remedy=f"apply {LOCAL_STORAGE_CLASS_MANIFEST} unchanged",
        )


def offline_config(document: dict[str, Any], reference: str) -> dict[str, Any]:
    """A kind config for the locally assembled node image `reference`: every node on it, kind's
    default CNI off (the image brings its own bridge network), kubeadm told the etcd and CoreDNS
    tags built here. Everything else of `document` is kept."""
    from restoredrill.cluster import kindnode

    derived: dict[str, Any] = json.loads(json.dumps(document))
    if len(derived.get("nodes") or [{}]) != 1:
        raise ConfigError(f"the kind config has {len(derived['nodes'])} nodes; the locally assembled node image "
                          "brings a single-node bridge network (kindnetd cannot be had offline)",
                          remedy="use a config with one control-plane node, or a node image from a registry")
    for node in derived.setdefault("nodes", [{"role": "control-plane"}]):
        node["image"] = reference
    networking = derived.setdefault("networking", {})
    networking["disableDefaultCNI"] = True
    networking["podSubnet"] = kindnode.POD_SUBNET
    derived["kubeadmConfigPatches"] = [*(derived.get("kubeadmConfigPatches") or []), *kindnode.kubeadm_patches()]
    return derived


# ---- the node image when none was chosen ----
# kind v0.30.0's own default (pkg/apis/config/defaults/image.go): what `kind create cluster` runs
# when neither --image nor the config names a node image.
KIND_DEFAULT_NODE_IMAGE = (
    "kindest/node:v1.34.0@sha256:7416a61b42b1662ca6ca89f02028ac133a309a2a30ba309614e8ec94d976dc5a"
)
# How long a `docker pull` may stay silent before the registry counts as unreachable. dockerd's own
# limits are shorter (a registry that takes the connection and never answers: "Client.Timeout
# exceeded while awaiting headers" after 25 s here; a dial that hangs: "i/o timeout" after 30 s).
REGISTRY_ANSWER_TIMEOUT_S = 45.0
NODE_IMAGE_SOURCES = "--kind-image, ini kind_node_image or RESTOREDRILL_KIND_IMAGE"
# The Docker engine's words for "the engine itself does not answer" (never a registry's fault).
DOCKER_DOWN_SIGNS = ("cannot connect to the docker daemon", "is the docker daemon running", "docker.sock")
# The registry answered, and said no: not found, no access, rate limits, server errors, bad TLS.
REGISTRY_ANSWER_SIGNS = (
    "manifest unknown", "not found", "unauthorized", "denied", "authentication required", "toomanyrequests",
    "received unexpected http status", "x509:", "certificate", "invalid reference format", "no matching manifest",
)
# The registry could not be reached at all, as dockerd reports it (Go's net and net/http errors).
UNREACHABLE_SIGNS = (
    "no such host",  # DNS: the name does not resolve (an air-gapped machine's usual answer)
    "server misbehaving", "temporary failure in name resolution",  # DNS without a working server
    "connection refused", "network is unreachable", "no route to host", "connection reset by peer",
    "i/o timeout", "tls handshake timeout", "client.timeout exceeded", "request canceled while waiting for connection",
    "context deadline exceeded", "proxyconnect tcp",
)


@dataclass(frozen=True)
class DockerAnswer:
    """What one probing `docker` command said: its exit status (None: stopped after a time limit),
    its output (stdout and stderr together) and, for a pull, whether the registry had begun to answer."""

    returncode: int | None
    output: str = ""
    answered: bool = False
    seconds: float = 0.0

    def message(self) -> str:
        """The engine's last words (its error line), for people."""
        lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        return lines[-1] if lines else "(no output)"


@dataclass(frozen=True)
class NodeImageChoice:
    """The node image a session with none chosen runs: `LOCAL_NODE_IMAGE` (assembled here) or the
    reference kind would use; the progress line that says so and why; the stand-in note, if any."""

    image: str
    line: str
    note: str | None = None

    @property
    def local(self) -> bool:
        return self.image == LOCAL_NODE_IMAGE


def image_present(wanted: str, inspect: DockerAnswer) -> bool:
    """Whether `docker inspect --type=image` found the image; an engine that does not answer is an error."""
    if inspect.returncode == 0:
        return True
    text = inspect.output.lower()
    if "no such image" in text or "no such object" in text:
        return False
    raise RestoreDrillError(f"Docker could not say whether it holds the kind node image {wanted}: "
                            f"{inspect.message()}", remedy=_DOCKER_REMEDY)


def choose_node_image(wanted: str, *, present: bool, pull: DockerAnswer | None) -> NodeImageChoice:
    """The node image when none was chosen: `wanted` (the kind config's, else kind's default) when
    Docker has it or a pull of it succeeds; assembled here when Docker cannot reach its registry at
    all (DNS failure, connection refused, timeout: an air-gapped machine); any other failed pull (the
    registry answered: no such image, no access, rate limited, bad TLS) is an error naming it."""
    if present:
        return NodeImageChoice(wanted, f"[kind] no node image chosen ({NODE_IMAGE_SOURCES}): using {wanted}, "
                               "already in Docker")
    if pull is None:
        raise ValueError(f"{wanted} is not in Docker: the choice needs the result of pulling it")
    if pull.returncode == 0:
        return NodeImageChoice(wanted, f"[kind] no node image chosen ({NODE_IMAGE_SOURCES}): pulled {wanted} "
                               f"in {pull.seconds:.0f}s")
    local_remedy = ("pass --kind-image local (ini kind_node_image = local, or RESTOREDRILL_KIND_IMAGE=local) to "
                    "assemble a node image here from the pinned builds, or --kind-image IMAGE for one you can pull")
    if pull.returncode is None:
        if pull.answered:
            raise RestoreDrillError(f"the pull of kind's node image {wanted} began but did not finish in "
                                    f"{pull.seconds:.0f}s; last seen: {pull.message()}", remedy=local_remedy)
        reason = f"no answer within {pull.seconds:.0f}s"
    else:
        text = pull.output.lower()
        if any(sign in text for sign in DOCKER_DOWN_SIGNS):
            raise RestoreDrillError(f"Docker could not pull kind's node image {wanted}: {pull.message()}",
                                    remedy=_DOCKER_REMEDY)
        if any(sign in text for sign in REGISTRY_ANSWER_SIGNS) or not any(sign in text for sign in UNREACHABLE_SIGNS):
            raise RestoreDrillError(f"Docker could not pull kind's node image {wanted}: {pull.message()}",
                                    remedy=local_remedy)
        reason = pull.message()
    return NodeImageChoice(
        LOCAL_NODE_IMAGE,
        f"[kind] no node image chosen ({NODE_IMAGE_SOURCES}) and {wanted} is not in Docker, whose registry it "
        f"cannot reach ({reason}): assembling the node image here, as --kind-image local does",
        note=f"kind node image assembled here (as --kind-image local): none was chosen, and Docker cannot reach "
        f"the registry of {wanted} ({reason})",
    )


def config_node_image(document: Mapping[str, Any]) -> str:
    """The node image a kind config makes kind use: its first node's `image`, else kind's default."""
    for node in document.get("nodes") or []:
        if node.get("image"):
            return str(node["image"])
    return KIND_DEFAULT_NODE_IMAGE


def docker_inspect_image(docker: str, image: str, *, timeout: float) -> DockerAnswer:
    """`docker inspect --type=image IMAGE`, as kind itself looks before it pulls."""
    started = time.monotonic()
    try:
        done = subprocess.run([docker, "inspect", "--type=image", image], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return DockerAnswer(None, "docker inspect did not answer", seconds=time.monotonic() - started)
    return DockerAnswer(done.returncode, done.stdout + done.stderr if done.returncode else "",
                        seconds=time.monotonic() - started)


def docker_pull(docker: str, image: str, *, answer_timeout: float, pull_timeout: float) -> DockerAnswer:
    """`docker pull IMAGE`, stopped when it stays silent for `answer_timeout` seconds (no registry
    answered) or runs longer than `pull_timeout`; whatever it printed is kept."""
    started = time.monotonic()
    process = subprocess.Popen([docker, "pull", image], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, errors="replace")
    lines: list[str] = []
    answered = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line)
            # "Error response from daemon" is no sign of a registry; a pull's progress is.
            if not line.startswith(("Error", "Using default tag")):
                answered.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = started + answer_timeout
    returncode: int | None = None
    while True:
        try:
            returncode = process.wait(timeout=0.2)
            break
        except subprocess.TimeoutExpired:
            now = time.monotonic()
            if answered.is_set():
                deadline = started + pull_timeout
            if now >= deadline:
                process.kill()
                process.wait()
                break
    reader.join(timeout=5)
    return DockerAnswer(returncode, "".join(lines), answered=answered.is_set(), seconds=time.monotonic() - started)


def nodes_ready(nodes: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether every node in a `kubectl get nodes -o json` list is Ready, and what was seen."""
    seen = []
    all_ready = bool(nodes.get("items"))
    for node in nodes.get("items", []):
        conditions = {c["type"]: c for c in node.get("status", {}).get("conditions", [])}
        ready = conditions.get("Ready", {})
        is_ready = ready.get("status") == "True"
        all_ready = all_ready and is_ready
        status = f"Ready={ready.get('status', 'unknown')} {ready.get('reason', '')}".strip()
        seen.append(f"{node['metadata']['name']} {status}")
    return all_ready, "; ".join(seen) or "no nodes registered yet"


def pv_volume_type(pv: client.V1PersistentVolume) -> str:
    """`local`, `hostPath`, `csi`, ...: which volume source a PV has (what Velero's fs-backup sees)."""
    spec = pv.spec
    for attribute, name in (("local", "local"), ("host_path", "hostPath"), ("csi", "csi"), ("nfs", "nfs")):
        if getattr(spec, attribute, None) is not None:
            return name
    return "other"


class KindCluster(ClusterProvider):
    """One kind cluster per xdist worker; deleted at `down` only if this provider created it."""

    name = "kind"

    def __init__(
        self,
        *,
        work_dir: Path,
        run_id: str,
        base_name: str = "restoredrill",
        worker_id: str = NOT_DISTRIBUTED,
        config: Path = DEFAULT_CONFIG,
        storage_class_manifest: Path = LOCAL_STORAGE_CLASS_MANIFEST,
        node_image: str | None = None,
        choose_node_image: bool = False,
        kind_bin: str | None = None,
        kubectl_bin: str | None = None,
        keep: bool = False,
        verify_storage: bool = True,
        export_logs_on_down: bool = True,
        timeouts: Mapping[str, float] | None = None,
        out: Callable[[str], None] | None = None,
        docker: str | None = None,
    ) -> None:
        self.cluster_name = kind_cluster_name(base_name, worker_id)
        self.run_id = run_id
        self.work_dir = work_dir / self.cluster_name
        self.kubeconfig = self.work_dir / "kubeconfig"
        self.log_dir = self.work_dir / "logs"
        self.config = config
        self.storage_class_manifest = storage_class_manifest
        self.node_image = node_image
        # No node image chosen by the user: `up` picks one (`choose_node_image`) and says which and why.
        # Without it, no image means the kind config's, with no look at Docker first.
        self.choose_node_image = choose_node_image and node_image is None
        self.choice: NodeImageChoice | None = None
        self.kind_bin = kind_bin
        self.kubectl_bin = kubectl_bin
        self.docker = docker
        # Offline: the node image is assembled here and no image can be pulled.
        self.offline = node_image == LOCAL_NODE_IMAGE
        self.notes: list[str] = []
        self.keep = keep
        self.verify_storage = verify_storage
        self.export_logs_on_down = export_logs_on_down
        self.timeouts = timeouts if timeouts is not None else active()
        self.out = out
        self._cluster: PathToolsKindCluster | None = None
        self._created = False
        self._node_reference: str | None = None

    def say(self, line: str) -> None:
        """A progress line for the person running the session (and the log)."""
        log.info("%s", line)
        if self.out is not None:
            self.out(line)

    @property
    def pytest_kind(self) -> PathToolsKindCluster:
        """The pytest-kind cluster object (tools resolved from PATH): `kubectl()`, `port_forward()`."""
        if self._cluster is None:
            self._cluster = PathToolsKindCluster(
                name=self.cluster_name,
                kubeconfig=self.kubeconfig,
                kind_path=Path(find_kind(self.kind_bin)),
                kubectl_path=Path(self.kubectl_bin or pinned_kubectl() or find_kubectl()),
                image=None if self.offline else self.node_image,
                timeouts=self.timeouts,
            )
        return self._cluster

    def handle(self) -> ClusterHandle:
        return ClusterHandle(
            provider=self.name,
            name=self.cluster_name,
            kubeconfig=self.kubeconfig,
            context=f"kind-{self.cluster_name}",
            created_by_us=self._created,
            log_dir=self.log_dir,
            notes=tuple(self.notes),
            offline=self.offline,
        )

    def up(self) -> ClusterHandle:
        for path, what in (
            (self.config, "kind cluster config"),
            (self.storage_class_manifest, "StorageClass"),
        ):
            if not path.is_file():
                raise ConfigError(f"{what} {path} does not exist", remedy=f"see {KIND_CONFIG_DIR}/README.md")
        if self.choose_node_image and self.choice is None:
            self.choice = self.resolve_node_image()
            self.say(self.choice.line)
            self.offline = self.choice.local
        # One session at a time decides whether this name exists, is ours, or is made now. A node
        # image assembled here is built (or found up to date) inside: an existing cluster is judged
        # first, so a refused one costs no build.
        lock_dir = cache_dir() / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock_dir / f"kind-{self.cluster_name}.lock")):
            return self._up_locked()

    def resolve_node_image(self) -> NodeImageChoice:
        """No node image was chosen: the kind config's (else kind's default) when Docker has it or can
        pull it, else (Docker cannot reach the registry) one assembled here. See `choose_node_image`."""
        wanted = config_node_image(yaml.safe_load(self.config.read_text()) or {})
        docker = self.docker or shutil.which("docker")
        if docker is None:
            raise MissingToolError("docker", remedy=_DOCKER_REMEDY)
        present = image_present(wanted, docker_inspect_image(docker, wanted, timeout=self.timeouts["command"]))
        pull = None
        if not present:
            self.say(f"[kind] no node image chosen: {wanted} is not in Docker; trying to pull it "
                     f"(no answer in {REGISTRY_ANSWER_TIMEOUT_S:.0f}s counts as no registry)")
            pull = docker_pull(docker, wanted, answer_timeout=REGISTRY_ANSWER_TIMEOUT_S,
                               pull_timeout=self.timeouts["cluster_up"])
        return choose_node_image(wanted, present=present, pull=pull)

    def _up_locked(self) -> ClusterHandle:
        cluster = self.pytest_kind
        if cluster.exists():
            cluster.export_kubeconfig()
            self._claim_existing()
            self._prepare()
            return self.handle()
        config = self.cluster_config()
        try:
            self._created = True  # a failed `kind create` leaves our node (--retain): ours to delete
            self.say(f"[kind] creating kind cluster {self.cluster_name} (node image {self.node_reference()})")
            created = cluster.create(config_file=config)
            if not created:
                self._created = False  # made by someone else between the look and the create: not ours
                self._claim_existing()
            else:
                self._write_owner(kept=False)
            self._prepare()
        except BaseException:
            if self._created and not self.keep:
                try:
                    self._export_logs_and_delete()
                except RestoreDrillError as cleanup_error:
                    log.warning("could not delete half-created kind cluster %s: %s", self.cluster_name, cleanup_error)
            raise
        return self.handle()

    def node_reference(self) -> str:
        """The node image this session runs: the one assembled here (built now unless up to date), the
        chosen one, or the kind config's."""
        if self._node_reference is None:
            if self.offline:
                from restoredrill.cluster import kindnode

                self._node_reference = kindnode.NodeImageBuilder(out=lambda line: log.info("%s", line)).build()
            else:
                self._node_reference = self.node_image or config_node_image(
                    yaml.safe_load(self.config.read_text()) or {})
        return self._node_reference

    def _offline_notes(self) -> list[str]:
        from restoredrill.cluster import kindnode

        choice = [self.choice.note] if self.choice is not None and self.choice.note else []
        return [*choice, *kindnode.OFFLINE_NODE_NOTES, f"node image {self.node_reference()}"]

    def cluster_config(self) -> Path:
        """The kind config to create with: ours as shipped, or (offline) derived for the local node image."""
        if not self.offline:
            return self.config
        reference = self.node_reference()
        self.notes = self._offline_notes()
        document = offline_config(yaml.safe_load(self.config.read_text()), reference)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        derived = self.work_dir / "kind-config.yaml"
        derived.write_text(f"# derived from {self.config} for the locally assembled node image\n"
                           + yaml.safe_dump(document, sort_keys=False))
        return derived

    def _node_image_label(self) -> str:
        return "local" if self.offline else (self.node_image or "kind-config")

    def _owner_data(self, *, kept: bool = False) -> dict[str, str]:
        # `kept` is written by a `down` that keeps the cluster: only such a cluster is reused (one
        # without it is in use by another session, or was left by one that crashed).
        return {"created-by": "restoredrill", "cluster": self.cluster_name, "run-id": self.run_id,
                "node-image": self._node_image_label(), "node-image-reference": self.node_reference(),
                "kept": "true" if kept else "false"}

    def _claim_existing(self) -> None:
        """A kind cluster of this name exists: ours from an earlier run (kept) is reused, any other refused."""
        try:
            found = self.pytest_kind.kubectl("get", "configmap", OWNER_CONFIGMAP, "-n", OWNER_NAMESPACE,
                                             "-o", "json", "--ignore-not-found")
        except CommandError as error:
            raise RestoreDrillError(
                f"kind cluster {self.cluster_name} exists but does not answer: {error.message.splitlines()[-1]}",
                remedy=f"delete it (`kind delete cluster --name {self.cluster_name}`) and run again") from error
        data = (json.loads(found).get("data") or {}) if found.strip() else {}
        delete = f"`kind delete cluster --name {self.cluster_name}`"
        if data.get("created-by") != "restoredrill":
            raise ConfigError(
                f"kind cluster {self.cluster_name} exists but restoredrill did not create it "
                f"(no ConfigMap {OWNER_NAMESPACE}/{OWNER_CONFIGMAP} saying so); the drills install a platform "
                "and delete namespaces, so they will not use it",
                remedy=f"delete it ({delete}) if it is a leftover, pick another name with --cluster-name, or drill "
                "it read-only with --cluster-provider existing",
            )
        if data.get("kept") != "true":
            raise ConfigError(
                f"kind cluster {self.cluster_name} was made by restoredrill run {data.get('run-id')} and not kept: "
                "that session still uses it, or ended without its clean-up",
                remedy=f"wait for that session, or delete the cluster ({delete}); give concurrent sessions "
                "different --cluster-name values")
        mine = self._node_image_label()
        if data.get("node-image") != mine:
            raise ConfigError(
                f"kind cluster {self.cluster_name} (kept by run {data.get('run-id')}) runs node image "
                f"{data.get('node-image')!r}, and this run asks for {mine!r}",
                remedy=f"delete it ({delete}) or run with the node image it was made with")
        # The same kind of image; the same image? (A node image assembled here changes with the code
        # and the pinned builds; an owner ConfigMap written before the reference was recorded has none.)
        theirs = data.get("node-image-reference")
        if theirs and theirs != self.node_reference():
            raise ConfigError(
                f"kind cluster {self.cluster_name} (kept by run {data.get('run-id')}) runs node image {theirs}, "
                f"and this run's is {self.node_reference()}",
                remedy=f"delete it ({delete}) and run again to make one from this node image")
        self.say(f"[kind] reusing kind cluster {self.cluster_name}, kept by restoredrill run {data.get('run-id')} "
                 f"(node image {self.node_reference()})")
        if self.offline:
            self.notes = self._offline_notes()
        elif self.choice is not None and self.choice.note:
            self.notes = [self.choice.note]
        self.notes.append(f"reused kind cluster {self.cluster_name} kept by run {data.get('run-id')}")
        # Ours again: the platform is installed on it, and it is deleted at the end unless kept again.
        self._created = True
        self._write_owner(kept=False)

    def _write_owner(self, *, kept: bool) -> None:
        literals = [f"--from-literal={key}={value}" for key, value in self._owner_data(kept=kept).items()]
        manifest = self.pytest_kind.kubectl("create", "configmap", OWNER_CONFIGMAP, "-n", OWNER_NAMESPACE, *literals,
                                            "--dry-run=client", "-o", "json")
        self.pytest_kind.kubectl("apply", "-f", "-", input=manifest)

    def _prepare(self) -> None:
        self.wait_for_nodes_ready()
        self.install_local_storage_class()
        if self.verify_storage:
            self.verify_local_volumes()

    def wait_for_nodes_ready(self) -> None:
        def probe() -> tuple[bool | None, str]:
            try:
                ready, seen = nodes_ready(json.loads(self.pytest_kind.kubectl("get", "nodes", "-o", "json")))
            except CommandError as error:
                return None, error.message.splitlines()[-1]
            return (True if ready else None), seen

        wait_until(
            f"the nodes of kind cluster {self.cluster_name} to be Ready",
            probe,
            timeout=self.timeouts["node_ready"],
            remedy=f"`kind export logs --name {self.cluster_name}` and read the kubelet log",
        )

    def install_local_storage_class(self) -> None:
        """Apply the local-volume StorageClass and leave it the cluster's only default."""
        cluster = self.pytest_kind
        cluster.kubectl("apply", "-f", str(self.storage_class_manifest))
        classes = json.loads(cluster.kubectl("get", "storageclass", "-o", "json"))
        for name in default_storage_classes(classes):
            if name != LOCAL_STORAGE_CLASS:
                log.info("removing the default mark from StorageClass %s (it makes hostPath PVs)", name)
                cluster.kubectl("annotate", "--overwrite", "storageclass", name, f"{DEFAULT_CLASS_ANNOTATION}=false")
        classes = json.loads(cluster.kubectl("get", "storageclass", "-o", "json"))
        defaults = default_storage_classes(classes)
        if defaults != [LOCAL_STORAGE_CLASS]:
            raise RestoreDrillError(
                f"after installing {self.storage_class_manifest}, the default StorageClasses are {defaults}, "
                f"not just {LOCAL_STORAGE_CLASS}",
                remedy="check that its metadata.name is local-path and nothing re-marks the others",
            )
        ours = next(item for item in classes["items"] if item["metadata"]["name"] == LOCAL_STORAGE_CLASS)
        check_local_storage_class(ours)

    def verify_local_volumes(self) -> None:
        """Provision one probe volume and require its PV to be `local` (not hostPath)."""
        api = load_api_client(self.kubeconfig, None)
        # A fresh name each time: a probe namespace left by a crashed run (of another run id, so not
        # ours to delete) must not block this one.
        namespace = f"restoredrill-storage-probe-{secrets.token_hex(3)}"
        core = client.CoreV1Api(api)
        create_owned_namespace(api, namespace, run_id=self.run_id)
        try:
            # A fresh cluster's service-account controller may not have made `default` yet; a pod
            # created before it is refused (403 "serviceaccount default not found").
            def service_account() -> tuple[bool | None, str]:
                try:
                    core.read_namespaced_service_account("default", namespace)
                except client.ApiException as error:
                    if error.status == 404:
                        return None, "not created yet"
                    raise
                return True, "exists"

            wait_until(f"service account default in {namespace}", service_account,
                       timeout=self.timeouts["pod_ready"],
                       remedy="check kube-controller-manager (its serviceaccount controller makes it)")
            core.create_namespaced_persistent_volume_claim(
                namespace,
                client.V1PersistentVolumeClaim(
                    metadata=client.V1ObjectMeta(name="probe"),
                    spec=client.V1PersistentVolumeClaimSpec(
                        access_modes=["ReadWriteOnce"],
                        resources=client.V1VolumeResourceRequirements(requests={"storage": "16Mi"}),
                    ),
                ),
            )
            # WaitForFirstConsumer: nothing is provisioned until a pod uses the claim.
            core.create_namespaced_pod(
                namespace,
                client.V1Pod(
                    metadata=client.V1ObjectMeta(name="probe"),
                    spec=client.V1PodSpec(
                        containers=[
                            client.V1Container(
                                name="probe",
                                image=PROBE_IMAGE,
                                image_pull_policy="IfNotPresent",
                                volume_mounts=[client.V1VolumeMount(name="data", mount_path="/data")],
                            )
                        ],
                        volumes=[
                            client.V1Volume(
                                name="data",
                                persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(claim_name="probe"),
                            )
                        ],
                    ),
                ),
            )

            def bound() -> tuple[str | None, str]:
                claim = core.read_namespaced_persistent_volume_claim("probe", namespace)
                phase = claim.status.phase if claim.status else None
                volume = claim.spec.volume_name if claim.spec else None
                return (volume if phase == "Bound" else None), f"phase {phase}"

            pv_name = wait_until(
                f"the probe PVC in {namespace} to be bound by StorageClass {LOCAL_STORAGE_CLASS}",
                bound,
                timeout=self.timeouts["pod_ready"],
                remedy="`kubectl -n local-path-storage logs deploy/local-path-provisioner`",
            )
            volume_type = pv_volume_type(core.read_persistent_volume(pv_name))
            if volume_type != "local":
                raise RestoreDrillError(
                    f"StorageClass {LOCAL_STORAGE_CLASS} provisioned PV {pv_name} as {volume_type}, "
                    "not local: Velero's fs-backup skips hostPath volumes, "
                    "so backups would hold no volume data",
                    remedy="use a local-path-provisioner that honours the defaultVolumeType annotation "
                    "(v0.0.2x or later; kind v0.30's bundled one does)",
                )
            log.info("storage probe: PV %s is a local volume", pv_name)
        finally:
            delete_owned_namespace(api, namespace, run_id=self.run_id, wait_timeout=self.timeouts["namespace_deleted"])

    def load_images(self, images: dict[str, Path]) -> None:
        for image, archive in images.items():
            if not archive.is_file():
                raise ConfigError(
                    f"image archive {archive} for {image} does not exist",
                    remedy="build the stand-in images first (they are OCI archives under the image cache)",
                )
            log.info("loading %s into kind cluster %s", image, self.cluster_name)
            self.pytest_kind.load_image_archive(archive)

    def status(self) -> str:
        try:
            cluster = self.pytest_kind
            if not cluster.exists():
                return f"kind cluster {self.cluster_name} does not exist."
            _, nodes = nodes_ready(json.loads(cluster.kubectl("get", "nodes", "-o", "json")))
        except RestoreDrillError as error:
            return f"kind cluster {self.cluster_name}: state unknown ({error.message.splitlines()[0]})."
        origin = "created by this run" if self._created else "not created by this run (it is left in place)"
        return (
            f"kind cluster {self.cluster_name} exists, {origin}; kubeconfig {self.kubeconfig}, "
            f"context kind-{self.cluster_name}; nodes: {nodes}."
        )

    def down(self) -> None:
        if self._cluster is None or not self._created:
            log.info("leaving kind cluster %s alone: this provider did not create it", self.cluster_name)
            return
        if self.keep:
            try:
                self._write_owner(kept=True)
            except RestoreDrillError as error:
                self.say(f"[kind] WARNING: kind cluster {self.cluster_name} is left running but could not be marked "
                         f"kept, so a next session will refuse it: {error.message.splitlines()[0]}")
            else:
                self.say(f"[kind] keeping kind cluster {self.cluster_name} (marked kept: the next session with this "
                         f"name and node image reuses it); delete it with `kind delete cluster --name "
                         f"{self.cluster_name}`")
            return
        self._export_logs_and_delete()

    def _export_logs_and_delete(self) -> None:
        cluster = self.pytest_kind
        if self.export_logs_on_down:
            try:
                cluster.export_logs(self.log_dir)
            except RestoreDrillError as error:
                log.warning("could not export logs of kind cluster %s: %s", self.cluster_name, error)
        cluster.delete()
        self._created = False
