"""What of the host is ours, and taking it away again.

Ours is what the ledger records, and what is provably ours by where it lives: anything under the
cluster directory (which carries our owner marker) or under a kubelet root whose marker names this
cluster directory, and kubelet's log links into our pod-log directory. Nothing else is ever
unmounted, deleted or flushed, whatever its name: a `KUBE-*` chain or a `cni-*` bridge of another
node on the same host looks exactly like ours, and is not.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import os
import shutil
import signal
from collections.abc import Callable, Iterable
from pathlib import Path

from restoredrill.cluster.local import iptables
from restoredrill.cluster.local.config import CNI_NETWORK, OWNER_MARKER, Layout, LocalClusterConfig
from restoredrill.cluster.local.host import Host
from restoredrill.cluster.local.ledger import HostLedger, HostSnapshot, Kind, Resource
from restoredrill.errors import RestoreDrillError
from restoredrill.timeouts import timeout
from restoredrill.waits import wait_until

# The containerd namespace of Kubernetes pods: part of each shim's socket name.
CRI_NAMESPACE = "k8s.io"


def under(path: str | Path, roots: Iterable[Path]) -> bool:
    text = str(path)
    return any(text == str(root) or text.startswith(str(root).rstrip("/") + "/") for root in roots)


def shim_socket_name(*, containerd_address: str, namespace: str, shim_id: str) -> str:
    """The name containerd 1.6 gives a shim's socket in /run/containerd/s: sha256 of ADDRESS/NS/ID."""
    return hashlib.sha256(os.path.join(containerd_address, namespace, shim_id).encode()).hexdigest()


