"""The GitOps catalogue: what a Flux repo says about apps, storage and backups.

The repo is read the way Flux and kustomize would build it: every Flux Kustomization's `path` is
expanded through `kustomization.yaml` resources and components (or, where a folder has none, every
manifest under it, as kustomize-controller generates), the Kustomization's own `spec.patches`,
`namePrefix`/`nameSuffix` and `commonMetadata` are applied (restoredrill/parentpatches.py), namespaces
are applied as kustomize and `targetNamespace` apply them (written into each object, as kustomize's
output carries them), and `postBuild.substitute` variables are substituted. The runbook's
layout decides what an app is: `kubernetes/apps/<namespace>/<app>/ks.yaml`.

Parsing never stops at the first bad file: problems are collected in `Catalogue.errors` and every
other file is still read. SOPS-encrypted files are catalogued by kind and name only; their data is
never read as plaintext.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from restoredrill.errors import ManifestError, SourceLocation
from restoredrill.parentpatches import (
    BuiltObject,
    PatchProblem,
    add_name_affixes,
    apply_patches,
    read_patches,
    with_common_metadata,
)
from restoredrill.velero_semantics import VeleroServer
from restoredrill.yamlio import Document, FieldPath, iter_yaml_files, load_documents, redacted

KUSTOMIZATION_FILENAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
FLUX_KUSTOMIZATION_GROUP = "kustomize.toolkit.fluxcd.io"
VELERO_GROUP = "velero.io"
CNPG_GROUP = "postgresql.cnpg.io"
HELM_GROUP = "helm.toolkit.fluxcd.io"
# Kinds whose objects live in a namespace; anything else is treated as cluster-scoped.
CLUSTER_SCOPED_KINDS = frozenset({
    "Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding",
    "CustomResourceDefinition", "PriorityClass", "VolumeSnapshotClass", "GatewayClass",
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "ClusterIssuer",
    "ClusterImageCatalog", "IngressClass", "APIService", "CSIDriver", "RuntimeClass",
})
WORKLOAD_POD_SPEC_PATHS: Mapping[str, FieldPath] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
    "Pod": (),
}
_FLUX_INSTALL_REF = re.compile(r"fluxcd/flux2/manifests/install\?ref=(v?[0-9][^&\s]*)")
_SUBSTITUTION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::=([^}]*))?\}")
_SIZE = re.compile(r"^([0-9.]+)([KMGTPE]i?)?$")


# ---------------------------------------------------------------------------------------------
# What the catalogue holds
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object from the repo, with the namespace it would be applied to."""

    document: Document
    namespace: str | None
    # The Flux Kustomization that deploys it, if any.
    deployed_by: str | None = None
    encrypted: bool = False
    # The parent's patches that changed it, as `file:line (Kustomization ns/name spec.patches[i])`: the
    # fields they set are not in the object's own file (its line numbers are those of the file as written).
    patched_by: tuple[str, ...] = ()

    @property
    def obj(self) -> dict[str, Any]:
        data: dict[str, Any] = self.document.data
        return data

    @property
    def api_version(self) -> str:
        return str(self.obj.get("apiVersion", ""))

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        return self.api_version.rpartition("/")[2]

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        metadata = self.obj.get("metadata") or {}
        return str(metadata.get("name", "")) if isinstance(metadata, dict) else ""

    @property
    def path(self) -> Path:
        return self.document.path

    def location(self, path: FieldPath = ()) -> SourceLocation:
        return self.document.location(path)

    @property
    def ref(self) -> str:
        """`Kind namespace/name`, as a person would name the object."""
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else f"{self.kind} {self.name}"

    def get(self, *path: str | int) -> Any:
        return dig(self.obj, path)


@dataclass(frozen=True)
class KustomizationFile:
    """A kustomize `kustomization.yaml`: what it includes and the namespace it sets."""

    document: Document
    directory: Path  # relative to the repo root
    namespace: str | None
    # (entry as written, field path of the entry) for resources, components and crds.
    entries: tuple[tuple[str, FieldPath], ...]
    is_component: bool


@dataclass(frozen=True)
class BrokenReference:
    """A kustomization entry that names a file or folder that does not exist."""

    kustomization: KustomizationFile
    entry: str
    field_path: FieldPath


@dataclass(frozen=True)
class FluxKustomization:
    manifest: Manifest
    name: str
    namespace: str
    path: str | None
    target_namespace: str | None
    depends_on: tuple[tuple[str, str, FieldPath], ...]  # (name, namespace, where it is written)
    suspend: bool
    substitutions: Mapping[str, str]
    source: tuple[str, str | None] = ("flux-system", None)  # sourceRef (name, namespace as written)
    source_kind: str = "GitRepository"
    # Whether the source is this repo: a Kustomization of another repository's source builds
    # nothing from these files.
    local_source: bool = True
    components: tuple[str, ...] = ()
    post_build: bool = False
    # Variables whose values the repo does not show (from a Secret, or a ConfigMap it lacks).
    unknown_substitutions: bool = False


@dataclass(frozen=True)
class Container:
    name: str
    image: str
    field_path: FieldPath


@dataclass(frozen=True)
class Workload:
    manifest: Manifest
    pod_template_path: FieldPath
    pod_labels: Mapping[str, str]
    pod_annotations: Mapping[str, str]
    containers: tuple[Container, ...]
    claim_names: tuple[str, ...]
    # (pod volume, claim) where the pod's volumes are not in the manifest itself (a HelmRelease's values).
    volumes: tuple[tuple[str, str], ...] = ()

    @property
    def namespace(self) -> str | None:
        """Where the pods run: a HelmRelease's `spec.targetNamespace`, else its manifest's namespace."""
        if self.manifest.kind == "HelmRelease" and self.manifest.get("spec", "targetNamespace"):
            return str(self.manifest.get("spec", "targetNamespace"))
        return self.manifest.namespace


@dataclass(frozen=True)
class VolumeClaim:
    """Storage a backup must carry: a PVC, a StatefulSet claim template, or a CNPG Cluster's."""

    name: str
    namespace: str | None
    storage_class: str | None
    size: str | None
    origin: str
    manifest: Manifest
    volume_name: str | None = None
    # The labels the PVC object carries in the cluster; None where the repo does not tell (a chart's
    # claims known from values only). An operator's own labels (cnpg.io/...) are not listed.
    labels: Mapping[str, str] | None = None
    unknown_label_prefix: str | None = None


@dataclass(frozen=True)
class CnpgCluster:
    manifest: Manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def namespace(self) -> str | None:
        return self.manifest.namespace

    @property
    def object_store_backup(self) -> str | None:
        """Where the Cluster backs itself up, or None when it does not (the runbook's TD-004)."""
        if dig(self.manifest.obj, ("spec", "backup", "barmanObjectStore", "destinationPath")):
            return "barmanObjectStore"
        for plugin in dig(self.manifest.obj, ("spec", "plugins")) or []:
            if isinstance(plugin, dict) and str(plugin.get("name", "")).startswith("barman-cloud"):
                return f"plugin {plugin['name']}"
        return None


