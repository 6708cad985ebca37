"""What Velero 1.16 does with a Schedule's template, as its source implements it: one module the
static rules and the drill both call, so the two never disagree.

- Namespaces: `includedNamespaces` empty or `*` means every namespace; `excludedNamespaces` wins
  and its entries are glob patterns (`kube-*`; gobwas/glob: `*`, `?`, `[a-z]`, `[!a]`, `{a,b}`).
  A backup lists its included namespaces by name, so before Velero 1.18 a pattern other than `*`
  in `includedNamespaces` takes nothing (the backup looks for a namespace literally named `apps-*`
  and logs an error; pkg/backup/item_collector.go getNamespacesToList, velero #1874). A hook
  resource's namespaces go through the same IncludesExcludes without listing, so there both lists
  are patterns (pkg/util/collections IncludesExcludes.ShouldInclude).
- Hooks: a hook resource runs in a pod when the pod's namespace passes the resource's
  included/excludedNamespaces and its labels match `labelSelector` (matchLabels and
  matchExpressions, as metav1.LabelSelectorAsSelector reads them). A pod's own hook annotations
  (`pre.hook.backup.velero.io/command`, `post.hook...`; the unphased `hook.backup.velero.io/command`
  is a pre hook) take priority: for that phase the Schedule's hooks do not run in that pod
  (internal/hook/item_hook_handler.go HandleHooks). Every hook run counts once in the Backup's
  hookStatus.hooksAttempted, a failed one in hooksFailed; a failed pre hook with onError Fail skips
  the pod's post hooks and its volumes (pkg/backup/backup.go backupItemBlock).
- Storage location: an omitted `storageLocation` is the BackupStorageLocation marked
  `default: true`, whatever its name, else the server's --default-backup-storage-location
  (backup_controller prepareBackupRequest).
- Cluster resources: `includeClusterResources` unset takes the cluster-scoped items that belong to
  included namespaced items (a PVC's PV), or every one for an all-namespace backup; only an explicit
  `false` leaves the PVs out.
- Claims: a PVC is taken when its namespace and the PVC resource are (`includedResources` /
  `excludedResources`, or the newer `included/excludedNamespaceScopedResources`; `*` is every
  resource) and its labels match `labelSelector` or one of `orLabelSelectors`, or when a pod the
  backup takes mounts it: the pod's backup adds its claims as additional items, which the label
  selector does not filter (pkg/backup/actions/pod_action.go, item_backupper itemInclusionChecks).
- Volume data: fs-backup (the node-agent) for every pod volume when defaultVolumesToFsBackup (or the
  deprecated defaultVolumesToRestic) is on, minus `backup.velero.io/backup-volumes-excludes`; else
  only the volumes the pod's `backup.velero.io/backup-volumes` annotation names. A volume not taken
  by fs-backup is snapshotted unless `snapshotVolumes: false`: by CSI when the server runs with the
  EnableCSI feature, or by a VolumeSnapshotLocation's plugin. fs-backup with no node-agent deployed
  backs up nothing.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

INCLUDES_ANNOTATION = "backup.velero.io/backup-volumes"
# Velero's opt-out annotation on a pod: these volumes are never copied by fs-backup.
EXCLUDES_ANNOTATION = "backup.velero.io/backup-volumes-excludes"


@functools.lru_cache(maxsize=512)
def _glob(pattern: str) -> re.Pattern[str] | None:
    """A gobwas/glob pattern with no separators, as Velero compiles each namespace entry: `*` any
    run, `?` one character, `[abc]`/`[a-z]`/`[!a]` a class, `{a,b}` alternatives, `\\` escapes.
    None where gobwas would refuse it (Velero then matches nothing for that entry)."""
    out, depth, i = [], 0, 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 1
        elif c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = pattern.find("]", i + 1)
            if end < 0 or end == i + 1:
                return None
            body = pattern[i + 1:end]
            negate = body.startswith("!")
            body = body[1:] if negate else body
            out.append(f"[{'^' if negate else ''}{re.escape(body).replace(chr(92) + '-', '-')}]")
            i = end
        elif c == "{":
            out.append("(?:")
            depth += 1
        elif c == "}" and depth:
            out.append(")")
            depth -= 1
        elif c == "," and depth:
            out.append("|")
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        return None
    try:
        return re.compile("".join(out) + r"\Z", re.DOTALL)
    except re.error:
        return None


def namespace_pattern(entry: str) -> bool:
    """Whether a namespace entry other than `*` is a glob pattern rather than a name."""
    return entry != "*" and any(c in entry for c in "*?[]{}")


def _matches(patterns: Iterable[str], namespace: str) -> bool:
    return any((g := _glob(p)) is not None and g.match(namespace) for p in patterns)


def includes_namespace(spec: Mapping[str, Any], namespace: str | None, *, patterns: bool = False) -> bool:
    """Whether a backup template with these namespace lists takes `namespace`: excludes are
    patterns, includes are names (or `*`) since the backup lists them by name; with `patterns`
    (a hook resource) includes are patterns too."""
    included = [str(n) for n in spec.get("includedNamespaces") or ["*"]]
    excluded = [str(n) for n in spec.get("excludedNamespaces") or []]
    name = namespace or ""
    if _matches(excluded, name):
        return False
    return "*" in included or name in included or (patterns and _matches(included, name))


def all_namespaces(template: Mapping[str, Any]) -> bool:
    included = [str(n) for n in template.get("includedNamespaces") or []]
    return not included or "*" in included


def selector_matches(selector: Any, labels: Mapping[str, str]) -> bool:
    """A metav1.LabelSelector against a pod's labels; no selector selects every pod."""
    if not isinstance(selector, dict):
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(str(key)) != str(value):
            return False
    for expression in selector.get("matchExpressions") or []:
        if not isinstance(expression, dict):
            continue
        key, operator = str(expression.get("key")), expression.get("operator")
        values = [str(v) for v in expression.get("values") or []]
        present = key in labels
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and present and labels.get(key) in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


