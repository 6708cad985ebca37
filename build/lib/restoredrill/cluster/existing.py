"""The `existing` provider: a kubeconfig context for a cluster restoredrill did not create.

`up` only proves the API server answers; `down` deletes the namespaces this run (and this xdist
worker) created, each re-checked by the ownership guard in `namespaces.py`, and nothing else. The
cluster itself is never touched: `created_by_us` is False.
"""

from __future__ import annotations

import logging
from pathlib import Path

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from restoredrill.cluster import ClusterHandle, ClusterProvider
from restoredrill.cluster.namespaces import (
    NOT_DISTRIBUTED,
    check_run_id,
    ownership_selector,
    request_owned_namespace_deletion,
    wait_for_namespace_deleted,
)
from restoredrill.errors import ConfigError, RestoreDrillError
from restoredrill.kube import load_api_client
from restoredrill.timeouts import timeout

log = logging.getLogger(__name__)


class ClusterUnreachableError(RestoreDrillError):
    """The API server named by a kubeconfig context did not answer."""


class ExistingCluster(ClusterProvider):
    """Drills against a cluster we did not create; only this run's namespaces are ever deleted."""

    name = "existing"

    def __init__(
        self,
        *,
        kubeconfig: Path,
        context: str | None,
        run_id: str,
        worker_id: str = NOT_DISTRIBUTED,
        connect_timeout: float = 5.0,
        namespace_delete_timeout: float | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.run_id = check_run_id(run_id)
        self.worker_id = worker_id
        self.connect_timeout = connect_timeout
        self.namespace_delete_timeout = namespace_delete_timeout or timeout("namespace_deleted")
        self._server_version: str | None = None

    def _where(self) -> str:
        return f"context {self.context or '(current-context)'} of kubeconfig {self.kubeconfig}"

    def _api(self) -> client.ApiClient:
        # No retries: an unreachable server must fail in seconds, not after urllib3's silent retries.
        return load_api_client(self.kubeconfig, self.context, retries=0)

    def up(self) -> ClusterHandle:
        api = self._api()
        server = api.configuration.host
        try:
            version = client.VersionApi(api).get_code(_request_timeout=(self.connect_timeout, self.connect_timeout * 2))
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise ClusterUnreachableError(
                f"the API server {server} of {self._where()} is unreachable: {error}",
                remedy=f"check that the cluster is up and the context is right: "
                f"`kubectl --kubeconfig {self.kubeconfig} cluster-info"
                + (f" --context {self.context}`" if self.context else "`"),
            ) from error
        except ApiException as error:
            raise ClusterUnreachableError(
                f"the API server {server} of {self._where()} answered {error.status} {error.reason}",
                remedy="check the credentials in that context (an expired token or certificate?)",
            ) from error
        self._server_version = version.git_version
        log.info("existing cluster at %s (%s) answers, Kubernetes %s", server, self._where(), version.git_version)
        return ClusterHandle(
            provider=self.name,
            name=self.context or "current-context",
            kubeconfig=self.kubeconfig,
            context=self.context,
            created_by_us=False,
        )

    def owned_namespaces(self) -> list[str]:
        """Namespaces labelled as created by this run and this worker."""
        core = client.CoreV1Api(self._api())
        selector = ownership_selector(run_id=self.run_id, worker_id=self.worker_id)
        listed = core.list_namespace(label_selector=selector, _request_timeout=self.connect_timeout * 6)
        return sorted(ns.metadata.name for ns in listed.items if ns.metadata and ns.metadata.name)

    def down(self) -> None:
        """Delete this run's namespaces (each re-checked by the guard); never the cluster."""
        api = self._api()
        pending: list[tuple[str, str]] = []
        failures: list[str] = []
        for name in self.owned_namespaces():
            try:
                uid = request_owned_namespace_deletion(api, name, run_id=self.run_id, worker_id=self.worker_id)
            except (RestoreDrillError, ApiException) as error:
                log.warning("not deleting namespace %s: %s", name, error)
                failures.append(f"{name}: {error}")
                continue
            if uid is not None:
                pending.append((name, uid))
        for name, uid in pending:
            try:
                wait_for_namespace_deleted(api, name, uid=uid, timeout=self.namespace_delete_timeout)
            except (RestoreDrillError, ApiException) as error:
                log.warning("namespace %s was not deleted: %s", name, error)
                failures.append(f"{name}: {error}")
        if failures:
            raise RestoreDrillError(
                f"{len(failures)} namespace(s) of run {self.run_id} on {self._where()} were not removed:\n  "
                + "\n  ".join(failures),
                remedy="inspect them; they carry the label restoredrill.io/run-id=" + self.run_id,
            )

    def status(self) -> str:
        try:
            owned = self.owned_namespaces()
        except (RestoreDrillError, ApiException, urllib3.exceptions.HTTPError, OSError) as error:
            return f"existing cluster ({self._where()}): cannot list namespaces ({error})."
        version = self._server_version or "version not yet checked"
        return (
            f"existing cluster ({self._where()}, Kubernetes {version}), not created by restoredrill; "
            f"namespaces of run {self.run_id}: {', '.join(owned) or 'none'}."
        )

    def load_images(self, images: dict[str, Path]) -> None:
        if not images:
            return
        raise ConfigError(
            f"the existing provider cannot load locally built images ({', '.join(sorted(images))}) into a "
            "cluster it does not run",
            remedy="push those images to a registry the cluster pulls from and point the drill config's "
            "image settings at it, or use the local or kind provider",
        )
