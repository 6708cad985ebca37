"""The one registry of what the local cluster put on the host.

`up` records each host resource as it makes it (write-ahead where it can: the entry is on disk
before the directory, bridge, cgroup or sysctl exists), and what its components make (iptables
chains, CNI cache entries, shim sockets) as soon as it sees them. `down` and the clean-up of an
earlier run remove only what is recorded here, and drop an entry only once its removal is verified,
so an interrupted `down` can be run again. Beside the resources the ledger keeps a snapshot of the
shared host state taken before anything started: what was there before is never ours.

The file is JSON in the cluster directory, replaced atomically on every change (write, fsync,
rename), so a crash leaves either the old or the new registry, never half of one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from restoredrill.errors import RestoreDrillError

FORMAT_VERSION = 1


class Kind(StrEnum):
    DIR = "dir"  # a directory we made (data `existed=yes`: one we adopted empty; we empty it, never remove it)
    INTERFACE = "interface"  # a network link we made
    IPTABLES_CHAIN = "iptables-chain"  # name FAMILY/TABLE/CHAIN, e.g. iptables/nat/KUBE-SERVICES
    CGROUP = "cgroup"  # a cgroup directory we made; the tree under it is kubelet's and ours
    SYSCTL = "sysctl"  # data: old, new
    PROCESS = "process"  # name: the component; data: pid, start (field 22 of /proc/PID/stat)
    CNI_CACHE = "cni-cache"  # containerd's CNI result cache entry of one of our pods
    SHIM_SOCKET = "shim-socket"  # the ttrpc socket of one of our containerd shims


@dataclass(frozen=True)
class Resource:
    kind: Kind
    name: str
    data: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        details = ", ".join(f"{key} {value}" for key, value in sorted(self.data.items()))
        return f"{self.kind.value} {self.name}" + (f" ({details})" if details else "")


@dataclass(frozen=True)
class HostSnapshot:
    """Shared host state before `up` started anything: none of it is ours."""

    iptables_chains: frozenset[str] = frozenset()
    cni_cache: frozenset[str] = frozenset()
    shim_sockets: frozenset[str] = frozenset()
    existing_dirs: frozenset[str] = frozenset()

    def to_json(self) -> dict[str, list[str]]:
        return {"iptables_chains": sorted(self.iptables_chains), "cni_cache": sorted(self.cni_cache),
                "shim_sockets": sorted(self.shim_sockets), "existing_dirs": sorted(self.existing_dirs)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HostSnapshot:
        return cls(**{key: frozenset(data.get(key, ())) for key in
                      ("iptables_chains", "cni_cache", "shim_sockets", "existing_dirs")})


class HostLedger:
    """Read and change the registry file; every change is written through at once."""

    def __init__(self, path: Path) -> None:
        self.path = path

    # ---- reading ----------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.path.is_file()

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"version": FORMAT_VERSION, "resources": []}
        if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
            raise RestoreDrillError(f"{self.path} is not a host-resource ledger this restoredrill reads",
                                    remedy="remove what it lists by hand, then delete the file")
        return data

    def resources(self, kind: Kind | None = None) -> list[Resource]:
        entries = [Resource(Kind(entry["kind"]), entry["name"], dict(entry.get("data", {})))
                   for entry in self._load()["resources"]]
        return [entry for entry in entries if kind is None or entry.kind == kind]

    def find(self, kind: Kind, name: str) -> Resource | None:
        return next((entry for entry in self.resources(kind) if entry.name == name), None)

    def snapshot(self) -> HostSnapshot | None:
        before = self._load().get("before")
        return HostSnapshot.from_json(before) if before is not None else None

    def facts(self) -> dict[str, Any]:
        facts: dict[str, Any] = self._load().get("facts", {})
        return facts

    # ---- changing ---------------------------------------------------------------------------
    def record(self, resource: Resource) -> None:
        """Add `resource`, or replace the entry of the same kind and name (a restarted process)."""
        data = self._load()
        entries = [entry for entry in data["resources"]
                   if (entry["kind"], entry["name"]) != (resource.kind.value, resource.name)]
        entries.append({"kind": resource.kind.value, "name": resource.name, "data": dict(resource.data)})
        data["resources"] = entries
        self._write(data)

    def record_all(self, resources: list[Resource]) -> None:
        for resource in resources:
            if self.find(resource.kind, resource.name) is None:
                self.record(resource)

    def forget(self, resource: Resource) -> None:
        data = self._load()
        data["resources"] = [entry for entry in data["resources"]
                             if (entry["kind"], entry["name"]) != (resource.kind.value, resource.name)]
        self._write(data)

    def set_snapshot(self, snapshot: HostSnapshot) -> None:
        data = self._load()
        data["before"] = snapshot.to_json()
        self._write(data)

    def set_facts(self, **facts: Any) -> None:
        data = self._load()
        data["facts"] = {**data.get("facts", {}), **facts}
        self._write(data)

    def delete(self) -> None:
        self.path.unlink(missing_ok=True)

    def _write(self, data: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            # Nothing secret in it, and `restoredrill cluster status` may run as another user.
            os.fchmod(handle, 0o644)
            with os.fdopen(handle, "w") as sink:
                json.dump(data, sink, indent=2)
                sink.write("\n")
                sink.flush()
                os.fsync(sink.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