PVC_RESOURCE = ("persistentvolumeclaims", "persistentvolumeclaim", "pvc")
POD_RESOURCE = ("pods", "pod", "po")


def _resource_listed(listed: Iterable[Any], names: Sequence[str]) -> bool:
    """Whether a resource list names the resource (its plural, singular or short name, bare or with
    its group suffix; `*` names every resource), as Velero's discovery resolves each entry."""
    for entry in (str(e).lower() for e in listed):
        if entry == "*" or entry in names or any(entry.startswith(f"{n}.") for n in names):
            return True
    return False


def includes_resource(template: Mapping[str, Any], names: Sequence[str]) -> bool:
    """Whether a backup template takes a namespaced resource: `includedResources` empty or naming it
    and `excludedResources` not naming it, or the newer `included/excludedNamespaceScopedResources`
    (Velero validates that a backup uses one style; pkg/util/collections GetResourceIncludesExcludes)."""
    newer = template.get("includedNamespaceScopedResources"), template.get("excludedNamespaceScopedResources")
    included, excluded = (newer if any(newer) else (template.get("includedResources"),
                                                    template.get("excludedResources")))
    return (not included or _resource_listed(included, names)) and not _resource_listed(excluded or [], names)


def _selector_keys(selector: Mapping[str, Any]) -> set[str]:
    return {str(k) for k in selector.get("matchLabels") or {}} | {
        str(e.get("key")) for e in selector.get("matchExpressions") or [] if isinstance(e, dict)}


def selects_labels(template: Mapping[str, Any], labels: Mapping[str, str] | None, *,
                   unknown_prefix: str | None = None) -> bool:
    """Whether a backup template's `labelSelector` (or any of its `orLabelSelectors`) selects an
    object with these labels. None means the labels are not known here, and so does a selector on a
    key under `unknown_prefix` the labels lack (an operator's own labels): both are taken to match."""
    selectors = [s for s in [template.get("labelSelector"), *(template.get("orLabelSelectors") or [])]
                 if isinstance(s, dict) and (s.get("matchLabels") or s.get("matchExpressions"))]
    if not selectors or labels is None:
        return True
    if unknown_prefix and any(k.startswith(unknown_prefix) and k not in labels
                              for s in selectors for k in _selector_keys(s)):
        return True
    return any(selector_matches(s, labels) for s in selectors)


def takes_claim(template: Mapping[str, Any], *, namespace: str | None, labels: Mapping[str, str] | None,
                pod_labels: Iterable[Mapping[str, str] | None] = (), unknown_prefix: str | None = None) -> bool:
    """Whether a backup template takes a PersistentVolumeClaim: its namespace and the PVC resource
    included, and either the claim's labels selected or a pod that mounts it taken, since the pod's
    backup adds its claims as additional items, which the label selector does not filter
    (pkg/backup/actions/pod_action.go; item_backupper.go checks only namespaces and resources)."""
    if not includes_namespace(template, namespace) or not includes_resource(template, PVC_RESOURCE):
        return False
    if selects_labels(template, labels, unknown_prefix=unknown_prefix):
        return True
    return includes_resource(template, POD_RESOURCE) and any(
        selects_labels(template, p, unknown_prefix=unknown_prefix) for p in pod_labels)