@dataclass(frozen=True)
class Schedule:
    """A Velero Schedule, from a manifest or from the Velero HelmRelease's `schedules:` values."""

    name: str
    namespace: str | None
    manifest: Manifest
    # Where the Schedule's `spec` sits in the document: ("spec",) for a manifest,
    # ("spec", "values", "schedules", KEY) for HelmRelease values.
    spec_path: FieldPath
    from_helm_values: bool = False

    @property
    def spec(self) -> dict[str, Any]:
        spec = dig(self.manifest.obj, self.spec_path)
        return spec if isinstance(spec, dict) else {}

    @property
    def template(self) -> dict[str, Any]:
        template = self.spec.get("template")
        return template if isinstance(template, dict) else {}

    def location(self, *path: str | int) -> SourceLocation:
        return self.manifest.location((*self.spec_path, *path))

    @property
    def ref(self) -> str:
        where = " (HelmRelease values)" if self.from_helm_values else ""
        return f"Schedule {self.namespace}/{self.name}{where}"


@dataclass(frozen=True)
class StorageLocation:
    name: str
    default: bool
    manifest: Manifest
    field_path: FieldPath


@dataclass(frozen=True)
class VeleroServerDefaults:
    """Server settings that apply when a Backup leaves a field unset (velero server flags)."""

    default_ttl: str = "720h0m0s"  # --default-backup-ttl, 30 days upstream
    default_volumes_to_fs_backup: bool = False  # --default-volumes-to-fs-backup
    default_storage_location: str = "default"  # --default-backup-storage-location
    source: Manifest | None = None
    node_agent: bool = True  # deployNodeAgent (deployRestic before chart 3.0)
    features: tuple[str, ...] = ()  # --features, e.g. EnableCSI
    snapshots_enabled: bool = True  # the chart's snapshotsEnabled
    # (name, provider) of every VolumeSnapshotLocation, and --default-volume-snapshot-locations.
    snapshot_locations: tuple[tuple[str, str], ...] = ()
    default_snapshot_locations: tuple[str, ...] = ()
    image_tag: str | None = None  # the release's image.tag (the chart's appVersion when unset)

    def server(self) -> VeleroServer:
        """The settings velero_semantics decides volume coverage by."""
        return VeleroServer(
            default_volumes_to_fs_backup=self.default_volumes_to_fs_backup,
            node_agent=self.node_agent,
            csi="EnableCSI" in self.features,
            snapshot_providers=tuple(sorted({p for _, p in self.snapshot_locations if p and p != "csi"})),
            snapshots_enabled=self.snapshots_enabled,
        )


@dataclass(frozen=True)
class App:
    """An app of the runbook's layout: `kubernetes/apps/<namespace>/<app>/` with its ks.yaml."""

    name: str
    namespace: str
    directory: Path
    kustomizations: tuple[FluxKustomization, ...]
    manifests: tuple[Manifest, ...]


@dataclass(frozen=True)
class Catalogue:
    root: Path
    manifests: tuple[Manifest, ...]
    errors: tuple[ManifestError, ...]
    kustomization_files: tuple[KustomizationFile, ...]
    broken_references: tuple[BrokenReference, ...]
    flux_kustomizations: tuple[FluxKustomization, ...]
    apps: tuple[App, ...]
    # Files some Flux Kustomization would apply (relative paths).
    deployed_files: frozenset[Path]
    schedules: tuple[Schedule, ...]
    storage_locations: tuple[StorageLocation, ...]
    velero_defaults: VeleroServerDefaults
    workloads: tuple[Workload, ...] = field(default=())
    volume_claims: tuple[VolumeClaim, ...] = field(default=())
    cnpg_clusters: tuple[CnpgCluster, ...] = field(default=())
    # Files holding objects that no Flux Kustomization applies: not checked.
    unapplied_files: tuple[Path, ...] = field(default=())
    # Schedules in a folder Flux builds whose file its kustomization.yaml does not list.
    unreferenced_schedules: tuple[Schedule, ...] = field(default=())
    entry_points: tuple[str, ...] = field(default=())
    # The Flux release the repo installs (flux-manifests tag, flux2 install ref, FluxInstance
    # distribution.version), e.g. "v2.6.4" or "2.x"; None when the repo does not say.
    flux_version: str | None = None

    @property
    def namespaces(self) -> frozenset[str]:
        """Every namespace the repo creates or deploys into."""
        names = {m.name for m in self.manifests if m.kind == "Namespace" and m.group == ""}
        names |= {m.namespace for m in self.deployed() if m.namespace}
        return frozenset(names)

    def deployed(self) -> Iterable[Manifest]:
        return (m for m in self.manifests if m.deployed_by is not None)

    def app_for_namespace(self, namespace: str) -> App | None:
        return next((app for app in self.apps if app.namespace == namespace), None)

    def app_of(self, path: Path) -> App | None:
        """The app whose folder holds `path`, if any."""
        for app in self.apps:
            if path == app.directory or app.directory in path.parents:
                return app
        return None


def dig(obj: Any, path: Iterable[str | int]) -> Any:
    """`obj[p0][p1]...`, or None where any step is missing or of the wrong type."""
    for step in path:
        if isinstance(step, int):
            if not isinstance(obj, list) or not -len(obj) <= step < len(obj):
                return None
        elif not isinstance(obj, dict):
            return None
        obj = obj[step] if isinstance(step, int) else obj.get(step)
    return obj


# ---------------------------------------------------------------------------------------------
# Building the catalogue
# ---------------------------------------------------------------------------------------------


def build_catalogue(root: Path, *, apps_path: str = "kubernetes/apps") -> Catalogue:
    """Read the GitOps repo at `root` into a Catalogue. Never raises for a bad file."""
    root = root.resolve()
    documents: dict[Path, list[Document]] = {}
    errors: list[ManifestError] = []
    for path in iter_yaml_files(root):
        try:
            documents[path.relative_to(root)] = load_documents(path, root=root)
        except ManifestError as error:
            errors.append(error)

    builder = _Builder(root=root, documents=documents, errors=errors)
    return builder.build(apps_path=PurePosixPath(apps_path))


# Folders whose Kustomizations are never taken as entry points when the repo names none: kept
# for reference, rendered by a template tool, or run by hand.
_DEAD_FOLDERS = frozenset({"archive", "archived", ".archive", "deprecated", "old", "unused", "disabled", "templates",
                           "template", "hack", "docs", "examples", "example", "test", "tests", "ansible", "talos",
                           "terraform", "scripts"})
SOURCE_KINDS = frozenset({"GitRepository", "OCIRepository", "Bucket"})
# `deployed_by` of the objects in an entry point's own file: applied by the bootstrap, not by Flux.
BOOTSTRAP = "(bootstrap)"
FLUX_INSTANCE_GROUP = "fluxcd.controlplane.io"


@dataclass(frozen=True)
class _Application:
    """What one Flux Kustomization (or a FluxInstance's sync) builds: a folder of this repo."""

    name: str
    namespace: str
    path: str | None
    target_namespace: str | None
    components: tuple[str, ...]
    substitutions: Mapping[str, str] | None  # None: no postBuild, nothing is substituted
    source: tuple[str, str | None]  # (name, namespace as written)
    file: Path | None = None  # where the entry point is written, when it is a Kustomization of the repo
    # The Flux Kustomization itself, whose spec.patches, namePrefix/nameSuffix and commonMetadata apply to
    # what it builds (None for a FluxInstance's sync).
    manifest: Manifest | None = None


