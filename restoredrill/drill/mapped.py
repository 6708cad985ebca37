"""A non-destructive drill on a cluster restoredrill did not create: restore a copy beside the app.

The app stays as it is: nothing of it is written, seeded, suspended or deleted. The drill
1. finds the cluster's own Velero (and CNPG operator for an app with a Cluster) and uses it,
   installing nothing (restoredrill.platform.discover);
2. backs the app's namespace up with a Backup of its own, made from the app's Schedule template as
   `velero backup create --from-schedule` does, labelled with the run;
3. creates the copy's namespace `<namespace>-drill-<run>` itself (so it carries restoredrill's
   ownership labels), with a NetworkPolicy that keeps the copy's pods talking only to each other,
   DNS and the API server: a copy must not reach the live app's database by its namespaced name;
4. restores into it with a namespace mapping and no cluster-scoped resources (the claims lose their
   old volumeName and are provisioned anew; the user's PVs are never touched), stripping the GitOps
   controllers' ownership labels and annotations with a Velero resource modifier, so Flux or Argo CD
   neither prunes nor fights the copy (velero issue 7848);
5. verifies on evidence: every PodVolumeBackup restored by a Completed PodVolumeRestore of the same
   size (a CNPG volume restored empty under a mapping, velero issue 9433, shows here by name), the
   objects of the backup present in the copy, pods Ready, CNPG Clusters healthy, restore warnings;
6. deletes what it made, and only that: the copy (labels and UID checked), its Restore, its
   resource-modifier ConfigMap, and its Backup (a DeleteBackupRequest for that Backup alone).
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

from restoredrill.cluster.namespaces import (
    CREATED_BY_LABEL,
    CREATED_BY_VALUE,
    RUN_ID_LABEL,
    create_owned_namespace,
    delete_owned_namespace,
)
from restoredrill.drill import data
from restoredrill.drill.namespace import DrillFailed, DrillRecord
from restoredrill.drill.plan import AppPlan
from restoredrill.errors import NotOursError, RestoreDrillError
from restoredrill.platform.base import PlatformContext
from restoredrill.platform.cnpg import CloudNativePG
from restoredrill.platform.discover import DiscoveredPlatform
from restoredrill.platform.velero import GROUP, VERSION, Velero
from restoredrill.podvolumes import PodVolumeRecord, compare_restored_bytes

# Labels and annotations by which a GitOps controller claims an object (Flux's kustomize- and
# helm-controller, Argo CD's label and annotation tracking). Only top-level metadata is changed:
# pod template labels and selectors stay, so Deployments and Services still match their pods.
OWNERSHIP_LABELS = (
    "kustomize.toolkit.fluxcd.io/name",
    "kustomize.toolkit.fluxcd.io/namespace",
    "helm.toolkit.fluxcd.io/name",
    "helm.toolkit.fluxcd.io/namespace",
    "argocd.argoproj.io/instance",
    "app.kubernetes.io/instance",
)
OWNERSHIP_ANNOTATIONS = ("argocd.argoproj.io/tracking-id",)
# GitOps objects a backup of the namespace may hold: restored into the copy, the cluster's own
# controllers would act on them (a HelmRelease installs its chart again, into the copy or into its
# spec.targetNamespace: the live app; a Kustomization applies the repo). The copy never gets them.
GITOPS_RESOURCES = (
    "helmreleases.helm.toolkit.fluxcd.io", "kustomizations.kustomize.toolkit.fluxcd.io",
    "gitrepositories.source.toolkit.fluxcd.io", "ocirepositories.source.toolkit.fluxcd.io",
    "helmrepositories.source.toolkit.fluxcd.io", "helmcharts.source.toolkit.fluxcd.io",
    "buckets.source.toolkit.fluxcd.io", "applications.argoproj.io", "applicationsets.argoproj.io",
)
CLAIM_BINDING_ANNOTATIONS = ("pv.kubernetes.io/bind-completed", "pv.kubernetes.io/bound-by-controller",
                             "volume.kubernetes.io/selected-node")
# What the restore recreates or controllers make anew: not expected one for one in the copy.
NOT_COMPARED_KINDS = frozenset({"Pod", "ReplicaSet", "Endpoints", "EndpointSlice", "Event", "ControllerRevision",
                                "Lease", "PodVolumeBackup", "Job",
                                # GITOPS_RESOURCES: never restored into the copy.
                                "HelmRelease", "Kustomization", "GitRepository", "OCIRepository", "HelmRepository",
                                "HelmChart", "Bucket", "Application", "ApplicationSet"})
NOT_COMPARED_NAMES = frozenset({("ConfigMap", "kube-root-ca.crt"), ("ServiceAccount", "default")})
ISOLATION_POLICY = "restoredrill-isolate-copy"
FETCHER = "restoredrill-fetcher"


def copy_namespace(namespace: str, run_id: str) -> str:
    """`<namespace>-drill-<run>`, within the 63 characters of a namespace name."""
    suffix = f"-drill-{run_id}"
    return namespace[: 63 - len(suffix)].rstrip("-") + suffix


def resource_modifiers(namespace: str) -> dict[str, Any]:
    """Velero resource modifier rules (version v1) that drop the ownership labels and annotations of
    every restored object that has one; JSON merge patches, so an absent key is no error."""
    rules: list[dict[str, Any]] = []
    for label in OWNERSHIP_LABELS:
        rules.append({"conditions": {"groupResource": "**", "namespaces": [namespace],
                                     "labelSelector": {"matchExpressions": [{"key": label, "operator": "Exists"}]}},
                      "mergePatches": [{"patchData": json.dumps({"metadata": {"labels": {label: None}}})}]})
    # The restore takes no cluster-scoped resources (the user's PVs stay untouched), so every claim is
    # provisioned anew: without its old volumeName and binding annotations. A claim whose data has
    # no PodVolumeBackup (a static NFS volume) comes up empty, never bound to the live data.
    rules.append({"conditions": {"groupResource": "persistentvolumeclaims", "namespaces": [namespace]},
                  "mergePatches": [{"patchData": json.dumps({
                      "spec": {"volumeName": None},
                      "metadata": {"annotations": {key: None for key in CLAIM_BINDING_ANNOTATIONS}}})}]})
    # A claim of a static PV (storageClassName "", an NFS library) could only bind to the live PV: in
    # the copy it takes the default class instead, ReadWriteOnce (what every provisioner offers), and
    # starts empty (its data is not in the backup).
    rules.append({"conditions": {"groupResource": "persistentvolumeclaims", "namespaces": [namespace],
                                 "matches": [{"path": "/spec/storageClassName", "value": ""}]},
                  "mergePatches": [{"patchData": json.dumps({"spec": {"storageClassName": None,
                                                                      "accessModes": ["ReadWriteOnce"]}})}]})
    for annotation in OWNERSHIP_ANNOTATIONS:
        rules.append({"conditions": {"groupResource": "**", "namespaces": [namespace]},
                      "mergePatches": [{"patchData": json.dumps({"metadata": {"annotations": {annotation: None}}})}]})
    return {"version": "v1", "resourceModifierRules": rules}


def isolation_policy(namespace: str, *, api_server_ips: Iterable[str]) -> dict[str, Any]:
    """Egress of the copy's pods: to the copy itself, cluster DNS and the API server (CNPG needs it)."""
    egress: list[dict[str, Any]] = [
        {"to": [{"podSelector": {}}]},
        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}],
         "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]},
    ]
    ips = sorted(set(api_server_ips))
    if ips:
        egress.append({"to": [{"ipBlock": {"cidr": f"{ip}/32" if ":" not in ip else f"{ip}/128"}} for ip in ips]})
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": ISOLATION_POLICY, "namespace": namespace},
            # The drill's own fetch pod reads Velero's results from the object store; nothing of the copy does.
            "spec": {"podSelector": {"matchExpressions": [{"key": data.INSPECTOR_LABEL, "operator": "NotIn",
                                                           "values": ["fetcher"]}]},
                     "policyTypes": ["Egress"], "egress": egress}}


