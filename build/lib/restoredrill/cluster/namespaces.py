"""Namespaces restoredrill owns, and the guard that keeps it away from every other one.

Every namespace the suite creates carries `OWNERSHIP_LABELS`: who created it and which run. A
destructive helper first reads the namespace and refuses (`NotOursError`) unless both labels say
"restoredrill, this run"; the delete then carries the UID it checked as a precondition, so a
namespace recreated under the same name in between is not deleted either. On a cluster we did not
create (the `existing` provider) this is what keeps a drill from touching production.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Mapping
from typing import Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from restoredrill.errors import ConfigError, NotOursError, RestoreDrillError
from restoredrill.waits import wait_until

log = logging.getLogger(__name__)

CREATED_BY_LABEL = "restoredrill.io/created-by"
CREATED_BY_VALUE = "restoredrill"
RUN_ID_LABEL = "restoredrill.io/run-id"
# Which xdist worker created it: lets one worker clean up without touching another's namespaces.
WORKER_LABEL = "restoredrill.io/worker"

# pytest-xdist's worker id when tests are not distributed.
NOT_DISTRIBUTED = "master"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


class _Metadata(Protocol):
    @property
    def name(self) -> str | None: ...

    @property
    def labels(self) -> Mapping[str, str] | None: ...


class NamespaceLike(Protocol):
    """What the guard reads from a namespace: a `V1Namespace` or anything shaped like one."""

    @property
    def metadata(self) -> _Metadata | None: ...


def new_run_id() -> str:
    """A run id usable as a label value: UTC time (sortable, readable) plus randomness."""
    return time.strftime("%Y%m%dt%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def check_run_id(run_id: str) -> str:
    if len(run_id) > 63 or not _LABEL_VALUE.match(run_id):
        raise ConfigError(
            f"run id {run_id!r} cannot be a Kubernetes label value",
            remedy="use at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        )
    return run_id


def ownership_labels(*, run_id: str, worker_id: str = NOT_DISTRIBUTED) -> dict[str, str]:
    """The labels that mark a namespace as created by this run (and this xdist worker)."""
    return {
        CREATED_BY_LABEL: CREATED_BY_VALUE,
        RUN_ID_LABEL: check_run_id(run_id),
        WORKER_LABEL: check_run_id(worker_id),
    }


def ownership_selector(*, run_id: str, worker_id: str | None = None) -> str:
    """A label selector for the namespaces this run (optionally: this worker) created."""
    selector = f"{CREATED_BY_LABEL}={CREATED_BY_VALUE},{RUN_ID_LABEL}={check_run_id(run_id)}"
    if worker_id is not None:
        selector += f",{WORKER_LABEL}={check_run_id(worker_id)}"
    return selector


def worker_scoped_name(base: str, worker_id: str, *, max_length: int = 63) -> str:
    """`base` made unique per xdist worker: `velero-gw1`; unchanged when not distributed.

    The result must be a DNS label (namespaces, kind clusters); an invalid or too long result is a
    configuration error rather than something silently shortened into a name nobody recognises.
    """
    name = base if worker_id == NOT_DISTRIBUTED else f"{base}-{worker_id}"
    if len(name) > max_length or not _DNS_LABEL.match(name):
        raise ConfigError(
            f"name {name!r} (from {base!r} and xdist worker {worker_id!r}) is not a DNS label "
            f"of at most {max_length} characters",
            remedy="use a shorter base name of lowercase letters, digits and '-'",
        )
    return name


def assert_owned(namespace: NamespaceLike, run_id: str, *, worker_id: str | None = None) -> None:
    """Raise `NotOursError` unless `namespace` carries this run's ownership labels."""
    __tracebackhide__ = True
    metadata = namespace.metadata
    name = (metadata.name if metadata else None) or "(unnamed)"
    labels = dict((metadata.labels if metadata else None) or {})
    leave_it = (
        f"restoredrill deletes only namespaces it created in this run; if {name!r} really is "
        f"disposable, delete it yourself (`kubectl delete namespace {name}`)"
    )
    created_by = labels.get(CREATED_BY_LABEL)
    if created_by != CREATED_BY_VALUE:
        seen = "it has no such label" if created_by is None else f"it has {CREATED_BY_LABEL}={created_by}"
        raise NotOursError(
            f"refusing to delete namespace {name!r}: it lacks the label "
            f"{CREATED_BY_LABEL}={CREATED_BY_VALUE} ({seen}), so restoredrill did not create it",
            remedy=leave_it,
        )
    owner_run = labels.get(RUN_ID_LABEL)
    if owner_run != run_id:
        seen = "it has no such label" if owner_run is None else f"it was created by run {owner_run!r}"
        raise NotOursError(
            f"refusing to delete namespace {name!r}: its label {RUN_ID_LABEL} does not name this run "
            f"{run_id!r} ({seen})",
            remedy=leave_it + "; a namespace of another run is that run's to delete (it may still be in use)",
        )
    if worker_id is not None and labels.get(WORKER_LABEL) != worker_id:
        raise NotOursError(
            f"refusing to delete namespace {name!r}: its label {WORKER_LABEL}={labels.get(WORKER_LABEL)} "
            f"names another xdist worker than {worker_id!r} of this run",
            remedy="let the worker that created it delete it",
        )