@dataclass
class _Builder:
    root: Path
    documents: dict[Path, list[Document]]
    errors: list[ManifestError]
    kustomization_files: dict[Path, KustomizationFile] = field(default_factory=dict)
    broken: list[BrokenReference] = field(default_factory=list)

    def build(self, *, apps_path: PurePosixPath) -> Catalogue:
        for path, docs in self.documents.items():
            if path.name in KUSTOMIZATION_FILENAMES and docs:
                self._read_kustomization_file(path, docs[0])
        raw: dict[Path, list[Manifest]] = {}
        for path, docs in self.documents.items():
            if path.name not in KUSTOMIZATION_FILENAMES:
                raw[path] = [m for doc in docs if (m := self._raw_manifest(path, doc)) is not None]
        everything = [m for manifests in raw.values() for m in manifests]
        if not any(_is_flux_kustomization(m) or _is_flux_instance(m) for m in everything):
            return self._catalogue_without_flux(everything, apps_path)

        roots, entry_points = self._entry_points(everything)
        local_sources = {(root.source[0], root.source[1] or root.namespace) for root in roots}
        local_sources.add(("flux-system", "flux-system"))
        applied: list[Manifest] = []
        flux: list[FluxKustomization] = []
        read: set[Path] = set()
        queue = list(roots)
        seen = {(root.namespace, root.name) for root in roots}
        while queue:
            application = queue.pop(0)
            for manifest in self._apply(application, raw, read):
                applied.append(manifest)
                if _is_flux_kustomization(manifest):
                    ks = self._flux_kustomization(manifest, local_sources)
                    flux.append(ks)
                    key = (ks.namespace, ks.name)
                    if ks.local_source and key not in seen:
                        seen.add(key)
                        queue.append(_Application(
                            name=ks.name, namespace=ks.namespace, path=ks.path, target_namespace=ks.target_namespace,
                            components=ks.components, substitutions=ks.substitutions if ks.post_build else None,
                            source=ks.source, manifest=manifest))

        # The entry points' own files are applied by the bootstrap (flux bootstrap, a helmfile, kubectl).
        for path in dict.fromkeys(root.file for root in roots if root.file is not None and root.file not in read):
            read.add(path)
            for manifest in raw.get(path, []):
                applied.append(Manifest(document=manifest.document, namespace=manifest.namespace,
                                        deployed_by=BOOTSTRAP, encrypted=manifest.encrypted))
                if _is_flux_kustomization(manifest):
                    flux.append(self._flux_kustomization(manifest, local_sources))
        kustomization_dirs = {path.parent for path in read if path.name in KUSTOMIZATION_FILENAMES}
        applied_files = frozenset(path for path in read if path.name not in KUSTOMIZATION_FILENAMES)
        unapplied = tuple(sorted(path for path, manifests in raw.items() if manifests and path not in applied_files))
        stray = [m for path in unapplied for m in raw[path]
                 if m.group == VELERO_GROUP and m.kind == "Schedule"
                 and self._nearest_kustomization_dir(path) in kustomization_dirs]
        self.errors = [e for e in self.errors if Path(e.location.path) in read]
        return self._catalogue(applied, flux, apps_path, applied_files=applied_files, unapplied=unapplied,
                               stray_schedules=stray, entry_points=entry_points)

    def _catalogue_without_flux(self, manifests: list[Manifest], apps_path: PurePosixPath) -> Catalogue:
        """A repo with no Flux Kustomization at all: every manifest is taken as applied, namespaces from the
        nearest kustomization.yaml."""
        placed = []
        for m in manifests:
            namespace = m.namespace
            if namespace is None and m.kind not in CLUSTER_SCOPED_KINDS:
                namespace = self._namespace_from_kustomizations(m.path.parent)
            placed.append(Manifest(document=m.document, namespace=namespace, encrypted=m.encrypted))
        return self._catalogue(placed, [], apps_path, applied_files=frozenset(), unapplied=(), stray_schedules=[],
                               entry_points=("none: the repo has no Flux Kustomization; every manifest is checked",))

    def _catalogue(self, manifests: list[Manifest], flux: list[FluxKustomization], apps_path: PurePosixPath, *,
                   applied_files: frozenset[Path], unapplied: tuple[Path, ...], stray_schedules: list[Manifest],
                   entry_points: tuple[str, ...]) -> Catalogue:
        legacy = _legacy_common_sources(manifests)
        return Catalogue(
            root=self.root,
            manifests=tuple(manifests),
            errors=tuple(self.errors),
            kustomization_files=tuple(self.kustomization_files.values()),
            broken_references=tuple(self.broken),
            flux_kustomizations=tuple(flux),
            apps=tuple(self._apps(flux, manifests, apps_path)),
            deployed_files=applied_files,
            schedules=tuple(_schedules(manifests)),
            storage_locations=tuple(_storage_locations(manifests)),
            velero_defaults=_velero_defaults(manifests),
            workloads=tuple(w for m in manifests for w in _workloads(m, legacy=legacy)),
            volume_claims=tuple(_volume_claims(manifests, legacy=legacy)),
            cnpg_clusters=tuple(CnpgCluster(m) for m in manifests if m.group == CNPG_GROUP and m.kind == "Cluster"),
            unapplied_files=unapplied,
            unreferenced_schedules=tuple(_schedules(stray_schedules)),
            entry_points=entry_points,
            flux_version=self._flux_version(),
        )

    def _flux_version(self) -> str | None:
        for kfile in self.kustomization_files.values():
            for entry, _ in kfile.entries:
                match = _FLUX_INSTALL_REF.search(entry)
                if match:
                    return match.group(1)
        for docs in self.documents.values():
            for document in docs:
                data = document.data
                if not isinstance(data, dict):
                    continue
                if data.get("kind") == "OCIRepository" and dig(data, ("metadata", "name")) == "flux-manifests":
                    tag = dig(data, ("spec", "ref", "tag"))
                    if tag:
                        return str(tag)
                version = (dig(data, ("spec", "distribution", "version")) if data.get("kind") == "FluxInstance"
                           else dig(data, ("instance", "distribution", "version")))
                if version:
                    return str(version)
        return None

    # -- what Flux applies --------------------------------------------------------------------

    def _entry_points(self, manifests: list[Manifest]) -> tuple[list[_Application], tuple[str, ...]]:
        """The Kustomizations the cluster itself applies from this repo: a FluxInstance's sync path, the
        bootstrap's `flux-system` (gotk-sync), Kustomizations that apply their own file; failing those,
        the Kustomizations of the repo's flux/ or clusters/ folders, and failing those, every Kustomization
        no kustomization.yaml lists (outside archive/, templates/, hack/ and the like)."""
        roots: list[_Application] = []
        described: list[str] = []
        for m, sync in self._flux_instance_syncs(manifests):
            namespace = m.namespace or "flux-system"
            name = m.name if _is_flux_instance(m) else "flux-system"
            roots.append(_Application(name=name, namespace=namespace, path=str(sync["path"]), target_namespace=None,
                                      components=(), substitutions=None, source=(name, namespace)))
            described.append(f"FluxInstance sync path {sync['path']} ({m.location()})")
        for document in self._flux_instance_values():
            sync = dig(document.data, ("instance", "sync"))
            roots.append(_Application(name="flux-system", namespace="flux-system", path=str(sync["path"]),
                                      target_namespace=None, components=(), substitutions=None,
                                      source=("flux-system", "flux-system")))
            described.append(f"flux-instance values sync path {sync['path']} ({document.location()})")
        candidates = [m for m in manifests if _is_flux_kustomization(m)]
        listed = {target for kfile in self.kustomization_files.values() for target in self._entry_targets(kfile)}
        chosen: list[Manifest] = [m for m in candidates if m.name == "flux-system"]
        if not roots and not chosen:
            chosen = [m for m in candidates if not _in_dead_folder(m.path) and self._applies_itself(m)]
        if not roots and not chosen:
            chosen = [m for m in candidates if not _in_dead_folder(m.path) and m.path not in listed
                      and {"flux", "clusters", "cluster"} & set(m.path.parts[:-1])]
        if not roots and not chosen:
            chosen = [m for m in candidates if not _in_dead_folder(m.path) and m.path not in listed]
        for m in chosen:
            ks = self._flux_kustomization(m, set())
            roots.append(_Application(name=ks.name, namespace=ks.namespace, path=ks.path,
                                      target_namespace=ks.target_namespace, components=ks.components,
                                      substitutions=ks.substitutions if ks.post_build else None, source=ks.source,
                                      file=m.path, manifest=m))
            described.append(f"Kustomization {ks.namespace}/{ks.name} ({m.location()})")
        return roots, tuple(described)

    def _flux_instance_syncs(self, manifests: list[Manifest]) -> Iterable[tuple[Manifest, dict[str, Any]]]:
        for m in manifests:
            if _is_flux_instance(m):
                sync = m.get("spec", "sync")
            elif m.group == HELM_GROUP and m.kind == "HelmRelease" and _chart_name(m) == "flux-instance":
                sync = m.get("spec", "values", "instance", "sync")
            else:
                continue
            if isinstance(sync, dict) and sync.get("path") is not None:
                yield m, sync

    def _flux_instance_values(self) -> Iterable[Document]:
        """Helm values files of the flux-instance chart (a bootstrap's helmfile installs it from them)."""
        for docs in self.documents.values():
            for document in docs:
                data = document.data
                if (isinstance(data, dict) and "kind" not in data
                        and dig(data, ("instance", "sync", "path")) is not None):
                    yield document

    def _entry_targets(self, kfile: KustomizationFile) -> Iterable[Path]:
        for entry, _ in kfile.entries:
            yield Path(_normalise(PurePosixPath(kfile.directory) / entry))

    def _applies_itself(self, manifest: Manifest) -> bool:
        ks = self._flux_kustomization(manifest, set())
        if ks.path in (None, "."):
            return False  # a build of a source's root includes every file: another repository's, as often as not
        return any(file == manifest.path for file, _ in self._expand(Path(ks.path), namespace=None, seen=set(),
                                                                     broken=[]))

    def _apply(self, application: _Application, raw: Mapping[Path, list[Manifest]],
               read: set[Path]) -> list[Manifest]:
        """The objects a Flux Kustomization's build yields, each in the namespace it lands in, in kustomize's
        order (api/internal/target/kusttarget_configplugin.go): the Kustomization's patches, then the
        namespace (targetNamespace, else the top kustomization.yaml's), then namePrefix/nameSuffix; then
        Flux's post-build substitution and commonMetadata (kustomize-controller's build and apply)."""
        if application.path is None:
            return []
        folder = Path(application.path)
        seen: set[Path] = set()
        # The top kustomization.yaml's `namespace:` (which targetNamespace replaces: fluxcd/pkg
        # kustomize_generator.go) applies after the patches; the folders below it set theirs before.
        files = self._expand(folder, namespace=None, seen=seen, broken=self.broken, read=read, own_namespace=False)
        for component in application.components:
            target = Path(_normalise(PurePosixPath(folder) / component))
            files += self._expand(target, namespace=None, seen=seen, broken=self.broken, read=read)
        files = list(dict.fromkeys(files))  # one file reached twice into one namespace is one object
        top = self.kustomization_files.get(folder)
        top_namespace = application.target_namespace or (top.namespace if top is not None else None)
        built: list[tuple[Manifest, BuiltObject]] = []
        for file, kustomize_namespace in files:
            read.add(file)
            for manifest in raw.get(file, []):
                cluster_scoped = manifest.kind in CLUSTER_SCOPED_KINDS
                current = manifest.namespace if cluster_scoped else kustomize_namespace or manifest.namespace
                data = manifest.document.data
                if _is_namespace(manifest) and kustomize_namespace:
                    data = _with_metadata(data, name=kustomize_namespace)
                landing = current if cluster_scoped else top_namespace or current
                ref = f"{manifest.kind} {landing}/{manifest.name}" if landing else f"{manifest.kind} {manifest.name}"
                built.append((manifest, BuiltObject(obj=data, namespace_as_written=manifest.namespace,
                                                    namespace=current, cluster_scoped=cluster_scoped, ref=ref)))
        spec = dig(application.manifest.obj, ("spec",)) if application.manifest is not None else None
        spec = spec if isinstance(spec, dict) else {}
        patches, problems = read_patches(spec.get("patches"))
        problems += apply_patches([b for _, b in built], patches)
        self.errors.extend(self._patch_error(application, index, problem) for index, problem in problems)

        for manifest, b in built:
            if b.obj is None:
                continue
            if _is_namespace(manifest):
                if top_namespace:  # kustomize's namespace transformer renames a Namespace object it builds
                    b.obj = _with_metadata(b.obj, name=top_namespace)
            elif not b.cluster_scoped:
                b.namespace = top_namespace or b.namespace
                if b.namespace and dig(b.obj, ("metadata", "namespace")) != b.namespace:
                    b.obj = _with_metadata(b.obj, namespace=b.namespace)
        add_name_affixes([b for _, b in built], prefix=str(spec.get("namePrefix") or ""),
                         suffix=str(spec.get("nameSuffix") or ""))
        manifests: list[Manifest] = []
        for manifest, b in built:
            if b.obj is None:
                continue  # removed by a `$patch: delete`
            document = manifest.document
            document = Document(path=document.path, index=document.index, line=document.line, data=b.obj,
                                lines=document.lines)
            if application.substitutions is not None:
                document = _substitute(document, application.substitutions)
            if spec.get("commonMetadata") is not None:
                document = Document(path=document.path, index=document.index, line=document.line,
                                    data=with_common_metadata(document.data, spec["commonMetadata"]),
                                    lines=document.lines)
            manifests.append(Manifest(document=document, namespace=b.namespace, deployed_by=application.name,
                                      encrypted=manifest.encrypted,
                                      patched_by=tuple(self._patch_origin(application, i) for i in b.patched_by)))
        return manifests

    def _patch_origin(self, application: _Application, index: int) -> str:
        """Where spec.patches[index] of the application is written: its own file, or (a patch its parent's
        patch gave it) the parent's."""
        manifest = application.manifest
        assert manifest is not None  # only a Kustomization's own patches change objects
        ref = f"Kustomization {application.namespace}/{application.name} spec.patches[{index}]"
        if ("spec", "patches", index) in manifest.document.lines or not manifest.patched_by:
            return f"{manifest.location(('spec', 'patches', index))} ({ref})"
        setters = manifest.patched_by
        return f"{ref}, set by {setters[0]}" if len(setters) == 1 else f"{ref}, set by one of {'; '.join(setters)}"

    def _patch_error(self, application: _Application, index: int | None, problem: PatchProblem) -> ManifestError:
        """A patch Flux cannot apply: its build fails, so nothing of the Kustomization is applied."""
        assert application.manifest is not None
        manifest = application.manifest
        field_path: FieldPath = ("spec", "patches") if index is None else ("spec", "patches", index,
                                                                            *problem.field_path)
        name = "spec.patches" if index is None else f"spec.patches[{index}]"
        inherited = ""
        if manifest.patched_by:
            inherited = f" (this Kustomization is itself patched by {', '.join(manifest.patched_by)})"
        return ManifestError(
            f"Kustomization {application.namespace}/{application.name}: {name} {problem.message}; "
            f"kustomize-controller's build fails, so Flux applies nothing this Kustomization builds{inherited}",
            location=manifest.location(field_path), remedy=problem.remedy)

    def _nearest_kustomization_dir(self, path: Path) -> Path | None:
        return next((folder for folder in path.parents if folder in self.kustomization_files), None)

    # -- reading single files -------------------------------------------------------------------

    def _read_kustomization_file(self, path: Path, doc: Document) -> None:
        data = doc.data
        if not isinstance(data, dict):
            self.errors.append(ManifestError("a kustomization file must be a mapping", location=doc.location()))
            return
        entries: list[tuple[str, FieldPath]] = []
        for key in ("resources", "components", "crds"):
            values = data.get(key) or []
            if not isinstance(values, list):
                self.errors.append(ManifestError(f"`{key}` must be a list of paths", location=doc.location((key,)),
                                                 remedy=f"write `{key}:` as a YAML list, one `- ./path` per line"))
                continue
            entries.extend((str(v), (key, i)) for i, v in enumerate(values))
        namespace = data.get("namespace")
        self.kustomization_files[path.parent] = KustomizationFile(
            document=doc,
            directory=path.parent,
            namespace=str(namespace) if namespace else None,
            entries=tuple(entries),
            is_component=data.get("kind") == "Component",
        )

    def _raw_manifest(self, path: Path, doc: Document) -> Manifest | None:
        data = doc.data
        if not isinstance(data, dict) or "kind" not in data or "apiVersion" not in data:
            # Helm values files, SOPS config and other YAML that is not an object: not ours to judge.
            if isinstance(data, dict) and ("kind" in data) != ("apiVersion" in data):
                missing = "apiVersion" if "kind" in data else "kind"
                self.errors.append(ManifestError(
                    f"looks like a Kubernetes object but has no `{missing}`", location=doc.location(),
                    remedy=f"add `{missing}:` to the object (or move the file out of the manifests tree)"))
            return None
        encrypted = path.name.endswith((".sops.yaml", ".sops.yml")) or "sops" in data
        if encrypted:
            doc = Document(path=doc.path, index=doc.index, line=doc.line, data=redacted(data), lines=doc.lines)
        metadata = data.get("metadata")
        if not isinstance(metadata, dict) or not metadata.get("name"):
            self.errors.append(ManifestError(
                f"{data.get('kind')} has no metadata.name", location=doc.location(("metadata",)),
                remedy="give the object a `metadata.name`"))
            return None
        namespace = metadata.get("namespace")
        return Manifest(document=doc, namespace=str(namespace) if namespace else None, encrypted=encrypted)

    def _namespace_from_kustomizations(self, directory: Path) -> str | None:
        for folder in (directory, *directory.parents):
            kfile = self.kustomization_files.get(folder)
            if kfile is not None and kfile.namespace:
                return kfile.namespace
        return None

    def _flux_kustomization(self, manifest: Manifest,
                            local_sources: set[tuple[str, str]]) -> FluxKustomization:
        spec = manifest.get("spec") or {}
        spec = spec if isinstance(spec, dict) else {}
        namespace = manifest.namespace or "flux-system"
        depends: list[tuple[str, str, FieldPath]] = []
        for i, dep in enumerate(spec.get("dependsOn") or []):
            if isinstance(dep, dict) and dep.get("name"):
                depends.append((str(dep["name"]), str(dep.get("namespace") or namespace), ("spec", "dependsOn", i)))
        post_build = spec.get("postBuild")
        substitutions = dig(spec, ("postBuild", "substitute")) or {}
        substitutions = {str(k): str(v) for k, v in substitutions.items()} if isinstance(substitutions, dict) else {}
        unknown = False
        for ref in dig(spec, ("postBuild", "substituteFrom")) or []:
            if not isinstance(ref, dict):
                continue
            data = self._configmap_data(str(ref.get("name")), namespace) if ref.get("kind") == "ConfigMap" else None
            if data is None:
                unknown = True
                continue
            for k, v in data.items():
                substitutions.setdefault(k, v)
        path = spec.get("path")
        source_ref: dict[str, Any] = spec["sourceRef"] if isinstance(spec.get("sourceRef"), dict) else {}
        source_name = str(source_ref.get("name") or "flux-system")
        source_namespace = str(source_ref["namespace"]) if source_ref.get("namespace") else None
        local = (not local_sources or source_name == "flux-system"
                 or any(name == source_name and (source_namespace or namespace) == ns for name, ns in local_sources)
                 or (source_namespace is None and any(name == source_name for name, _ in local_sources)))
        components: list[Any] = spec["components"] if isinstance(spec.get("components"), list) else []
        return FluxKustomization(
            manifest=manifest,
            name=manifest.name,
            namespace=namespace,
            path=_normalise(PurePosixPath(str(path))) if path is not None else None,
            target_namespace=str(spec["targetNamespace"]) if spec.get("targetNamespace") else None,
            depends_on=tuple(depends),
            suspend=bool(spec.get("suspend", False)),
            substitutions=substitutions,
            source=(source_name, source_namespace),
            source_kind=str(source_ref.get("kind") or "GitRepository"),
            local_source=local,
            components=tuple(str(c) for c in components),
            post_build=isinstance(post_build, dict),
            unknown_substitutions=unknown,
        )

    def _configmap_data(self, name: str, namespace: str) -> dict[str, str] | None:
        for docs in self.documents.values():
            for doc in docs:
                data = doc.data
                if (isinstance(data, dict) and data.get("kind") == "ConfigMap"
                        and dig(data, ("metadata", "name")) == name
                        and dig(data, ("metadata", "namespace")) in (None, namespace)
                        and isinstance(data.get("data"), dict)):
                    return {str(k): str(v) for k, v in data["data"].items()}
        return None

    # -- expanding kustomize trees --------------------------------------------------------------

    def _expand(self, directory: Path, *, namespace: str | None, seen: set[Path], broken: list[BrokenReference],
                read: set[Path] | None = None, own_namespace: bool = True) -> list[tuple[Path, str | None]]:
        """Files (relative) a kustomize build of `directory` reads, with the namespace it sets (an outer
        kustomization's `namespace:` wins over an inner one's; with `own_namespace=False`, that of
        `directory`'s own kustomization.yaml is left out). `seen` holds the folders above this one:
        a folder that includes itself is read once, but one that several kustomizations include (a
        component every namespace folder names) is built for each, in each one's namespace, as
        kustomize builds it."""
        if directory in seen:
            return []
        seen = seen | {directory}
        kfile = self.kustomization_files.get(directory)
        if read is not None:
            read.update(directory / name for name in KUSTOMIZATION_FILENAMES
                        if (directory / name) in self.documents or (self.root / directory / name).is_file())
        if kfile is None:
            return self._expand_generated(directory, namespace=namespace, seen=seen, broken=broken, read=read)
        if own_namespace:
            namespace = namespace or kfile.namespace
        files: list[tuple[Path, str | None]] = []
        for entry, field_path in kfile.entries:
            if "://" in entry or entry.startswith(("github.com/", "git@")):
                continue  # remote bases are not part of this repo
            target = Path(_normalise(PurePosixPath(directory) / entry))
            absolute = self.root / target
            if absolute.is_file():
                files.append((target, namespace))
            elif absolute.is_dir():
                files.extend(self._expand(target, namespace=namespace, seen=seen, broken=broken, read=read))
            else:
                broken.append(BrokenReference(kustomization=kfile, entry=entry, field_path=field_path))
        return files

    def _expand_generated(
        self, directory: Path, *, namespace: str | None, seen: set[Path], broken: list[BrokenReference],
        read: set[Path] | None,
    ) -> list[tuple[Path, str | None]]:
        """Flux's generated kustomization: every manifest under the folder, a sub-folder with its own
        kustomization.yaml taken as one resource."""
        absolute = self.root / directory
        if not absolute.is_dir():
            return []
        files: list[tuple[Path, str | None]] = []
        for child in sorted(absolute.iterdir()):
            relative = directory / child.name
            if child.is_dir() and not child.name.startswith("."):
                files.extend(self._expand(relative, namespace=namespace, seen=seen, broken=broken, read=read))
            elif child.suffix in (".yaml", ".yml") and child.is_file():
                files.append((relative, namespace))
        return files

    # -- apps -----------------------------------------------------------------------------------

    def _apps(self, flux: list[FluxKustomization], manifests: list[Manifest], apps_path: PurePosixPath) -> list[App]:
        grouped: dict[Path, list[FluxKustomization]] = {}
        for ks in flux:
            parts = PurePosixPath(ks.manifest.path).parts
            prefix = apps_path.parts
            # kubernetes/apps/<namespace>/<app>/ks.yaml
            if parts[: len(prefix)] == prefix and len(parts) == len(prefix) + 3:
                grouped.setdefault(Path(*parts[:-1]), []).append(ks)
        apps: list[App] = []
        for directory, kustomizations in sorted(grouped.items()):
            names = {ks.name for ks in kustomizations}
            namespace = next((ks.target_namespace for ks in kustomizations if ks.target_namespace),
                             directory.parent.name)
            apps.append(App(
                name=directory.name,
                namespace=namespace,
                directory=directory,
                kustomizations=tuple(kustomizations),
                manifests=tuple(m for m in manifests if m.deployed_by in names),
            ))
        return apps


