"""Before `up` touches anything: is this host free for the local cluster?

Refuses a host that is already a Kubernetes node (kubeadm, k3s: a kubelet root, kube-proxy's
chains), a bridge of our name or a network over our address ranges (podman, nerdctl, flannel),
a cluster directory or cgroup we did not make, and ports taken. Every problem is reported at
once, each naming the file, chain, interface or port and what to do about it; nothing has been
changed when it raises.
"""

from __future__ import annotations

from collections.abc import Iterable

from restoredrill.cluster.local import iptables
from restoredrill.cluster.local.config import CGROUP_ROOT_NAME, OWNER_MARKER, SYSCTLS
from restoredrill.cluster.local.configfiles import CNI_BIN_DIR
from restoredrill.cluster.local.footprint import Footprint, overlaps, under
from restoredrill.cluster.local.ledger import Kind
from restoredrill.errors import MissingToolError, NotOursError, RestoreDrillError
from restoredrill.toolchain.gobuild import GoToolchain

HOST_PROGRAMS = (("containerd", "containerd"), ("runc", "runc"), ("ctr", "containerd"), ("iptables", "iptables"),
                 ("conntrack", "conntrack"), ("openssl", "openssl"), ("ip", "iproute2"), ("umount", "mount"))
CLUSTER_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy",
                    "kubectl")
OTHER_NODE = ("this host looks like a Kubernetes node already (kubeadm, k3s, ...): the local provider needs "
              "it for itself; use a machine that is not a node, or --cluster-provider kind / existing")


class HostNotFree(NotOursError):
    """The host holds things the local cluster would clash with; the message says what was changed."""

    def __init__(self, problems: list[tuple[str, str]], *, changed: str = "nothing was changed") -> None:
        self.problems = problems
        lines = [f"  - {what}\n      fix: {remedy}" for what, remedy in problems]
        super().__init__(f"the local cluster cannot start on this host; {changed}:\n" + "\n".join(lines))


def check_programs(toolchain: GoToolchain, footprint: Footprint) -> None:
    for tool, package in HOST_PROGRAMS:
        if footprint.host.program(tool) is None:
            raise MissingToolError(tool, remedy=f"run `restoredrill toolchain` (installs {package})")
    if not (CNI_BIN_DIR / "bridge").exists():
        raise MissingToolError(str(CNI_BIN_DIR / "bridge"),
                               remedy="run `restoredrill toolchain` (installs containernetworking-plugins)")
    for binary in CLUSTER_BINARIES:
        toolchain.binary(binary)
    for key in SYSCTLS:
        if not footprint.host.sysctl_path(key).exists():
            raise RestoreDrillError(f"kernel setting {key} is missing (module br_netfilter not loaded?)",
                                    remedy="load br_netfilter (`modprobe br_netfilter`) and retry")


def host_conflicts(footprint: Footprint) -> list[tuple[str, str]]:
    """What on this host is not ours and would clash with the cluster: (problem, remedy) pairs."""
    config, layout, host, ledger = footprint.config, footprint.layout, footprint.host, footprint.ledger
    problems: list[tuple[str, str]] = []

    root = layout.root
    if root.is_dir() and any(root.iterdir()) and not footprint.cluster_dir_is_ours():
        problems.append((f"cluster directory {root} has files and no {OWNER_MARKER}: restoredrill did not make it",
                         "pass --cluster-dir with a new or restoredrill-made directory"))

    kubelet_root = config.kubelet_root
    if not footprint.kubelet_root_is_ours():
        marker = kubelet_root / OWNER_MARKER
        foreign_mounts = [m.point for m in host.mounts() if under(m.point, [kubelet_root])]
        if marker.is_file():
            problems.append((f"kubelet root {kubelet_root} belongs to the restoredrill cluster in "
                             f"{marker.read_text().strip()}",
                             f"`restoredrill cluster down --cluster-dir {marker.read_text().strip()}` first"))
        elif kubelet_root.is_dir() and any(kubelet_root.iterdir()):
            entries = ", ".join(sorted(p.name for p in kubelet_root.iterdir())[:6])
            problems.append((f"kubelet root {kubelet_root} is another kubelet's (it holds {entries} and no "
                             f"{OWNER_MARKER})", OTHER_NODE))
        if foreign_mounts:
            problems.append((f"{len(foreign_mounts)} mounts under {kubelet_root} are not ours: "
                             + ", ".join(foreign_mounts[:4]), OTHER_NODE))

    if config.bridge in host.links() and ledger.find(Kind.INTERFACE, config.bridge) is None:
        problems.append((f"network interface {config.bridge} exists and restoredrill did not make it "
                         f"(not in {layout.ledger})",
                         f"if it is left from an older restoredrill, `ip link del {config.bridge}`; "
                         "otherwise stop what made it"))
    ranges = (config.pod_cidr, config.service_cidr)
    ours = {config.bridge} if ledger.find(Kind.INTERFACE, config.bridge) else set()
    for address in host.ipv4_networks():
        if address.interface not in ours and overlaps(address.network, ranges):
            problems.append((f"interface {address.interface} has {address.network}, inside the cluster's ranges "
                             f"{' and '.join(ranges)}",
                             f"remove that network (a podman/nerdctl/CNI bridge?) or stop what made "
                             f"{address.interface}; the local provider's ranges are fixed in LocalClusterConfig"))

    recorded = {entry.name for entry in ledger.resources(Kind.IPTABLES_CHAIN)}
    clashing: dict[str, list[str]] = {}
    for family, tables in footprint.iptables_chains().items():
        for identifier in sorted(iptables.chains(family, tables) - recorded):
            chain = iptables.split_chain_id(identifier)[2]
            if iptables.is_kube_component_chain(chain):
                clashing.setdefault(family, []).append(identifier)
    for family, found in clashing.items():
        problems.append((f"{len(found)} {family} chains of another kube-proxy or kubelet: {', '.join(found[:6])}"
                         + (", ..." if len(found) > 6 else ""),
                         f"{OTHER_NODE}; if no kube-proxy runs here any more, `kube-proxy --cleanup` removes them"))

    cgroups = {entry.name for entry in ledger.resources(Kind.CGROUP)}
    stray = [str(h / CGROUP_ROOT_NAME) for h in host.cgroup_hierarchies()
             if (h / CGROUP_ROOT_NAME).is_dir() and str(h / CGROUP_ROOT_NAME) not in cgroups]
    if stray:
        problems.append((f"cgroups named {CGROUP_ROOT_NAME} that restoredrill did not record: {', '.join(stray[:4])}",
                         "if they are empty leftovers of an older restoredrill, `rmdir` them "
                         "(`find DIR -depth -type d -exec rmdir {} +`)"))
    return problems


def busy_ports(footprint: Footprint, ports: Iterable[tuple[int, str]]) -> list[tuple[str, str]]:
    return [(f"port 127.0.0.1:{port} ({what}) is already in use",
             "stop whatever listens there (`ss -ltnp`) and retry")
            for port, what in ports if footprint.host.port_in_use("127.0.0.1", port)]


def check_host(footprint: Footprint) -> None:
    problems = host_conflicts(footprint)
    if problems:
        raise HostNotFree(problems)


def check_ports(footprint: Footprint) -> None:
    """After our own leftovers are gone (our old etcd held 2379 until then), are our ports free?"""
    problems = busy_ports(footprint, footprint.config.listen_ports().items())
    if problems:
        raise HostNotFree(problems, changed="only what an earlier cluster of ours left was removed")
