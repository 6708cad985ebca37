"""Deploying the GitOps repo under test the way Flux does in production, on a drill cluster.

The repo is published on the in-cluster git server as a GitRepository with the name the apps'
ks.yaml files refer to; each app's own Flux Kustomization (its ks.yaml, unchanged) is applied and
reconciled from there, SOPS secrets decrypted by kustomize-controller with the age key.

What the drill cluster lacks is stood in, and every stand-in is recorded so the report says so:
- storage classes the claims name (`longhorn`) become aliases of the cluster's default class;
- NFS PersistentVolumes (the kernel here has no NFS client) are published as hostPath volumes on a
  host folder that outlives the cluster, as the runbook's NFS server outlives its cluster;
- the Gateway API CRDs are installed when an app has routes;
- on the local provider, CNPG Clusters run the platform's PostgreSQL image (Debian's 15), whatever
  image and major version the repo names (nothing can be pulled there);
- secrets the drill cannot have get generated values (`secretstandins`): ExternalSecrets become plain
  Secrets; without an age key, SOPS files are served without encryption and the Kustomizations lose
  `spec.decryption`; `postBuild.substituteFrom` objects that are encrypted, external or missing from
  the repo become generated values in `postBuild.substitute`, and those the repo holds in clear (a
  cluster-settings ConfigMap the cluster's own Kustomization applies) their own values there.
Only what git tracks is published (a kubeconfig or a key lying untracked in the working tree stays
on the host), never the age key file, and never a file holding a secret key in plain text: the git
server answers every pod unauthenticated. The age key reaches the cluster only as the Secret
kustomize-controller decrypts with. NFS server names and paths come from the repo, so the host
folders they map to are kept inside the stand-in root.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import yaml
from kubernetes import client

from restoredrill.catalogue import Catalogue, Manifest, dig
from restoredrill.cluster.namespaces import (
    CREATED_BY_LABEL,
    CREATED_BY_VALUE,
    RUN_ID_LABEL,
    create_owned_namespace,
    wait_for_namespace_deleted,
)
from restoredrill.drill.accessmodes import NODE_LOCAL_PROVISIONER, NodeLocalClasses, shared_access_patches
from restoredrill.drill.charts import (
    ChartPackage,
    chart_layout_tar,
    chart_needs,
    chart_server_host,
    chart_server_manifests,
    missing_charts_error,
    read_charts_dir,
    release_source,
    serve_chart_sources,
    served_source,
)
from restoredrill.drill.disclosure import app_standins
from restoredrill.drill.helmreleases import (
    dependency_ready_status,
    dependency_standin,
    ready_as_dependency,
    release_dependencies,
)
from restoredrill.drill.secretstandins import (
    StandinValues,
    secret_standin_files,
    substitution_standins,
    without_decryption,
)
from restoredrill.errors import ConfigError, NotOursError
from restoredrill.pins import cache_dir, module_pins
from restoredrill.platform import Flux, Velero
from restoredrill.platform.base import PlatformContext, labels, read_crds
from restoredrill.platform.flux import HELM_GROUP, HELM_VERSION, KUSTOMIZE_GROUP, KUSTOMIZE_VERSION
from restoredrill.timeouts import timeout
from restoredrill.waits import wait_until
from restoredrill.yamlio import iter_yaml_files, load_all

STANDIN_LABEL = "restoredrill.io/stand-in"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
SOPS_KEY_NAME = "age.agekey"
# A folder added to the published repo: what stand-in Kustomizations point at.
EMPTY_PATH = "restoredrill-standins/empty"


def nfs_root(cache: Path | None = None) -> Path:
    """Host folder standing in for the NFS servers: `<cache>/nfs/<server>/<export path>`."""
    return (cache or cache_dir()) / "nfs"


# An NFS server as a PV names it: a host name or an IPv4/IPv6 address, nothing that walks a path.
_NFS_SERVER = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                         r"[A-Za-z0-9])?)*|\[?[0-9A-Fa-f:.]+\]?)$")


# `${NAME}`, `${NAME:=default}` and the like, as Flux's post-build substitution reads them.
_FLUX_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)[^}]*\}")


def _variable_folder(match: re.Match[str]) -> str:
    return "var-" + match.group(1).lower().replace("_", "-")


def nfs_host_path(server: str, path: str, *, root: Path | None = None, source: str = "a PersistentVolume") -> Path:
    """The host folder standing in for `server:path`, always inside `root`.

    Both come from the repo under test and the drill mounts and seeds the folder as root, so a
    server or path that would leave the stand-in root (`..`, `/`, a symlink out) is refused.
    """
    root = (root or nfs_root())
    remedy = ("an NFS PersistentVolume needs spec.nfs.server (a host name or address) and spec.nfs.path "
              "(an absolute export path without '..')")
    # A Flux variable (`${SECRET_NAS_SERVER}`, substituted in the cluster) names its own folder: the
    # stand-in serves the data wherever the real export is, so its value does not matter here.
    server, path = _FLUX_VARIABLE.sub(_variable_folder, server), _FLUX_VARIABLE.sub(
        _variable_folder, "/" + path if path.startswith("${") else path)
    if not _NFS_SERVER.match(server) or server in (".", ".."):
        raise ConfigError(f"{source}: spec.nfs.server {server!r} is not a host name or address", remedy=remedy)
    parts = PurePosixPath(path).parts
    if not path.startswith("/") or ".." in parts:
        raise ConfigError(f"{source}: spec.nfs.path {path!r} is not an absolute export path without '..'",
                          remedy=remedy)
    host = root.joinpath(server.strip("[]"), *parts[1:])
    resolved_root = root.resolve()
    if not host.resolve().is_relative_to(resolved_root):
        raise ConfigError(f"{source}: spec.nfs {server}:{path} resolves to {host.resolve()}, outside the NFS "
                          f"stand-in root {resolved_root}", remedy=f"remove the symlink under {resolved_root}")
    return host


def rewrite_nfs_volumes(documents: list[Any], *, root: Path, source: str = "manifest") -> list[str]:
    """Turn NFS PersistentVolumes in `documents` into hostPath ones (in place); what was changed."""
    changed = []
    for doc in documents:
        if not (isinstance(doc, dict) and doc.get("kind") == "PersistentVolume"):
            continue
        spec = doc.get("spec") or {}
        nfs = spec.get("nfs")
        if not isinstance(nfs, dict):
            continue
        name = doc.get("metadata", {}).get("name")
        host = nfs_host_path(str(nfs.get("server", "")), str(nfs.get("path", "")), root=root,
                             source=f"{source}: PersistentVolume {name}")
        del spec["nfs"]
        spec["hostPath"] = {"path": str(host), "type": "DirectoryOrCreate"}
        metadata = doc.setdefault("metadata", {})
        metadata.setdefault("labels", {})[STANDIN_LABEL] = "nfs"
        # kubelet refuses mount options on a hostPath volume ("mount options are not supported for this
        # volume type"): the NFS ones (`nfsvers=4.2`, `hard`) go with the NFS source.
        options = spec.pop("mountOptions", None)
        annotation = (metadata.get("annotations") or {}).pop("volume.beta.kubernetes.io/mount-options", None)
        dropped = [str(o) for o in options or []] + ([str(annotation)] if annotation else [])
        without = f", without its NFS mount options ({', '.join(dropped)})" if dropped else ""
        changed.append(f"PersistentVolume {name}: NFS {nfs.get('server')}:{nfs.get('path')} served from host "
                       f"folder {host}{without}")
    return changed


def rewrite_cnpg_images(documents: list[Any], *, image: str) -> list[str]:
    """Point CNPG Clusters at `image` (in place); what was changed."""
    changed = []
    for doc in documents:
        if not (isinstance(doc, dict) and doc.get("kind") == "Cluster"
                and str(doc.get("apiVersion", "")).startswith("postgresql.cnpg.io/")):
            continue
        spec = doc.setdefault("spec", {})
        before = spec.get("imageName") or "(the operator's default)"
        if before == image:
            continue
        spec["imageName"] = image
        changed.append(f"CNPG Cluster {doc.get('metadata', {}).get('name')}: image {before} replaced by {image}"
                       " (the PostgreSQL the drill cluster has; a different major version than the repo's may "
                       "behave differently)")
    return changed


def disarm_cnpg_backups(documents: list[Any]) -> list[str]:
    """A drill cluster must never write into the repo's real backup destinations: CNPG Clusters lose
    `spec.backup` and `spec.plugins` (their WAL archive and base backups go to production's bucket,
    and a PGDATA restored from production carries no empty-archive check), ScheduledBackups are
    suspended (in place); what was changed."""
    changed = []
    for doc in documents:
        if not (isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("postgresql.cnpg.io/")):
            continue
        spec = doc.setdefault("spec", {}) if isinstance(doc.get("spec", {}), dict) else {}
        name = (doc.get("metadata") or {}).get("name")
        if doc.get("kind") == "Cluster":
            dropped = [key for key in ("backup", "plugins") if spec.pop(key, None) is not None]
            if dropped:
                changed.append(f"CNPG Cluster {name}: spec.{' and spec.'.join(dropped)} removed (they point at the "
                               "repo's real backup destination, which a drill must never write to)")
        elif doc.get("kind") == "ScheduledBackup" and spec.get("suspend") is not True:
            spec["suspend"] = True
            changed.append(f"CNPG ScheduledBackup {name}: suspended (a drill must never write to the repo's real "
                           "backup destination)")
    return changed


# Content no file served to the cluster may hold: the git server answers every pod, unauthenticated.
# A key counts only with key material after its marker (even commented out): a sample config's
# `#   -----BEGIN OPENSSH PRIVATE KEY-----` over `#   ...`, or docs' `AGE-SECRET-KEY-1...`, holds none.
_PEM_BODY = r"-----[ \t]*(?:\r?\n|\\n)[ \t#]*[A-Za-z0-9+/]{4}"  # a real or a JSON-escaped newline
SECRET_KEY_MARKERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"AGE-SECRET-KEY-1[0-9A-Z]{8}"), "an age secret key"),
    (re.compile(r"-----BEGIN OPENSSH PRIVATE KEY" + _PEM_BODY), "an SSH private key"),
    (re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY" + _PEM_BODY), "a private key (PEM)"),
)


def published_files(repo: Path) -> tuple[list[Path], str | None]:
    """The files of `repo` to publish, relative to it: what git tracks (a file in the working tree
    that git does not track, a kubeconfig or a key, stays on the host), and a note when `repo` is
    no git checkout and every file is taken."""
    git = shutil.which("git")
    if git is not None:
        listed = subprocess.run([git, "-C", str(repo), "ls-files", "-z", "--cached", "--", "."],
                                capture_output=True, timeout=timeout("command"), check=False)
        if listed.returncode == 0:
            names = [name for name in listed.stdout.decode().split("\0") if name]
            return sorted(Path(n) for n in names if (repo / n).is_file() and not (repo / n).is_symlink()), None
    files = sorted(p.relative_to(repo) for p in repo.rglob("*") if p.is_file() and ".git" not in p.parts)
    return files, f"{repo} is not a git checkout: every file under it is published to the drill's git server"


def secret_key_in(path: Path) -> str | None:
    """What secret key `path` holds in plain text, if any."""
    try:
        text = path.read_bytes()[:1_000_000].decode(errors="replace")
    except OSError:
        return None
    return next((what for marker, what in SECRET_KEY_MARKERS if marker.search(text)), None)


def publishable_tree(repo: Path, target: Path, *, nfs: Path, cnpg_image: str | None = None,
                     withheld: Sequence[Path] = (), standin_values: StandinValues | None = None,
                     sops_standins: bool = False, chart_host: str | None = None) -> list[str]:
    """Copy what git tracks of `repo` to `target` with the stand-ins applied; the stand-ins made.

    The age key files (`*.agekey` and `withheld`) are never copied: the key reaches the cluster only
    as the Secret kustomize-controller decrypts with. Any other file holding a secret key in plain
    text is refused, naming it, rather than served to every pod. With `standin_values`, secrets the
    drill cannot have are stood in for: ExternalSecrets, and SOPS files too with `sops_standins`.
    With `chart_host`, the chart sources point at the drill's chart server (`charts`).
    """
    target.mkdir(parents=True, exist_ok=True)
    files, note = published_files(repo)
    notes: list[str] = [note] if note else []
    kept_back = {p.resolve() for p in withheld}
    for relative in files:
        source = repo / relative
        if relative.suffix == ".agekey" or source.resolve() in kept_back:
            continue
        held = secret_key_in(source)
        if held is not None:
            raise ConfigError(f"{source} holds {held} in plain text; the drill would serve it to every pod of the "
                              "drill cluster through its git server", remedy=f"remove {relative} from the repo "
                              "(or encrypt it with SOPS); give the drill's age key with --sops-age-key")
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination)
    if standin_values is not None:
        texts = {path.relative_to(target): path.read_text() for path in iter_yaml_files(target)}
        rewritten, made = secret_standin_files(texts, root=target, values=standin_values,
                                               sops_standins=sops_standins)
        for relative, text in rewritten.items():
            (target / relative).write_text(text)
        notes += made
    for path in iter_yaml_files(target):
        text = path.read_text()
        nfs_volume = "nfs:" in text and "PersistentVolume" in text
        cnpg = "postgresql.cnpg.io/" in text
        charts = chart_host is not None and any(word in text for word in ("HelmRepository", "OCIRepository", "verify:"))
        if not (nfs_volume or cnpg or charts) or "sops:" in text:
            continue
        documents = load_all(text)  # YAML 1.2, as kustomize reads it: `huge_pages: off` stays a string
        changed = rewrite_nfs_volumes(documents, root=nfs, source=str(path.relative_to(target)))
        changed += disarm_cnpg_backups(documents)
        if chart_host is not None:
            changed += serve_chart_sources(documents, host=chart_host)
        if cnpg_image is not None:
            changed += rewrite_cnpg_images(documents, image=cnpg_image)
        if changed:
            path.write_text(yaml.safe_dump_all(documents, sort_keys=False))
            notes += [f"{path.relative_to(target)}: {note}" for note in changed]
    return notes


@dataclass
class GitOpsDeployment:
    """The repo under test served to Flux in one drill cluster, and the apps deployed from it."""

    ctx: PlatformContext
    flux: Flux
    catalogue: Catalogue
    run_id: str
    worker_id: str
    sops_age_key: Path | None
    standins: list[str] = field(default_factory=list)
    out: Callable[[str], None] = print
    # Whether no other live session uses this cluster: only then are an earlier run's leftovers removed.
    sole_user: Callable[[], bool] = lambda: False
    # Packaged Helm charts to serve as the HelmReleases' sources (`--charts-dir`), and how images
    # reach this cluster (the chart server's is built here).
    charts_dir: Path | None = None
    # The bare repository's name on the git server (two deployments on one cluster need two).
    repo_name: str = "gitops"
    load_images: Callable[[dict[str, Path]], None] | None = None
    chart_packages: list[ChartPackage] = field(default_factory=list)
    # HelmReleases rendered from --charts-dir to know their pods and claims (restoredrill.rendering).
    rendered: Sequence[str] = ()
    # The cluster's classes local-path provisions (restoredrill.drill.accessmodes), read when first needed.
    _node_local: NodeLocalClasses | None = field(default=None, init=False, repr=False)

    # ---- once per session ---------------------------------------------------------------------
    def publish(self) -> None:
        """Serve the repo (with stand-ins) and create the GitRepository the ks.yaml files name."""
        if self.charts_dir is not None:
            self.chart_packages = read_charts_dir(self.charts_dir)
        with tempfile.TemporaryDirectory(prefix="restoredrill-repo-") as scratch:
            tree = Path(scratch) / "repo"
            cnpg_image = self.ctx.images.get("postgresql") if self.ctx.cluster.offline else None
            withheld = [self.sops_age_key] if self.sops_age_key else []
            self.standins += publishable_tree(self.catalogue.root, tree, nfs=nfs_root(), cnpg_image=cnpg_image,
                                              withheld=withheld, standin_values=self.standin_values,
                                              sops_standins=self.sops_age_key is None, chart_host=self.chart_host)
            (tree / EMPTY_PATH).mkdir(parents=True)
            (tree / EMPTY_PATH / "kustomization.yaml").write_text(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: []\n")
            for manifest in self.encrypted_substitutes():
                folder = tree / self._substitute_path(manifest)
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copy2(tree / manifest.path, folder / manifest.path.name)
                (folder / "kustomization.yaml").write_text(
                    "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                    f"resources:\n  - ./{manifest.path.name}\n")
            url = self.flux.publish_repository(tree, repo=self.repo_name)
        for source in self.source_names():
            self.flux.create_git_repository(name=source, url=url)
            self.flux.request_reconcile(source, plural="gitrepositories")
            self.flux.wait_for_source_ready(source)
        self._sops_secrets()
        if self.chart_packages:
            self.serve_charts()
        for app in self.catalogue.apps:
            for kustomization in app.kustomizations:
                # Disclosed now: each drill's record copies the stand-ins when the drill is made, before it deploys.
                self._as_applied(kustomization.manifest.obj)

    @property
    def chart_host(self) -> str | None:
        return chart_server_host(self.flux.namespace) if self.charts_dir is not None else None

    def serve_charts(self) -> None:
        """Run the chart server in flux-system and stream the packaged charts into it."""
        from restoredrill.images.chartserver import (
            CHART_SERVER_PATH,
            CHART_SERVER_REFERENCE,
            CHART_SERVER_ROOT,
            build_chart_server_image,
        )

        if self.load_images is None:
            raise ConfigError("--charts-dir needs a cluster the drill can load its chart server's image into",
                              remedy="drill on the local or kind provider, or leave --charts-dir out where the "
                                     "cluster reaches the charts' registries")
        self.out("[drill] serving the charts of --charts-dir in the drill cluster (chart server)")
        self.load_images(build_chart_server_image())
        self.ctx.apply(chart_server_manifests(CHART_SERVER_REFERENCE, namespace=self.flux.namespace,
                                              root=CHART_SERVER_ROOT))
        selector = "app.kubernetes.io/name=chart-server"
        self.ctx.wait_for_pods_ready(namespace=self.flux.namespace, selector=selector, what="chart server",
                                     expected=1)
        pods = self.ctx.core.list_namespaced_pod(self.flux.namespace, label_selector=selector).items
        running = [str(p.metadata.name) for p in pods if p.metadata and p.status and p.status.phase == "Running"
                   and not p.metadata.deletion_timestamp]
        self.ctx.kubectl_bytes(["-n", self.flux.namespace, "exec", "-i", running[0], "--", CHART_SERVER_PATH,
                                "untar", CHART_SERVER_ROOT], input=chart_layout_tar(self.chart_packages),
                               timeout=self.ctx.timeout("command"))
        self._disclose([f"Helm charts served in the drill cluster from --charts-dir {self.charts_dir}: " + ", ".join(
            f"{p.name} {p.version}" for p in self.chart_packages), *(n for p in self.chart_packages for n in p.notes),
            *self.rendered])

    def prepare_charts(self, kustomizations: Sequence[dict[str, Any]]) -> None:
        """Before the app's Kustomizations apply: its HelmReleases' charts must be servable (else a
        ConfigError naming each chart and the `helm pull` that gets it), and the chart sources they
        name that another Kustomization deploys (flux-system's repositories) are applied directly."""
        names = {str(k["metadata"]["name"]) for k in kustomizations}
        own = [m for m in self.catalogue.manifests if m.deployed_by in names]
        releases = [m for m in own if m.kind == "HelmRelease"]
        if not releases:
            return
        sources = {(m.kind, str(m.namespace or "flux-system"), m.name): m for m in self.catalogue.manifests
                   if m.kind in ("HelmRepository", "OCIRepository") and m.api_version.startswith("source.")}
        needs = chart_needs([*releases, *sources.values()])
        error = missing_charts_error(needs, self.chart_packages, charts_dir=self.charts_dir,
                                     offline=bool(self.ctx.cluster.offline))
        if error is not None:
            raise error
        for release in releases:
            ref = release_source(release.obj, namespace=str(release.namespace or "default"))
            source = sources.get(ref) if ref else None
            if source is None or source.deployed_by in names:
                continue
            self._apply_source(source)

    def _apply_source(self, source: Manifest) -> None:
        body = {key: value for key, value in source.obj.items() if key != "status"}
        body.setdefault("metadata", {})["namespace"] = str(source.namespace or "flux-system")
        notes: list[str] = []
        if self.chart_host is not None:
            body, notes = served_source(body, host=self.chart_host)
        self.ctx.apply([body])
        self._disclose([f"{source.kind} {source.namespace}/{source.name} ({source.path}): applied by the drill, since "
                        f"the Kustomization that deploys it ({source.deployed_by}) is not drilled", *notes])

    @property
    def standin_values(self) -> StandinValues:
        """The run's generated secret values, derived from the run id: every worker and every cluster of
        the run serves the same ones, so a restored Secret equals the one Flux applies again."""
        return StandinValues(seed=self.run_id)

    def source_names(self) -> list[str]:
        names = {str((k.manifest.get("spec", "sourceRef", "name")) or "flux-system")
                 for app in self.catalogue.apps for k in app.kustomizations}
        return sorted(names)

    def _sops_secrets(self) -> None:
        names = {str(k.manifest.get("spec", "decryption", "secretRef", "name"))
                 for app in self.catalogue.apps for k in app.kustomizations
                 if k.manifest.get("spec", "decryption", "secretRef", "name")}
        names |= {self._decryption_secret(m, {}) for m in self.encrypted_substitutes()}
        if not names:
            return
        key = self.sops_age_key
        if key is None:
            self._disclose([f"no age key was given (--sops-age-key): the decryption Secrets {sorted(names)} are "
                            "not created; the repo's SOPS files are served with generated values instead and its "
                            "Kustomizations do not decrypt"])
            return
        if not key.is_file():
            raise ConfigError(
                f"the repo's Flux Kustomizations decrypt SOPS secrets with {sorted(names)}, and the age key "
                f"given ({key}) does not exist", remedy="pass the age private key file with --sops-age-key (or "
                "sops_age_key in the drill config; leave it out to drill on generated values); it is stored only "
                "in the drill cluster's flux-system Secret")
        data = key.read_text()
        self.ctx.apply([{"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                         "metadata": {"name": name, "namespace": self.flux.namespace, "labels": labels("flux")},
                         "stringData": {SOPS_KEY_NAME: data}} for name in sorted(names)])

    def install_gateway_api(self, velero: Velero) -> None:
        """The Gateway API CRDs; Velero is restarted if they are new to it.

        Velero's server refreshes its API discovery every 5 minutes: a Backup taken sooner after a
        CRD appears silently leaves that CRD's objects out (a drill caught HTTPRoutes missing).
        """
        from restoredrill.schemas import fetch_crds

        folders = fetch_crds(pins={"gateway-api": module_pins()["gateway-api"]}, progress=self.out)
        crds = [crd for folder in folders for crd in read_crds(folder)]
        known = {crd["metadata"]["name"] for crd in self._crds()}
        self.ctx.apply(crds)
        self.standins.append("Gateway API CRDs installed (standard channel); no Gateway implementation runs, so "
                             "routes are checked as objects, not traffic")
        if any(crd["metadata"]["name"] not in known for crd in crds):
            self.ctx.wait_for_crds_established([crd["metadata"]["name"] for crd in crds])
            velero.restart()

    def _crds(self) -> list[dict[str, Any]]:
        api = client.ApiextensionsV1Api(self.ctx.api)
        return self.ctx.as_manifests(api.list_custom_resource_definition().items)

    def alias_storage_classes(self, names: Iterable[str]) -> None:
        """Create the storage classes the claims name and the cluster lacks, as the default's aliases."""
        storage = client.StorageV1Api(self.ctx.api)
        classes = {str(sc["metadata"]["name"]): sc for sc in self.ctx.as_manifests(storage.list_storage_class().items)}
        default = next((sc for sc in classes.values()
                        if (sc["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"), None)
        for name in names:
            if name in classes:
                continue
            if default is None:
                raise ConfigError(f"the apps' claims use storage class {name!r}, which this cluster lacks, and the "
                                  "cluster has no default class to stand in for it",
                                  remedy="create the storage class, or mark one default")
            annotations = {k: v for k, v in (default["metadata"].get("annotations") or {}).items()
                           if k != DEFAULT_CLASS_ANNOTATION and not k.startswith("kubectl.kubernetes.io/")}
            body = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                    "metadata": {"name": name, "annotations": annotations, "labels": {STANDIN_LABEL: "storage-class"}},
                    **{key: default[key] for key in ("provisioner", "parameters", "reclaimPolicy", "volumeBindingMode")
                       if default.get(key) is not None}}
            self.ctx.apply([body])
            self.standins.append(f"StorageClass {name}: alias of the default class {default['metadata']['name']} "
                                 f"({default['provisioner']})")
        self._node_local = None

    def node_local_classes(self) -> NodeLocalClasses:
        """The storage classes whose claims local-path provisions on the node, when the cluster has one
        node (on more, a ReadWriteOnce claim would not be shared by pods on two nodes: nothing is changed)."""
        if self._node_local is None:
            core, storage = client.CoreV1Api(self.ctx.api), client.StorageV1Api(self.ctx.api)
            classes = self.ctx.as_manifests(storage.list_storage_class().items)
            local = [sc for sc in classes if sc.get("provisioner") == NODE_LOCAL_PROVISIONER]
            if len(core.list_node().items) != 1:
                local = []
            default = next((str(sc["metadata"]["name"]) for sc in local
                            if (sc["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"), None)
            self._node_local = NodeLocalClasses(names=frozenset(str(sc["metadata"]["name"]) for sc in local),
                                                default=default)
        return self._node_local

    # ---- per app ------------------------------------------------------------------------------
    def namespace_manifest(self, namespace: str) -> dict[str, Any] | None:
        for manifest in self.catalogue.manifests:
            if manifest.kind == "Namespace" and manifest.group == "" and manifest.name == namespace:
                return manifest.obj
        return None

    def create_namespace(self, namespace: str, *, kustomizations: Sequence[tuple[str, str]] = ()) -> None:
        """The app's namespace, labelled as this run's (the drill may delete only what it made).

        On a cluster restoredrill made, a namespace an earlier run left (labelled created-by
        restoredrill, another run id: `--keep-cluster`) is removed first, with its Kustomizations.
        Anywhere else such a namespace stops the drill (NotOursError).
        """
        declared = self.namespace_manifest(namespace) or {}
        extra = {str(k): str(v) for k, v in ((declared.get("metadata") or {}).get("labels") or {}).items()}
        try:
            create_owned_namespace(self.ctx.api, namespace, run_id=self.run_id, worker_id=self.worker_id,
                                   labels=extra)
            return
        except NotOursError:
            if not (self.ctx.cluster.created_by_us and self._left_by_earlier_run(namespace) and self.sole_user()):
                raise
        for home, name in kustomizations:
            self.ctx.delete([{"apiVersion": f"{KUSTOMIZE_GROUP}/{KUSTOMIZE_VERSION}", "kind": "Kustomization",
                              "metadata": {"name": name, "namespace": home}}], wait=True)
        found = self.ctx.core.read_namespace(namespace)
        uid = found.metadata.uid if found.metadata else None
        self.ctx.core.delete_namespace(namespace, body=client.V1DeleteOptions(
            preconditions=client.V1Preconditions(uid=uid)))
        wait_for_namespace_deleted(self.ctx.api, namespace, uid=str(uid),
                                   timeout=self.ctx.timeout("namespace_deleted"))
        self.out(f"[drill] removed namespace {namespace} left by an earlier restoredrill run on this cluster")
        create_owned_namespace(self.ctx.api, namespace, run_id=self.run_id, worker_id=self.worker_id, labels=extra)

    def _left_by_earlier_run(self, namespace: str) -> bool:
        found = self.ctx.core.read_namespace(namespace)
        labels_ = (found.metadata.labels if found.metadata else None) or {}
        return labels_.get(CREATED_BY_LABEL) == CREATED_BY_VALUE and labels_.get(RUN_ID_LABEL) != self.run_id

    def deploy(self, kustomizations: Sequence[dict[str, Any]]) -> None:
        """Apply the app's Flux Kustomizations as the repo writes them and wait until Ready."""
        self.satisfy_dependencies(kustomizations)
        self.prepare_charts(kustomizations)
        for kustomization in kustomizations:
            self.ctx.apply([self._as_applied(kustomization)])
        for kustomization in kustomizations:
            home = self.flux_in(kustomization)
            home.wait_for_kustomization_ready(str(kustomization["metadata"]["name"]),
                                              pods_in=(kustomization.get("spec") or {}).get("targetNamespace")
                                              or home.namespace)
        for kustomization in kustomizations:
            for namespace, name in self.flux_in(kustomization).helm_releases(str(kustomization["metadata"]["name"])):
                self.flux.wait_for_helm_release_ready(namespace, name)

    def flux_in(self, kustomization: dict[str, Any]) -> Flux:
        """Flux's helpers for the namespace a Kustomization lives in."""
        return self.flux.in_namespace(str((kustomization.get("metadata") or {}).get("namespace")
                                          or self.flux.namespace))

    def apply_suspended(self, kustomizations: Sequence[dict[str, Any]]) -> None:
        """Create the app's Kustomizations suspended (the runbook's order before a restore: Flux must
        apply nothing until the data is back), their out-of-app dependencies stood in for."""
        bodies = []
        for kustomization in kustomizations:
            body = self._as_applied(kustomization)
            body["spec"] = {**body.get("spec", {}), "suspend": True}
            bodies.append(body)
        self.satisfy_dependencies(bodies)
        self.prepare_charts(bodies)
        self.ctx.apply(bodies)

    def _as_applied(self, kustomization: dict[str, Any]) -> dict[str, Any]:
        """The Kustomization as the drill applies it: without status, with the secret stand-ins' changes
        (no `spec.decryption` when the SOPS files are stand-ins, generated substitutions)."""
        body = {key: value for key, value in kustomization.items() if key != "status"}
        notes: list[str] = []
        if self.sops_age_key is None:
            body, dropped = without_decryption(body, namespace=self.flux.namespace)
            notes += [dropped] if dropped else []
        body, substituted = substitution_standins(body, manifests=self.catalogue.manifests, values=self.standin_values,
                                                  sops_standins=self.sops_age_key is None,
                                                  namespace=self.flux.namespace)
        body, shared = shared_access_patches(body, catalogue=self.catalogue, classes=self.node_local_classes)
        self._disclose(notes + substituted + shared)
        return body

    def app_standins(self, kustomizations: Sequence[dict[str, Any]]) -> list[str]:
        """The stand-ins so far that a drill deploying `kustomizations` discloses (restoredrill.drill.disclosure)."""
        return app_standins(self.standins, catalogue=self.catalogue, kustomizations=kustomizations)

    def _disclose(self, notes: Iterable[str]) -> None:
        self.standins += [note for note in notes if note not in self.standins]

    def _ensure_namespace(self, namespace: str, *, why: str) -> None:
        """A namespace the drill needs for its own stand-ins (a dependency's home, `external-secrets`),
        created labelled as this run's when the cluster lacks it; an existing one is used as it is."""
        try:
            self.ctx.core.read_namespace(namespace)
            return
        except client.ApiException as error:
            if error.status != 404:
                raise
        create_owned_namespace(self.ctx.api, namespace, run_id=self.run_id, worker_id=self.worker_id)
        self._disclose([f"Namespace {namespace}: created for {why}"])

    def encrypted_substitutes(self, kustomizations: Sequence[dict[str, Any]] | None = None) -> list[Manifest]:
        """With the age key: the SOPS-encrypted Secrets and ConfigMaps that `postBuild.substituteFrom`
        of `kustomizations` (default: every app's) reads and no app Kustomization applies. In
        production the cluster's own Kustomization (flux-system's `cluster-meta`, say) applies and
        decrypts them; the drill deploys only the apps, so without this the app's Kustomization waits
        for a Secret that never comes."""
        if self.sops_age_key is None:
            return []
        bodies = kustomizations if kustomizations is not None else [
            k.manifest.obj for app in self.catalogue.apps for k in app.kustomizations]
        applied = {k.name for app in self.catalogue.apps for k in app.kustomizations}
        found: dict[tuple[str, str, str], Manifest] = {}
        for body in bodies:
            home = str((body.get("metadata") or {}).get("namespace") or self.flux.namespace)
            for entry in ((body.get("spec") or {}).get("postBuild") or {}).get("substituteFrom") or []:
                if not isinstance(entry, dict):
                    continue
                for m in self.catalogue.manifests:
                    if (m.group == "" and m.kind == entry.get("kind") and m.name == entry.get("name")
                            and m.namespace in (None, home) and m.encrypted and m.deployed_by not in applied):
                        found.setdefault((home, m.kind, m.name), m)
                        break
        return list(found.values())

    def _decryption_secret(self, manifest: Manifest, spec: dict[str, Any]) -> str:
        """The key Secret that decrypts `manifest` in production: its own Kustomization's, else the app's."""
        owner = next((m for m in self.catalogue.manifests if m.kind == "Kustomization"
                      and m.group == KUSTOMIZE_GROUP and m.name == manifest.deployed_by), None)
        named = owner.get("spec", "decryption", "secretRef", "name") if owner is not None else None
        return str(named or dig(spec, ("decryption", "secretRef", "name")) or "sops-age")

    @staticmethod
    def _substitute_path(manifest: Manifest) -> str:
        return f"restoredrill-standins/substitute/{manifest.kind.lower()}-{manifest.name}"

    def _apply_encrypted_substitutes(self, kustomizations: Sequence[dict[str, Any]]) -> None:
        """Apply each encrypted substituteFrom object alone, decrypted with the given key (disclosed)."""
        for kustomization in kustomizations:
            home = str((kustomization.get("metadata") or {}).get("namespace") or self.flux.namespace)
            spec = kustomization.get("spec") or {}
            for manifest in self.encrypted_substitutes([kustomization]):
                key_secret = self._decryption_secret(manifest, spec)
                name = f"restoredrill-substitute-{manifest.kind.lower()}-{manifest.name}"[:63].rstrip("-.")
                self.ctx.apply([{
                    "apiVersion": f"{KUSTOMIZE_GROUP}/{KUSTOMIZE_VERSION}", "kind": "Kustomization",
                    "metadata": {"name": name, "namespace": home, "labels": {STANDIN_LABEL: "substitute-from"}},
                    "spec": {"interval": "1h", "path": f"./{self._substitute_path(manifest)}", "prune": False,
                             "targetNamespace": home,
                             "decryption": {"provider": "sops", "secretRef": {"name": key_secret}},
                             "sourceRef": {"kind": "GitRepository",
                                           "name": str((spec.get("sourceRef") or {}).get("name", "flux-system")),
                                           "namespace": str((spec.get("sourceRef") or {}).get("namespace") or home)}}}])
                self.flux.in_namespace(home).wait_for_kustomization_ready(name)
                owner = f"Kustomization {manifest.deployed_by}" if manifest.deployed_by else "no Kustomization"
                self._disclose([f"{manifest.kind} {home}/{manifest.name} (postBuild.substituteFrom of Kustomization "
                                f"{home}/{(kustomization.get('metadata') or {}).get('name')}): SOPS-encrypted in "
                                f"{manifest.path}, applied in production by {owner}, which the drill does not "
                                f"deploy; applied alone by Kustomization {home}/{name}, decrypted with the given "
                                "age key"])

    def satisfy_dependencies(self, kustomizations: Sequence[dict[str, Any]]) -> None:
        """Stand in for `dependsOn` Kustomizations the drill does not deploy (the platform's own parts:
        the drill cluster runs CNPG, Velero and the object store without the repo's HelmReleases)."""
        own = {str(k["metadata"]["name"]) for k in kustomizations}
        for kustomization in kustomizations:
            home = str(kustomization["metadata"].get("namespace") or self.flux.namespace)
            for dependency in (kustomization.get("spec") or {}).get("dependsOn") or []:
                name, namespace = str(dependency.get("name")), str(dependency.get("namespace") or home)
                if name in own:
                    continue
                found = self.ctx.get_object(KUSTOMIZE_GROUP, KUSTOMIZE_VERSION, "kustomizations", namespace, name)
                if found is not None and not self._drop_left_dependency(found):
                    continue
                source = (kustomization.get("spec") or {}).get("sourceRef") or {}
                self._ensure_namespace(namespace, why=f"the stand-in for {kustomization['metadata']['name']}'s "
                                                      f"dependency {name}")
                self.ctx.apply([{
                    "apiVersion": f"{KUSTOMIZE_GROUP}/{KUSTOMIZE_VERSION}", "kind": "Kustomization",
                    "metadata": {"name": name, "namespace": namespace, "labels": {STANDIN_LABEL: "dependency"}},
                    "spec": {"interval": "1h", "path": f"./{EMPTY_PATH}", "prune": False,
                             "sourceRef": {"kind": "GitRepository", "name": str(source.get("name", "flux-system")),
                                           "namespace": str(source.get("namespace") or home)}}}])
                self.flux.in_namespace(namespace).wait_for_kustomization_ready(name)
                self.standins.append(f"Kustomization {namespace}/{name} (a dependency of "
                                     f"{kustomization['metadata']['name']}): an empty stand-in; the drill platform "
                                     "provides what it deploys")
        self._satisfy_release_dependencies({str(k["metadata"]["name"]) for k in kustomizations})
        self._apply_encrypted_substitutes(kustomizations)

    def _drop_left_dependency(self, obj: dict[str, Any]) -> bool:
        """A dependency an earlier run of this repo's drills left (`--keep-cluster`: the app deployed into
        a namespace labelled with another run id) is deleted, so it is stood in for like any other, on a
        cluster restoredrill made and no other session uses. A failed drill's Kustomization would
        otherwise hold every later drill that depends on it (cypr0's paperless-ai on paperless)."""
        target = str((obj.get("spec") or {}).get("targetNamespace") or "")
        if not (target and self.ctx.cluster.created_by_us and self.sole_user()):
            return False
        try:
            if not self._left_by_earlier_run(target):
                return False
        except client.ApiException as error:
            if error.status == 404:
                return False
            raise
        metadata = obj.get("metadata") or {}
        self.ctx.delete([{"apiVersion": f"{KUSTOMIZE_GROUP}/{KUSTOMIZE_VERSION}", "kind": "Kustomization",
                          "metadata": {"name": metadata.get("name"), "namespace": metadata.get("namespace")}}],
                        wait=True)
        self.out(f"[drill] removed Kustomization {metadata.get('namespace')}/{metadata.get('name')}, left by an "
                 f"earlier restoredrill run (namespace {target}), to stand in for it")
        return True

    def _satisfy_release_dependencies(self, kustomizations: set[str]) -> None:
        """Stand in for `dependsOn` HelmReleases outside the app (a storage or device-plugin chart):
        helm-controller installs none of the app's releases until those are Ready."""
        releases = [{**m.obj, "metadata": {**(m.obj.get("metadata") or {}), "namespace": m.namespace or "default"}}
                    for m in self.catalogue.manifests if m.kind == "HelmRelease" and m.deployed_by in kustomizations]
        for namespace, name, dependent in release_dependencies(releases):
            found = self.flux.get_helm_release(namespace, name)
            if found is not None and ((found.get("metadata") or {}).get("labels") or {}).get(STANDIN_LABEL) is None:
                continue  # the cluster has it: helm-controller judges the real one
            if found is None:
                self._ensure_namespace(namespace, why=f"the stand-in for HelmRelease {dependent}'s dependency {name}")
                self.ctx.apply([dependency_standin(namespace=namespace, name=name,
                                                   labels={STANDIN_LABEL: "dependency"})])

            def ready(namespace: str = namespace, name: str = name) -> tuple[bool | None, str]:
                current = self.flux.get_helm_release(namespace, name) or {}
                if ready_as_dependency(current):
                    return True, "Ready"
                self.ctx.custom.patch_namespaced_custom_object_status(
                    HELM_GROUP, HELM_VERSION, namespace, "helmreleases", name,
                    dependency_ready_status(current, now=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")))
                return None, "status not yet Ready at its generation"

            wait_until(f"the stand-in HelmRelease {namespace}/{name} to be Ready", ready,
                       timeout=self.ctx.timeout("flux_reconcile"), interval=1.0)
            self._disclose([f"HelmRelease {namespace}/{name} (a dependency of HelmRelease {dependent}): a suspended "
                            "stand-in marked Ready; the drill platform provides what it deploys, or the app runs "
                            "without it"])