def _normalise(path: PurePosixPath) -> str:
    """`./a/b/../c` -> `a/c`, staying relative to the repo root."""
    parts: list[str] = []
    for part in path.parts:
        if part in (".", "", "/"):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/".join(parts) or "."


def _is_flux_kustomization(m: Manifest) -> bool:
    return m.group == FLUX_KUSTOMIZATION_GROUP and m.kind == "Kustomization"


def _is_flux_instance(m: Manifest) -> bool:
    return m.group == FLUX_INSTANCE_GROUP and m.kind == "FluxInstance"


def _in_dead_folder(path: Path) -> bool:
    return any(part.lower() in _DEAD_FOLDERS for part in path.parts[:-1])


def _chart_name(m: Manifest) -> str:
    chart = m.get("spec", "chart", "spec", "chart") or m.get("spec", "chartRef", "name") or ""
    return str(chart).rsplit("/", 1)[-1]


def _is_namespace(m: Manifest) -> bool:
    return m.kind == "Namespace" and m.group == ""


def _with_metadata(data: dict[str, Any], **fields: str | None) -> dict[str, Any]:
    """A copy of `data` with these metadata fields set."""
    metadata = data.get("metadata")
    return {**data, "metadata": {**(metadata if isinstance(metadata, dict) else {}), **fields}}


