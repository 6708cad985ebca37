"""What every platform component shares: the cluster it talks to, images, timeouts, fail-fast waits.

A component (object store, Velero, CNPG, Flux) gets a `PlatformContext`: the cluster, an API client,
the image set (logical name -> reference, so the same manifests serve locally built images and
upstream ones) and the session's timeouts (`restoredrill.timeouts`). Manifests are plain dicts,
applied with kubectl server-side apply (CRDs are too large for client-side apply's last-applied
annotation); reads and patches go through the API client.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from restoredrill.cluster import ClusterHandle
from restoredrill.errors import CommandError, ConfigError, RestoreDrillError
from restoredrill.kube import find_kubectl, run_kubectl
from restoredrill.process import download_go_module
from restoredrill.timeouts import Timeouts, active
from restoredrill.waits import wait_until

Manifest = dict[str, Any]

FIELD_MANAGER = "restoredrill"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "restoredrill"

# Container waiting reasons that never fix themselves: report at once, naming the image.
IMAGE_FAILURES = frozenset({"ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"})
# A pull that failed for a reason that passes (a registry's rate limit, as Docker Hub's anonymous
# pulls hit with two clusters at once; a timeout; a 5xx): the kubelet retries it with back-off
# (ImagePullBackOff, up to 5 minutes apart), so the wait goes on and, if it runs out, names the
# registry's message. Any other pull failure (no such image, access denied, no registry at all) is final.
TRANSIENT_PULL_MARKERS = ("429", "toomanyrequests", "too many requests", "rate limit", "i/o timeout",
                          "tls handshake timeout", "unexpected eof", "connection reset", "503 service unavailable",
                          "502 bad gateway", "504 gateway", "context deadline exceeded")


def pull_failure_is_transient(message: str) -> bool:
    """Whether a pull failure's message (the kubelet's, with the registry's words) says to try again."""
    lowered = message.lower()
    return any(marker in lowered for marker in TRANSIENT_PULL_MARKERS)


CRASH_FAILURES = frozenset({"CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError",
                            "RunContainerError"})


class PlatformError(RestoreDrillError):
    """A platform component could not be installed or is not healthy; the message says why."""


class ImageMissingError(PlatformError):
    """A pod cannot start because its image is not in the cluster (nor pullable)."""

    def __init__(self, image: str, *, pod: str, reason: str, message: str, remedy: str) -> None:
        self.image = image
        self.pod = pod
        super().__init__(f"image {image} is missing for pod {pod} ({reason}: {message})", remedy=remedy)


def image_ref(images: Mapping[str, str], name: str) -> str:
    """The reference of logical image `name` in the image set, or a ConfigError naming it."""
    try:
        return images[name]
    except KeyError:
        raise ConfigError(
            f"the image set has no image {name!r} (it has: {', '.join(sorted(images)) or 'none'})",
            remedy="use restoredrill.platform.images.platform_image_set(provider) or add the entry",
        ) from None


def labels(app: str, **extra: str) -> dict[str, str]:
    """The labels every platform object carries (plus `extra`)."""
    return {"app.kubernetes.io/name": app, MANAGED_BY_LABEL: MANAGED_BY_VALUE, **extra}


def load_yaml_documents(text: str) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict) and doc.get("kind")]


def module_source_dir(key: str, *, timeout: float = 900) -> Path:
    """The source of pinned module `key` (pins.toml) in Go's module cache, downloaded if needed."""
    from restoredrill.pins import module_pins

    pin = module_pins()[key]
    return Path(download_go_module(pin.module, pin.version, timeout=timeout)["Dir"])


def read_crds(folder: Path) -> list[Manifest]:
    """Every CustomResourceDefinition in the YAML files of `folder` (sorted by file name)."""
    crds: list[Manifest] = []
    for path in sorted(folder.glob("*.yaml")):
        crds += [doc for doc in load_yaml_documents(path.read_text()) if doc["kind"] == "CustomResourceDefinition"]
    if not crds:
        raise ConfigError(f"no CustomResourceDefinition found in {folder}",
                          remedy="run `restoredrill schemas --fetch` (or check `crds` in pins.toml)")
    return crds