class Footprint:
    """The host resources of one local cluster: snapshot, record, list and remove them."""

    def __init__(self, *, config: LocalClusterConfig, layout: Layout, host: Host, ledger: HostLedger,
                 out: Callable[[str], None]) -> None:
        self.config = config
        self.layout = layout
        self.host = host
        self.ledger = ledger
        self.out = out

    # ---- what is provably ours --------------------------------------------------------------
    def cluster_dir_is_ours(self) -> bool:
        return self.layout.marker.is_file()

    def kubelet_root_is_ours(self) -> bool:
        """Our marker in the kubelet root names this cluster directory (or the ledger says we made it)."""
        marker = self.config.kubelet_root / OWNER_MARKER
        with contextlib.suppress(OSError):
            if marker.read_text().strip() == str(self.layout.root):
                return True
        return self.ledger.find(Kind.DIR, str(self.config.kubelet_root)) is not None

    def our_roots(self) -> list[Path]:
        """The directories under which every mount and file is ours."""
        roots = [self.layout.root] if self.cluster_dir_is_ours() else []
        if self.kubelet_root_is_ours():
            roots.append(self.config.kubelet_root)
        return roots

    def our_mounts(self, *, extra: Iterable[str] = ()) -> list[str]:
        roots, extra = self.our_roots(), set(extra)
        return [mount.point for mount in self.host.mounts() if under(mount.point, roots) or mount.point in extra]

    def our_log_links(self) -> list[Path]:
        links = self.host.paths.container_log_links
        if not links.is_dir():
            return []
        return [link for link in links.iterdir()
                if link.is_symlink() and under(os.readlink(link), [self.layout.pod_logs])]

    def our_bridge_ports(self) -> list[str]:
        """The veths on our bridge: the CNI plugin made them for our pods."""
        if self.ledger.find(Kind.INTERFACE, self.config.bridge) is None:
            return []
        return self.host.bridge_members(self.config.bridge)

    def iptables_chains(self) -> dict[str, dict[str, list[str]]]:
        """{family: parsed iptables-save} for each installed family."""
        saved = {}
        for family in iptables.FAMILIES:
            text = self.host.iptables_save(family)
            if text is not None:
                saved[family] = iptables.parse_save(text)
        return saved

    # ---- before `up` starts anything, and as our components make things ---------------------
    def snapshot(self) -> HostSnapshot:
        chains: set[str] = set()
        for family, tables in self.iptables_chains().items():
            chains |= iptables.chains(family, tables)
        paths = self.host.paths
        return HostSnapshot(
            iptables_chains=frozenset(chains),
            cni_cache=frozenset(p.name for p in paths.cni_cache.iterdir()) if paths.cni_cache.is_dir() else frozenset(),
            shim_sockets=frozenset(p.name for p in paths.shim_sockets.iterdir())
            if paths.shim_sockets.is_dir() else frozenset(),
            existing_dirs=frozenset(str(d) for d in paths.shared_dirs() if d.exists()),
        )

    def observe(self) -> list[Resource]:
        """Record what our components made since the snapshot: kube-proxy's and kubelet's chains,
        the CNI cache entries of our network, our shims' sockets, the shared dirs they created."""
        before = self.ledger.snapshot()
        if before is None:
            return []
        found: list[Resource] = []
        for family, tables in self.iptables_chains().items():
            for identifier in sorted(iptables.chains(family, tables) - before.iptables_chains):
                _, table, chain = iptables.split_chain_id(identifier)
                if chain.startswith("KUBE-") or (
                        chain.startswith("CNI-") and iptables.mentions_network(tables, table, chain, CNI_NETWORK)):
                    found.append(Resource(Kind.IPTABLES_CHAIN, identifier))
        paths = self.host.paths
        shims = self._our_shims()
        if paths.cni_cache.is_dir():
            found += [Resource(Kind.CNI_CACHE, str(path)) for path in self._our_cni_cache(shims)
                      if path.name not in before.cni_cache]
        for shim_id, namespace in shims:
            name = shim_socket_name(containerd_address=str(self.layout.containerd_socket), namespace=namespace,
                                    shim_id=shim_id)
            if (paths.shim_sockets / name).exists() and name not in before.shim_sockets:
                found.append(Resource(Kind.SHIM_SOCKET, str(paths.shim_sockets / name)))
        found += [Resource(Kind.DIR, str(d), {"shared": "yes"}) for d in paths.shared_dirs()
                  if d.exists() and str(d) not in before.existing_dirs]
        self.ledger.record_all(found)
        return found

    def _our_shims(self) -> list[tuple[str, str]]:
        """(id, containerd namespace) of every shim serving our containerd; a pod's shim id is its sandbox id."""
        address = str(self.layout.containerd_socket)
        shims = []
        for _pid, argv in self.host.processes():
            if Path(argv[0]).name.startswith("containerd-shim") and address in argv:
                shim_id = _flag(argv, "-id")
                if shim_id:
                    shims.append((shim_id, _flag(argv, "-namespace") or CRI_NAMESPACE))
        # And every task our containerd keeps state for (<state>/io.containerd.runtime.v2.task/<ns>/<id>):
        # a shim started after the last look and killed by `down` is no process any more, but its
        # socket is still there and its bundle names it (our containerd's own state: only ours).
        tasks = self.layout.containerd / "state" / "io.containerd.runtime.v2.task"
        if tasks.is_dir():
            for namespace in sorted(d for d in tasks.iterdir() if d.is_dir()):
                shims += [(task.name, namespace.name) for task in sorted(namespace.iterdir()) if task.is_dir()]
        return list(dict.fromkeys(shims))

    def _our_cni_cache(self, shims: list[tuple[str, str]]) -> list[Path]:
        """containerd's CNI result cache entries of our pods: NETWORK-SANDBOX-IFNAME for our network,
        and the loopback network's `cni-loopback-SANDBOX-lo` of the same sandboxes."""
        entries = sorted(self.host.paths.cni_cache.iterdir())
        ours, loopback = f"{CNI_NETWORK}-", "cni-loopback-"

        def sandbox(name: str, prefix: str) -> str:
            return name[len(prefix):].rsplit("-", 1)[0]

        sandboxes = {shim_id for shim_id, _ in shims}
        sandboxes |= {sandbox(e.name, ours) for e in entries if e.name.startswith(ours)}
        return [e for e in entries if e.name.startswith(ours)
                or (e.name.startswith(loopback) and sandbox(e.name, loopback) in sandboxes)]

    # ---- removing what is ours, kind by kind ------------------------------------------------
    def kill_cgroup_processes(self) -> None:
        """SIGKILL every process in our cgroup trees (pod containers, pause), until none is left."""
        roots = [Path(entry.name) for entry in self.ledger.resources(Kind.CGROUP)]

        def pids() -> set[int]:
            found: set[int] = set()
            for root in roots:
                for directory in _tree(root):
                    with contextlib.suppress(OSError):
                        found |= {int(p) for p in (directory / "cgroup.procs").read_text().split()}
            return found

        def none_left() -> tuple[bool | None, str]:
            remaining = pids()
            for pid in remaining:
                self.host.kill(pid, signal.SIGKILL)
            return (True if not remaining else None), f"{len(remaining)} processes in our cgroups"

        wait_until("pod processes killed", none_left, timeout=timeout("command"), interval=0.2)

    def unmount(self, *, extra: Iterable[str] = ()) -> None:
        extra = list(extra)
        for _attempt in range(3):
            targets = self.our_mounts(extra=extra)
            if not targets:
                return
            for point in reversed(targets):
                self.host.unmount(point)
        left = self.our_mounts(extra=extra)
        if left:
            raise RestoreDrillError(f"could not unmount: {left}", remedy="check `fuser -m` on them")

    def remove_interfaces(self) -> None:
        for port in self.our_bridge_ports():
            self.host.delete_link(port)
        for entry in self.ledger.resources(Kind.INTERFACE):
            if entry.name in self.host.links():
                self.host.delete_link(entry.name)
            if entry.name not in self.host.links():
                self.ledger.forget(entry)

    def remove_iptables_chains(self) -> None:
        """Delete the recorded chains and the rules that jump to them, one `iptables-restore --noflush`
        per table (hundreds of single iptables calls take seconds on the nft backend)."""
        recorded = self.ledger.resources(Kind.IPTABLES_CHAIN)
        if not recorded:
            return
        for family, tables in self.iptables_chains().items():
            for table, lines in tables.items():
                ours = [iptables.split_chain_id(e.name)[2] for e in recorded
                        if iptables.split_chain_id(e.name)[:2] == (family, table)]
                script = iptables.removal_script(table, lines, ours)
                if script is None:
                    continue
                result = self.host.iptables_restore(family, script)
                if result.returncode != 0:
                    self.out(f"{family}-restore could not remove our chains from {table} "
                             f"({result.stderr.strip()[:200]}); falling back to one call per chain")
                    for chain in ours:
                        self.host.iptables(family, "-t", table, "-F", chain)
                    for chain in ours:
                        self.host.iptables(family, "-t", table, "-X", chain)
        present: set[str] = set()
        for family, tables in self.iptables_chains().items():
            present |= iptables.chains(family, tables)
        for entry in recorded:
            if entry.name not in present:
                self.ledger.forget(entry)

    def remove_cgroups(self) -> None:
        for entry in self.ledger.resources(Kind.CGROUP):
            root = Path(entry.name)
            if root.is_dir():
                for directory in sorted(_tree(root), key=lambda p: -len(p.parts)):
                    with contextlib.suppress(OSError):
                        directory.rmdir()
            if not root.exists():
                self.ledger.forget(entry)

    def restore_sysctls(self) -> None:
        for entry in self.ledger.resources(Kind.SYSCTL):
            path = self.host.sysctl_path(entry.name)
            with contextlib.suppress(OSError):
                # Someone changed it after us: theirs now, leave it.
                if path.read_text().strip() == entry.data["new"]:
                    path.write_text(entry.data["old"])
            self.ledger.forget(entry)

    def remove_host_files(self) -> None:
        """CNI cache entries and shim sockets we recorded, log links into our pod logs."""
        for entry in self.ledger.resources(Kind.CNI_CACHE):
            Path(entry.name).unlink(missing_ok=True)
            self.ledger.forget(entry)
        for entry in self.ledger.resources(Kind.SHIM_SOCKET):
            path = Path(entry.name)
            if not self.host.socket_alive(path):
                path.unlink(missing_ok=True)
                self.ledger.forget(entry)
        for link in self.our_log_links():
            link.unlink()

    def remove_dirs(self) -> None:
        """The kubelet root (when ours) and the shared host dirs our components created, if empty."""
        kubelet_root = self.config.kubelet_root
        entry = self.ledger.find(Kind.DIR, str(kubelet_root))
        if kubelet_root.exists() and self.kubelet_root_is_ours():
            if entry is not None and entry.data.get("existed") == "yes":
                for child in kubelet_root.iterdir():
                    _remove(child)
            else:
                shutil.rmtree(kubelet_root)
        if entry is not None and (not kubelet_root.exists() or entry.data.get("existed") == "yes"):
            self.ledger.forget(entry)
        shared = [e for e in self.ledger.resources(Kind.DIR) if e.data.get("shared") == "yes"]
        # Deepest first: /run/containerd/s before /run/containerd.
        for entry in sorted(shared, key=lambda e: -len(Path(e.name).parts)):
            with contextlib.suppress(OSError):
                Path(entry.name).rmdir()  # someone else's files in it: it stays
            self.ledger.forget(entry)

    def remove_cluster_dir(self, *, keep: Iterable[Path]) -> None:
        """Everything under the cluster dir except `keep`; the ledger only once nothing is left in it."""
        root = self.layout.root
        if not root.exists():
            return
        kept = {Path(p).resolve() for p in keep}
        remaining = [entry for entry in self.ledger.resources()
                     if not (entry.kind == Kind.DIR and entry.name == str(root))]
        if remaining:
            kept.add(self.layout.ledger.resolve())
        for child in root.iterdir():
            if child.name == OWNER_MARKER or child.resolve() in kept:
                continue
            if any(k.is_relative_to(child.resolve()) for k in kept):
                _remove_except(child, kept)
            else:
                _remove(child)
        if remaining:
            raise RestoreDrillError(
                "down could not remove: " + "; ".join(entry.describe() for entry in remaining),
                remedy=f"remove them by hand, or run `restoredrill cluster down` again ({self.layout.ledger} "
                "still lists them)")
        keeps = sorted(kept)
        if keeps:
            self.layout.marker.write_text("created by restoredrill's local provider\n"
                                          + "".join(f"keep {path}\n" for path in keeps))
        else:
            self.layout.marker.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                root.rmdir()

    # ---- what is still there ----------------------------------------------------------------
    def recorded_still_present(self) -> list[str]:
        present_chains: set[str] = set()
        if self.ledger.resources(Kind.IPTABLES_CHAIN):
            for family, tables in self.iptables_chains().items():
                present_chains |= iptables.chains(family, tables)
        return [entry.describe() for entry in self.ledger.resources() if self._present(entry, present_chains)]

    def _present(self, entry: Resource, present_chains: set[str]) -> bool:
        if entry.kind == Kind.INTERFACE:
            return entry.name in self.host.links()
        if entry.kind == Kind.IPTABLES_CHAIN:
            return entry.name in present_chains
        if entry.kind == Kind.SYSCTL:
            changed = _read(self.host.sysctl_path(entry.name))
            return entry.data["new"] != entry.data["old"] and changed == entry.data["new"]
        if entry.kind == Kind.PROCESS:
            return self.host.start_time(int(entry.data["pid"])) == entry.data["start"]
        if entry.kind == Kind.DIR and entry.name == str(self.layout.root):
            return False  # the cluster dir's files are listed one by one
        return Path(entry.name).exists()


def overlaps(network: str, ranges: Iterable[str]) -> bool:
    try:
        candidate = ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False
    return any(candidate.overlaps(ipaddress.ip_network(other)) for other in ranges)


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _tree(root: Path) -> list[Path]:
    """Every directory under `root`; os.walk tolerates cgroups vanishing mid-walk
    (containerd and the kubelet remove them concurrently), where Path.rglob raises."""
    return [Path(top) for top, _dirs, _files in os.walk(root)]


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _remove_except(directory: Path, kept: set[Path]) -> None:
    for child in directory.iterdir():
        resolved = child.resolve()
        if resolved in kept:
            continue
        if any(k.is_relative_to(resolved) for k in kept):
            _remove_except(child, kept)
        else:
            _remove(child)