def _substitute(document: Document, variables: Mapping[str, str]) -> Document:
    """Apply Flux post-build substitution (`${VAR}`, `${VAR:=default}`) to string values."""
    data = document.data
    annotations = dig(data, ("metadata", "annotations")) or {}
    if isinstance(annotations, dict) and annotations.get("kustomize.toolkit.fluxcd.io/substitute") == "disabled":
        return document

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in variables:
            return variables[name]
        return default if default is not None else match.group(0)

    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and "${" in value:
            replaced = _SUBSTITUTION.sub(replace, value)
            if _SUBSTITUTION.fullmatch(value) and "${" not in replaced:
                # Flux substitutes text and re-parses it: "${REPLICAS}" -> 3, not "3".
                try:
                    return yaml.safe_load(replaced) if replaced else replaced
                except yaml.YAMLError:
                    return replaced
            return replaced
        return value

    return Document(path=document.path, index=document.index, line=document.line, data=walk(data),
                    lines=document.lines)


# ---------------------------------------------------------------------------------------------
# Deriving objects of interest
# ---------------------------------------------------------------------------------------------


def _workloads(manifest: Manifest, *, legacy: frozenset[tuple[str, str]] = frozenset()) -> Iterable[Workload]:
    """Pod-running objects: workload manifests, and the controllers of an app-template HelmRelease."""
    if manifest.group == HELM_GROUP and manifest.kind == "HelmRelease":
        if _common_family(manifest, legacy) == "legacy":
            yield from _legacy_common_workloads(manifest)
        else:
            yield from _helm_app_template_workloads(manifest)
    else:
        workload = _workload(manifest)
        if workload is not None:
            yield workload