@dataclass(frozen=True)
class PlatformContext:
    """Where and with what a component is installed."""

    cluster: ClusterHandle
    api: client.ApiClient
    images: Mapping[str, str]
    timeouts: Timeouts = field(default_factory=active)
    out: Callable[[str], None] = print

    def timeout(self, name: str) -> float:
        return self.timeouts[name]

    def kubectl(self, args: Sequence[str], *, timeout: float | None = None, input: str | None = None) -> str:
        return run_kubectl(list(args), kubeconfig=self.cluster.kubeconfig, context=self.cluster.context,
                           timeout=timeout or self.timeout("command"), input=input)

    def wait_for_crds_established(self, names: Sequence[str]) -> None:
        """Wait until the CustomResourceDefinitions `names` are Established (their kinds are served)."""
        seconds = int(self.timeout("crd_established"))
        self.kubectl(["wait", "--for=condition=Established", f"--timeout={seconds}s",
                      *[f"crd/{name}" for name in names]], timeout=seconds + 10)

    def kubectl_bytes(self, args: Sequence[str], *, input: bytes, timeout: float) -> bytes:
        """kubectl with binary stdin (a tar stream into `kubectl exec -i`)."""
        command = [find_kubectl(), f"--kubeconfig={self.cluster.kubeconfig}"]
        if self.cluster.context:
            command.append(f"--context={self.cluster.context}")
        command += list(args)
        try:
            done = subprocess.run(command, input=input, capture_output=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as error:
            raise CommandError(command, returncode=None, output=str(error.stderr or b"", "utf-8", "replace")) from error
        if done.returncode != 0:
            raise CommandError(command, returncode=done.returncode,
                               output=(done.stdout + done.stderr).decode(errors="replace"))
        return done.stdout

    # ---- applying and deleting manifests ------------------------------------------------------
    def apply(self, manifests: Iterable[Manifest]) -> None:
        """Server-side apply: idempotent, and fine for CRDs larger than the annotation limit."""
        items = list(manifests)
        if not items:
            return
        document = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        self.kubectl(["apply", "--server-side", "--force-conflicts", f"--field-manager={FIELD_MANAGER}", "-f", "-"],
                     input=document, timeout=self.timeout("apply"))

    def delete(self, manifests: Iterable[Manifest], *, wait: bool = False) -> None:
        """Delete what `manifests` name (missing objects are fine)."""
        items = list(manifests)
        if not items:
            return
        document = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        self.kubectl(["delete", "--ignore-not-found", f"--wait={'true' if wait else 'false'}", "-f", "-"],
                     input=document, timeout=self.timeout("namespace_deleted"))

    # ---- custom objects -----------------------------------------------------------------------
    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    def as_manifests(self, items: Any) -> list[Manifest]:
        """API model objects (kubernetes.client's V1Pod...) as plain manifests with camelCase keys."""
        return cast(list[Manifest], self.api.sanitize_for_serialization(items))  # type: ignore[no-untyped-call]

    def get_object(self, group: str, version: str, plural: str, namespace: str, name: str) -> Manifest | None:
        try:
            found = cast(Manifest, self.custom.get_namespaced_custom_object(group, version, namespace, plural, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return found

    def list_objects(self, group: str, version: str, plural: str, namespace: str, *,
                     label_selector: str | None = None) -> list[Manifest]:
        listed = cast(Manifest, self.custom.list_namespaced_custom_object(
            group, version, namespace, plural, label_selector=label_selector or ""))
        items: list[Manifest] = listed.get("items", [])
        return items

    def create_object(self, group: str, version: str, plural: str, namespace: str, body: Manifest) -> Manifest:
        created = cast(Manifest, self.custom.create_namespaced_custom_object(group, version, namespace, plural, body))
        return created

    def merge_patch(self, group: str, version: str, plural: str, namespace: str, name: str,
                    patch: Manifest) -> Manifest:
        patched = cast(Manifest, self.custom.patch_namespaced_custom_object(group, version, namespace, plural, name,
                                                                            patch))
        return patched

    # ---- waiting for workloads ----------------------------------------------------------------
    def wait_for_pods_ready(self, *, namespace: str, selector: str, what: str, expected: int | None = None,
                            timeout_name: str = "platform_ready") -> list[client.V1Pod]:
        """Wait until the pods matching `selector` are all Ready (and at least `expected` of them).

        Fails at once, naming the image, when a container cannot get its image; and with the
        container's last message when it crash-loops, instead of waiting out the timeout.
        """

        def probe() -> tuple[list[client.V1Pod] | None, str]:
            pods = self.core.list_namespaced_pod(namespace, label_selector=selector).items
            check_pods_can_start(pods)
            ready = [pod for pod in pods if pod_is_ready(pod)]
            need = expected if expected is not None else max(len(pods), 1)
            seen = ", ".join(f"{pod_name(p)}={describe_pod(p)}" for p in pods) or "no pods yet"
            return (ready if len(ready) >= need and len(ready) == len(pods) else None), seen

        return wait_until(f"{what} ({namespace}, {selector}) to be Ready", probe,
                          timeout=self.timeout(timeout_name), on_progress=None,
                          remedy=f"`kubectl -n {namespace} describe pods -l {selector}` and their logs")


def pod_name(pod: client.V1Pod) -> str:
    """NAMESPACE/NAME of a pod."""
    meta = pod.metadata or client.V1ObjectMeta()
    return f"{meta.namespace}/{meta.name}"


def pod_is_ready(pod: client.V1Pod) -> bool:
    if pod.status is None or pod.status.phase != "Running" or (pod.metadata and pod.metadata.deletion_timestamp):
        return False
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def _tail(message: str, limit: int = 240) -> str:
    """The end of a long message (a registry's own words come last in the kubelet's)."""
    message = message.strip()
    return message if len(message) <= limit else "..." + message[-limit:]


def describe_pod(pod: client.V1Pod) -> str:
    status = pod.status
    if status is None:
        return "no status"
    waiting = [
        f"{c.name}: {c.state.waiting.reason}"
        # A pull being retried: the registry's own words, so a wait that runs out names them.
        + (f" [{_tail(c.state.waiting.message)}]" if c.state.waiting.reason in IMAGE_FAILURES
           and c.state.waiting.message else "")
        for c in (status.init_container_statuses or []) + (status.container_statuses or [])
        if c.state is not None and c.state.waiting is not None and c.state.waiting.reason
    ]
    return f"{status.phase}" + (f" ({'; '.join(waiting)})" if waiting else "")


def check_pods_can_start(pods: Iterable[client.V1Pod]) -> None:
    """Raise at once for a pod that will never start by itself (missing image, crash loop)."""
    for pod in pods:
        status = pod.status
        if status is None:
            continue
        for container in (status.init_container_statuses or []) + (status.container_statuses or []):
            waiting = container.state.waiting if container.state is not None else None
            if waiting is None or not waiting.reason:
                continue
            if waiting.reason in ("ErrImagePull", "ImagePullBackOff") and pull_failure_is_transient(
                    waiting.message or ""):
                continue  # the kubelet pulls again with back-off; the wait's own limit bounds it
            if waiting.reason in IMAGE_FAILURES:
                raise ImageMissingError(
                    container.image, pod=pod_name(pod), reason=waiting.reason,
                    message=(waiting.message or "").strip()[:300],
                    remedy="on the local provider the platform fixtures build and load it "
                           "(restoredrill.platform.images.build_local_images); on kind the image must be "
                           "pullable or loaded with `kind load`",
                )
            if waiting.reason in CRASH_FAILURES and (container.restart_count or 0) >= 2:
                last = container.last_state.terminated if container.last_state is not None else None
                detail = f"exit {last.exit_code}: {(last.message or last.reason or '').strip()[:300]}" if last else ""
                namespace, _, name = pod_name(pod).partition("/")
                raise PlatformError(
                    f"container {container.name} of pod {namespace}/{name} "
                    f"({container.image}) is in {waiting.reason} after {container.restart_count} restarts {detail}",
                    remedy=f"`kubectl -n {namespace} logs {name} -c {container.name} "
                    "--previous`",
                )
