"""Flux source-controller, kustomize-controller and helm-controller, and a git server holding the GitOps repo.

The controllers' Deployments and Service are upstream's own `config/manager` of the pinned modules
(rendered with `kubectl kustomize`), moved to `flux-system` with our images; CRDs come from the
pinned modules' `config/crd/bases`. The controllers run under service accounts bound to
cluster-admin, as Flux's own install does for kustomize-controller.

The GitRepository is served from inside the cluster: a git-server pod (restoredrill's own, on
go-git's upload-pack server: git's smart HTTP protocol over plain http, which source-controller's
go-git client speaks; see restoredrill/images/gitserver.py) holding a bare repository made on the
host from the GitOps tree under test and streamed in with `kubectl exec ... git-server publish`.
No outside network is involved.

Flux is driven through the API, since the flux CLI cannot be built from the module proxy as-is:
`spec.suspend` for suspend/resume, the `reconcile.fluxcd.io/requestedAt` annotation for
`flux reconcile`.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from restoredrill.errors import CommandError, MissingToolError
from restoredrill.images.gitserver import GIT_ROOT, GIT_SERVER_PATH
from restoredrill.pins import module_pins
from restoredrill.platform.base import (
    Manifest,
    PlatformContext,
    PlatformError,
    check_pods_can_start,
    image_ref,
    labels,
    load_yaml_documents,
    module_source_dir,
    read_crds,
)
from restoredrill.timeouts import timeout
from restoredrill.waits import wait_until

NAMESPACE = "flux-system"
SOURCE_GROUP, SOURCE_VERSION = "source.toolkit.fluxcd.io", "v1"
KUSTOMIZE_GROUP, KUSTOMIZE_VERSION = "kustomize.toolkit.fluxcd.io", "v1"
RECONCILE_ANNOTATION = "reconcile.fluxcd.io/requestedAt"
HELM_GROUP, HELM_VERSION = "helm.toolkit.fluxcd.io", "v2"
CONTROLLERS = ("source-controller", "kustomize-controller", "helm-controller")
GIT_SERVER = "git-server"
GIT_BRANCH = "main"


# ---- pure manifest helpers (unit-tested) --------------------------------------------------------
def customize_controller(manifests: list[Manifest], *, controller: str, images: Mapping[str, str],
                         namespace: str = NAMESPACE) -> list[Manifest]:
    """Upstream's config/manager objects moved to `namespace`, with our image and service account."""
    result = []
    for manifest in manifests:
        manifest.setdefault("metadata", {})["namespace"] = namespace
        if manifest["kind"] == "Deployment":
            pod = manifest["spec"]["template"]["spec"]
            pod["serviceAccountName"] = controller
            container = pod["containers"][0]
            container["image"] = image_ref(images, controller)
            container["imagePullPolicy"] = "IfNotPresent"
        result.append(manifest)
    return result


def controller_rbac(*, namespace: str = NAMESPACE) -> list[Manifest]:
    result: list[Manifest] = []
    for controller in CONTROLLERS:
        result.append({"apiVersion": "v1", "kind": "ServiceAccount",
                       "metadata": {"name": controller, "namespace": namespace, "labels": labels("flux")}})
        result.append({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": f"restoredrill-{controller}-{namespace}", "labels": labels("flux")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"kind": "ServiceAccount", "name": controller, "namespace": namespace}],
        })
    return result


def git_server_manifests(images: Mapping[str, str], *, namespace: str = NAMESPACE) -> list[Manifest]:
    pod_labels = labels(GIT_SERVER)
    return [
        {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": GIT_SERVER, "namespace": namespace, "labels": pod_labels},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app.kubernetes.io/name": GIT_SERVER}},
                "template": {"metadata": {"labels": pod_labels}, "spec": {
                    "containers": [{
                        "name": GIT_SERVER,
                        "image": image_ref(images, GIT_SERVER),
                        "imagePullPolicy": "IfNotPresent",
                        "ports": [{"name": "http", "containerPort": 8080}],
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 2},
                        "volumeMounts": [{"name": "repos", "mountPath": GIT_ROOT}],
                    }],
                    "volumes": [{"name": "repos", "emptyDir": {}}],
                    "terminationGracePeriodSeconds": 2,
                }},
            },
        },
        {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": GIT_SERVER, "namespace": namespace, "labels": pod_labels},
            "spec": {"selector": {"app.kubernetes.io/name": GIT_SERVER},
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
        },
    ]


