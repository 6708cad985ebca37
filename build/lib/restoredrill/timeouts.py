"""The one table of timeouts: every wait, command and API request of restoredrill takes its limit by
name from here.

Modelled on CloudNativePG's `tests/utils/timeouts`: a table of named defaults, sized for a 2-core
machine, overridden once per session from the drill config (`timeouts:` in the file,
`--set timeouts.NAME=DURATION` on the command line) and read everywhere through `timeout(NAME)`
or a `Timeouts` value passed down. An unknown name is an error with a did-you-mean, both in the
configuration and in the code (a typo in a call site fails its unit test instead of silently using
some default).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from restoredrill.errors import ConfigError


@dataclass(frozen=True)
class TimeoutSpec:
    seconds: float
    what: str


# Seconds. The `what` text is shown by `restoredrill timeouts` and in a timeout's error.
TIMEOUT_SPECS: Mapping[str, TimeoutSpec] = MappingProxyType({
    # Cluster providers.
    "cluster_up": TimeoutSpec(300, "a cluster provider's `up`, from the first process to the API answering"),
    "node_ready": TimeoutSpec(180, "the node reporting Ready"),
    "image_load": TimeoutSpec(600, "importing image archives into the node's containerd (or `kind load`)"),
    "cluster_release": TimeoutSpec(900, "other sessions and xdist workers letting go of a shared cluster before its "
                                   "creator tears it down"),
    "host_command": TimeoutSpec(30, "one host command of the local provider (umount, ip link, iptables, openssl)"),
    "process_stop": TimeoutSpec(30, "a host process of the local cluster exiting after SIGTERM, before SIGKILL"),
    # Generic.
    "command": TimeoutSpec(120, "one kubectl or helper command (exec, cp, logs)"),
    "api_request": TimeoutSpec(60, "one Kubernetes API request (a hung API server fails the drill, not hangs it)"),
    "apply": TimeoutSpec(120, "one `kubectl apply --server-side` of a component's manifests, CRDs included"),
    "crd_established": TimeoutSpec(90, "new CustomResourceDefinitions becoming Established"),
    "kustomize_build": TimeoutSpec(120, "`kubectl kustomize` of an upstream component's config"),
    "module_download": TimeoutSpec(900, "`go mod download` of one pinned module through the module proxy"),
    "image_build": TimeoutSpec(600, "building one locally made image's program (a `go build` of a stand-in)"),
    "apt_update": TimeoutSpec(600, "`apt-get update`"),
    "apt_install": TimeoutSpec(1200, "`apt-get install` of the pinned Debian packages"),
    "debootstrap": TimeoutSpec(1800, "debootstrap of a Debian root filesystem for an image (PostgreSQL, MariaDB, git)"),
    "npm_install": TimeoutSpec(600, "installing the Allure report renderer from the npm registry"),
    "report_render": TimeoutSpec(600, "rendering the HTML report"),
    # Platform.
    "platform_ready": TimeoutSpec(300, "a platform component's Deployments and DaemonSets Ready"),
    "bsl_available": TimeoutSpec(120, "the BackupStorageLocation reporting Available"),
    "bsl_unavailable": TimeoutSpec(60, "an unreachable object store showing as Unavailable on the BSL"),
    "download_request": TimeoutSpec(60, "a Velero DownloadRequest giving its URL (restore/backup results, logs)"),
    "pod_ready": TimeoutSpec(300, "pods Ready"),
    "namespace_deleted": TimeoutSpec(300, "a namespace (or another deleted object) gone"),
    "database_ready": TimeoutSpec(120, "an in-pod database answering queries"),
    "backup": TimeoutSpec(900, "a Velero Backup finished, its PodVolumeBackups included"),
    "restore": TimeoutSpec(900, "a Velero Restore finished"),
    "pod_volume_restores": TimeoutSpec(900, "every PodVolumeRestore of a Restore finished"),
    "flux_reconcile": TimeoutSpec(300, "a Flux Kustomization reconciled and Ready"),
    "cnpg_cluster_ready": TimeoutSpec(600, "a CloudNativePG Cluster healthy"),
    "cnpg_backup": TimeoutSpec(600, "a CloudNativePG Backup completed"),
})


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, list(TIMEOUT_SPECS), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def unknown_timeout(name: str, *, source: str = "restoredrill") -> ConfigError:
    return ConfigError(f"{source}: unknown timeout {name!r}{_did_you_mean(name)}",
                       remedy=f"timeouts are: {', '.join(sorted(TIMEOUT_SPECS))}")


class Timeouts(Mapping[str, float]):
    """The defaults with a session's overrides: a read-only mapping of name -> seconds."""

    def __init__(self, overrides: Mapping[str, float] | None = None) -> None:
        overrides = dict(overrides or {})
        for name in overrides:
            if name not in TIMEOUT_SPECS:
                raise unknown_timeout(name)
        self._overrides = MappingProxyType(overrides)
        self._seconds = MappingProxyType({name: float(overrides.get(name, spec.seconds))
                                          for name, spec in TIMEOUT_SPECS.items()})

    @property
    def overrides(self) -> Mapping[str, float]:
        """Only the names the configuration changed (for the report's platform settings)."""
        return self._overrides

    def __getitem__(self, name: str) -> float:
        try:
            return self._seconds[name]
        except KeyError:
            raise unknown_timeout(name) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._seconds)

    def __len__(self) -> int:
        return len(self._seconds)

    def __repr__(self) -> str:
        return f"Timeouts(overrides={dict(self._overrides)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Timeouts) and dict(self._overrides) == dict(other._overrides)

    def __hash__(self) -> int:
        return hash(tuple(sorted(self._overrides.items())))

    @classmethod
    def parse(cls, value: Any, *, source: str, seconds_of: Any) -> Timeouts:
        """The `timeouts:` section of a drill config: names to seconds or Go durations."""
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise ConfigError(f"{source}: `timeouts` must map names to seconds or Go durations",
                              remedy=f"names: {', '.join(sorted(TIMEOUT_SPECS))}")
        overrides: dict[str, float] = {}
        for name, seconds in value.items():
            if str(name) not in TIMEOUT_SPECS:
                raise unknown_timeout(str(name), source=source)
            try:
                overrides[str(name)] = float(seconds_of(seconds))
            except ValueError as error:
                raise ConfigError(f"{source}: timeouts.{name}: {error}",
                                  remedy="give seconds (300) or a Go duration (5m, 1h30m)") from None
        return cls(overrides)


DEFAULTS = Timeouts()
_active: Timeouts = DEFAULTS


def activate(table: Timeouts) -> None:
    """Make `table` the session's timeouts (called once when the configuration is read)."""
    global _active
    _active = table


def active() -> Timeouts:
    return _active


def timeout(name: str) -> float:
    """Seconds for the named timeout in the session's table."""
    return _active[name]


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser("timeouts", help="list the named timeouts and their defaults",
                                   description="Every wait takes its limit from this table; override one in the "
                                   "drill config (`timeouts: {NAME: 15m}`) or with --set timeouts.NAME=15m.")
    parser.set_defaults(func=_list)


def _list(args: Any) -> int:
    for name, spec in TIMEOUT_SPECS.items():
        print(f"{name:22} {spec.seconds:>6.0f} s  {spec.what}")
    return 0