def hook_selects(resource: Mapping[str, Any], *, namespace: str | None, labels: Mapping[str, str]) -> bool:
    """Whether a Schedule's `hooks.resources[]` entry runs in a pod of `namespace` with `labels`."""
    return includes_namespace(resource, namespace, patterns=True) and selector_matches(
        resource.get("labelSelector"), labels)


def hook_selects_pod(resource: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    """`hook_selects` for a pod object as the API returns it."""
    metadata = pod.get("metadata") or {}
    return hook_selects(resource, namespace=metadata.get("namespace"), labels=metadata.get("labels") or {})


HOOK_PHASES = ("pre", "post")


def annotation_hook(annotations: Mapping[str, str], phase: str) -> str | None:
    """The command of a pod's own backup hook for `phase`, as Velero reads it (getPodExecHookFromAnnotations)."""
    command = annotations.get(f"{phase}.hook.backup.velero.io/command")
    if not command and phase == "pre":
        command = annotations.get("hook.backup.velero.io/command")  # the legacy key, without a phase
    return str(command) if command else None


@dataclass(frozen=True)
class HookRun:
    """One backup hook Velero runs in one pod."""

    pod: str  # namespace/name
    phase: str  # "pre" or "post"
    source: str  # "annotation" or the Schedule's hook resource name
    index: int = 0


def backup_hook_runs(resources: Sequence[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]]) -> list[HookRun]:
    """Every hook run a Backup with these `hooks.resources` makes in these pods (see the module's
    doc): a pod's annotation hook for a phase, else each selecting resource's hooks of that phase."""
    runs: list[HookRun] = []
    for pod in pods:
        metadata = pod.get("metadata") or {}
        name = f"{metadata.get('namespace')}/{metadata.get('name')}"
        annotations = {str(k): str(v) for k, v in (metadata.get("annotations") or {}).items()}
        for phase in HOOK_PHASES:
            if annotation_hook(annotations, phase):
                runs.append(HookRun(name, phase, "annotation"))
                continue
            for resource in resources:
                if hook_selects_pod(resource, pod):
                    # Only exec hooks are run and counted (HandleHooks: hook.Exec != nil).
                    runs += [HookRun(name, phase, str(resource.get("name", "")), i)
                             for i, hook in enumerate(resource.get(phase) or [])
                             if isinstance(hook, dict) and hook.get("exec")]
    return runs


def default_storage_location(locations: Iterable[tuple[str, bool]], server_default: str) -> str:
    """The BSL a backup with no storageLocation goes to: the one marked default, else the server flag."""
    return next((name for name, is_default in locations if is_default), server_default)


def loses_cluster_resources(template: Mapping[str, Any]) -> bool:
    """Only an explicit `includeClusterResources: false` leaves a namespace's PVs out of the backup."""
    return template.get("includeClusterResources") is False


@dataclass(frozen=True)
class VeleroServer:
    """The server-side settings that decide how volume data is taken (Helm values or flags)."""

    default_volumes_to_fs_backup: bool = False
    node_agent: bool = True
    csi: bool = False  # --features EnableCSI
    # Providers of VolumeSnapshotLocations whose plugin snapshots volumes natively (not "csi").
    snapshot_providers: tuple[str, ...] = ()
    snapshots_enabled: bool = True


@dataclass(frozen=True)
class Coverage:
    """How a backup takes one volume's data, or why it does not."""

    method: str | None  # "fs-backup", "CSI snapshot", "volume snapshot (provider)", or None: not taken
    detail: str
    # Left out on purpose by the pod's backup-volumes-excludes annotation (the runbook's NFS library).
    excluded: bool = False

    @property
    def covered(self) -> bool:
        return self.method is not None

    @property
    def loses_data(self) -> bool:
        return self.method is None and not self.excluded


def fs_backup_default(template: Mapping[str, Any], server: VeleroServer) -> bool:
    for key in ("defaultVolumesToFsBackup", "defaultVolumesToRestic"):
        if isinstance(template.get(key), bool):
            return bool(template[key])
    return server.default_volumes_to_fs_backup


