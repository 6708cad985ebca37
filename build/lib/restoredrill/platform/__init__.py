"""The backup platform a drill runs on: object store, Velero + node-agent, CNPG, Flux.

Each component is one class with `install` / `wait_ready` / client helpers / `uninstall`
(`objectstore.MinioObjectStore`/`SeaweedfsObjectStore`, `velero.Velero`, `cnpg.CloudNativePG`,
`flux.Flux`), all over a `PlatformContext` (cluster, API client, image set, timeouts). The same
code serves every provider: only the image set differs (`images.platform_image_set`).
`PlatformStack` installs the four in dependency order and records how long each took.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from restoredrill.platform.base import ImageMissingError, PlatformContext, PlatformError
from restoredrill.platform.cnpg import CloudNativePG
from restoredrill.platform.flux import Flux
from restoredrill.platform.objectstore import ObjectStore, ObjectStoreCredentials, object_store_for
from restoredrill.platform.velero import BackupStorageUnavailable, Velero

__all__ = [
    "BackupStorageUnavailable",
    "CloudNativePG",
    "Flux",
    "ImageMissingError",
    "ObjectStore",
    "PlatformContext",
    "PlatformError",
    "PlatformStack",
    "Velero",
]


@dataclass
class PlatformStack:
    """The four components on one cluster, wired to each other."""

    object_store: ObjectStore
    velero: Velero
    cnpg: CloudNativePG
    flux: Flux
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def create(cls, ctx: PlatformContext, *, object_store: str = "minio", data_dir: Path,
               credentials: ObjectStoreCredentials | None = None, reuse_installed: bool = True) -> PlatformStack:
        """The stack; with `reuse_installed`, an installed store's credentials (read from its Secret)."""
        store = object_store_for(object_store)(ctx, data_dir=data_dir, credentials=credentials)
        if credentials is None and reuse_installed:
            store.adopt_installed_credentials()
        return cls(
            object_store=store,
            velero=Velero(ctx, endpoint=store.endpoint, credentials=store.credentials),
            cnpg=CloudNativePG(ctx, endpoint=store.endpoint, credentials=store.credentials),
            flux=Flux(ctx),
        )

    def install(self) -> dict[str, float]:
        """Install everything and wait until all is ready; seconds per step (and `total`).

        CNPG and Flux start while the object store comes up; Velero is applied only once the
        buckets exist, so its first BSL validation already sees them (an Unavailable BSL fails
        `Velero.wait_ready` at once, by design).
        """
        started = time.monotonic()

        def step(name: str, action: Callable[[], None]) -> None:
            begun = time.monotonic()
            action()
            self.seconds[name] = round(time.monotonic() - begun, 1)

        step("object_store.install", self.object_store.install)
        step("cnpg.install", self.cnpg.install)
        step("flux.install", self.flux.install)
        step("object_store.wait_ready", self.object_store.wait_ready)
        step("velero.install", self.velero.install)
        step("cnpg.wait_ready", self.cnpg.wait_ready)
        step("flux.wait_ready", self.flux.wait_ready)
        step("velero.wait_ready", self.velero.wait_ready)
        self.seconds["total"] = round(time.monotonic() - started, 1)
        return self.seconds

    def uninstall(self) -> None:
        """Best effort, reverse order; the object store's host directory is kept."""
        errors: list[str] = []
        for component in (self.flux, self.cnpg, self.velero, self.object_store):
            try:
                component.uninstall()
            except Exception as error:  # every step is attempted; failures are reported together
                errors.append(f"{type(component).__name__}: {error}")
        if errors:
            raise PlatformError("uninstall left things behind: " + "; ".join(errors))