def create_owned_namespace(
    api: client.ApiClient,
    name: str,
    *,
    run_id: str,
    worker_id: str = NOT_DISTRIBUTED,
    labels: Mapping[str, str] | None = None,
) -> client.V1Namespace:
    """Create namespace `name` labelled as this run's; reuse it only if this run already owns it."""
    core = client.CoreV1Api(api)
    body = client.V1Namespace(
        metadata=client.V1ObjectMeta(
            name=name, labels={**(labels or {}), **ownership_labels(run_id=run_id, worker_id=worker_id)}
        )
    )
    try:
        created: client.V1Namespace = core.create_namespace(body)
        log.info("created namespace %s for run %s", name, run_id)
        return created
    except ApiException as error:
        if error.status != 409:
            raise
    existing: client.V1Namespace = core.read_namespace(name)
    try:
        assert_owned(existing, run_id, worker_id=worker_id)
    except NotOursError as error:
        raise NotOursError(
            f"namespace {name!r} already exists and is not this run's, so a drill will not use it: " + error.message,
            remedy="choose another name, or remove that namespace yourself if it is disposable",
        ) from error
    return existing


def request_owned_namespace_deletion(
    api: client.ApiClient, name: str, *, run_id: str, worker_id: str | None = None
) -> str | None:
    """Check ownership and ask the API server to delete `name`; the deleted UID, None if absent.

    Nothing is sent to delete a namespace that fails `assert_owned`.
    """
    core = client.CoreV1Api(api)
    try:
        namespace: client.V1Namespace = core.read_namespace(name)
    except ApiException as error:
        if error.status == 404:
            return None
        raise
    assert_owned(namespace, run_id, worker_id=worker_id)
    uid = namespace.metadata.uid if namespace.metadata else None
    if not uid:
        raise RestoreDrillError(f"namespace {name!r} as read from the API server has no UID")
    try:
        # The UID precondition: if the namespace was deleted and recreated by someone else since we
        # read it, the API server refuses (409) instead of deleting their namespace.
        core.delete_namespace(name, body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid)))
    except ApiException as error:
        if error.status == 404:
            return None
        if error.status == 409:
            raise NotOursError(
                f"refusing to delete namespace {name!r}: it changed (UID is no longer {uid}) "
                "between the ownership check and the delete",
                remedy="someone recreated it; leave it, or check its labels and delete it yourself",
            ) from error
        raise
    log.info("deleting namespace %s (uid %s) of run %s", name, uid, run_id)
    return uid