def _helm_app_template_workloads(m: Manifest) -> Iterable[Workload]:
    """Pods the bjw-s app-template chart runs, from `controllers.<name>.containers` values: most
    home-ops repos deploy every app, databases included, this way."""
    controllers = m.get("spec", "values", "controllers")
    if not isinstance(controllers, dict):
        return
    release = str(m.get("spec", "releaseName") or m.name)
    defaults = m.get("spec", "values", "defaultPodOptions") or {}
    for key, controller in controllers.items():
        if not isinstance(controller, dict) or controller.get("enabled") is False:
            continue
        path: FieldPath = ("spec", "values", "controllers", key)
        containers = []
        for name, container in (controller.get("containers") or {}).items():
            image = container.get("image") if isinstance(container, dict) else None
            if isinstance(image, dict) and image.get("repository"):
                tag = f":{image['tag']}" if image.get("tag") else ""
                containers.append(Container(name=str(name), image=f"{image['repository']}{tag}",
                                            field_path=(*path, "containers", name)))
        pod: dict[str, Any] = controller["pod"] if isinstance(controller.get("pod"), dict) else {}
        labels = {"app.kubernetes.io/name": release, "app.kubernetes.io/instance": release,
                  "app.kubernetes.io/controller": str(key)}
        labels.update({str(k): str(v) for k, v in (pod.get("labels") or {}).items()})
        annotations = {str(k): str(v) for k, v in ((defaults.get("annotations") if isinstance(defaults, dict)
                                                   else None) or {}).items()}
        annotations.update({str(k): str(v) for k, v in (pod.get("annotations") or {}).items()})
        volumes = _app_template_volumes(m, controller=str(key))
        yield Workload(manifest=m, pod_template_path=path, pod_labels=labels, pod_annotations=annotations,
                       containers=tuple(containers), claim_names=tuple(dict.fromkeys(c for _, c in volumes)),
                       volumes=volumes)


# Charts on the common library's first shape (bjw-s common 1.x, which app-template 1.x renders,
# and the k8s-at-home common library it was forked from, under every k8s-at-home chart): one
# controller from top-level `image`, `podAnnotations`, `podLabels`, `controller`; `persistence`
# items used only when `enabled: true`, of `type: pvc` unless said otherwise.
K8S_AT_HOME_CHARTS = "k8s-at-home.com/charts"


def _legacy_common_sources(manifests: Iterable[Manifest]) -> frozenset[tuple[str, str]]:
    """(namespace, name) of the HelmRepositories that serve the k8s-at-home charts."""
    return frozenset((m.namespace or "flux-system", m.name) for m in manifests
                     if m.kind == "HelmRepository" and m.group.startswith("source.toolkit.fluxcd.io")
                     and K8S_AT_HOME_CHARTS in str(m.get("spec", "url") or ""))