def volume_coverage(template: Mapping[str, Any], server: VeleroServer, *, volume: str | None = None,
                    pod_annotations: Mapping[str, str] | None = None) -> Coverage:
    """How Velero takes the data of pod volume `volume` (None: a claim no known pod mounts)."""
    annotations = pod_annotations or {}
    opted_in = volume is not None and volume in _listed(annotations.get(INCLUDES_ANNOTATION, ""))
    excluded = volume is not None and volume in _listed(annotations.get(EXCLUDES_ANNOTATION, ""))
    by_default = fs_backup_default(template, server)
    if opted_in or (by_default and not excluded):
        why = f"the pod's {INCLUDES_ANNOTATION} annotation" if opted_in else "defaultVolumesToFsBackup"
        if not server.node_agent:
            return Coverage(None, f"fs-backup is asked for ({why}) but the node-agent is not deployed "
                                  "(deployNodeAgent: false), so no volume data is copied")
        return Coverage("fs-backup", f"fs-backup through the node-agent ({why})")
    if (excluded and template.get("snapshotVolumes") is False) or (excluded and not (server.csi or
                                                                                     server.snapshot_providers)):
        return Coverage(None, f"left out by the pod's {EXCLUDES_ANNOTATION} annotation", excluded=True)
    if template.get("snapshotVolumes") is False:
        return Coverage(None, "neither fs-backup (defaultVolumesToFsBackup is off and the pod does not opt in) nor a "
                              "snapshot (snapshotVolumes: false) takes the data")
    if server.csi:
        return Coverage("CSI snapshot", "a CSI VolumeSnapshot (the server runs with EnableCSI)")
    if server.snapshots_enabled and server.snapshot_providers:
        return Coverage(f"volume snapshot ({', '.join(server.snapshot_providers)})",
                        "a snapshot by the VolumeSnapshotLocation's plugin")
    return Coverage(None, "neither fs-backup (defaultVolumesToFsBackup is off and the pod does not opt in) nor a "
                          "snapshot (no EnableCSI feature and no VolumeSnapshotLocation plugin) takes the data")


def _listed(annotation: str) -> list[str]:
    return [item.strip() for item in annotation.split(",") if item.strip()]


# Volume sources whose content comes from the API: GetVolumesByPod (pkg/util/podvolume) never takes
# them by default; Velero backs up the Secret/ConfigMap objects themselves.
API_VOLUME_SOURCES = ("secret", "configMap", "projected", "downwardAPI")


@dataclass(frozen=True)
class PodVolumePlan:
    """What Velero's fs-backup does with one volume of a running pod."""

    volume: str
    claim: str | None  # the PVC it mounts, if any
    coverage: Coverage
    # Why fs-backup drops a volume it was asked to copy: a hostPath volume, or a claim bound to a
    # hostPath PV (isHostPathVolume in pkg/podvolume/backupper.go: a log line, no error, no PVB).
    skipped: str | None = None

    @property
    def expects_pod_volume_backup(self) -> bool:
        return self.coverage.method == "fs-backup" and self.skipped is None


def fs_backup_plan(template: Mapping[str, Any], server: VeleroServer, pod: Mapping[str, Any], *,
                   host_path_claims: Iterable[str] = ()) -> list[PodVolumePlan]:
    """Every volume of `pod` (an API object) and what a backup from `template` does with it.

    `host_path_claims` names the pod's claims whose PV is hostPath. Opted-in volumes are taken
    whatever their source (the annotation is honoured as written); by default the API-sourced ones
    and the legacy `default-token-*` mounts are not. hostPath is dropped either way.
    """
    metadata = pod.get("metadata") or {}
    annotations = {str(k): str(v) for k, v in (metadata.get("annotations") or {}).items()}
    opted_in = set(_listed(annotations.get(INCLUDES_ANNOTATION, "")))
    on_host = set(host_path_claims)
    plans = []
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        name = str(volume.get("name", ""))
        claim_source = volume.get("persistentVolumeClaim") or {}
        claim = str(claim_source["claimName"]) if claim_source.get("claimName") else None
        coverage = volume_coverage(template, server, volume=name, pod_annotations=annotations)
        skipped = None
        if coverage.method == "fs-backup":
            api_source = next((kind for kind in API_VOLUME_SOURCES if volume.get(kind) is not None), None)
            if name not in opted_in and (api_source or name.startswith("default-token")):
                coverage = Coverage(None, f"a {api_source or 'service account token'} volume: its content is "
                                          "backed up as API objects, not by fs-backup", excluded=True)
            elif volume.get("hostPath") is not None:
                skipped = ("a hostPath volume: the node-agent reads only /var/lib/kubelet/pods, so fs-backup "
                           "skips it")
            elif claim is not None and claim in on_host:
                skipped = (f"claim {claim} is bound to a hostPath PersistentVolume, which fs-backup skips "
                           "(isHostPathVolume)")
        plans.append(PodVolumePlan(volume=name, claim=claim, coverage=coverage, skipped=skipped))
    return plans