def wait_for_namespace_deleted(api: client.ApiClient, name: str, *, uid: str, timeout: float) -> None:
    """Wait until namespace `name` with `uid` is gone (a new namespace of that name does not count)."""
    core = client.CoreV1Api(api)

    def probe() -> tuple[bool | None, str]:
        try:
            namespace: client.V1Namespace = core.read_namespace(name)
        except ApiException as error:
            if error.status == 404:
                return True, "gone"
            return None, f"API error {error.status} {error.reason}"
        if namespace.metadata is None or namespace.metadata.uid != uid:
            return True, "gone (a new namespace of that name exists)"
        status = namespace.status or client.V1NamespaceStatus()
        conditions = [f"{c.type}: {c.message}" for c in (status.conditions or []) if c.status == "True" and c.message]
        return None, f"phase {status.phase}; " + ("; ".join(conditions) or "no conditions")

    wait_until(
        f"namespace {name} to be deleted",
        probe,
        timeout=timeout,
        remedy=f"look at what is left: `kubectl get all,pvc -n {name}`, and for stuck finalizers "
        f"`kubectl get namespace {name} -o yaml`",
    )


def delete_owned_namespace(
    api: client.ApiClient, name: str, *, run_id: str, wait_timeout: float, worker_id: str | None = None
) -> None:
    """Delete namespace `name` if (and only if) this run created it, and wait until it is gone.

    Raises `NotOursError` for a namespace without this run's labels; a missing namespace is fine.
    """
    uid = request_owned_namespace_deletion(api, name, run_id=run_id, worker_id=worker_id)
    if uid is not None:
        wait_for_namespace_deleted(api, name, uid=uid, timeout=wait_timeout)


class NamespaceFactory:
    """Creates labelled, worker-scoped namespaces for tests and deletes exactly those on cleanup.

    `factory("immich")` returns the name it created (`immich-gw0` under xdist worker gw0).
    """

    def __init__(
        self,
        api: client.ApiClient,
        *,
        run_id: str,
        worker_id: str = NOT_DISTRIBUTED,
        delete_timeout: float,
    ) -> None:
        self._api = api
        self._run_id = check_run_id(run_id)
        self._worker_id = worker_id
        self._delete_timeout = delete_timeout
        self._created: list[str] = []

    @property
    def created(self) -> tuple[str, ...]:
        return tuple(self._created)

    def __call__(self, base: str, *, labels: Mapping[str, str] | None = None) -> str:
        name = worker_scoped_name(base, self._worker_id)
        create_owned_namespace(self._api, name, run_id=self._run_id, worker_id=self._worker_id, labels=labels)
        if name not in self._created:
            self._created.append(name)
        return name

    def cleanup(self) -> list[tuple[str, Exception]]:
        """Delete every namespace this factory created; best effort, each failure logged and returned.

        All deletions are requested first and awaited after, so namespaces terminate in parallel.
        """
        failures: list[tuple[str, Exception]] = []
        pending: list[tuple[str, str]] = []
        for name in reversed(self._created):
            try:
                uid = request_owned_namespace_deletion(self._api, name, run_id=self._run_id, worker_id=self._worker_id)
            except (RestoreDrillError, ApiException) as error:
                log.warning("could not delete namespace %s: %s", name, error)
                failures.append((name, error))
                continue
            if uid is not None:
                pending.append((name, uid))
        # One deadline for all: namespaces terminate in parallel, so the wait does not add up.
        deadline = time.monotonic() + self._delete_timeout
        for name, uid in pending:
            try:
                remaining = max(deadline - time.monotonic(), 1.0)
                wait_for_namespace_deleted(self._api, name, uid=uid, timeout=remaining)
            except (RestoreDrillError, ApiException) as error:
                log.warning("namespace %s was not deleted: %s", name, error)
                failures.append((name, error))
        self._created.clear()
        return failures