def _common_family(m: Manifest, legacy: frozenset[tuple[str, str]]) -> str | None:
    """"app-template" (2.x and later: `controllers`), "legacy" (the common library's first shape:
    app-template 1.x, a k8s-at-home chart) or None (a chart whose values say nothing of its pods)."""
    values = m.get("spec", "values")
    values = values if isinstance(values, dict) else {}
    if isinstance(values.get("controllers"), dict):
        return "app-template"
    ref = m.get("spec", "chart", "spec", "sourceRef") or {}
    source = (str(ref.get("namespace") or m.namespace or "flux-system"), str(ref.get("name"))) \
        if isinstance(ref, dict) and ref.get("kind") == "HelmRepository" else None
    if "app-template" in _chart_name(m) or isinstance(values.get("controller"), dict) or source in legacy:
        return "legacy" if _legacy_version(m) or source in legacy or "controller" in values else "app-template"
    return None


def _legacy_version(m: Manifest) -> bool:
    """Whether the HelmRelease pins app-template 1.x (`chart.spec.version` 1.*, or an OCIRepository's
    tag is not seen here: 2.x and later are what the values' `controllers` say)."""
    version = str(m.get("spec", "chart", "spec", "version") or "")
    return version.lstrip("v").startswith("1.") or version.lstrip("v").startswith("0.")


def _legacy_fullname(m: Manifest) -> str:
    """The common library 1.x `names.fullname`: fullnameOverride, else the release name when it
    contains the chart's name (app-template 1.x sets that name to the release's), else RELEASE-CHART."""
    values = m.get("spec", "values")
    values = values if isinstance(values, dict) else {}
    overall: dict[str, Any] = values["global"] if isinstance(values.get("global"), dict) else {}
    release = str(m.get("spec", "releaseName") or m.name)
    if values.get("fullnameOverride") or overall.get("fullnameOverride"):
        return str(overall.get("fullnameOverride") or values["fullnameOverride"])[:63].rstrip("-")
    chart = _chart_name(m)
    name = str(overall.get("nameOverride") or values.get("nameOverride") or
               (release if "app-template" in chart else chart))
    return (release if name in release else f"{release}-{name}")[:63].rstrip("-")


def _app_template_volumes(m: Manifest, *, controller: str | None) -> tuple[tuple[str, str], ...]:
    """(pod volume, claim) of the claims the chart mounts in `controller`'s pods (None: the common
    library's first shape, whose one controller mounts every item). From `persistence`: an item of
    the claim type, enabled, in this controller (2.x and later: unless only other controllers'
    `advancedMounts` name it, bjw-s common lib/pod/fields/_volumes.tpl); its claim the
    `existingClaim`, else the one the chart makes (FULLNAME-KEY, or FULLNAME-nameOverride in 1.x)."""
    persistence = m.get("spec", "values", "persistence")
    if not isinstance(persistence, dict):
        return ()
    found: list[tuple[str, str]] = []
    for key, item in persistence.items():
        claim = _persistence_claim(m, str(key), item, legacy=controller is None)
        if claim is None or not isinstance(item, dict):
            continue
        advanced = item.get("advancedMounts")
        if controller is not None and not item.get("globalMounts") and advanced and not (
                isinstance(advanced, dict) and advanced.get(controller)):
            continue
        found.append((str(key), claim))
    return tuple(found)


def _persistence_claim(m: Manifest, key: str, item: Any, *, legacy: bool) -> str | None:
    """The claim of one `persistence` item, or None when it is no enabled claim item: common 1.x
    (`legacy`) uses an item only when `enabled: true`, of `type: pvc` by default, and names the claim
    it makes FULLNAME-nameOverride (FULLNAME for "-"); 2.x and later use it unless `enabled: false`,
    of `type: persistentVolumeClaim` by default, RELEASE-KEY. An `existingClaim` is used as it is."""
    if not isinstance(item, dict):
        return None
    if legacy:
        if not item.get("enabled") or str(item.get("type") or "pvc") != "pvc":
            return None
        override = item.get("nameOverride")
        made = _legacy_fullname(m) if override == "-" else f"{_legacy_fullname(m)}-{override or key}"
    else:
        if item.get("enabled") is False or str(item.get("type") or "persistentVolumeClaim") != "persistentVolumeClaim":
            return None
        made = f"{m.get('spec', 'releaseName') or m.name}-{key}"
    return str(item["existingClaim"]) if item.get("existingClaim") else made


def _legacy_common_workloads(m: Manifest) -> Iterable[Workload]:
    """The one controller of a chart on the common library's first shape."""
    values = m.get("spec", "values")
    values = values if isinstance(values, dict) else {}
    controller: dict[str, Any] = values["controller"] if isinstance(values.get("controller"), dict) else {}
    if controller.get("enabled") is False:
        return
    path: FieldPath = ("spec", "values")
    containers = []
    image = values.get("image")
    if isinstance(image, dict) and image.get("repository"):
        tag = f":{image['tag']}" if image.get("tag") else ""
        containers.append(Container(name="main", image=f"{image['repository']}{tag}", field_path=(*path, "image")))
    for field_name in ("initContainers", "additionalContainers", "sidecars"):
        extra = values.get(field_name)
        items = extra.items() if isinstance(extra, dict) else enumerate(extra) if isinstance(extra, list) else ()
        for name, container in items:
            if isinstance(container, dict) and isinstance(container.get("image"), str):
                containers.append(Container(name=str(container.get("name") or name), image=container["image"],
                                            field_path=(*path, field_name, name)))
    release = str(m.get("spec", "releaseName") or m.name)
    labels = {"app.kubernetes.io/name": release, "app.kubernetes.io/instance": release}
    labels.update({str(k): str(v) for k, v in (values.get("podLabels") or {}).items()})
    annotations = {str(k): str(v) for k, v in (values.get("podAnnotations") or {}).items()}
    volumes = _app_template_volumes(m, controller=None)
    yield Workload(manifest=m, pod_template_path=path, pod_labels=labels, pod_annotations=annotations,
                   containers=tuple(containers), claim_names=tuple(dict.fromkeys(c for _, c in volumes)),
                   volumes=volumes)


def _workload(manifest: Manifest) -> Workload | None:
    if manifest.group not in ("", "apps", "batch") or manifest.kind not in WORKLOAD_POD_SPEC_PATHS:
        return None
    template_path = WORKLOAD_POD_SPEC_PATHS[manifest.kind]
    template = dig(manifest.obj, template_path)
    if not isinstance(template, dict):
        return None
    spec: dict[str, Any] = template["spec"] if isinstance(template.get("spec"), dict) else {}
    containers: list[Container] = []
    for key in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(key) or []):
            if isinstance(container, dict):
                containers.append(Container(name=str(container.get("name", "")), image=str(container.get("image", "")),
                                            field_path=(*template_path, "spec", key, i)))
    claims = tuple(
        str(volume["persistentVolumeClaim"]["claimName"])
        for volume in spec.get("volumes") or []
        if isinstance(volume, dict) and isinstance(volume.get("persistentVolumeClaim"), dict)
        and volume["persistentVolumeClaim"].get("claimName")
    )
    owner = manifest.obj if manifest.kind == "Pod" else template
    metadata: dict[str, Any] = owner["metadata"] if isinstance(owner.get("metadata"), dict) else {}
    return Workload(
        manifest=manifest,
        pod_template_path=template_path,
        pod_labels={str(k): str(v) for k, v in (metadata.get("labels") or {}).items()},
        pod_annotations={str(k): str(v) for k, v in (metadata.get("annotations") or {}).items()},
        containers=tuple(containers),
        claim_names=claims,
    )


