"""What the local cluster is: its settings, the paths inside its directory, its process names."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from restoredrill.pins import cache_dir

# Marks a directory as created by this provider: nothing without it is ever deleted or unmounted.
OWNER_MARKER = ".restoredrill-local-cluster"
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
NODE_PROCESSES = ("containerd", "kubelet", "kube-proxy")
# Start order; `down` stops in reverse.
PROCESS_ORDER = ("etcd", "containerd", "kube-apiserver", "kube-controller-manager", "kube-scheduler",
                 "kubelet", "kube-proxy")
# The CNI network's name: containerd keys its CNI result cache (`/var/lib/cni/results/NAME-...`) by it.
CNI_NETWORK = "restoredrill"
# The --cgroup-root of kubelet, a directory in every cgroup v1 hierarchy.
CGROUP_ROOT_NAME = "restoredrill"
# Kernel settings pods need; `up` records the old values and `down` puts them back.
SYSCTLS = {"net/ipv4/ip_forward": "1", "net/bridge/bridge-nf-call-iptables": "1",
           "net/bridge/bridge-nf-call-ip6tables": "1"}


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

    def listen_ports(self) -> dict[int, str]:
        """Ports our processes bind on this host (on 127.0.0.1 or the node IP), with who binds them.

        Checked on 127.0.0.1 before `up`: a listener on 0.0.0.0 there would also block our bind.
        """
        return {self.etcd_client_port: "etcd", self.etcd_peer_port: "etcd peer",
                self.api_port: "kube-apiserver", 10250: "kubelet", 10248: "kubelet healthz",
                10249: "kube-proxy metrics", 10256: "kube-proxy healthz", 10257: "kube-controller-manager",
                10259: "kube-scheduler"}


class Layout:
    """Paths inside the cluster directory."""

    def __init__(self, config: LocalClusterConfig) -> None:
        self.root = config.cluster_dir
        self.marker = self.root / OWNER_MARKER
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
        # The one registry of what `up` put on the host (see ledger.py).
        self.ledger = self.root / "host-resources.json"
        self.kubeconfig = self.root / "kubeconfig"
        self.images = self.root / "images"

    def log(self, name: str) -> Path:
        return self.logs / f"{name}.log"

    def component_kubeconfig(self, name: str) -> Path:
        return self.etc / f"{name}.kubeconfig"
