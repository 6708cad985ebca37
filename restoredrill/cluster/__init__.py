"""Cluster providers: where a drill's Kubernetes cluster comes from.

`local` builds a real single-node cluster from binaries (no Docker), `kind` uses kind through
pytest-kind, `existing` uses a kubeconfig context we did not create. Suites only see a
`ClusterHandle`, so they run the same on every provider.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ClusterHandle:
    """What a suite needs to talk to a cluster, whoever made it."""

    provider: str
    name: str
    kubeconfig: Path
    context: str | None
    # True only when restoredrill created the cluster: nothing else may be torn down.
    created_by_us: bool
    # Directory holding the cluster's process logs (local) or exported logs (kind); attached to reports.
    log_dir: Path | None = None
    # Stand-ins and fix-ups of the cluster itself (a locally assembled kind node image), disclosed in
    # every drill's report.
    notes: tuple[str, ...] = ()
    # True where no image can be pulled (local; kind with a node image assembled here): every image
    # the drill runs is built here, the repo's own ones replaced by stand-ins. Unset: local only.
    offline: bool | None = None

    def __post_init__(self) -> None:
        if self.offline is None:
            object.__setattr__(self, "offline", self.provider == "local")


class ClusterProvider(abc.ABC):
    """A way to get a cluster: bring it up, report on it, tear down only what it made."""

    name: str

    @abc.abstractmethod
    def up(self) -> ClusterHandle:
        """Create (or reuse a kept, healthy) cluster and return once its node is Ready."""

    @abc.abstractmethod
    def down(self) -> None:
        """Remove everything `up` created. Never touches what it did not create."""

    @abc.abstractmethod
    def status(self) -> str:
        """One human-readable paragraph on the cluster's state."""

    @abc.abstractmethod
    def load_images(self, images: dict[str, Path]) -> None:
        """Make locally built images (name -> OCI archive) available to the cluster's runtime."""