def _volume_claims(manifests: Iterable[Manifest], *,
                   legacy: frozenset[tuple[str, str]] = frozenset()) -> Iterable[VolumeClaim]:
    for m in manifests:
        if m.group == "" and m.kind == "PersistentVolumeClaim":
            yield VolumeClaim(
                name=m.name, namespace=m.namespace, storage_class=m.get("spec", "storageClassName"),
                size=_as_str(m.get("spec", "resources", "requests", "storage")), origin="PersistentVolumeClaim",
                manifest=m, volume_name=m.get("spec", "volumeName"), labels=_labels(m.get("metadata", "labels")))
        elif m.group == "apps" and m.kind == "StatefulSet":
            for template in m.get("spec", "volumeClaimTemplates") or []:
                if isinstance(template, dict):
                    yield VolumeClaim(
                        name=f"{dig(template, ('metadata', 'name'))}-{m.name}", namespace=m.namespace,
                        storage_class=dig(template, ("spec", "storageClassName")),
                        size=_as_str(dig(template, ("spec", "resources", "requests", "storage"))),
                        origin="StatefulSet volumeClaimTemplate", manifest=m, labels={
                            # the StatefulSet controller adds its selector's labels (getPersistentVolumeClaims)
                            **_labels(dig(template, ("metadata", "labels"))),
                            **_labels(m.get("spec", "selector", "matchLabels"))})
        elif m.group == CNPG_GROUP and m.kind == "Cluster":
            yield VolumeClaim(
                name=m.name, namespace=m.namespace, storage_class=m.get("spec", "storage", "storageClass"),
                size=_as_str(m.get("spec", "storage", "size")), origin="CNPG Cluster storage", manifest=m,
                # the operator's labels, and spec.inheritedMetadata's (CNPG pkg/specs/pvcs.go)
                labels={"cnpg.io/cluster": m.name, **_labels(m.get("spec", "inheritedMetadata", "labels"))},
                unknown_label_prefix="cnpg.io/")
        elif m.group == HELM_GROUP and m.kind == "HelmRelease":
            yield from _helm_app_template_claims(m, legacy=legacy)


def _helm_app_template_claims(m: Manifest, *,
                              legacy: frozenset[tuple[str, str]] = frozenset()) -> Iterable[VolumeClaim]:
    """PVCs the chart creates from `persistence:` values (app-template, and the charts on the common
    library's first shape): the claim items without an `existingClaim`."""
    persistence = m.get("spec", "values", "persistence")
    family = _common_family(m, legacy)
    if not isinstance(persistence, dict) or family is None:
        return
    for key, item in persistence.items():
        claim = _persistence_claim(m, str(key), item, legacy=family == "legacy")
        if claim is None or not isinstance(item, dict) or item.get("existingClaim"):
            continue
        yield VolumeClaim(name=claim, namespace=m.get("spec", "targetNamespace") or m.namespace,
                          storage_class=item.get("storageClass"), size=_as_str(item.get("size")),
                          origin="HelmRelease persistence values", manifest=m)


def _labels(value: Any) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _as_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _is_velero_release(m: Manifest) -> bool:
    if m.group != HELM_GROUP or m.kind != "HelmRelease":
        return False
    return _chart_name(m) == "velero"


def _helm_fullname(m: Manifest) -> str:
    values = m.get("spec", "values") or {}
    if isinstance(values, dict) and values.get("fullnameOverride"):
        return str(values["fullnameOverride"])
    release = str(m.get("spec", "releaseName") or m.name)
    return release if "velero" in release else f"{release}-velero"


def _schedules(manifests: Iterable[Manifest]) -> Iterable[Schedule]:
    for m in manifests:
        if m.group == VELERO_GROUP and m.kind == "Schedule":
            yield Schedule(name=m.name, namespace=m.namespace, manifest=m, spec_path=("spec",))
        elif _is_velero_release(m):
            schedules = m.get("spec", "values", "schedules")
            if isinstance(schedules, dict):
                namespace = m.get("spec", "targetNamespace") or m.namespace
                for key, spec in schedules.items():
                    if isinstance(spec, dict) and not spec.get("disabled"):
                        yield Schedule(name=f"{_helm_fullname(m)}-{key}", namespace=namespace, manifest=m,
                                       spec_path=("spec", "values", "schedules", key), from_helm_values=True)


def _storage_locations(manifests: Iterable[Manifest]) -> Iterable[StorageLocation]:
    for m in manifests:
        if m.group == VELERO_GROUP and m.kind == "BackupStorageLocation":
            yield StorageLocation(name=m.name, default=bool(m.get("spec", "default")), manifest=m, field_path=())
        elif _is_velero_release(m):
            base: FieldPath = ("spec", "values", "configuration", "backupStorageLocation")
            value = dig(m.obj, base)
            # Chart 5.x and later take a list; older charts a single mapping.
            items = list(enumerate(value)) if isinstance(value, list) else [(None, value)]
            for index, item in items:
                if isinstance(item, dict):
                    path = base if index is None else (*base, index)
                    yield StorageLocation(name=str(item.get("name") or "default"), default=bool(item.get("default")),
                                          manifest=m, field_path=path)


def _velero_defaults(manifests: Iterable[Manifest]) -> VeleroServerDefaults:
    manifests = list(manifests)
    locations = [(m.name, str(m.get("spec", "provider") or "")) for m in manifests
                 if m.group == VELERO_GROUP and m.kind == "VolumeSnapshotLocation"]
    for m in manifests:
        if _is_velero_release(m):
            values = m.get("spec", "values") or {}
            configuration = values.get("configuration") if isinstance(values, dict) else None
            if not isinstance(configuration, dict):
                configuration = {}
            vsl = configuration.get("volumeSnapshotLocation")
            for item in vsl if isinstance(vsl, list) else [vsl]:
                # Charts before 5.x take a location's provider from configuration.provider
                # (velero.volumeSnapshotLocation.provider in _helpers.tpl).
                provider = item.get("provider") or configuration.get("provider") if isinstance(item, dict) else None
                if isinstance(item, dict) and provider:
                    locations.append((str(item.get("name") or "default"), str(provider)))
            features = configuration.get("features") or ""
            features = features if isinstance(features, list) else str(features).split(",")
            defaults_vsl = configuration.get("defaultVolumeSnapshotLocations") or ""
            defaults_vsl = defaults_vsl if isinstance(defaults_vsl, list) else str(defaults_vsl).split(",")
            node_agent = values.get("deployNodeAgent", values.get("deployRestic", False))
            return VeleroServerDefaults(
                default_ttl=str(configuration.get("defaultBackupTTL") or "720h0m0s"),
                default_volumes_to_fs_backup=configuration.get("defaultVolumesToFsBackup") is True,
                default_storage_location=str(configuration.get("defaultBackupStorageLocation") or "default"),
                source=m,
                node_agent=node_agent is True,
                features=tuple(str(f).strip() for f in features if str(f).strip()),
                snapshots_enabled=values.get("snapshotsEnabled", True) is not False,
                snapshot_locations=tuple(locations),
                default_snapshot_locations=tuple(str(d).strip() for d in defaults_vsl if str(d).strip()),
                image_tag=_as_str(dig(values, ("image", "tag"))) if isinstance(values, dict) else None,
            )
    return VeleroServerDefaults(snapshot_locations=tuple(locations))


def parse_quantity_bytes(quantity: str) -> int | None:
    """A Kubernetes quantity such as `1Gi` or `500M` in bytes, or None when it is not one."""
    match = _SIZE.match(quantity.strip())
    if not match:
        return None
    number, suffix = float(match.group(1)), match.group(2) or ""
    factor = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
              "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}[suffix]
    return int(number * factor)
