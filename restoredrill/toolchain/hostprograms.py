"""Where every program restoredrill runs on the host comes from.

A program the code runs must be installed by one of the project's own steps (a pinned Debian
package that `restoredrill toolchain` installs, or a binary it builds), be part of every Debian
system, or be one of the few prerequisites the README names. tests/test_host_programs.py reads
the code for the programs it runs and fails on one that is in none of these, which is how a
missing install step (debootstrap, once) is caught before a fresh machine finds it.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

How = Literal["debian", "built", "base", "prerequisite", "user"]


@dataclass(frozen=True)
class Provenance:
    how: How
    # debian: the package (pins.toml [debian]); built: the component (pins.toml [modules.X.build]);
    # base: the Debian package every system has; prerequisite/user: what the README tells users.
    source: str


def _debian(package: str) -> Provenance:
    return Provenance("debian", package)


HOST_PROGRAMS = MappingProxyType({
    # Installed by `restoredrill toolchain` from pins.toml [debian].
    "containerd": _debian("containerd"),
    "ctr": _debian("containerd"),
    "runc": _debian("runc"),
    "iptables": _debian("iptables"),
    "iptables-save": _debian("iptables"),
    "iptables-restore": _debian("iptables"),
    "ip6tables": _debian("iptables"),
    "ip6tables-save": _debian("iptables"),
    "ip6tables-restore": _debian("iptables"),
    "conntrack": _debian("conntrack"),
    "openssl": _debian("openssl"),
    "debootstrap": _debian("debootstrap"),
    "busybox": _debian("busybox-static"),
    "ip": _debian("iproute2"),
    # Built by `restoredrill toolchain` (kubectl is also taken from PATH or $RESTOREDRILL_KUBECTL).
    "kubectl": Provenance("built", "kubernetes"),
    # Every Debian system has them (Priority: required).
    "apt-get": Provenance("base", "apt"),
    "dpkg-query": Provenance("base", "dpkg"),
    "umount": Provenance("base", "mount"),
    "mount": Provenance("base", "mount"),
    "chroot": Provenance("base", "coreutils"),
    "tar": Provenance("base", "tar"),
    # The README's prerequisites: what builds and runs restoredrill itself.
    "go": Provenance("prerequisite", "Go"),
    "git": Provenance("prerequisite", "git"),
    "node": Provenance("prerequisite", "Node.js"),
    "npm": Provenance("prerequisite", "Node.js"),
    # The kind provider runs the user's kind (or the one `restoredrill toolchain --only kind` builds,
    # which it builds itself when none is on PATH) and the user's Docker (on this project's CI
    # machines .ci/machine/docker-up installs and starts one).
    "kind": Provenance("built", "kind"),
    "docker": Provenance("user", "Docker"),
})
