"""The machine the local cluster runs on: every probe and change of host state goes through `Host`.

One class, so the rules of what is ours (footprint.py) and the preflight can be tested against a
fake host: a foreign kubelet, a podman bridge, other people's iptables chains and mounts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from restoredrill.cluster.local.iptables import FAMILIES
from restoredrill.errors import CommandError

HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class HostPaths:
    """Shared host locations our components write to (outside the cluster dir and kubelet root)."""

    proc: Path = Path("/proc")
    sys_net: Path = Path("/sys/class/net")
    cgroup_fs: Path = Path("/sys/fs/cgroup")
    # kubelet links every container's log here (to files in our pod-logs dir).
    container_log_links: Path = Path("/var/log/containers")
    # containerd's CRI caches each pod's CNI result here, as NETWORK-CONTAINERID-IFNAME.
    cni_cache: Path = Path("/var/lib/cni/results")
    # containerd 1.6 puts every shim's ttrpc socket here (not configurable).
    shim_sockets: Path = Path("/run/containerd/s")

    def shared_dirs(self) -> tuple[Path, ...]:
        """Directories our components create when absent; ours to remove (when empty) only then."""
        return (self.container_log_links, self.cni_cache, self.cni_cache.parent, self.shim_sockets,
                self.shim_sockets.parent)


@dataclass(frozen=True)
class Mount:
    point: str
    fstype: str
    source: str


@dataclass(frozen=True)
class Address:
    """An IPv4 network on an interface: an address's subnet, or a route's destination."""

    interface: str
    network: str


class Host:
    """The real host. Subclassed by the unit tests' fake host."""

    def __init__(self, paths: HostPaths | None = None) -> None:
        self.paths = paths or HostPaths()

    # ---- commands ---------------------------------------------------------------------------
    def run(self, command: list[str], *, timeout: float = 60, check: bool = True, input: str | None = None,
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

    def program(self, name: str) -> str | None:
        return shutil.which(name, path=HOST_PATH)

    # ---- processes --------------------------------------------------------------------------
    def processes(self) -> Iterable[tuple[int, list[str]]]:
        """(pid, argv) of every process with a command line."""
        for entry in self.paths.proc.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                raw = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if raw:
                yield int(entry.name), raw.rstrip(b"\0").decode(errors="replace").split("\0")

    def start_time(self, pid: int) -> str | None:
        """Field 22 of /proc/PID/stat: tells a live process from a recycled pid. None if gone or zombie."""
        try:
            stat = (self.paths.proc / str(pid) / "stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] in ("Z", "X"):
            return None
        return fields[19]

    def kill(self, pid: int, signal_number: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal_number)

    def reap(self, pid: int) -> None:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)

    def port_in_use(self, host: str, port: int) -> bool:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex((host, port)) == 0

    def socket_alive(self, path: Path) -> bool:
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as probe:
            probe.settimeout(0.5)
            return probe.connect_ex(str(path)) == 0
        return False

    # ---- mounts -----------------------------------------------------------------------------
    def mounts(self) -> list[Mount]:
        """Mounts from /proc/self/mountinfo, in mount order."""
        found = []
        for line in (self.paths.proc / "self" / "mountinfo").read_text().splitlines():
            fields = line.split()
            separator = fields.index("-")
            found.append(Mount(fields[4].replace("\\040", " "), fields[separator + 1], fields[separator + 2]))
        return found

    def unmount(self, point: str) -> bool:
        if self.run(["umount", point], check=False, timeout=30).returncode == 0:
            return True
        return self.run(["umount", "-l", point], check=False, timeout=30).returncode == 0

    # ---- network ----------------------------------------------------------------------------
    def links(self) -> list[str]:
        return sorted(entry.name for entry in self.paths.sys_net.iterdir()) if self.paths.sys_net.is_dir() else []

    def bridge_members(self, bridge: str) -> list[str]:
        members = self.paths.sys_net / bridge / "brif"
        return sorted(entry.name for entry in members.iterdir()) if members.is_dir() else []

    def ipv4_networks(self) -> list[Address]:
        """The subnets of every IPv4 address and the destinations of every IPv4 route, by interface."""
        found = []
        for line in self.run(["ip", "-o", "-4", "addr", "show"], check=False, timeout=30).stdout.splitlines():
            fields = line.split()
            if "inet" in fields:
                found.append(Address(fields[1], fields[fields.index("inet") + 1]))
        for line in self.run(["ip", "-4", "route", "show"], check=False, timeout=30).stdout.splitlines():
            fields = line.split()
            if fields and fields[0] != "default" and "dev" in fields:
                found.append(Address(fields[fields.index("dev") + 1], fields[0]))
        return found

    def add_bridge(self, name: str, address: str) -> None:
        if name not in self.links():
            self.run(["ip", "link", "add", name, "type", "bridge"])
        if address not in self.run(["ip", "-o", "addr", "show", "dev", name]).stdout:
            self.run(["ip", "addr", "add", address, "dev", name])
        self.run(["ip", "link", "set", name, "up"])

    def delete_link(self, name: str) -> None:
        self.run(["ip", "link", "del", name], check=False, timeout=30)

    # ---- iptables ---------------------------------------------------------------------------
    def iptables_save(self, family: str) -> str | None:
        """`FAMILY-save` output; None when that program is not installed."""
        if family not in FAMILIES:
            raise ValueError(f"not an iptables family: {family}")
        if self.program(f"{family}-save") is None:
            return None
        return self.run([f"{family}-save"], check=False, timeout=30).stdout

    def iptables_restore(self, family: str, script: str) -> subprocess.CompletedProcess[str]:
        return self.run([f"{family}-restore", "--noflush"], input=script, check=False, timeout=60)

    def iptables(self, family: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run([family, *args], check=False, timeout=30)

    # ---- kernel settings and cgroups ---------------------------------------------------------
    def sysctl_path(self, key: str) -> Path:
        return self.paths.proc / "sys" / key

    def cgroup_hierarchies(self) -> list[Path]:
        """Every mounted cgroup hierarchy (v1 controllers and the unified one beside them)."""
        if not self.paths.cgroup_fs.is_dir():
            return []
        return sorted(hierarchy for hierarchy in self.paths.cgroup_fs.iterdir()
                      if hierarchy.is_dir() and not hierarchy.is_symlink() and (hierarchy / "cgroup.procs").exists())
