"""The cluster's host processes: started detached, recorded in the ledger with pid and start time,
stopped with SIGTERM then SIGKILL.

Each runs in its own session with its log in `CLUSTER_DIR/logs/NAME.log`, so `restoredrill
cluster up` can return while the cluster keeps running and `down` can stop it from another process.
A recorded pid counts only while its start time matches: a recycled pid is never signalled.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from restoredrill.cluster.local.config import Layout
from restoredrill.cluster.local.host import HOST_PATH, Host
from restoredrill.cluster.local.ledger import HostLedger, Kind, Resource
from restoredrill.errors import RestoreDrillError
from restoredrill.timeouts import timeout
from restoredrill.waits import wait_until

PROGRAMS = frozenset({"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
                      "kube-proxy", "containerd"})
# Seconds a process gets after SIGTERM before SIGKILL.
# The API server drains for seconds after SIGTERM; nothing it holds matters once we are tearing down.
STOP_GRACE = {"kubelet": 10.0, "containerd": 10.0, "etcd": 10.0, "kube-apiserver": 1.0}
DEFAULT_STOP_GRACE = 5.0


class Processes:
    def __init__(self, *, layout: Layout, host: Host, ledger: HostLedger) -> None:
        self.layout = layout
        self.host = host
        self.ledger = ledger

    def start(self, name: str, command: list[str]) -> int:
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
        self.ledger.record(Resource(Kind.PROCESS, name, {"pid": str(process.pid),
                                                         "start": self.host.start_time(process.pid) or ""}))
        # The child outlives this Popen object on purpose; silence its destructor warning.
        process.returncode = 0
        return process.pid

    def live_pid(self, name: str) -> int | None:
        entry = self.ledger.find(Kind.PROCESS, name)
        if entry is None:
            return None
        pid = int(entry.data["pid"])
        return pid if self.host.start_time(pid) == entry.data["start"] else None

    def stop(self, names: Iterable[str]) -> None:
        for name in names:
            pid = self.live_pid(name)
            if pid is not None:
                self._stop_pid(name, pid)
            entry = self.ledger.find(Kind.PROCESS, name)
            if entry is not None:
                self.ledger.forget(entry)

    def _stop_pid(self, name: str, pid: int) -> None:
        start = self.host.start_time(pid)
        self.host.kill(pid, signal.SIGTERM)

        def gone() -> tuple[bool | None, str]:
            return (True if self.host.start_time(pid) != start or start is None else None), f"pid {pid} alive"

        try:
            wait_until(f"{name} (pid {pid}) to exit after SIGTERM", gone,
                       timeout=STOP_GRACE.get(name, DEFAULT_STOP_GRACE), interval=0.1)
        except RestoreDrillError:
            self.host.kill(pid, signal.SIGKILL)
            wait_until(f"{name} (pid {pid}) to exit after SIGKILL", gone, timeout=timeout("command"),
                       interval=0.1)
        self.host.reap(pid)

    def provably_ours(self) -> list[tuple[int, list[str]]]:
        """Processes of this cluster whatever the ledger says: one of our programs with the cluster dir
        in its arguments, or a containerd shim serving our containerd's socket. A shell or editor
        that merely mentions the cluster directory is not matched."""
        root, socket_path = str(self.layout.root), str(self.layout.containerd_socket)
        found = []
        for pid, argv in self.host.processes():
            if self.host.start_time(pid) is None:
                continue
            program = Path(argv[0]).name
            shim = program.startswith("containerd-shim") and socket_path in argv
            if shim or (program in PROGRAMS and any(root in arg for arg in argv[1:])):
                found.append((pid, argv))
        return found

    def kill_strays(self) -> None:
        """containerd shims (they outlive containerd) and any of our programs the ledger lost."""
        for pid, _argv in self.provably_ours():
            self.host.kill(pid, signal.SIGKILL)

        def none_left() -> tuple[bool | None, str]:
            left = [pid for pid, _ in self.provably_ours()]
            return (True if not left else None), f"pids still alive: {left}"

        wait_until("stray processes of ours gone", none_left, timeout=timeout("command"), interval=0.2)

    def rss(self, names: Iterable[str]) -> dict[str, int]:
        """Resident memory in bytes of each running process of `names` (VmRSS from /proc)."""
        sizes = {}
        for name in names:
            pid = self.live_pid(name)
            if pid is None:
                continue
            for line in (self.host.paths.proc / str(pid) / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes[name] = int(line.split()[1]) * 1024
        return sizes
