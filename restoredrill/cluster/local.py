"""The `local` provider: a real single-node Kubernetes cluster from binaries, without Docker.

etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy and containerd
run as host processes, each detached (own session) with its log in `CLUSTER_DIR/logs/NAME.log`
and its pid in `CLUSTER_DIR/run/NAME.pid`, so `restoredrill cluster up` can return while the
cluster keeps running and `down` can stop it from another process. Pods get a CNI bridge
(`rdbr0`, whose address is also the node IP the API server binds to), kube-proxy in iptables mode
gives Services, CoreDNS answers cluster DNS, and the local-path provisioner makes `spec.local` PVs.

Everything `up` creates is findable by `leftovers()`, and `down` removes all of it except the data
directories the caller asked to keep: processes, mounts, the bridge and veths, the iptables chains
of kube-proxy and kubelet, containerd's state, cgroups and files.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from restoredrill.cluster import ClusterHandle, ClusterProvider
from restoredrill.cluster.local_addons import (
    DNS_DOMAIN,
    coredns_manifests,
    local_path_manifests,
    render,
)
from restoredrill.cluster.local_pki import Pki, cluster_cert_requests, kubeconfig
from restoredrill.errors import CommandError, MissingToolError, NotOursError, RestoreDrillError
from restoredrill.images import LocalImageBuilder, image_set, import_archives
from restoredrill.pins import cache_dir
from restoredrill.toolchain.gobuild import GoToolchain
from restoredrill.waits import DEFAULT_TIMEOUTS, wait_until

# Marks a directory as created by this provider: `down` refuses to delete one without it.
OWNER_MARKER = ".restoredrill-local-cluster"
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
NODE_PROCESSES = ("containerd", "kubelet", "kube-proxy")
# Start order; `down` stops in reverse.
PROCESS_ORDER = ("etcd", "containerd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                 "kubelet", "kube-proxy")
# Seconds a process gets after SIGTERM before SIGKILL.
# The API server drains for seconds after SIGTERM; nothing it holds matters once we are tearing down.
STOP_GRACE = {"kubelet": 10.0, "containerd": 10.0, "etcd": 10.0, "kube-apiserver": 1.0}
DEFAULT_STOP_GRACE = 5.0
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CNI_NETWORK = "restoredrill"
CNI_BIN_DIR = Path("/usr/lib/cni")
CONTAINER_LOG_LINKS = Path("/var/log/containers")
CNI_CACHE_DIR = Path("/var/lib/cni/results")
SHIM_SOCKET_DIR = Path("/run/containerd/s")
CGROUP_ROOT_NAME = "restoredrill"
CGROUP_FS = Path("/sys/fs/cgroup")
SYSCTLS = {"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1",
           "net/bridge/bridge-nf-call-ip6tables": "1"}


def _say(line: str) -> None:
    print(f"[cluster] {line}", flush=True)


@dataclass(frozen=True)
class LocalClusterConfig:
    """Where the cluster lives and which addresses it uses. Defaults avoid common LAN ranges."""

    cluster_dir: Path = field(default_factory=lambda: cache_dir() / "clusters" / "local")
    name: str = "restoredrill"
    # Velero's node-agent reads /var/lib/kubelet/pods: keep kubelet where it expects it.
    kubelet_root: Path = Path("/var/lib/kubelet")
    # Directories under cluster_dir that `down` keeps (object-store data, an NFS stand-in, ...).
    keep: tuple[Path, ...] = ()
    # Leave a cluster whose `up` failed running, for inspection (otherwise it is torn down, logs kept).
    keep_on_failure: bool = False
    bridge: str = "rdbr0"
    pod_cidr: str = "10.244.0.0/16"
    node_pod_cidr: str = "10.244.0.0/24"
    service_cidr: str = "10.96.0.0/16"
    api_port: int = 6443
    etcd_client_port: int = 2379
    etcd_peer_port: int = 2380

    @property
    def node_ip(self) -> str:
        return str(next(ipaddress.ip_network(self.node_pod_cidr).hosts()))

    @property
    def api_service_ip(self) -> str:
        return str(next(ipaddress.ip_network(self.service_cidr).hosts()))

    @property
    def dns_ip(self) -> str:
        return str(ipaddress.ip_network(self.service_cidr).network_address + 10)

    @property
    def server(self) -> str:
        return f"https://{self.node_ip}:{self.api_port}"

    @property
    def storage_dir(self) -> Path:
        return self.cluster_dir / "storage"


class Layout:
    """Paths inside the cluster directory."""

    def __init__(self, config: LocalClusterConfig) -> None:
        self.root = config.cluster_dir
        self.pki = self.root / "pki"
        self.logs = self.root / "logs"
        self.run = self.root / "run"
        self.etc = self.root / "etc"
        self.etcd_data = self.root / "etcd"
        self.containerd = self.root / "containerd"
        self.containerd_socket = self.run / "containerd.sock"
        self.cni_conf = self.etc / "cni"
        self.cni_ipam = self.root / "cni-ipam"
        self.pod_logs = self.root / "pod-logs"
        self.state = self.root / "state.json"
        self.kubeconfig = self.root / "kubeconfig"
        self.images = self.root / "images"

    def pidfile(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def component_kubeconfig(self, name: str) -> Path:
        return self.etc / f"{name}.kubeconfig"


# ---- small helpers ---------------------------------------------------------------------------

def _run(command: list[str], *, timeout: float = 60, check: bool = True, input: str | None = None,
         remedy: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, input=input,
                                env={**os.environ, "PATH": HOST_PATH + ":" + os.environ.get("PATH", "")})
    except subprocess.TimeoutExpired as error:
        raise CommandError(command, returncode=None, output=str(error.stdout or ""), remedy=remedy) from error
    if check and result.returncode != 0:
        raise CommandError(command, returncode=result.returncode, output=result.stdout + result.stderr,
                           remedy=remedy)
    return result


def _proc_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: tells a live process from a recycled pid. None if gone or zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _cmdlines() -> Iterable[tuple[int, list[str]]]:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if raw:
            yield int(entry.name), raw.rstrip(b"\0").decode(errors="replace").split("\0")


def _mountpoints() -> list[tuple[str, str]]:
    """(mount point, fs type) from /proc/self/mountinfo, in mount order."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        separator = fields.index("-")
        points.append((fields[4].replace("\\040", " "), fields[separator + 1]))
    return points