def git_repository_url(repo: str, *, namespace: str = NAMESPACE) -> str:
    return f"http://{GIT_SERVER}.{namespace}.svc.cluster.local/git/{repo}.git"


def git_repository_manifest(*, name: str, url: str, namespace: str = NAMESPACE, branch: str = GIT_BRANCH,
                            interval: str = "1m") -> Manifest:
    return {"apiVersion": f"{SOURCE_GROUP}/{SOURCE_VERSION}", "kind": "GitRepository",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"url": url, "ref": {"branch": branch}, "interval": interval, "timeout": "60s"}}


def kustomization_manifest(*, name: str, path: str, source: str, namespace: str = NAMESPACE,
                           target_namespace: str | None = None, interval: str = "10m",
                           prune: bool = True) -> Manifest:
    spec: dict[str, Any] = {
        "interval": interval, "path": path, "prune": prune, "timeout": "2m",
        "sourceRef": {"kind": "GitRepository", "name": source},
    }
    if target_namespace:
        spec["targetNamespace"] = target_namespace
    return {"apiVersion": f"{KUSTOMIZE_GROUP}/{KUSTOMIZE_VERSION}", "kind": "Kustomization",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def ready_condition(obj: Mapping[str, Any]) -> tuple[bool, str]:
    """(Ready and current, message) of a Flux object from its Ready condition and observedGeneration."""
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            current = status.get("observedGeneration") == generation
            ok = condition.get("status") == "True" and current
            reason, message = condition.get("reason", ""), condition.get("message", "")
            return ok, f"Ready={condition.get('status')} ({reason}: {message})"
    return False, "no Ready condition yet"


def bare_repository_tar(tree: Path, *, repo: str, message: str = "restoredrill GitOps repo under test") -> bytes:
    """A tar of `REPO.git`: a bare git repository whose one commit on `main` is `tree`'s files."""
    git = shutil.which("git")
    if git is None:
        raise MissingToolError("git", remedy="apt-get install git")
    env = {"GIT_AUTHOR_NAME": "restoredrill", "GIT_AUTHOR_EMAIL": "restoredrill@localhost",
           "GIT_COMMITTER_NAME": "restoredrill", "GIT_COMMITTER_EMAIL": "restoredrill@localhost",
           "GIT_AUTHOR_DATE": "1970-01-01T00:00:00Z", "GIT_COMMITTER_DATE": "1970-01-01T00:00:00Z",
           "HOME": "/nonexistent", "GIT_CONFIG_NOSYSTEM": "1", "PATH": "/usr/bin:/bin"}
    with tempfile.TemporaryDirectory(prefix="restoredrill-git-") as scratch:
        work = Path(scratch) / "work"
        shutil.copytree(tree, work, ignore=shutil.ignore_patterns(".git"))
        bare = Path(scratch) / f"{repo}.git"
        for command in ([git, "init", "-q", "-b", GIT_BRANCH, str(work)],
                        [git, "-C", str(work), "add", "-A"],
                        [git, "-C", str(work), "commit", "-q", "--allow-empty", "-m", message],
                        [git, "clone", "-q", "--bare", str(work), str(bare)]):
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout("command"), env=env,
                                  check=False)
            if done.returncode != 0:
                raise CommandError(command, returncode=done.returncode, output=done.stdout + done.stderr)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            tar.add(bare, arcname=f"{repo}.git", filter=_root_owned)
        return buffer.getvalue()


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # No host user or group in the repo's files (the git server writes them as its own user).
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


