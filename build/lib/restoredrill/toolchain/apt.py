"""Debian packages the local provider needs (containerd, runc, CNI plugins, iptables, ...).

They come from apt rather than Go builds because Debian ships them already built and tested
together. `ensure` asks dpkg first, so a machine that has them runs no apt command at all.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
from collections.abc import Callable

from restoredrill.errors import CommandError, MissingToolError, RestoreDrillError
from restoredrill.timeouts import timeout
from restoredrill.toolchain.recipes import DebianPackage

APT_ENV = {"DEBIAN_FRONTEND": "noninteractive"}


def installed_version(package: str) -> str | None:
    """The installed version of a Debian package, or None."""
    if shutil.which("dpkg-query") is None:
        return None
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}\t${Version}", package],
        capture_output=True, text=True, timeout=timeout("host_command"),
    )
    if result.returncode != 0:
        return None
    status, _, version = result.stdout.partition("\t")
    return version if status.endswith(" installed") else None


def missing_packages(packages: list[DebianPackage]) -> list[DebianPackage]:
    """Those not installed, or installed at a version outside the pinned glob."""
    missing = []
    for package in packages:
        version = installed_version(package.name)
        if version is None or not fnmatch.fnmatchcase(version, package.version_glob or "*"):
            missing.append(package)
    return missing


def ensure_packages(packages: list[DebianPackage], *, out: Callable[[str], None]) -> list[str]:
    """Install what is missing (`apt-get update` first); return the install specs used."""
    missing = missing_packages(packages)
    if not missing:
        out(f"debian packages: all {len(packages)} installed")
        return []
    if shutil.which("apt-get") is None:
        raise MissingToolError(
            "apt-get",
            remedy="the local provider needs Debian/Ubuntu packages: install "
            + " ".join(p.name for p in missing) + " with your distribution's package manager",
        )
    if os.geteuid() != 0:
        raise RestoreDrillError(
            f"installing {', '.join(p.name for p in missing)} needs root",
            remedy="run `restoredrill toolchain` as root (the local provider also runs as root)",
        )
    specs = [package.install_spec() for package in missing]
    out(f"apt-get install {' '.join(specs)} (after apt-get update)")
    for command, seconds in (
        (["apt-get", "update", "-q"], timeout("apt_update")),
        (["apt-get", "install", "-y", "-q", "--no-install-recommends", *specs], timeout("apt_install")),
    ):
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=seconds,
                                    env={**os.environ, **APT_ENV})
        except subprocess.TimeoutExpired as error:
            raise CommandError(command, returncode=None, output=str(error.output or "")) from error
        if result.returncode != 0:
            raise CommandError(
                command, returncode=result.returncode, output=result.stdout + result.stderr,
                remedy="check the Debian mirror is reachable and the pinned versions in "
                "restoredrill/pins.toml [debian] still exist",
            )
    return specs
