"""Pinned binaries and packages for the local cluster provider.

`ensure_toolchain` is what `restoredrill toolchain` and the cluster fixtures call: Debian packages
first (containerd, runc, CNI plugins, iptables), then the Go builds. Both steps are idempotent.
"""

from __future__ import annotations

from collections.abc import Callable

from restoredrill.toolchain.apt import ensure_packages
from restoredrill.toolchain.gobuild import BuildOutcome, GoToolchain, _print
from restoredrill.toolchain.recipes import GoBuild, load_debian_packages, load_recipes

__all__ = ["BuildOutcome", "GoBuild", "GoToolchain", "ensure_toolchain", "load_recipes"]


def ensure_toolchain(
    *,
    only: list[str] | None = None,
    apt: bool = True,
    out: Callable[[str], None] = _print,
) -> list[BuildOutcome]:
    """Install the pinned Debian packages (unless `apt` is False) and build the Go binaries."""
    if apt and not only:
        ensure_packages(load_debian_packages(), out=out)
    return GoToolchain(out=out).ensure(only)
