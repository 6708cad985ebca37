"""The local provider on a host that is not only ours: nothing of theirs is touched, errors say what to do.

A fake host stands in for the machine: a kubelet root of another node (kubeadm/k3s), another
kube-proxy's `KUBE-*` chains and podman's `CNI-*` chains in iptables-save output, podman's bridge
`cni-podman0` with its CNI cache, foreign mounts. The provider's real code runs against it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest

from restoredrill.cluster.local import OWNER_MARKER, LocalCluster, LocalClusterConfig, iptables, preflight
from restoredrill.cluster.local.footprint import shim_socket_name
from restoredrill.cluster.local.host import Address, Host, HostPaths, Mount
from restoredrill.cluster.local.ledger import HostLedger, HostSnapshot, Kind, Resource
from restoredrill.cluster.local.preflight import HostNotFree
from restoredrill.errors import RestoreDrillError

FOREIGN_NAT = """\
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-FOREIGN-TEST - [0:0]
:CNI-3f9a1c2b7e6d5a4c3b2a1f0e - [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A POSTROUTING -s 10.88.0.5/32 -m comment --comment "name: \\"podman\\" id: \\"abc\\"" -j CNI-3f9a1c2b7e6d5a4c3b2a1f0e
-A CNI-3f9a1c2b7e6d5a4c3b2a1f0e -d 10.88.0.0/16 -m comment --comment "name: \\"podman\\" id: \\"abc\\"" -j ACCEPT
-A OUTPUT -j KUBE-FOREIGN-TEST
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:CNI-FORWARD - [0:0]
-A FORWARD -m comment --comment "CNI firewall plugin rules" -j CNI-FORWARD
COMMIT
"""
# What another node's kube-proxy leaves in nat: the same names ours would make.
OTHER_KUBE_PROXY = """\
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-NPX46M4PTMTKRN6Y - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A KUBE-SERVICES -d 10.43.0.1/32 -p tcp -j KUBE-SVC-NPX46M4PTMTKRN6Y
COMMIT
"""


class FakeHost(Host):
    """A host in a temporary directory; every change it is asked for is logged in `changes`."""

    def __init__(self, root: Path) -> None:
        paths = HostPaths(proc=root / "proc", sys_net=root / "sys/class/net", cgroup_fs=root / "sys/fs/cgroup",
                          container_log_links=root / "var/log/containers", cni_cache=root / "var/lib/cni/results",
                          shim_sockets=root / "run/containerd/s")
        super().__init__(paths)
        self.root = root
        self.changes: list[str] = []
        self.links_: dict[str, list[str]] = {"lo": [], "eth0": []}
        self.networks: list[Address] = [Address("eth0", "192.168.1.0/24")]
        self.tables: dict[str, dict[str, list[str]]] = {"iptables": {}, "ip6tables": {}}
        self.mount_table: list[Mount] = [Mount("/", "ext4", "/dev/sda1")]
        self.procs: dict[int, list[str]] = {}
        self.busy_ports: set[int] = set()
        for key in ("net/ipv4/ip_forward", "net/bridge/bridge-nf-call-iptables",
                    "net/bridge/bridge-nf-call-ip6tables"):
            self.sysctl_path(key).parent.mkdir(parents=True, exist_ok=True)
            self.sysctl_path(key).write_text("0\n")
        for controller in ("cpu", "memory"):
            (paths.cgroup_fs / controller).mkdir(parents=True)
            (paths.cgroup_fs / controller / "cgroup.procs").write_text("")

    def load_iptables(self, text: str, family: str = "iptables") -> None:
        for table, lines in iptables.parse_save(text).items():
            self.tables[family].setdefault(table, []).extend(lines)

    def add_link(self, name: str, *, members: Iterable[str] = (), network: str | None = None) -> None:
        self.links_[name] = list(members)
        for member in members:
            self.links_[member] = []
        if network:
            self.networks.append(Address(name, network))

    # ---- Host, faked ------------------------------------------------------------------------
    def run(self, command: list[str], *, timeout: float = 60, check: bool = True, input: str | None = None,
            remedy: str | None = None) -> subprocess.CompletedProcess[str]:
        self.changes.append("run " + " ".join(command))
        return subprocess.CompletedProcess(command, 0, "", "")

    def program(self, name: str) -> str | None:
        return f"/usr/sbin/{name}"

    def processes(self) -> Iterable[tuple[int, list[str]]]:
        return list(self.procs.items())

    def start_time(self, pid: int) -> str | None:
        return "1000" if pid in self.procs else None

    def kill(self, pid: int, signal_number: int) -> None:
        self.changes.append(f"kill {pid} {self.procs.get(pid, ['?'])[0]}")
        self.procs.pop(pid, None)

    def reap(self, pid: int) -> None:
        pass

    def port_in_use(self, host: str, port: int) -> bool:
        return port in self.busy_ports

    def socket_alive(self, path: Path) -> bool:
        return False

    def mounts(self) -> list[Mount]:
        return list(self.mount_table)

    def unmount(self, point: str) -> bool:
        self.changes.append(f"umount {point}")
        self.mount_table = [m for m in self.mount_table if m.point != point]
        return True

    def links(self) -> list[str]:
        return sorted(self.links_)

    def bridge_members(self, bridge: str) -> list[str]:
        return list(self.links_.get(bridge, []))

    def ipv4_networks(self) -> list[Address]:
        return list(self.networks)

    def add_bridge(self, name: str, address: str) -> None:
        self.changes.append(f"add bridge {name} {address}")
        self.add_link(name, network=address)

    def delete_link(self, name: str) -> None:
        self.changes.append(f"delete link {name}")
        self.links_.pop(name, None)
        self.networks = [a for a in self.networks if a.interface != name]

    def iptables_save(self, family: str) -> str | None:
        return "".join(f"*{table}\n" + "".join(f"{line}\n" for line in lines) + "COMMIT\n"
                       for table, lines in self.tables[family].items())

    def iptables_restore(self, family: str, script: str) -> subprocess.CompletedProcess[str]:
        self.changes.append(f"{family}-restore {script!r}")
        table = ""
        for line in script.splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith("-D "):
                self.tables[family][table].remove("-A " + line[3:])
            elif line.startswith("-F "):
                self.tables[family][table] = [rule for rule in self.tables[family][table]
                                              if not rule.startswith(f"-A {line[3:]} ")]
            elif line.startswith("-X "):
                declaration = [rule for rule in self.tables[family][table] if rule.startswith(f":{line[3:]} ")]
                self.tables[family][table].remove(declaration[0])
        return subprocess.CompletedProcess([], 0, "", "")

    def iptables(self, family: str, *args: str) -> subprocess.CompletedProcess[str]:
        raise AssertionError(f"unexpected single iptables call {args}")


class StubToolchain:
    def binary(self, name: str) -> Path:
        return Path(f"/cache/bin/{name}")


@pytest.fixture
def host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeHost:
    cni_bin = tmp_path / "usr/lib/cni"
    cni_bin.mkdir(parents=True)
    (cni_bin / "bridge").write_text("")
    monkeypatch.setattr(preflight, "CNI_BIN_DIR", cni_bin)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    return FakeHost(tmp_path / "host")


def local_cluster(host: FakeHost) -> LocalCluster:
    config = LocalClusterConfig(cluster_dir=host.root / "cache/clusters/local",
                                kubelet_root=host.root / "var/lib/kubelet")
    return LocalCluster(config, host=host, toolchain=StubToolchain(), out=lambda line: None)  # type: ignore[arg-type]


def make_podman_host(host: FakeHost) -> None:
    """podman with a running container: its bridge, veth, CNI chains and cache, and a hand-made chain."""
    host.add_link("cni-podman0", members=["veth1a2b3c"], network="10.88.0.0/16")
    host.load_iptables(FOREIGN_NAT)
    host.paths.cni_cache.mkdir(parents=True)
    (host.paths.cni_cache / "podman-abc-eth0").write_text("{}")
    (host.paths.cni_cache / "cni-loopback-abc-lo").write_text("{}")  # a sandbox of the system containerd
    host.paths.shim_sockets.mkdir(parents=True)
    (host.paths.shim_sockets / "0123456789abcdef").write_text("")  # a system containerd's shim
    host.mount_table.append(Mount("/run/netns/cni-1234", "nsfs", "nsfs"))
    host.mount_table.append(Mount("/var/lib/containers/storage/overlay", "overlay", "overlay"))


def make_foreign_node(host: FakeHost, kubelet_root: Path) -> None:
    """A kubeadm/k3s node: its kubelet root with pods and mounts, its kube-proxy's chains."""
    (kubelet_root / "pods/5d1e/volumes").mkdir(parents=True)
    (kubelet_root / "config.yaml").write_text("kind: KubeletConfiguration\n")
    host.mount_table.append(Mount(f"{kubelet_root}/pods/5d1e/volumes/kubernetes.io~projected/token", "tmpfs",
                                  "tmpfs"))
    host.load_iptables(OTHER_KUBE_PROXY)


def host_state(host: FakeHost) -> tuple[object, ...]:
    return (json.dumps(host.tables, sort_keys=True), sorted(host.links_), list(host.mount_table),
            sorted(p.name for p in host.paths.cni_cache.iterdir()) if host.paths.cni_cache.is_dir() else [])


# ---- a host that is already a node: refused before anything is touched ------------------------

def test_up_on_another_node_refuses_and_touches_nothing(host: FakeHost) -> None:
    cluster = local_cluster(host)
    kubelet_root = cluster.config.kubelet_root
    make_foreign_node(host, kubelet_root)
    make_podman_host(host)
    before = host_state(host)

    with pytest.raises(HostNotFree) as refused:
        cluster.up()

    assert host.changes == [], "the preflight must refuse before any change"
    assert host_state(host) == before
    assert not cluster.layout.root.exists(), "not even the cluster dir is made"
    assert (kubelet_root / "config.yaml").exists() and not (kubelet_root / OWNER_MARKER).exists()
    message = str(refused.value)
    assert f"kubelet root {kubelet_root} is another kubelet's" in message
    assert "token" in message, "the foreign mounts are named"
    assert "iptables/nat/KUBE-SERVICES" in message and "iptables/nat/KUBE-SVC-NPX46M4PTMTKRN6Y" in message
    assert "kube-proxy --cleanup" in message
    assert "--cluster-provider kind / existing" in message, "the remedy says what to use instead"
    assert "KUBE-FOREIGN-TEST" not in message, "a hand-made chain is no kube-proxy's: not a clash"
    assert "cni-podman0" not in message, "podman's bridge is outside our ranges: no clash"


def test_down_on_another_node_touches_nothing_of_it(host: FakeHost) -> None:
    cluster = local_cluster(host)
    make_foreign_node(host, cluster.config.kubelet_root)
    make_podman_host(host)
    before = host_state(host)

    cluster.down()

    assert [c for c in host.changes if not c.startswith("run ctr")] == []
    assert host_state(host) == before
    assert (cluster.config.kubelet_root / "config.yaml").exists()
    assert cluster.leftovers() == []


def test_a_foreign_bridge_of_our_name_and_an_overlapping_network_are_refused(host: FakeHost) -> None:
    host.add_link("rdbr0")
    host.add_link("cni0", network="10.244.0.0/24")  # flannel on a kubeadm node
    cluster = local_cluster(host)

    with pytest.raises(HostNotFree) as refused:
        cluster.up()

    message = str(refused.value)
    assert "network interface rdbr0 exists and restoredrill did not make it" in message
    assert "`ip link del rdbr0`" in message
    assert "interface cni0 has 10.244.0.0/24, inside the cluster's ranges" in message
    assert host.changes == [] and "rdbr0" in host.links() and "cni0" in host.links()


def test_a_kubelet_root_of_another_restoredrill_cluster_names_it(host: FakeHost) -> None:
    cluster = local_cluster(host)
    cluster.config.kubelet_root.mkdir(parents=True)
    (cluster.config.kubelet_root / OWNER_MARKER).write_text("/elsewhere/cluster\n")

    with pytest.raises(HostNotFree, match=r"`restoredrill cluster down --cluster-dir /elsewhere/cluster`"):
        cluster.up()
    assert host.changes == []


def test_a_cluster_dir_restoredrill_did_not_make_is_refused(host: FakeHost) -> None:
    cluster = local_cluster(host)
    cluster.layout.root.mkdir(parents=True)
    (cluster.layout.root / "precious.txt").write_text("theirs")

    with pytest.raises(HostNotFree, match=r"has files and no \.restoredrill-local-cluster"):
        cluster.up()
    assert (cluster.layout.root / "precious.txt").read_text() == "theirs"
    assert not (cluster.layout.root / OWNER_MARKER).exists()


def test_a_port_in_use_is_refused_with_who_binds_it(host: FakeHost) -> None:
    host.busy_ports.add(2379)
    with pytest.raises(HostNotFree, match=r"port 127.0.0.1:2379 \(etcd\) is already in use"):
        local_cluster(host).up()
    assert host.changes == []


# ---- a podman host: our cluster ran beside it; down removes only what the ledger holds --------

def run_our_cluster_beside(host: FakeHost, cluster: LocalCluster) -> None:
    """What `up` and our components do to the host, through the provider's own recording code."""
    cluster._prepare_dirs()
    cluster._set_sysctls()
    cluster._create_bridge()
    cluster._prepare_cgroups()
    # Our kube-proxy and kubelet make their chains; our pods get veths, mounts, CNI cache entries.
    host.load_iptables("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-SVC-NPX46M4PTMTKRN6Y - [0:0]\n"
                       ":KUBE-KUBELET-CANARY - [0:0]\n"
                       "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"
                       "-A OUTPUT -j KUBE-SERVICES\n-A KUBE-SERVICES -d 10.96.0.1/32 -j KUBE-SVC-NPX46M4PTMTKRN6Y\n"
                       "COMMIT\n*filter\n:KUBE-FORWARD - [0:0]\n-A FORWARD -j KUBE-FORWARD\nCOMMIT\n")
    host.add_link("vethours1")
    host.links_["rdbr0"].append("vethours1")
    root, kubelet_root = cluster.layout.root, cluster.config.kubelet_root
    host.mount_table += [Mount(f"{root}/containerd/state/netns/cni-ours", "nsfs", "nsfs"),
                         Mount(f"{kubelet_root}/pods/ours/volumes/token", "tmpfs", "tmpfs")]
    host.paths.cni_cache.mkdir(parents=True, exist_ok=True)
    (host.paths.cni_cache / "restoredrill-ours-eth0").write_text("{}")
    (host.paths.cni_cache / "cni-loopback-ours-lo").write_text("{}")
    (host.paths.cni_cache / "cni-loopback-sandbox1-lo").write_text("{}")
    address = str(cluster.layout.containerd_socket)
    host.procs[4242] = ["/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "sandbox1",
                        "-address", address]
    host.procs[777] = ["/usr/bin/containerd-shim-runc-v2", "-namespace", "default", "-id", "web",
                       "-address", "/run/containerd/containerd.sock"]  # the system containerd's
    our_socket = host.paths.shim_sockets / shim_socket_name(containerd_address=address, namespace="k8s.io",
                                                            shim_id="sandbox1")
    our_socket.parent.mkdir(parents=True, exist_ok=True)
    our_socket.write_text("")
    host.paths.container_log_links.mkdir(parents=True)
    (cluster.layout.pod_logs / "ours.log").write_text("log")
    (host.paths.container_log_links / "ours.log").symlink_to(cluster.layout.pod_logs / "ours.log")
    (host.paths.container_log_links / "theirs.log").symlink_to("/var/log/pods/theirs.log")
    cluster.footprint.observe()


def test_down_beside_podman_removes_only_what_the_ledger_recorded(host: FakeHost) -> None:
    make_podman_host(host)
    foreign_before = host_state(host)
    cluster = local_cluster(host)
    run_our_cluster_beside(host, cluster)
    recorded = {(r.kind, r.name) for r in cluster.ledger.resources()}
    assert (Kind.IPTABLES_CHAIN, "iptables/nat/KUBE-SERVICES") in recorded
    assert (Kind.IPTABLES_CHAIN, "iptables/nat/KUBE-FOREIGN-TEST") not in recorded, "it was there before up"
    assert (Kind.INTERFACE, "rdbr0") in recorded and (Kind.SYSCTL, "net/ipv4/ip_forward") in recorded
    assert not any(name.endswith("podman-abc-eth0") for _, name in recorded)

    cluster.down()

    assert host_state(host) == foreign_before, "podman's chains, rules, bridge, veth, mounts and cache are intact"
    assert 777 in host.procs, "the system containerd's shim lives"
    assert 4242 not in host.procs, "our shim is gone"
    assert sorted(p.name for p in host.paths.shim_sockets.iterdir()) == ["0123456789abcdef"]
    assert [p.name for p in host.paths.container_log_links.iterdir()] == ["theirs.log"]
    assert host.sysctl_path("net/ipv4/ip_forward").read_text() == "0", "the old value is back"
    assert not any((host.paths.cgroup_fs / c / "restoredrill").exists() for c in ("cpu", "memory"))
    assert not cluster.config.kubelet_root.exists() and not cluster.layout.root.exists()
    assert cluster.leftovers() == []
    for change in (c.replace(str(host.root), "HOST") for c in host.changes):
        for theirs in ("podman", "veth1a2b3c", "KUBE-FOREIGN-TEST", "CNI-", "/run/netns", "/var/lib/containers"):
            assert theirs not in change, f"{change!r} touches {theirs}"


def test_leftover_cleanup_before_up_and_after_a_failed_up_spare_the_foreign(host: FakeHost) -> None:
    make_podman_host(host)
    foreign_before = host_state(host)
    crashed = local_cluster(host)
    run_our_cluster_beside(host, crashed)  # the earlier run died here: its ledger is all that is left
    host.procs.pop(4242)

    cluster = local_cluster(host)

    def failing_up(started: float) -> None:
        cluster._prepare_dirs()
        cluster._create_bridge()
        raise RuntimeError("kubelet did not start")

    cluster._up = failing_up  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="kubelet did not start"):
        cluster.up()

    assert host_state(host) == foreign_before
    assert "rdbr0" not in host.links()
    assert cluster.leftovers() == []
    assert cluster.layout.logs.is_dir(), "the failed run's logs are kept"