def volume_restore_problems(backups: Sequence[PodVolumeRecord], restores: Sequence[PodVolumeRecord], *,
                            source: str, copy: str) -> list[str]:
    """One Completed PodVolumeRestore per PodVolumeBackup (matched by pod name and volume, the pod
    now in the copy), none restored empty from a backup that copied bytes (podvolumes.compare_restored_bytes)."""
    restored = {(r.pod_name, r.volume): r for r in restores}
    problems = []
    for backup in backups:
        where = f"volume {backup.volume} of pod {source}/{backup.pod_name}"
        match = restored.pop((backup.pod_name, backup.volume), None)
        if match is None:
            problems.append(f"{where}: no PodVolumeRestore in {copy}, so its data was not restored (an empty volume "
                            "under a namespace mapping is velero issue 9433 for CNPG)")
        elif match.phase != "Completed":
            problems.append(f"{where}: PodVolumeRestore {match.name} is {match.phase}: {match.message}")
    problems += compare_restored_bytes(backups=backups, restores=restores)[0]
    problems += [f"PodVolumeRestore {r.name} ({pod}:{volume}) has no PodVolumeBackup"
                 for (pod, volume), r in restored.items()]
    return problems


def missing_objects(resource_list: Mapping[str, Sequence[str]], *, source: str,
                    present: Callable[[str, str, str], bool]) -> list[str]:
    """Objects of `source` in the Backup's resource list (`{"apps/v1/Deployment": ["ns/name"]}`) that the
    copy lacks; `present(api_version, kind, name)` looks one up in the copy."""
    problems = []
    for group_version_kind, names in sorted(resource_list.items()):
        api_version, _, kind = group_version_kind.rpartition("/")
        if kind in NOT_COMPARED_KINDS:
            continue
        for qualified in names:
            namespace, _, name = qualified.rpartition("/")
            if namespace != source or (kind, name) in NOT_COMPARED_NAMES:
                continue
            if not present(api_version, kind, name):
                problems.append(f"{kind} {name} is in the backup but not in the restored copy")
    return problems