# The disks a cloud provider's volume snapshotter can snapshot (velero-plugin-for-aws/gcp/azure
# GetVolumeID returns "" for any other PV, and Velero skips it): their in-tree and CSI provisioners.
CLOUD_DISK_PROVISIONERS = {
    "aws": ("kubernetes.io/aws-ebs", "ebs.csi.aws.com"),
    "gcp": ("kubernetes.io/gce-pd", "pd.csi.storage.gke.io"),
    "azure": ("kubernetes.io/azure-disk", "disk.csi.azure.com"),
}


def plugin_snapshot_misses(providers: Sequence[str], *, storage_class: str | None,
                           provisioner: str | None) -> str | None:
    """Why the VolumeSnapshotLocations' plugins take no snapshot of a claim of `storage_class`
    (provisioned by `provisioner`, None when the repo does not show it), or None when they may: only
    where every provider is a cloud one whose snapshotter reads only its own disks."""
    names = [provider.rsplit("/", 1)[-1] for provider in providers]
    if not names or any(name not in CLOUD_DISK_PROVISIONERS for name in names):
        return None
    disks = {d for name in names for d in CLOUD_DISK_PROVISIONERS[name]}
    if provisioner in disks:
        return None
    what = (f"StorageClass {storage_class} is provisioned by {provisioner}" if provisioner else
            f"nothing in the repo shows StorageClass {storage_class or '(the default)'} to be one")
    return (f"no snapshot takes the data: the {', '.join(names)} plugin's VolumeSnapshotLocation snapshots only "
            f"{' or '.join(sorted(disks))} volumes (GetVolumeID skips any other PV), and {what}; fs-backup is "
            "off (defaultVolumesToFsBackup is off and the pod does not opt in)")


def ambiguous_snapshot_providers(locations: Sequence[tuple[str, str]], defaults: Iterable[str]) -> list[str]:
    """Providers with more than one VolumeSnapshotLocation and no default for them: Velero fails
    every backup that snapshots and names none ("more than one possible volume snapshot location")."""
    chosen = {str(item).split(":", 1)[0] for item in defaults}
    counts: dict[str, int] = {}
    for _, provider in locations:
        counts[provider] = counts.get(provider, 0) + 1
    return sorted(p for p, n in counts.items() if n > 1 and p not in chosen)


# -- in-pod databases --------------------------------------------------------------------------

_DATABASE_IMAGE = re.compile(r"^(mysql|mariadb|percona|percona-server|postgres|postgresql)$")
# Client tools run from a database image: a backup job, not a server whose files change under a copy.
_CLIENT_COMMAND = re.compile(r"\b(pg_dump|pg_dumpall|pg_restore|psql|pg_basebackup|mysqldump|mariadb-dump|mysql\b|"
                             r"mariadb\b|pg_isready)", re.IGNORECASE)
SERVER_KINDS = frozenset({"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Pod", "HelmRelease"})


def image_repository_name(image: str) -> str:
    """`docker.io/library/mariadb:11.4@sha256:...` -> `mariadb`."""
    without_digest = image.split("@", 1)[0]
    last = without_digest.rsplit("/", 1)[-1]
    return last.split(":", 1)[0].lower()


def database_engine(image: str) -> str | None:
    """"mysql" or "postgresql" for an image of a database server, else None."""
    name = image_repository_name(image)
    if not _DATABASE_IMAGE.match(name):
        return None
    return "postgresql" if name.startswith("postgres") else "mysql"


def runs_database_server(*, kind: str, image: str, command: Sequence[str] = ()) -> str | None:
    """The engine of a container that runs a database server in a long-lived pod, else None: a Job
    or CronJob, or a container whose command is a client (pg_dump, mysql ...), holds no live data."""
    engine = database_engine(image)
    if engine is None or kind not in SERVER_KINDS:
        return None
    if command and _CLIENT_COMMAND.search(" ".join(str(c) for c in command)):
        return None
    return engine