def test_an_interrupted_down_keeps_the_ledger_and_says_what_is_left(host: FakeHost) -> None:
    cluster = local_cluster(host)
    run_our_cluster_beside(host, cluster)

    def stuck(family: str, script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess([], 1, "", "resource busy")

    host.iptables_restore = stuck  # type: ignore[method-assign]
    host.iptables = lambda family, *args: subprocess.CompletedProcess([], 1, "", "")  # type: ignore[method-assign]
    with pytest.raises(RestoreDrillError, match=r"down could not remove: .*iptables-chain iptables/nat/KUBE-SERVICES"):
        cluster.down()
    assert cluster.ledger.exists()
    assert "iptables-chain iptables/filter/KUBE-FORWARD" in cluster.leftovers()


# ---- the pieces ------------------------------------------------------------------------------

def test_removal_script_deletes_our_chains_and_jumps_into_them_only() -> None:
    tables = iptables.parse_save(FOREIGN_NAT + "*mangle\n:KUBE-IPTABLES-HINT - [0:0]\nCOMMIT\n")
    nat = tables["nat"] + [":KUBE-SERVICES - [0:0]", "-A OUTPUT -j KUBE-SERVICES", "-A KUBE-SERVICES -j RETURN"]
    script = iptables.removal_script("nat", nat, ["KUBE-SERVICES", "KUBE-NOT-THERE"])
    assert script == "*nat\n-D OUTPUT -j KUBE-SERVICES\n-F KUBE-SERVICES\n-X KUBE-SERVICES\nCOMMIT\n"
    assert iptables.removal_script("mangle", tables["mangle"], ["KUBE-SERVICES"]) is None
    assert iptables.is_kube_component_chain("KUBE-SEP-ABC") and not iptables.is_kube_component_chain("KUBE-FOREIGN-X")
    assert iptables.mentions_network(tables, "nat", "CNI-3f9a1c2b7e6d5a4c3b2a1f0e", "podman")
    assert not iptables.mentions_network(tables, "nat", "CNI-3f9a1c2b7e6d5a4c3b2a1f0e", "restoredrill")


def test_ledger_writes_atomically_and_replaces_entries_by_kind_and_name(tmp_path: Path) -> None:
    ledger = HostLedger(tmp_path / "cluster" / "host-resources.json")
    assert not ledger.exists() and ledger.resources() == [] and ledger.snapshot() is None
    ledger.record(Resource(Kind.PROCESS, "etcd", {"pid": "1", "start": "5"}))
    ledger.record(Resource(Kind.PROCESS, "etcd", {"pid": "2", "start": "9"}))
    ledger.record(Resource(Kind.INTERFACE, "rdbr0"))
    ledger.set_snapshot(HostSnapshot(iptables_chains=frozenset({"iptables/nat/X"})))
    assert ledger.resources(Kind.PROCESS) == [Resource(Kind.PROCESS, "etcd", {"pid": "2", "start": "9"})]
    assert HostLedger(ledger.path).snapshot() == HostSnapshot(iptables_chains=frozenset({"iptables/nat/X"}))
    ledger.forget(Resource(Kind.INTERFACE, "rdbr0"))
    assert [r.kind for r in ledger.resources()] == [Kind.PROCESS]
    assert os.listdir(ledger.path.parent) == ["host-resources.json"], "no temporary file is left"