@dataclass
class MappedNamespaceDrill:
    """One app's non-destructive drill on a cluster restoredrill did not create."""

    plan: AppPlan
    ctx: PlatformContext
    platform: DiscoveredPlatform
    velero: Velero
    run_id: str
    worker_id: str
    busybox_image: str = "busybox:1.36"
    cnpg: CloudNativePG | None = None
    out: Callable[[str], None] = print
    _dynamic: DynamicClient | None = field(default=None, init=False, repr=False)
    record: DrillRecord = field(init=False)
    copy: str = field(init=False)
    made: list[str] = field(default_factory=list)  # what this drill created, for the report
    step_name: str = ""

    def __post_init__(self) -> None:
        self.record = DrillRecord(app=self.plan.app, namespace=self.plan.namespace, scenario="mapped-namespace-restore")
        self.copy = copy_namespace(self.plan.namespace, self.run_id)
        self.tag = uuid.uuid4().hex[:4]
        self.record.notes.append(self.platform.describe())
        self.record.notes.append(
            f"non-destructive: the app in {self.plan.namespace} is not touched; its copy is restored into {self.copy}. "
            "Not drilled here: seeding and sentinels (they would write to the live app) and Flux adoption (the copy "
            "is no GitOps object; the backup's Flux and Argo CD objects are left out of it, so the cluster's own "
            "controllers never act on the copy)")

    @property
    def labels(self) -> dict[str, str]:
        return {CREATED_BY_LABEL: CREATED_BY_VALUE, RUN_ID_LABEL: self.run_id}

    def run(self) -> DrillRecord:
        for name, action in (("backup", self.backup), ("copy namespace", self.prepare_copy),
                             ("restore", self.restore), ("verify", self.verify)):
            self.step(name, action)
        return self.record

    # As NamespaceDrill.step_observer: entered around each step (an Allure step, set by fixtures/reporting.py).
    step_observer: ClassVar[staticmethod[[str | None, str], contextlib.AbstractContextManager[object]] | None] = None

    def step(self, name: str, action: Callable[[], None]) -> None:
        self.step_name = name
        self.out(f"[drill {self.plan.app} -> {self.copy}] {name} ...")
        started = time.monotonic()
        with self.step_observer(self.plan.app, name) if self.step_observer else contextlib.nullcontext():
            action()
        self.record.steps.append((name, round(time.monotonic() - started, 1)))

    def fail(self, problems: Sequence[str], remedy: str | None = None) -> None:
        if problems:
            raise DrillFailed(self.plan.app, self.step_name, problems, remedy=remedy)

    # ---- backup ----------------------------------------------------------------------------
    def backup(self) -> None:
        schedule = self.plan.schedule
        name = f"{schedule['metadata']['name']}-drill-{self.run_id}-{self.tag}"[:63].rstrip("-")
        template = dict(schedule["spec"]["template"])
        template.setdefault("storageLocation", self.platform.bsl)
        self.velero.create_backup_from_schedule(schedule, name, template=template, labels=self.labels)
        self.record.backup = name
        self.record.notes += [note for note in self.plan.notes if note not in self.record.notes]
        self.made.append(f"Backup {self.velero.namespace}/{name}")
        backup = self.velero.wait_for_backup(name, require_completed=False)
        status = backup.get("status") or {}
        self.record.backup_completed_at = str(status.get("completionTimestamp", ""))
        self.record.hooks = dict(status.get("hookStatus") or {})
        volumes = self.velero.pod_volume_backups(name)
        self.record.pod_volume_backups = len(volumes)
        problems = []
        if status.get("phase") != "Completed":
            problems.append(f"Backup {name} ended {status.get('phase')}: {status.get('failureReason', '')} "
                            f"(errors {status.get('errors', 0)}, warnings {status.get('warnings', 0)})")
        problems += [f"PodVolumeBackup {v.name} is {v.phase}: {v.message}" for v in volumes if v.phase != "Completed"]
        self.fail(problems, remedy=f"`velero backup describe {name} --details`")

    # ---- the copy --------------------------------------------------------------------------
    def prepare_copy(self) -> None:
        create_owned_namespace(self.ctx.api, self.copy, run_id=self.run_id, worker_id=self.worker_id)
        self.made.append(f"Namespace {self.copy}")
        endpoints = self.ctx.core.read_namespaced_endpoints("kubernetes", "default")
        ips = [address.ip for subset in endpoints.subsets or [] for address in subset.addresses or []]
        self.ctx.apply([isolation_policy(self.copy, api_server_ips=ips)])
        self.record.standins.append(f"NetworkPolicy {self.copy}/{ISOLATION_POLICY}: the copy's pods may reach only "
                                    "each other, cluster DNS and the API server (enforced where the CNI enforces "
                                    "NetworkPolicy)")
        rules = resource_modifiers(self.plan.namespace)
        self.ctx.apply([{"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": self.modifier_name, "namespace": self.velero.namespace,
                                      "labels": self.labels},
                         "data": {"rules.yaml": yaml.safe_dump(rules, sort_keys=False)}}])
        self.made.append(f"ConfigMap {self.velero.namespace}/{self.modifier_name}")
        self.record.standins.append(
            f"resource modifier {self.velero.namespace}/{self.modifier_name}: the copy's objects lose the labels "
            f"{', '.join(OWNERSHIP_LABELS)} and annotations {', '.join(OWNERSHIP_ANNOTATIONS)} (velero 7848); "
            "its claims are provisioned anew, and a claim of a static PV (storageClassName \"\") takes the default "
            "class, ReadWriteOnce, and starts empty: its data is not in the backup")

    @property
    def modifier_name(self) -> str:
        return f"restoredrill-{self.run_id}-{self.tag}-modifiers"

    def restore(self) -> None:
        name = f"{self.plan.app}-drill-{self.run_id}-{self.tag}"[:63].rstrip("-")
        self.record.restore = name
        started = time.monotonic()
        self.velero.create_restore(name, backup_name=self.record.backup, included_namespaces=[self.plan.namespace],
                                   namespace_mapping={self.plan.namespace: self.copy}, restore_pvs=True,
                                   include_cluster_resources=False, resource_modifier=self.modifier_name,
                                   labels=self.labels, excluded_resources=GITOPS_RESOURCES)
        self.made.append(f"Restore {self.velero.namespace}/{name}")
        self.velero.wait_for_pod_volume_restores(name, expected=self.record.pod_volume_backups)
        self.restored = self.velero.wait_for_restore(name)
        for cluster in self.plan.cnpg_clusters:
            if self.cnpg is not None:
                self.cnpg.wait_for_cluster_healthy(name=cluster, namespace=self.copy)
        self.ctx.wait_for_pods_ready(namespace=self.copy, selector="", what=f"{self.plan.app} pods in the copy",
                                     timeout_name="pod_ready")
        self.record.rto_s = round(time.monotonic() - started, 1)

    # ---- verify ----------------------------------------------------------------------------
    def verify(self) -> None:
        status = self.restored.get("status") or {}
        problems: list[str] = []
        if status.get("phase") != "Completed":
            problems.append(f"Restore {self.record.restore} ended {status.get('phase')} "
                            f"({status.get('errors', 0)} errors): {status.get('failureReason', '')}")
        backups = self.velero.pod_volume_backups(self.record.backup)
        restores = self.velero.pod_volume_restores(self.record.restore)
        self.record.pod_volume_restores = len(restores)
        problems += volume_restore_problems(backups, restores, source=self.plan.namespace, copy=self.copy)
        self.record.volumes_verified = sum(1 for r in restores if r.phase == "Completed")
        resources = json.loads(self.velero.download("BackupResourceList", self.record.backup,
                                                    fetch=self.fetch_in_copy) or b"{}")
        problems += missing_objects(resources, source=self.plan.namespace, present=self.present)
        self.fail(problems, remedy=f"`velero restore describe {self.record.restore} --details`")

    def present(self, api_version: str, kind: str, name: str) -> bool:
        """Whether the copy has the object (the API's discovery finds the kind's resource)."""
        try:
            resource = self.dynamic.resources.get(api_version=api_version, kind=kind)
            resource.get(name=name, namespace=self.copy)
        except NotFoundError:
            return False
        except ResourceNotFoundError:
            return False  # the kind is not even served: the restore cannot have recreated it
        return True

    @property
    def dynamic(self) -> DynamicClient:
        if self._dynamic is None:
            self._dynamic = DynamicClient(self.ctx.api)
        return self._dynamic

    def fetch_in_copy(self, url: str) -> bytes:
        """GET a DownloadRequest's URL from a short-lived pod in the copy: the URL names the object
        store's in-cluster host, which resolves only inside the cluster."""
        pod = data.inspector_pod(name=FETCHER, namespace=self.copy, image=self.busybox_image, claims=[],
                                 labels={data.INSPECTOR_LABEL: "fetcher"})
        self.ctx.apply([pod])
        try:
            self.ctx.wait_for_pods_ready(namespace=self.copy, selector=f"{data.INSPECTOR_LABEL}=fetcher",
                                         what="fetch pod", expected=1, timeout_name="pod_ready")
            return self.ctx.kubectl_bytes(["-n", self.copy, "exec", "-i", FETCHER, "--", "wget", "-q", "-O", "-", url],
                                          input=b"", timeout=self.ctx.timeout("command"))
        finally:
            with contextlib.suppress(ApiException):
                self.ctx.core.delete_namespaced_pod(FETCHER, self.copy, grace_period_seconds=0)

    def evidence(self) -> dict[str, str]:
        """What a reader of a failed drill needs: the Velero objects, the copy's pods and events."""
        def dump(items: Any) -> str:
            return yaml.safe_dump(items, sort_keys=False, default_flow_style=False)

        found: dict[str, str] = {"platform": self.platform.describe(), "made": "\n".join(self.made)}
        sections: list[tuple[str, Callable[[], Any]]] = [
            ("Backup", lambda: self.ctx.get_object(GROUP, VERSION, "backups", self.velero.namespace,
                                                   self.record.backup)),
            ("Restore", lambda: self.ctx.get_object(GROUP, VERSION, "restores", self.velero.namespace,
                                                    self.record.restore)),
            ("PodVolumeBackups", lambda: self.velero.list_pod_volume_backups(self.record.backup)),
            ("PodVolumeRestores", lambda: self.velero.list_pod_volume_restores(self.record.restore)),
            ("pods of the copy", lambda: self.ctx.as_manifests(self.ctx.core.list_namespaced_pod(self.copy).items)),
            ("events of the copy", lambda: [f"{e.get('reason')}: {e.get('message')}" for e in self.ctx.as_manifests(
                self.ctx.core.list_namespaced_event(self.copy).items)]),
        ]
        for title, read in sections:
            try:
                found[title] = dump(read())
            except (ApiException, RestoreDrillError) as error:
                found[title] = f"could not read: {error}"
        return found

    # ---- clean-up --------------------------------------------------------------------------
    def cleanup(self) -> list[str]:
        """Delete what this drill made, checking each is ours; what was deleted (or why not)."""
        done: list[str] = []
        steps: list[tuple[str, Callable[[], None]]] = [
            (f"Namespace {self.copy}", lambda: delete_owned_namespace(
                self.ctx.api, self.copy, run_id=self.run_id, worker_id=self.worker_id,
                wait_timeout=self.ctx.timeout("namespace_deleted"))),
        ]
        if self.record.restore:
            steps.append((f"Restore {self.record.restore}",
                          lambda: self._delete_ours("restores", self.record.restore)))
        steps.append((f"ConfigMap {self.modifier_name}", self._delete_modifiers))
        if self.record.backup:
            steps.append((f"Backup {self.record.backup}", self._delete_backup))
        for what, action in steps:
            try:
                action()
                done.append(f"deleted {what}")
            except (RestoreDrillError, ApiException) as error:
                done.append(f"NOT deleted {what}: {error}")
        return done

    def _ours(self, labels: Mapping[str, str] | None) -> bool:
        return all((labels or {}).get(k) == v for k, v in self.labels.items())

    def _delete_ours(self, plural: str, name: str) -> None:
        found = self.ctx.get_object(GROUP, VERSION, plural, self.velero.namespace, name)
        if found is None:
            return
        if not self._ours(found["metadata"].get("labels")):
            raise NotOursError(f"{plural} {name} does not carry this run's labels", remedy="left in place")
        self.ctx.custom.delete_namespaced_custom_object(
            GROUP, VERSION, self.velero.namespace, plural, name,
            body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=found["metadata"]["uid"])))

    def _delete_modifiers(self) -> None:
        try:
            (found,) = self.ctx.as_manifests([self.ctx.core.read_namespaced_config_map(self.modifier_name,
                                                                                      self.velero.namespace)])
        except ApiException as error:
            if error.status == 404:
                return
            raise
        if not self._ours(found["metadata"].get("labels")):
            raise NotOursError(f"ConfigMap {self.modifier_name} does not carry this run's labels",
                               remedy="left in place")
        self.ctx.core.delete_namespaced_config_map(
            self.modifier_name, self.velero.namespace,
            body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=found["metadata"]["uid"])))

    def _delete_backup(self) -> None:
        found = self.ctx.get_object(GROUP, VERSION, "backups", self.velero.namespace, self.record.backup)
        if found is None:
            return
        if not self._ours(found["metadata"].get("labels")):
            raise NotOursError(f"Backup {self.record.backup} does not carry this run's labels", remedy="left in place")
        self.velero.request_backup_deletion(self.record.backup)