# ---- the component -------------------------------------------------------------------------------
class Flux:
    """Install / wait_ready / GitOps helpers / uninstall of Flux's source and kustomize controllers."""

    def __init__(self, ctx: PlatformContext, *, namespace: str = NAMESPACE) -> None:
        self.ctx = ctx
        self.namespace = namespace

    def crds(self) -> list[Manifest]:
        from restoredrill.schemas import fetch_crds

        pins = {key: module_pins()[key] for key in CONTROLLERS}
        return [crd for folder in fetch_crds(pins=pins, progress=self.ctx.out) for crd in read_crds(folder)]

    def controller_manifests(self) -> list[Manifest]:
        result: list[Manifest] = []
        for controller in CONTROLLERS:
            source = module_source_dir(controller) / "config" / "manager"
            rendered = load_yaml_documents(self.ctx.kubectl(["kustomize", str(source)],
                                                                   timeout=self.ctx.timeout("kustomize_build")))
            result += customize_controller(rendered, controller=controller, images=self.ctx.images,
                                           namespace=self.namespace)
        return result

    def manifests(self) -> list[Manifest]:
        return [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace, "labels": labels("flux")}},
            *controller_rbac(namespace=self.namespace),
            *self.controller_manifests(),
            *git_server_manifests(self.ctx.images, namespace=self.namespace),
        ]

    def install(self) -> None:
        self.ctx.apply(self.crds())
        self.ctx.wait_for_crds_established(["gitrepositories.source.toolkit.fluxcd.io",
                                            "kustomizations.kustomize.toolkit.fluxcd.io",
                                            "helmreleases.helm.toolkit.fluxcd.io"])
        self.ctx.apply(self.manifests())

    def wait_ready(self) -> None:
        for controller in CONTROLLERS:
            self.ctx.wait_for_pods_ready(namespace=self.namespace, selector=f"app={controller}", what=controller,
                                         expected=1)
        self.ctx.wait_for_pods_ready(namespace=self.namespace, selector=f"app.kubernetes.io/name={GIT_SERVER}",
                                     what="git server", expected=1)

    def uninstall(self) -> None:
        self.ctx.delete([m for m in controller_rbac(namespace=self.namespace) if m["kind"] == "ClusterRoleBinding"])
        self.ctx.delete([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}], wait=True)

    # ---- the GitOps repo --------------------------------------------------------------------------
    def publish_repository(self, tree: Path, *, repo: str) -> str:
        """Serve `tree` as bare repo `repo` on the git server; returns its in-cluster URL."""
        pods = self.ctx.core.list_namespaced_pod(self.namespace,
                                                 label_selector=f"app.kubernetes.io/name={GIT_SERVER}").items
        running = [str(p.metadata.name) for p in pods if p.metadata and p.status and p.status.phase == "Running"]
        if not running:
            raise PlatformError("the git server has no Running pod", remedy="call Flux.wait_ready() first")
        archive = bare_repository_tar(tree, repo=repo)
        self.ctx.kubectl_bytes(["-n", self.namespace, "exec", "-i", running[0], "--", GIT_SERVER_PATH, "publish",
                                GIT_ROOT, repo], input=archive, timeout=self.ctx.timeout("command"))
        return git_repository_url(repo, namespace=self.namespace)

    def create_git_repository(self, *, name: str, url: str) -> None:
        self.ctx.apply([git_repository_manifest(name=name, url=url, namespace=self.namespace)])

    def create_kustomization(self, *, name: str, path: str, source: str, target_namespace: str | None = None,
                             prune: bool = True) -> None:
        self.ctx.apply([kustomization_manifest(name=name, path=path, source=source, namespace=self.namespace,
                                               target_namespace=target_namespace, prune=prune)])

    def get_kustomization(self, name: str) -> Manifest | None:
        return self.ctx.get_object(KUSTOMIZE_GROUP, KUSTOMIZE_VERSION, "kustomizations", self.namespace, name)

    def wait_for_source_ready(self, name: str) -> Manifest:
        return self._wait_for(SOURCE_GROUP, SOURCE_VERSION, "gitrepositories", name, what="GitRepository")

    def wait_for_kustomization_ready(self, name: str, *, pods_in: str | None = None) -> Manifest:
        """Wait until Ready; with `pods_in`, fail at once, naming the image, when a pod of that namespace
        cannot start (instead of waiting out the timeout)."""
        return self._wait_for(KUSTOMIZE_GROUP, KUSTOMIZE_VERSION, "kustomizations", name, what="Kustomization",
                              pods_in=pods_in)

    def in_namespace(self, namespace: str) -> Flux:
        """These helpers for objects in `namespace` (a Kustomization or HelmRelease outside flux-system)."""
        return self if namespace == self.namespace else Flux(self.ctx, namespace=namespace)

    def helm_releases(self, kustomization: str) -> list[tuple[str, str]]:
        """(namespace, name) of the HelmReleases the Kustomization applied."""
        found = []
        for entry in self.inventory(kustomization):
            namespace, name, group, kind = entry.split("_", 3)
            if group == HELM_GROUP and kind == "HelmRelease":
                found.append((namespace, name))
        return found

    def get_helm_release(self, namespace: str, name: str) -> Manifest | None:
        return self.ctx.get_object(HELM_GROUP, HELM_VERSION, "helmreleases", namespace, name)

    def wait_for_helm_release_ready(self, namespace: str, name: str) -> Manifest:
        """Wait until helm-controller installed (or upgraded) the release and its pods can start."""
        return self.in_namespace(namespace)._wait_for(HELM_GROUP, HELM_VERSION, "helmreleases", name,
                                                             what="HelmRelease", pods_in=namespace)

    def _wait_for(self, group: str, version: str, plural: str, name: str, *, what: str,
                  pods_in: str | None = None) -> Manifest:
        def probe() -> tuple[Manifest | None, str]:
            obj = self.ctx.get_object(group, version, plural, self.namespace, name) or {}
            if pods_in:
                check_pods_can_start(self.ctx.core.list_namespaced_pod(pods_in).items)
            ok, seen = ready_condition(obj)
            return (obj if ok else None), seen + ("" if ok else self._blocking_dependency(group, version, plural, obj))

        pods = f" and the pods of {pods_in}" if pods_in else ""
        return wait_until(f"Flux {what} {self.namespace}/{name} to be Ready", probe,
                          timeout=self.ctx.timeout("flux_reconcile"),
                          remedy=f"`kubectl -n {self.namespace} describe {plural} {name}`, the controller logs{pods}")

    def _blocking_dependency(self, group: str, version: str, plural: str, obj: Manifest, depth: int = 0) -> str:
        """Where an object waits on a dependency (Ready=False, DependencyNotReady), what that
        dependency itself reports, followed down its own dependsOn: the object that is really stuck."""
        if depth > 4 or not any(c.get("reason") == "DependencyNotReady" for c in
                                (obj.get("status") or {}).get("conditions") or [] if isinstance(c, dict)):
            return ""
        own = str((obj.get("metadata") or {}).get("namespace") or self.namespace)
        for ref in (obj.get("spec") or {}).get("dependsOn") or []:
            if not isinstance(ref, dict) or not ref.get("name"):
                continue
            namespace = str(ref.get("namespace") or own)
            dependency = self.ctx.get_object(group, version, plural, namespace, str(ref["name"])) or {}
            ok, seen = ready_condition(dependency)
            if not ok:
                return (f"; its dependency {namespace}/{ref['name']}: {seen if dependency else 'not found'}"
                        + self._blocking_dependency(group, version, plural, dependency, depth + 1))
        return ""

    # ---- driving Flux through the API -------------------------------------------------------------
    def suspend(self, name: str) -> None:
        self.ctx.merge_patch(KUSTOMIZE_GROUP, KUSTOMIZE_VERSION, "kustomizations", self.namespace, name,
                             {"spec": {"suspend": True}})

    def resume(self, name: str) -> str:
        """Unsuspend and ask for a reconcile at once (what `flux resume` does); returns the token."""
        self.ctx.merge_patch(KUSTOMIZE_GROUP, KUSTOMIZE_VERSION, "kustomizations", self.namespace, name,
                             {"spec": {"suspend": False}})
        return self.request_reconcile(name)

    def is_suspended(self, name: str) -> bool:
        return bool(((self.get_kustomization(name) or {}).get("spec") or {}).get("suspend", False))

    def request_reconcile(self, name: str, *, plural: str = "kustomizations") -> str:
        token = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{time.time_ns() % 10**9:09d}Z"
        group, version = ((KUSTOMIZE_GROUP, KUSTOMIZE_VERSION) if plural == "kustomizations"
                          else (SOURCE_GROUP, SOURCE_VERSION))
        self.ctx.merge_patch(group, version, plural, self.namespace, name,
                             {"metadata": {"annotations": {RECONCILE_ANNOTATION: token}}})
        return token

    def wait_for_reconciled(self, name: str, *, token: str) -> Manifest:
        """Wait until the Kustomization handled reconcile request `token` and is Ready."""

        def probe() -> tuple[Manifest | None, str]:
            obj = self.get_kustomization(name) or {}
            handled = (obj.get("status") or {}).get("lastHandledReconcileAt")
            ok, seen = ready_condition(obj)
            return (obj if ok and handled == token else None), f"handled {handled!r}; {seen}"

        return wait_until(f"Kustomization {name} to handle reconcile request {token}", probe,
                          timeout=self.ctx.timeout("flux_reconcile"))

    def inventory(self, name: str) -> Sequence[str]:
        """The object ids (`NAMESPACE_NAME_GROUP_KIND`) the Kustomization applied."""
        status = (self.get_kustomization(name) or {}).get("status") or {}
        return [entry["id"] for entry in (status.get("inventory") or {}).get("entries", [])]