def _under(path: str, roots: Iterable[Path]) -> bool:
    return any(path == str(root) or path.startswith(str(root).rstrip("/") + "/") for root in roots)


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


# ---- configuration files (pure: unit-tested) -------------------------------------------------

def containerd_config(*, layout: Layout, pause_image: str) -> str:
    """containerd 1.6 config: own root/state/socket, cgroupfs runc, CNI from Debian, no registry."""
    root, cri = layout.containerd, 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{root / 'root'}"
state = "{root / 'state'}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
                    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
                    "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{layout.containerd_socket}"

[ttrpc]
  address = "{layout.containerd_socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root / 'opt'}"

[{cri}]
  sandbox_image = "{pause_image}"
  enable_selinux = false
  # This sandbox may not lower oom_score_adj (no CAP_SYS_RESOURCE): never go below our own.
  restrict_oom_score_adj = true
  # Pod network namespaces under our state dir, so `down` can tell them from anyone else's.
  netns_mounts_under_state_dir = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"

[{cri}.containerd.runtimes.runc.options]
  SystemdCgroup = false
  Root = "{root / 'runc'}"

[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = "{layout.cni_conf}"
  max_conf_num = 1
"""


def cni_config(*, config: LocalClusterConfig, layout: Layout) -> dict[str, Any]:
    """A bridge network without masquerading (pods only talk to each other and to the node)."""
    return {
        "cniVersion": "0.4.0",
        "name": CNI_NETWORK,
        "plugins": [
            {
                "type": "bridge",
                "bridge": config.bridge,
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": config.node_pod_cidr, "gateway": config.node_ip}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(layout.cni_ipam),
                },
            },
        ],
    }


def kubelet_config(*, config: LocalClusterConfig, layout: Layout) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(layout.pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "address": config.node_ip,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "readOnlyPort": 0,
        "tlsCertFile": str(layout.pki / "kubelet-serving.crt"),
        "tlsPrivateKeyFile": str(layout.pki / "kubelet-serving.key"),
        # Debian's containerd 1.6 uses cgroupfs; the host is cgroup v1.
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": f"/{CGROUP_ROOT_NAME}",
        "failCgroupV1": False,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{layout.containerd_socket}",
        "clusterDNS": [config.dns_ip],
        "clusterDomain": DNS_DOMAIN,
        "resolvConf": str(layout.etc / "resolv.conf"),
        "podLogsDir": str(layout.pod_logs),
        # Imported images cannot be pulled again: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "serializeImagePulls": False,
        "protectKernelDefaults": False,
        "registerNode": True,
        "syncFrequency": "10s",
        "nodeStatusUpdateFrequency": "5s",
        "fileCheckFrequency": "10s",
        "shutdownGracePeriod": "0s",
    }


def kube_proxy_config(*, config: LocalClusterConfig, layout: Layout) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(layout.component_kubeconfig("kube-proxy"))},
        "mode": "iptables",
        "clusterCIDR": config.pod_cidr,
        "hostnameOverride": config.name,
        "bindAddress": config.node_ip,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # 0: leave the host's nf_conntrack_max alone.
        "conntrack": {"maxPerCore": 0, "min": 0},
        "nodePortAddresses": [f"{config.node_ip}/32"],
    }


def process_commands(*, config: LocalClusterConfig, layout: Layout, toolchain: GoToolchain) -> dict[str, list[str]]:
    """The command line of every host process, by name."""
    pki = layout.pki
    kc = layout.component_kubeconfig
    return {
        "etcd": [
            str(toolchain.binary("etcd")), "--name", config.name, "--data-dir", str(layout.etcd_data),
            "--listen-client-urls", f"http://127.0.0.1:{config.etcd_client_port}",
            "--advertise-client-urls", f"http://127.0.0.1:{config.etcd_client_port}",
            "--listen-peer-urls", f"http://127.0.0.1:{config.etcd_peer_port}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{config.etcd_peer_port}",
            "--initial-cluster", f"{config.name}=http://127.0.0.1:{config.etcd_peer_port}",
            "--log-level", "warn", "--quota-backend-bytes", str(2 * 1024**3),
            "--snapshot-count", "10000", "--unsafe-no-fsync",
        ],
        "containerd": ["containerd", "--config", str(layout.etc / "containerd.toml")],
        "kube-apiserver": [
            str(toolchain.binary("kube-apiserver")),
            "--etcd-servers", f"http://127.0.0.1:{config.etcd_client_port}",
            "--bind-address", config.node_ip, "--advertise-address", config.node_ip,
            "--secure-port", str(config.api_port),
            "--tls-cert-file", str(pki / "apiserver.crt"), "--tls-private-key-file", str(pki / "apiserver.key"),
            "--client-ca-file", str(pki / "ca.crt"),
            "--kubelet-client-certificate", str(pki / "apiserver-kubelet-client.crt"),
            "--kubelet-client-key", str(pki / "apiserver-kubelet-client.key"),
            "--kubelet-certificate-authority", str(pki / "ca.crt"),
            "--kubelet-preferred-address-types", "InternalIP",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-account-issuer", f"https://kubernetes.default.svc.{DNS_DOMAIN}",
            "--service-cluster-ip-range", config.service_cidr,
            "--authorization-mode", "Node,RBAC",
            "--enable-admission-plugins", "NodeRestriction",
            "--allow-privileged=true", "--profiling=false", "--v=1",
        ],
        "kube-controller-manager": [
            str(toolchain.binary("kube-controller-manager")),
            "--kubeconfig", str(kc("controller-manager")),
            "--authentication-kubeconfig", str(kc("controller-manager")),
            "--authorization-kubeconfig", str(kc("controller-manager")),
            "--bind-address", "127.0.0.1", "--leader-elect=false",
            "--service-account-private-key-file", str(pki / "sa.key"),
            "--root-ca-file", str(pki / "ca.crt"),
            "--cluster-signing-cert-file", str(pki / "ca.crt"), "--cluster-signing-key-file", str(pki / "ca.key"),
            "--use-service-account-credentials=true",
            "--allocate-node-cidrs=true", "--cluster-cidr", config.pod_cidr, "--node-cidr-mask-size", "24",
            "--service-cluster-ip-range", config.service_cidr, "--profiling=false", "--v=1",
        ],
        "kube-scheduler": [
            str(toolchain.binary("kube-scheduler")),
            "--kubeconfig", str(kc("scheduler")),
            "--authentication-kubeconfig", str(kc("scheduler")),
            "--authorization-kubeconfig", str(kc("scheduler")),
            "--bind-address", "127.0.0.1", "--leader-elect=false", "--profiling=false", "--v=1",
        ],
        "kubelet": [
            str(toolchain.binary("kubelet")),
            "--config", str(layout.etc / "kubelet.yaml"),
            "--kubeconfig", str(kc("kubelet")),
            "--root-dir", str(config.kubelet_root),
            "--hostname-override", config.name, "--node-ip", config.node_ip, "--v=1",
        ],
        "kube-proxy": [
            str(toolchain.binary("kube-proxy")), "--config", str(layout.etc / "kube-proxy.yaml"), "--v=1",
        ],
    }


# ---- the provider ----------------------------------------------------------------------------

class LocalCluster(ClusterProvider):
    """install (`up`) / wait-until-ready / client / uninstall (`down`) of the local cluster."""

    name = "local"

    def __init__(self, config: LocalClusterConfig | None = None, *, toolchain: GoToolchain | None = None,
                 out: Any = _say) -> None:
        self.config = config or LocalClusterConfig()
        self.layout = Layout(self.config)
        self._toolchain = toolchain
        self.out = out
        # Seconds from the start of `up` to each milestone, and of the last `down` (for bench/).
        self.timings: dict[str, float] = {}

    @property
    def toolchain(self) -> GoToolchain:
        if self._toolchain is None:
            self._toolchain = GoToolchain()
        return self._toolchain

    # ---- public API ------------------------------------------------------------------------
    def handle(self) -> ClusterHandle:
        return ClusterHandle(provider=self.name, name=self.config.name, kubeconfig=self.layout.kubeconfig,
                             context=self.config.name, created_by_us=True, log_dir=self.layout.logs)

    def up(self) -> ClusterHandle:
        """Start the cluster (or reuse a kept, healthy one) and return once the node is Ready."""
        self._require_root()
        if self.layout.state.exists():
            if self.healthy():
                self.out(f"reusing the running cluster in {self.layout.root}")
                return self.handle()
            self.out("a previous cluster here is not healthy: tearing it down first")
            self.down(keep=self.recorded_keep())
        elif self.leftovers():
            self.out("leftovers of an earlier cluster found: cleaning them first")
            self.down(keep=self.recorded_keep())
        started = time.monotonic()
        try:
            self._up(started)
        except BaseException:
            if self.config.keep_on_failure:
                self.out(f"up failed; the cluster is left for inspection, logs in {self.layout.logs} "
                         "(`restoredrill cluster down` removes it)")
            else:
                self.out(f"up failed; tearing the half-started cluster down, keeping its logs in {self.layout.logs}")
                with contextlib.suppress(Exception):
                    self.down(keep=[*self.recorded_keep(), self.layout.logs])
            raise
        return self.handle()

    def down(self, *, keep: Iterable[Path] = ()) -> None:
        """Remove everything `up` created except `config.keep` and `keep` (paths under the cluster dir)."""
        self._require_root()
        root = self.layout.root
        if root.exists() and any(root.iterdir()) and not (root / OWNER_MARKER).exists():
            raise NotOursError(f"{root} was not created by restoredrill's local provider (no {OWNER_MARKER})",
                               remedy="pass a --cluster-dir that restoredrill created")
        started = time.monotonic()
        state = self._read_state()
        netns = self._pod_netns_paths()
        self._stop_processes()
        self._kill_cgroup_processes()
        self._kill_strays()
        self._unmount_ours(extra_netns=netns)
        self._remove_network()
        self._flush_iptables()
        self._remove_cgroups()
        self._restore_sysctls(state.get("sysctls", {}))
        self._remove_files(keep=[*self.config.keep, *keep])
        self.timings["down"] = time.monotonic() - started
        self.out(f"down in {self.timings['down']:.1f}s")

    def status(self) -> str:
        lines = [f"local cluster {self.config.name} in {self.layout.root}"]
        if not self.layout.state.exists():
            return lines[0] + ": not running (no state file)"
        for name in PROCESS_ORDER:
            pid = self._live_pid(name)
            lines.append(f"  {name:24} {'running pid ' + str(pid) if pid else 'NOT running'}  "
                         f"log {self.layout.log(name)}")
        ready, seen = self._node_ready()
        lines.append(f"  node {self.config.name}: {'Ready' if ready else 'not Ready'} ({seen})")
        lines.append(f"  kubeconfig: {self.layout.kubeconfig}")
        return "\n".join(lines)

    def load_images(self, images: dict[str, Path]) -> None:
        import_archives(images, containerd_address=self.layout.containerd_socket)

    def client(self) -> Any:
        """A kubernetes.client.ApiClient for this cluster."""
        from restoredrill.kube import load_api_client

        return load_api_client(self.layout.kubeconfig, self.config.name)

    def process_rss(self) -> dict[str, int]:
        """Resident memory in bytes of each running host process of ours (VmRSS from /proc)."""
        sizes = {}
        for name in PROCESS_ORDER:
            pid = self._live_pid(name)
            if pid is None:
                continue
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes[name] = int(line.split()[1]) * 1024
        return sizes

    def healthy(self) -> bool:
        if not all(self._live_pid(name) for name in PROCESS_ORDER):
            return False
        ready, _ = self._node_ready()
        return ready

    def recorded_keep(self) -> list[Path]:
        """The directories the last `down` kept (listed in the owner marker), for the next `up`."""
        marker = self.layout.root / OWNER_MARKER
        if not marker.exists():
            return []
        return [Path(line[len("keep "):]) for line in marker.read_text().splitlines() if line.startswith("keep ")]

    def leftovers(self) -> list[str]:
        """Anything of ours still on the host: what `down` must have removed (kept data aside)."""
        found: list[str] = []
        for pid, argv in self._our_processes():
            found.append(f"process {pid}: {' '.join(argv)[:160]}")
        roots = [self.layout.root, self.config.kubelet_root]
        for point, fstype in _mountpoints():
            if _under(point, roots):
                found.append(f"mount {point} ({fstype})")
        if Path(f"/sys/class/net/{self.config.bridge}").exists():
            found.append(f"network interface {self.config.bridge}")
        for chain in self._our_iptables_chains():
            found.append(f"iptables chain {chain}")
        if (self.layout.containerd).exists():
            found.append(f"containerd state {self.layout.containerd}")
        for controller in self._cgroup_dirs():
            found.append(f"cgroup {controller}")
        if self.config.kubelet_root.exists():
            found.append(f"kubelet root {self.config.kubelet_root}")
        if CONTAINER_LOG_LINKS.is_dir():
            for link in CONTAINER_LOG_LINKS.iterdir():
                if link.is_symlink() and _under(os.readlink(link), [self.layout.pod_logs]):
                    found.append(f"log link {link}")
        if CNI_CACHE_DIR.is_dir():
            found += [f"cni cache {p}" for p in CNI_CACHE_DIR.glob(f"{CNI_NETWORK}-*")]
        if SHIM_SOCKET_DIR.is_dir() and not any(Path(a[0]).name == "containerd" for _, a in _cmdlines()):
            found += [f"stale shim socket {p}" for p in SHIM_SOCKET_DIR.iterdir()]
        if self.layout.root.exists():
            keep = {Path(p).resolve() for p in (*self.config.keep, *self.recorded_keep())}
            for child in self.layout.root.iterdir():
                resolved = child.resolve()
                if child.name == OWNER_MARKER or any(k.is_relative_to(resolved) for k in keep):
                    continue
                found.append(f"file {child}")
        return found

    # ---- up, step by step ------------------------------------------------------------------
    def _up(self, started: float) -> None:
        self._preflight()
        self._prepare_dirs()
        self._write_pki_and_configs()
        sysctls = self._set_sysctls()
        self._write_state({"sysctls": sysctls, "started_at": time.time()})
        self._create_bridge()
        self._prepare_cgroups()
        commands = process_commands(config=self.config, layout=self.layout, toolchain=self.toolchain)
        self._start("etcd", commands["etcd"])
        self._start("containerd", commands["containerd"])
        self._wait_http("etcd healthy", f"http://127.0.0.1:{self.config.etcd_client_port}/health",
                        process="etcd", expect='"health":"true"')
        self._start("kube-apiserver", commands["kube-apiserver"])
        self._wait_containerd()
        images = LocalImageBuilder(toolchain=self.toolchain).build()
        self.load_images(images)
        self.out(f"imported {len(images)} images into containerd")
        self._wait_http("kube-apiserver ready", f"{self.config.server}/readyz", process="kube-apiserver",
                        expect="ok")
        for name in ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"):
            self._start(name, commands[name])
        self._wait_node_ready()
        self.timings["node_ready"] = time.monotonic() - started
        self.out(f"node {self.config.name} Ready {self.timings['node_ready']:.1f}s after `up` started")
        self._install_addons()
        self._wait_addons()
        self.timings["addons_ready"] = time.monotonic() - started
        self.out(f"cluster up in {time.monotonic() - started:.1f}s; kubeconfig {self.layout.kubeconfig}")

    def _require_root(self) -> None:
        if os.geteuid() != 0:
            raise RestoreDrillError("the local provider runs kubelet and containerd, which need root",
                                    remedy="run as root, or use --cluster-provider kind/existing")

    def _preflight(self) -> None:
        for tool, package in (("containerd", "containerd"), ("runc", "runc"), ("ctr", "containerd"),
                              ("iptables", "iptables"), ("conntrack", "conntrack"), ("openssl", "openssl"),
                              ("ip", "iproute2")):
            if shutil.which(tool, path=HOST_PATH) is None:
                raise MissingToolError(tool, remedy=f"run `restoredrill toolchain` (installs {package})")
        if not (CNI_BIN_DIR / "bridge").exists():
            raise MissingToolError(str(CNI_BIN_DIR / "bridge"),
                                   remedy="run `restoredrill toolchain` (installs containernetworking-plugins)")
        for binary in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
                       "kube-proxy", "kubectl"):
            self.toolchain.binary(binary)
        kubelet_root = self.config.kubelet_root
        if kubelet_root.exists() and any(kubelet_root.iterdir()) and not (kubelet_root / OWNER_MARKER).exists():
            raise NotOursError(f"{kubelet_root} exists and was not created by restoredrill",
                               remedy="another kubelet uses this host; stop it or choose another kubelet root")
        for host, port, what in (("127.0.0.1", self.config.etcd_client_port, "etcd"),
                                 ("127.0.0.1", self.config.etcd_peer_port, "etcd peer"),
                                 ("127.0.0.1", 10248, "kubelet healthz"), ("127.0.0.1", 10257, "controller-manager"),
                                 ("127.0.0.1", 10259, "scheduler")):
            if _port_in_use(host, port):
                raise RestoreDrillError(f"port {host}:{port} ({what}) is already in use",
                                        remedy="stop whatever listens there (`ss -ltnp`) and retry")

    def _prepare_dirs(self) -> None:
        layout = self.layout
        layout.root.mkdir(parents=True, exist_ok=True)
        marker = layout.root / OWNER_MARKER
        if not marker.exists():
            marker.write_text("created by restoredrill's local provider\n")
        for directory in (layout.logs, layout.run, layout.etc, layout.etcd_data, layout.containerd,
                          layout.cni_conf, layout.cni_ipam, layout.pod_logs, self.config.storage_dir):
            directory.mkdir(parents=True, exist_ok=True)
        layout.etcd_data.chmod(0o700)
        self.config.kubelet_root.mkdir(parents=True, exist_ok=True)
        (self.config.kubelet_root / OWNER_MARKER).write_text(str(layout.root) + "\n")

    def _write_pki_and_configs(self) -> None:
        config, layout = self.config, self.layout
        pki = Pki(layout.pki)
        pki.ensure(cluster_cert_requests(node_name=config.name, node_ip=config.node_ip,
                                         api_service_ip=config.api_service_ip))
        users = {"admin": ("admin", "kubernetes-admin"),
                 "controller-manager": ("controller-manager", "system:kube-controller-manager"),
                 "scheduler": ("scheduler", "system:kube-scheduler"),
                 "kubelet": ("kubelet", f"system:node:{config.name}"),
                 "kube-proxy": ("kube-proxy", "system:kube-proxy")}
        for component, (stem, user) in users.items():
            text = kubeconfig(server=config.server, ca=pki.ca, cert=pki.path(stem, "crt"),
                              key=pki.path(stem, "key"), user=user, cluster=config.name)
            target = layout.kubeconfig if component == "admin" else layout.component_kubeconfig(component)
            target.write_text(text)
            target.chmod(0o600)
        pause = image_set("local")["pause"]
        (layout.etc / "containerd.toml").write_text(containerd_config(layout=layout, pause_image=pause))
        (layout.cni_conf / "10-restoredrill.conflist").write_text(
            json.dumps(cni_config(config=config, layout=layout), indent=2))
        (layout.etc / "kubelet.yaml").write_text(yaml.safe_dump(kubelet_config(config=config, layout=layout)))
        (layout.etc / "kube-proxy.yaml").write_text(
            yaml.safe_dump(kube_proxy_config(config=config, layout=layout)))
        # Pods with dnsPolicy Default (CoreDNS) get this; it names no outside resolver on purpose.
        (layout.etc / "resolv.conf").write_text("nameserver 127.0.0.1\noptions ndots:1\n")

    def _set_sysctls(self) -> dict[str, str]:
        previous: dict[str, str] = {}
        for key, value in SYSCTLS.items():
            path = Path("/proc/sys") / key
            if not path.exists():
                raise RestoreDrillError(f"kernel setting {key} is missing (module br_netfilter not loaded?)",
                                        remedy="load br_netfilter (`modprobe br_netfilter`) and retry")
            previous[key] = path.read_text().strip()
            if previous[key] != value:
                path.write_text(value)
        return previous

    def _restore_sysctls(self, previous: dict[str, str]) -> None:
        for key, value in previous.items():
            with contextlib.suppress(OSError):
                (Path("/proc/sys") / key).write_text(value)

    def _create_bridge(self) -> None:
        bridge, config = self.config.bridge, self.config
        prefix = ipaddress.ip_network(config.node_pod_cidr).prefixlen
        if not Path(f"/sys/class/net/{bridge}").exists():
            _run(["ip", "link", "add", bridge, "type", "bridge"])
        addresses = _run(["ip", "-o", "addr", "show", "dev", bridge]).stdout
        if f"{config.node_ip}/{prefix}" not in addresses:
            _run(["ip", "addr", "add", f"{config.node_ip}/{prefix}", "dev", bridge])
        _run(["ip", "link", "set", bridge, "up"])

    def _prepare_cgroups(self) -> None:
        # kubelet requires its --cgroup-root to exist in every v1 hierarchy.
        for hierarchy in CGROUP_FS.iterdir():
            if hierarchy.is_dir() and not hierarchy.is_symlink() and (hierarchy / "cgroup.procs").exists():
                (hierarchy / CGROUP_ROOT_NAME).mkdir(exist_ok=True)
                if hierarchy.name == "cpuset":
                    for knob in ("cpuset.cpus", "cpuset.mems"):
                        target = hierarchy / CGROUP_ROOT_NAME / knob
                        if not target.read_text().strip():
                            target.write_text((hierarchy / knob).read_text().strip())

    def _start(self, name: str, command: list[str]) -> int:
        log = self.layout.log(name)
        with log.open("ab") as sink:
            sink.write(f"\n==== {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {' '.join(command)}\n"
                       .encode())
            sink.flush()
            process = subprocess.Popen(
                command, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, close_fds=True, cwd=self.layout.root,
                env={"PATH": HOST_PATH, "HOME": str(self.layout.root), "LANG": "C.UTF-8"},
            )
        start_time = _proc_start_time(process.pid)
        self.layout.pidfile(name).write_text(f"{process.pid} {start_time}\n")
        # The child outlives this Popen object on purpose; silence its destructor warning.
        process.returncode = 0
        return process.pid

    def _live_pid(self, name: str) -> int | None:
        try:
            pid_text, start = self.layout.pidfile(name).read_text().split()
        except (OSError, ValueError):
            return None
        pid = int(pid_text)
        return pid if _proc_start_time(pid) == start else None

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.layout.pki / "ca.crt"))
        context.load_cert_chain(str(self.layout.pki / "admin.crt"), str(self.layout.pki / "admin.key"))
        return context

    def _get(self, url: str) -> tuple[int, str]:
        context = self._ssl_context() if url.startswith("https") else None
        try:
            with urllib.request.urlopen(url, timeout=5, context=context) as response:
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode(errors="replace")

    def _wait_http(self, what: str, url: str, *, process: str, expect: str) -> None:
        def probe() -> tuple[bool | None, str]:
            if self._live_pid(process) is None:
                raise RestoreDrillError(f"{process} exited while waiting for {what}:\n{self._log_tail(process)}",
                                        remedy=f"see {self.layout.log(process)}")
            try:
                status, body = self._get(url)
            except (OSError, ssl.SSLError) as error:
                return None, f"{url}: {error}"
            return (True if status == 200 and expect in body else None), f"{url}: HTTP {status} {body[:80]!r}"

        wait_until(what, probe, timeout=DEFAULT_TIMEOUTS["cluster_up"], interval=0.25,
                   remedy=f"see {self.layout.log(process)}")

    def _log_tail(self, name: str, lines: int = 25) -> str:
        try:
            return "\n".join(self.layout.log(name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _wait_containerd(self) -> None:
        def probe() -> tuple[bool | None, str]:
            if self._live_pid("containerd") is None:
                raise RestoreDrillError(f"containerd exited:\n{self._log_tail('containerd')}",
                                        remedy=f"see {self.layout.log('containerd')}")
            result = _run(["ctr", "--address", str(self.layout.containerd_socket), "version"], check=False,
                          timeout=10)
            return (True if result.returncode == 0 else None), (result.stderr or result.stdout).strip()[:120]

        wait_until("containerd answering on its socket", probe, timeout=DEFAULT_TIMEOUTS["command"],
                   interval=0.25, remedy=f"see {self.layout.log('containerd')}")

    def _node_ready(self) -> tuple[bool, str]:
        try:
            status, body = self._get(f"{self.config.server}/api/v1/nodes/{self.config.name}")
        except (OSError, ssl.SSLError) as error:
            return False, str(error)
        if status != 200:
            return False, f"HTTP {status}"
        conditions = {c["type"]: c for c in json.loads(body).get("status", {}).get("conditions", [])}
        ready = conditions.get("Ready", {})
        return ready.get("status") == "True", f"Ready={ready.get('status')} {ready.get('message', '')[:100]}"

    def _wait_node_ready(self) -> None:
        def probe() -> tuple[bool | None, str]:
            for name in ("kubelet", "containerd", "kube-apiserver"):
                if self._live_pid(name) is None:
                    raise RestoreDrillError(f"{name} exited before the node was Ready:\n{self._log_tail(name)}",
                                            remedy=f"see {self.layout.log(name)}")
            ready, seen = self._node_ready()
            return (True if ready else None), seen

        wait_until(f"node {self.config.name} Ready", probe, timeout=DEFAULT_TIMEOUTS["node_ready"],
                   interval=0.5, remedy=f"see {self.layout.log('kubelet')}")

    def kubectl(self, *args: str, input: str | None = None, timeout: float = 60) -> str:
        command = [str(self.toolchain.binary("kubectl")), "--kubeconfig", str(self.layout.kubeconfig), *args]
        return _run(command, input=input, timeout=timeout).stdout

    def _install_addons(self) -> None:
        images = image_set("local")
        documents = coredns_manifests(image=images["coredns"], dns_ip=self.config.dns_ip)
        documents += local_path_manifests(image=images["local-path-provisioner"], helper_image=images["busybox"],
                                          storage_dir=str(self.config.storage_dir))
        manifest = render(documents)
        (self.layout.etc / "addons.yaml").write_text(manifest)
        self.kubectl("apply", "-f", "-", input=manifest, timeout=120)

    def _wait_addons(self) -> None:
        for namespace, deployment in (("kube-system", "coredns"), ("local-path-storage", "local-path-provisioner")):
            def probe(namespace: str = namespace, deployment: str = deployment) -> tuple[bool | None, str]:
                status, body = self._get(
                    f"{self.config.server}/apis/apps/v1/namespaces/{namespace}/deployments/{deployment}")
                if status != 200:
                    return None, f"HTTP {status}"
                observed = json.loads(body).get("status", {})
                ready = observed.get("readyReplicas", 0)
                return (True if ready >= 1 else None), f"readyReplicas={ready}"

            wait_until(f"deployment {namespace}/{deployment} ready", probe, timeout=DEFAULT_TIMEOUTS["pod_ready"],
                       interval=0.5, remedy=f"kubectl --kubeconfig {self.layout.kubeconfig} -n {namespace} "
                       "describe pods")

    def _read_state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.layout.state.read_text())
            return data
        except (OSError, ValueError):
            return {}

    def _write_state(self, state: dict[str, Any]) -> None:
        payload = {**state, "config": {k: str(v) for k, v in asdict(self.config).items()}}
        self.layout.state.write_text(json.dumps(payload, indent=2))

    # ---- down, step by step ----------------------------------------------------------------
    def _our_processes(self) -> list[tuple[int, list[str]]]:
        """Host processes of this cluster, recognised by program *and* our paths in their arguments.

        A shell or editor that merely mentions the cluster directory is not matched.
        """
        root, socket_path = str(self.layout.root), str(self.layout.containerd_socket)
        programs = {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
                    "kube-proxy", "containerd"}
        found = []
        for pid, argv in _cmdlines():
            if pid == os.getpid() or _proc_start_time(pid) is None:
                continue
            program = Path(argv[0]).name
            shim = program.startswith("containerd-shim") and socket_path in argv
            if shim or (program in programs and any(root in arg for arg in argv[1:])):
                found.append((pid, argv))
        return found

    def _pod_netns_paths(self) -> list[str]:
        """Network namespaces of our pod sandboxes, asked of containerd while it still runs."""
        if self._live_pid("containerd") is None:
            return []
        address = str(self.layout.containerd_socket)
        listing = _run(["ctr", "--address", address, "-n", "k8s.io", "containers", "ls", "-q"], check=False,
                       timeout=30)
        paths = []
        for container in listing.stdout.split():
            info = _run(["ctr", "--address", address, "-n", "k8s.io", "containers", "info", container],
                        check=False, timeout=30)
            with contextlib.suppress(ValueError, KeyError, TypeError):
                spec = json.loads(info.stdout)["Spec"]
                for namespace in spec["linux"]["namespaces"]:
                    if namespace.get("type") == "network" and namespace.get("path"):
                        paths.append(namespace["path"])
        return paths

    def _stop_pid(self, name: str, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        grace = STOP_GRACE.get(name, DEFAULT_STOP_GRACE)
        start = _proc_start_time(pid)

        def gone() -> tuple[bool | None, str]:
            return (True if _proc_start_time(pid) != start or start is None else None), f"pid {pid} alive"

        try:
            wait_until(f"{name} (pid {pid}) to exit after SIGTERM", gone, timeout=grace, interval=0.1)
        except RestoreDrillError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_until(f"{name} (pid {pid}) to exit after SIGKILL", gone, timeout=DEFAULT_TIMEOUTS["command"],
                       interval=0.1)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)

    def _stop_processes(self) -> None:
        # kubelet first so it stops restarting containers; containerd after the pods are killed.
        for name in ("kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager", "kube-apiserver"):
            pid = self._live_pid(name)
            if pid:
                self._stop_pid(name, pid)
        self._kill_cgroup_processes()
        for name in ("containerd", "etcd"):
            pid = self._live_pid(name)
            if pid:
                self._stop_pid(name, pid)

    def _cgroup_dirs(self) -> list[Path]:
        if not CGROUP_FS.is_dir():
            return []
        return sorted(p / CGROUP_ROOT_NAME for p in CGROUP_FS.iterdir()
                      if (p / CGROUP_ROOT_NAME).is_dir())

    def _kill_cgroup_processes(self) -> None:
        """SIGKILL every process in our cgroup tree (pod containers, pause), until none is left."""
        def pids() -> set[int]:
            found: set[int] = set()
            for root in self._cgroup_dirs():
                for procs in (directory / "cgroup.procs" for directory in _cgroup_tree(root)):
                    with contextlib.suppress(OSError):
                        found |= {int(p) for p in procs.read_text().split()}
            return found

        def none_left() -> tuple[bool | None, str]:
            remaining = pids()
            for pid in remaining:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            return (True if not remaining else None), f"{len(remaining)} processes in our cgroups"

        wait_until("pod processes killed", none_left, timeout=DEFAULT_TIMEOUTS["command"], interval=0.2)

    def _kill_strays(self) -> None:
        """containerd shims (they outlive containerd) and any of our programs not in a pid file."""
        for pid, _argv in self._our_processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

        def none_left() -> tuple[bool | None, str]:
            left = [pid for pid, _ in self._our_processes()]
            return (True if not left else None), f"pids still alive: {left}"

        wait_until("stray processes of ours gone", none_left, timeout=DEFAULT_TIMEOUTS["command"], interval=0.2)

    def _unmount_ours(self, *, extra_netns: list[str]) -> None:
        roots = [self.layout.root, self.config.kubelet_root]
        for _attempt in range(3):
            targets = [point for point, _fstype in _mountpoints() if _under(point, roots) or point in extra_netns]
            if not targets:
                return
            for point in reversed(targets):
                result = _run(["umount", point], check=False, timeout=30)
                if result.returncode != 0:
                    _run(["umount", "-l", point], check=False, timeout=30)
        left = [p for p, _ in _mountpoints() if _under(p, roots)]
        if left:
            raise RestoreDrillError(f"could not unmount: {left}", remedy="check `fuser -m` on them")

    def _remove_network(self) -> None:
        bridge = self.config.bridge
        if Path(f"/sys/class/net/{bridge}").exists():
            for member in Path(f"/sys/class/net/{bridge}/brif").iterdir():
                _run(["ip", "link", "del", member.name], check=False, timeout=30)
            _run(["ip", "link", "del", bridge], timeout=30)

    def _iptables_tables(self, save: str) -> dict[str, list[str]]:
        result = _run([save], check=False, timeout=30)
        tables: dict[str, list[str]] = {}
        current = ""
        for line in result.stdout.splitlines():
            if line.startswith("*"):
                current = line[1:]
                tables[current] = []
            elif current:
                tables[current].append(line)
        return tables

    @staticmethod
    def _is_ours(chain: str) -> bool:
        return chain.startswith("KUBE-") or chain.startswith("CNI-")

    def _our_iptables_chains(self) -> list[str]:
        chains = []
        for save in ("iptables-save", "ip6tables-save"):
            if shutil.which(save, path=HOST_PATH) is None:
                continue
            for table, lines in self._iptables_tables(save).items():
                chains += [f"{save.split('-')[0]}/{table}/{line[1:].split()[0]}" for line in lines
                           if line.startswith(":") and self._is_ours(line[1:].split()[0])]
        return chains

    def _flush_iptables(self) -> None:
        """Delete kube-proxy's and kubelet's chains and every rule that jumps to them.

        One `iptables-restore --noflush` per table (hundreds of single iptables calls take
        seconds on the nft backend); rules of chains that are not ours are left untouched.
        """
        for family in ("iptables", "ip6tables"):
            save = f"{family}-save"
            if shutil.which(save, path=HOST_PATH) is None:
                continue
            for table, lines in self._iptables_tables(save).items():
                ours = [line[1:].split()[0] for line in lines
                        if line.startswith(":") and self._is_ours(line[1:].split()[0])]
                if not ours:
                    continue
                script = [f"*{table}"]
                for line in lines:
                    if line.startswith("-A "):
                        parts = line.split()
                        target = parts[parts.index("-j") + 1] if "-j" in parts else ""
                        if not self._is_ours(parts[1]) and self._is_ours(target):
                            script.append("-D" + line[2:])
                script += [f"-F {chain}" for chain in ours] + [f"-X {chain}" for chain in ours] + ["COMMIT", ""]
                result = _run([f"{family}-restore", "--noflush"], input="\n".join(script), check=False, timeout=60)
                if result.returncode != 0:
                    self.out(f"{family}-restore could not remove our chains from {table} "
                             f"({result.stderr.strip()[:200]}); falling back to one call per chain")
                    for chain in ours:
                        _run([family, "-t", table, "-F", chain], check=False, timeout=30)
                    for chain in ours:
                        _run([family, "-t", table, "-X", chain], check=False, timeout=30)

    def _remove_cgroups(self) -> None:
        for root in self._cgroup_dirs():
            for directory in sorted(_cgroup_tree(root), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    directory.rmdir()
            with contextlib.suppress(OSError):
                root.rmdir()

    def _remove_files(self, *, keep: list[Path]) -> None:
        if CONTAINER_LOG_LINKS.is_dir():
            for link in CONTAINER_LOG_LINKS.iterdir():
                if link.is_symlink() and _under(os.readlink(link), [self.layout.pod_logs]):
                    link.unlink()
            with contextlib.suppress(OSError):
                CONTAINER_LOG_LINKS.rmdir()  # kubelet made it; keep it if anyone else has files there
        if CNI_CACHE_DIR.is_dir():
            for path in CNI_CACHE_DIR.glob(f"{CNI_NETWORK}-*"):
                path.unlink()
        if SHIM_SOCKET_DIR.is_dir():
            for path in SHIM_SOCKET_DIR.iterdir():
                with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
                    probe.settimeout(0.5)
                    if probe.connect_ex(str(path)) != 0:
                        path.unlink()
            # The shim-socket dir and its parent are created by our containerd; drop them when empty.
            for directory in (SHIM_SOCKET_DIR, SHIM_SOCKET_DIR.parent):
                with contextlib.suppress(OSError):
                    directory.rmdir()
        kubelet_root = self.config.kubelet_root
        if kubelet_root.exists() and (kubelet_root / OWNER_MARKER).exists():
            shutil.rmtree(kubelet_root)
        root = self.layout.root
        if not root.exists():
            return
        kept = {Path(p).resolve() for p in keep}
        for child in root.iterdir():
            if child.name == OWNER_MARKER:
                continue
            if child.resolve() in kept:
                continue
            if any(k.is_relative_to(child.resolve()) for k in kept):
                _remove_except(child, kept)
                continue
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
        if kept:
            (root / OWNER_MARKER).write_text("created by restoredrill's local provider\n"
                                             + "".join(f"keep {path}\n" for path in sorted(kept)))
        else:
            (root / OWNER_MARKER).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                root.rmdir()


def _cgroup_tree(root: Path) -> list[Path]:
    """Every cgroup directory under `root`; os.walk tolerates cgroups vanishing mid-walk
    (containerd and the kubelet remove them concurrently), where Path.rglob raises."""
    return [Path(top) for top, _dirs, _files in os.walk(root)]


def _remove_except(directory: Path, kept: set[Path]) -> None:
    for child in directory.iterdir():
        resolved = child.resolve()
        if resolved in kept:
            continue
        if any(k.is_relative_to(resolved) for k in kept):
            _remove_except(child, kept)
        elif child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()

