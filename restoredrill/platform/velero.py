"""Velero server + node-agent (Kopia uploader) + velero-plugin-for-aws, configured like the runbook.

The manifests mirror the user's HelmRelease (`kubernetes/apps/velero/velero/app/helmrelease.yaml`):
a BackupStorageLocation `default` on the S3 store (`s3ForcePathStyle`, `s3Url`, `region`), the
credentials Secret `velero-s3-credentials` holding an AWS credentials file under `cloud`, fs-backup
of every pod volume by default, no volume snapshots. They follow what `velero install` generates
(pkg/install in the pinned module): the node-agent DaemonSet mounts `/var/lib/kubelet/pods` at
`/host_pods`, its pods carry `name=node-agent` and `role=node-agent` (fs-backup is only used on a
node where such a pod runs).

Ready means: the BSL reports Available (an Unavailable BSL fails at once with its message) and a
node-agent pod is Ready on every node. The client helpers never trust a Restore's phase alone
(velero issue 9365): `wait_for_pod_volume_restores` waits for every PodVolumeRestore.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from restoredrill.errors import NotOursError, RestoreDrillError
from restoredrill.pins import module_pins
from restoredrill.platform.base import Manifest, PlatformContext, PlatformError, image_ref, labels, read_crds
from restoredrill.platform.objectstore import ObjectStoreCredentials, S3Endpoint
from restoredrill.podvolumes import PodVolumeRecord, compare_pod_volumes, records
from restoredrill.waits import wait_until

GROUP, VERSION = "velero.io", "v1"
NAMESPACE = "velero"
BSL_NAME = "default"
CREDENTIALS_SECRET = "velero-s3-credentials"
# How often Velero re-checks the BSL; short, so an object store outage shows within a minute.
BSL_VALIDATION_FREQUENCY = "10s"

BACKUP_DONE = frozenset({"Completed", "PartiallyFailed", "Failed", "FailedValidation"})
RESTORE_DONE = BACKUP_DONE
POD_VOLUME_DONE = frozenset({"Completed", "Failed", "Canceled"})
BACKUP_NAME_LABEL = "velero.io/backup-name"
RESTORE_NAME_LABEL = "velero.io/restore-name"
SCHEDULE_NAME_LABEL = "velero.io/schedule-name"
LABEL_MAX = 63


class BackupStorageUnavailable(PlatformError):
    """The BSL says the object store cannot be used; carries Velero's own message."""


class VeleroOperationFailed(PlatformError):
    """A Backup or Restore ended in a phase other than Completed."""


def velero_label_value(name: str) -> str:
    """The label value Velero puts a long Backup/Restore name under (pkg/label.GetValidName)."""
    if len(name) <= LABEL_MAX:
        return name
    return name[: LABEL_MAX - 6] + hashlib.sha256(name.encode()).hexdigest()[:6]


# ---- pure manifest builders (unit-tested) --------------------------------------------------------
def credentials_secret(credentials: ObjectStoreCredentials, *, namespace: str = NAMESPACE) -> Manifest:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": CREDENTIALS_SECRET, "namespace": namespace, "labels": labels("velero")},
        "stringData": {"cloud": credentials.aws_credentials_file()},
    }


def backup_storage_location(endpoint: S3Endpoint, *, namespace: str = NAMESPACE) -> Manifest:
    return {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "BackupStorageLocation",
        "metadata": {"name": BSL_NAME, "namespace": namespace, "labels": labels("velero")},
        "spec": {
            "provider": "aws",
            "default": True,
            "objectStorage": {"bucket": endpoint.velero_bucket},
            "config": {"region": endpoint.region, "s3ForcePathStyle": "true", "s3Url": endpoint.url},
            "validationFrequency": BSL_VALIDATION_FREQUENCY,
            "accessMode": "ReadWrite",
        },
    }


def _credentials_env() -> list[Manifest]:
    return [
        {"name": "VELERO_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "VELERO_SCRATCH_DIR", "value": "/scratch"},
        {"name": "AWS_SHARED_CREDENTIALS_FILE", "value": "/credentials/cloud"},
        {"name": "LD_LIBRARY_PATH", "value": "/plugins"},
    ]


def _credentials_volume() -> Manifest:
    return {"name": "cloud-credentials", "secret": {"secretName": CREDENTIALS_SECRET}}


def server_deployment(images: Mapping[str, str], *, namespace: str = NAMESPACE,
                      default_volumes_to_fs_backup: bool = True) -> Manifest:
    args = ["server", "--uploader-type=kopia", "--log-level=info",
            # Re-check the object store often: an outage shows on the BSL within about 20 s.
            "--store-validation-frequency=10s"]
    # Not --backup-sync-period: below a minute it changes nothing (backup_sync_controller.go enqueues
    # every backupSyncReconcilePeriod, one minute, and the period only filters).
    if default_volumes_to_fs_backup:
        args.append("--default-volumes-to-fs-backup")
    pod_labels = labels("velero", component="velero", deploy="velero")
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "velero", "namespace": namespace, "labels": pod_labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"deploy": "velero"}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "serviceAccountName": "velero",
                    "restartPolicy": "Always",
                    "initContainers": [{
                        # The plugin image's entrypoint copies the plugin binary into /target.
                        "name": "velero-plugin-for-aws",
                        "image": image_ref(images, "velero-plugin-for-aws"),
                        "imagePullPolicy": "IfNotPresent",
                        "volumeMounts": [{"name": "plugins", "mountPath": "/target"}],
                    }],
                    "containers": [{
                        "name": "velero",
                        # Velero uses this image for restore-helper init containers and repo maintenance.
                        "image": image_ref(images, "velero"),
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/velero"],
                        "args": args,
                        "env": _credentials_env(),
                        "ports": [{"name": "metrics", "containerPort": 8085}],
                        "volumeMounts": [
                            {"name": "plugins", "mountPath": "/plugins"},
                            {"name": "scratch", "mountPath": "/scratch"},
                            {"name": "cloud-credentials", "mountPath": "/credentials"},
                        ],
                        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
                    }],
                    "volumes": [{"name": "plugins", "emptyDir": {}}, {"name": "scratch", "emptyDir": {}},
                                _credentials_volume()],
                },
            },
        },
    }


def node_agent_daemonset(images: Mapping[str, str], *, namespace: str = NAMESPACE) -> Manifest:
    pod_labels = {**labels("velero", component="velero"), "name": "node-agent", "role": "node-agent"}
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "node-agent", "namespace": namespace, "labels": pod_labels},
        "spec": {
            "selector": {"matchLabels": {"name": "node-agent"}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {
                    "serviceAccountName": "velero",
                    # Reads every pod's volumes on the node: root, as `velero install` sets it.
                    "securityContext": {"runAsUser": 0},
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{
                        "name": "node-agent",
                        "image": image_ref(images, "velero"),
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/velero"],
                        "args": ["node-agent", "server"],
                        "env": [{"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                                *_credentials_env()],
                        "volumeMounts": [
                            {"name": "host-pods", "mountPath": "/host_pods", "mountPropagation": "HostToContainer"},
                            {"name": "host-plugins", "mountPath": "/var/lib/kubelet/plugins",
                             "mountPropagation": "HostToContainer"},
                            {"name": "scratch", "mountPath": "/scratch"},
                            {"name": "cloud-credentials", "mountPath": "/credentials"},
                        ],
                        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
                    }],
                    "volumes": [
                        {"name": "host-pods", "hostPath": {"path": "/var/lib/kubelet/pods"}},
                        {"name": "host-plugins", "hostPath": {"path": "/var/lib/kubelet/plugins"}},
                        {"name": "scratch", "emptyDir": {}},
                        _credentials_volume(),
                    ],
                },
            },
        },
    }


def rbac(*, namespace: str = NAMESPACE) -> list[Manifest]:
    # `velero install` binds the server's account to cluster-admin; so do we.
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "velero", "namespace": namespace, "labels": labels("velero")}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": f"velero-{namespace}", "labels": labels("velero")},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
         "subjects": [{"kind": "ServiceAccount", "name": "velero", "namespace": namespace}]},
    ]


# Velero's server reads the API's resource list once at start and then every 5 minutes
# (v1.16.2 pkg/cmd/server/server.go initDiscoveryHelper: wait.Until(Refresh, 5*time.Minute)). Until
# that refresh, a backup silently leaves out every object of a CRD created after the server started,
# and a restore cannot resolve it: the drill waits for the refresh instead.
DISCOVERY_REFRESH_S = 300.0
DISCOVERY_MARGIN_S = 15.0  # the refresh itself, and wait.Until's sliding period


def discovery_knows_at(started: datetime, created: Sequence[datetime], *, period: float = DISCOVERY_REFRESH_S,
                       margin: float = DISCOVERY_MARGIN_S) -> datetime:
    """When a Velero server started at `started` has seen CRDs created at `created`: its start for
    those made before it started (its first listing comes after), else the first refresh after the
    newest (plus a margin)."""
    latest = max((c for c in created if c > started), default=None)
    if latest is None:
        return started
    periods = math.ceil((latest - started).total_seconds() / period) or 1
    return started + timedelta(seconds=periods * period + margin)


def backup_from_schedule_template(template: Mapping[str, Any], *, name: str, namespace: str = NAMESPACE,
                                  schedule_name: str | None = None,
                                  schedule_labels: Mapping[str, str] | None = None,
                                  schedule_annotations: Mapping[str, str] | None = None,
                                  labels: Mapping[str, str] | None = None) -> Manifest:
    """The Backup `velero backup create NAME --from-schedule` makes from a Schedule's template.

    As Velero's BackupBuilder.FromSchedule (v1.16.2 pkg/builder/backup_builder.go): the template's
    `metadata.labels` (else the Schedule's own labels) become the Backup's labels, plus
    `velero.io/schedule-name` and `labels` (the drill's own); the Schedule's annotations become the
    Backup's; the spec is the template itself (its `metadata` key is part of the spec type and is
    kept). Velero's owner reference to the Schedule (`useOwnerReferencesInBackup`) is not set: a
    drill's Backup is deleted by the drill, never by garbage collection of a Schedule.
    """
    spec = copy.deepcopy(dict(template))
    template_labels = (spec.get("metadata") or {}).get("labels")
    backup_labels = dict(template_labels if template_labels is not None else (schedule_labels or {}))
    if schedule_name:
        backup_labels[SCHEDULE_NAME_LABEL] = schedule_name
    backup_labels.update(labels or {})
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if backup_labels:
        metadata["labels"] = backup_labels
    if schedule_annotations:
        metadata["annotations"] = dict(schedule_annotations)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Backup", "metadata": metadata, "spec": spec}


def restore_manifest(*, name: str, backup_name: str, namespace: str = NAMESPACE,
                     included_namespaces: Sequence[str] | None = None,
                     namespace_mapping: Mapping[str, str] | None = None,
                     restore_pvs: bool | None = None, include_cluster_resources: bool | None = None,
                     resource_modifier: str | None = None,
                     labels: Mapping[str, str] | None = None, restore_status: Sequence[str] = (),
                     excluded_resources: Sequence[str] = ()) -> Manifest:
    spec: dict[str, Any] = {"backupName": backup_name}
    if excluded_resources:
        spec["excludedResources"] = list(excluded_resources)
    if restore_status:
        # `velero restore create --status-include-resources`: Velero restores no status otherwise.
        spec["restoreStatus"] = {"includedResources": list(restore_status)}
    if include_cluster_resources is not None:
        spec["includeClusterResources"] = include_cluster_resources
    if resource_modifier:
        spec["resourceModifier"] = {"kind": "ConfigMap", "name": resource_modifier}
    if restore_pvs is not None:
        spec["restorePVs"] = restore_pvs
    if included_namespaces:
        spec["includedNamespaces"] = list(included_namespaces)
    if namespace_mapping:
        spec["namespaceMapping"] = dict(namespace_mapping)
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = dict(labels)
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Restore", "metadata": metadata, "spec": spec}


_UNREADABLE_OBJECT = re.compile(r"error getting object (\S+?):")


def restore_failure(restore: Mapping[str, Any], bsl: Mapping[str, Any] | None) -> str:
    """Why a Restore ended Failed or FailedValidation, naming the object of the store it could not
    read where Velero's failureReason says so (restore_controller runValidatedRestore wraps the
    plugin's "error getting object KEY" in "error downloading backup")."""
    status = restore.get("status") or {}
    name = (restore.get("metadata") or {}).get("name", "?")
    reason = str(status.get("failureReason") or "; ".join(str(e) for e in status.get("validationErrors") or [])
                 or "no reason given")
    text = f"Restore {name} ended {status.get('phase')}: {reason}"
    found = _UNREADABLE_OBJECT.search(reason)
    if found:
        storage = ((bsl or {}).get("spec") or {}).get("objectStorage") or {}
        where = f"s3://{storage.get('bucket', '?')}/{found.group(1)}"
        backup = (restore.get("spec") or {}).get("backupName", "?")
        location = ((bsl or {}).get("metadata") or {}).get("name", "?")
        text += (f". The object {where} of Backup {backup} could not be read from BackupStorageLocation {location}: "
                 "the backup in the object store is incomplete (removed by a lifecycle rule, by hand, or never "
                 "written)")
    return text


def bsl_state(bsl: Mapping[str, Any] | None) -> tuple[str, str]:
    """(phase, message) of a BSL object; ("", "") while Velero has not validated it yet."""
    status = (bsl or {}).get("status") or {}
    return str(status.get("phase", "")), str(status.get("message", ""))


def validated_since(bsl: Mapping[str, Any] | None, moment: datetime) -> bool:
    """True when the BSL's last validation happened at or after `moment` (second resolution)."""
    stamp = ((bsl or {}).get("status") or {}).get("lastValidationTime")
    if not stamp:
        return False
    return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")) >= moment


# ---- the component -------------------------------------------------------------------------------
class Velero:
    """Install / wait_ready / client helpers / uninstall of Velero on a cluster."""

    def __init__(self, ctx: PlatformContext, *, endpoint: S3Endpoint | None, credentials: ObjectStoreCredentials | None,
                 namespace: str = NAMESPACE, bsl_name: str = BSL_NAME) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self.credentials = credentials
        self.namespace = namespace
        self.bsl_name = bsl_name

    @classmethod
    def existing(cls, ctx: PlatformContext, *, namespace: str, bsl_name: str) -> Velero:
        """The user's own Velero on a cluster restoredrill did not create: used, never installed."""
        return cls(ctx, endpoint=None, credentials=None, namespace=namespace, bsl_name=bsl_name)

    # ---- install --------------------------------------------------------------------------------
    def crds(self) -> list[Manifest]:
        from restoredrill.schemas import fetch_crds

        pin = module_pins()["velero"]
        folders = fetch_crds(pins={"velero": pin}, progress=self.ctx.out)
        return [crd for folder in folders for crd in read_crds(folder)]

    def manifests(self) -> list[Manifest]:
        """Everything but the CRDs, in apply order."""
        if self.endpoint is None or self.credentials is None:
            raise NotOursError(f"Velero in {self.namespace} is the cluster's own: restoredrill does not install "
                               "over it", remedy="drill with the platform the cluster has")
        return [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace, "labels": labels("velero")}},
            *rbac(namespace=self.namespace),
            credentials_secret(self.credentials, namespace=self.namespace),
            backup_storage_location(self.endpoint, namespace=self.namespace),
            server_deployment(self.ctx.images, namespace=self.namespace),
            node_agent_daemonset(self.ctx.images, namespace=self.namespace),
        ]

    def install(self) -> None:
        manifests = self.manifests()  # refuses first on a Velero that is not ours
        self.ctx.apply(self.crds())
        self.ctx.wait_for_crds_established(["backupstoragelocations.velero.io", "backups.velero.io",
                                            "restores.velero.io"])
        self.ctx.apply(manifests)

    def uninstall(self) -> None:
        """Remove the namespace and the binding; CRDs stay (other namespaces' objects use them)."""
        manifests = self.manifests()
        self.ctx.delete([m for m in manifests if m["kind"] == "ClusterRoleBinding"])
        self.ctx.delete([manifests[0]], wait=True)

    # ---- readiness --------------------------------------------------------------------------------
    def wait_ready(self) -> None:
        self.ctx.wait_for_pods_ready(namespace=self.namespace, selector="deploy=velero", what="Velero server",
                                     expected=1)
        self.wait_for_node_agents()
        self.wait_for_bsl_available()

    def restart(self) -> None:
        """Restart the server (it rediscovers the API: new CRDs become backed up) and wait until ready."""
        self.ctx.kubectl(["-n", self.namespace, "rollout", "restart", "deployment/velero"])
        self.ctx.kubectl(["-n", self.namespace, "rollout", "status", "deployment/velero",
                          f"--timeout={int(self.ctx.timeout('platform_ready'))}s"],
                         timeout=self.ctx.timeout("platform_ready") + 30)
        self.wait_ready()

    def wait_for_node_agents(self) -> None:
        nodes = [node.metadata.name for node in self.ctx.core.list_node().items if node.metadata]
        self.ctx.wait_for_pods_ready(namespace=self.namespace, selector="name=node-agent",
                                     what=f"a node-agent on each of {len(nodes)} node(s)", expected=len(nodes))

    def bsl(self) -> Manifest | None:
        return self.ctx.get_object(GROUP, VERSION, "backupstoragelocations", self.namespace, self.bsl_name)

    def server_started_at(self) -> datetime | None:
        """When the running Velero server container started (None: no running server found)."""
        pods = self.ctx.as_manifests(self.ctx.core.list_namespaced_pod(self.namespace,
                                                                       label_selector="deploy=velero").items)
        times = [str(((status.get("state") or {}).get("running") or {}).get("startedAt") or "")
                 for pod in pods for status in (pod.get("status") or {}).get("containerStatuses") or []
                 if status.get("name") == "velero"]
        started = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in times if t]
        return max(started) if started else None

    def wait_for_discovery(self) -> None:
        """Wait until the Velero server knows every CRD of the cluster (see DISCOVERY_REFRESH_S)."""
        from kubernetes import client

        started = self.server_started_at()
        if started is None:
            return
        crds = client.ApiextensionsV1Api(self.ctx.api).list_custom_resource_definition().items
        created = {str(c.metadata.name): c.metadata.creation_timestamp for c in crds
                   if c.metadata and c.metadata.creation_timestamp}
        known_at = discovery_knows_at(started, list(created.values()))
        newer = sorted(name for name, at in created.items() if at > started)
        if known_at <= datetime.now(UTC):
            return
        what = (f"Velero to discover {len(newer)} CRD(s) created after its server started ({', '.join(newer[:4])}"
                f"{', ...' if len(newer) > 4 else ''}; it re-reads the API every 5 minutes, until then a backup "
                "leaves their objects out)")

        def probe() -> tuple[bool | None, str]:
            done = datetime.now(UTC) >= known_at
            return (True if done else None), f"its next refresh is due by {known_at:%H:%M:%S} UTC"

        wait_until(what, probe, timeout=DISCOVERY_REFRESH_S + 2 * DISCOVERY_MARGIN_S, interval=5.0,
                   on_progress=lambda line: self.ctx.out(f"[velero] {line}"))

    def check_bsl_available(self) -> None:
        """Raise `BackupStorageUnavailable` with Velero's message unless the BSL is Available now."""
        phase, message = bsl_state(self.bsl())
        if phase != "Available":
            raise BackupStorageUnavailable(
                f"BackupStorageLocation {self.namespace}/{self.bsl_name} is {phase or 'not validated yet'}: "
                f"{message or 'no message'}",
                remedy=(f"check the object store at {self.endpoint.url} (bucket {self.endpoint.velero_bucket}) "
                        "and the credentials Secret" if self.endpoint else
                        f"`velero backup-location get {self.bsl_name}` and the object store it points at"),
            )

    def wait_for_bsl_available(self) -> None:
        """Available, or fail at once with the BSL's message when Velero marks it Unavailable.

        Only a validation made after the wait began counts as a failure: an Unavailable left from
        before (the store was just brought back) is waited out until Velero validates again.
        """
        started = datetime.now(UTC).replace(microsecond=0)

        def probe() -> tuple[str | None, str]:
            bsl = self.bsl()
            phase, message = bsl_state(bsl)
            if phase == "Unavailable" and validated_since(bsl, started):
                self.check_bsl_available()
            return ("Available" if phase == "Available" else None), f"phase {phase or '(none)'} {message}".strip()

        wait_until(f"BackupStorageLocation {self.bsl_name} to be Available", probe,
                   timeout=self.ctx.timeout("bsl_available"))

    def wait_for_bsl_unavailable(self) -> str:
        """Wait until Velero notices the object store is gone; returns the BSL's message."""

        def probe() -> tuple[str | None, str]:
            phase, message = bsl_state(self.bsl())
            return (message or phase if phase == "Unavailable" else None), f"phase {phase}"

        return wait_until(f"BackupStorageLocation {self.bsl_name} to become Unavailable", probe,
                          timeout=self.ctx.timeout("bsl_unavailable"), interval=1.0)

    # ---- backups ----------------------------------------------------------------------------------
    def create_backup_from_schedule_template(self, schedule_spec_template: Mapping[str, Any], name: str, *,
                                             schedule_name: str | None = None,
                                             labels: Mapping[str, str] | None = None) -> Manifest:
        """Create a Backup from a Schedule's `spec.template` (what `--from-schedule` does)."""
        self.check_bsl_available()
        self.wait_for_discovery()
        body = backup_from_schedule_template(schedule_spec_template, name=name, namespace=self.namespace,
                                             schedule_name=schedule_name, labels=labels)
        return self.ctx.create_object(GROUP, VERSION, "backups", self.namespace, body)

    def create_backup_from_schedule(self, schedule: Mapping[str, Any], name: str, *,
                                    template: Mapping[str, Any] | None = None,
                                    labels: Mapping[str, str] | None = None) -> Manifest:
        """Create a Backup from a whole Schedule manifest (its labels count when the template has
        none, its annotations are copied); `template` replaces its `spec.template`."""
        self.check_bsl_available()
        self.wait_for_discovery()
        metadata = schedule["metadata"]
        body = backup_from_schedule_template(
            schedule["spec"]["template"] if template is None else template, name=name, namespace=self.namespace,
            schedule_name=metadata["name"], schedule_labels=metadata.get("labels"),
            schedule_annotations=metadata.get("annotations"), labels=labels)
        return self.ctx.create_object(GROUP, VERSION, "backups", self.namespace, body)

    def wait_for_backup(self, name: str, *, require_completed: bool = True) -> Manifest:
        """Wait for the Backup to finish; fails fast when the BSL goes Unavailable meanwhile."""

        def probe() -> tuple[Manifest | None, str]:
            backup = self.ctx.get_object(GROUP, VERSION, "backups", self.namespace, name) or {}
            phase = str((backup.get("status") or {}).get("phase", ""))
            if phase in BACKUP_DONE:
                return backup, phase
            bsl_phase, _ = bsl_state(self.bsl())
            if bsl_phase == "Unavailable":
                self.check_bsl_available()
            return None, f"phase {phase or '(none)'}"

        backup = wait_until(f"Backup {name}", probe, timeout=self.ctx.timeout("backup"),
                            remedy=f"`velero backup describe {name} --details` / `velero backup logs {name}`")
        phase = backup["status"]["phase"]
        if require_completed and phase != "Completed":
            status = backup.get("status") or {}
            raise VeleroOperationFailed(
                f"Backup {name} ended {phase}: {status.get('failureReason', '')} "
                f"(errors {status.get('errors', 0)}, warnings {status.get('warnings', 0)}; "
                f"validation: {status.get('validationErrors', [])})",
                remedy=f"`velero backup logs {name}`")
        return backup

    def list_pod_volume_backups(self, backup_name: str) -> list[Manifest]:
        return self.ctx.list_objects(GROUP, VERSION, "podvolumebackups", self.namespace,
                                     label_selector=f"{BACKUP_NAME_LABEL}={velero_label_value(backup_name)}")

    def pod_volume_backups(self, backup_name: str) -> list[PodVolumeRecord]:
        return records(self.list_pod_volume_backups(backup_name))

    def check_pod_volume_backups(self, backup_name: str, expected: Sequence[tuple[str, str]]) -> list[PodVolumeRecord]:
        """Exactly the expected (namespace/pod, volume) PodVolumeBackups, each Completed (else a
        RestoreDrillError naming each difference)."""
        found = self.pod_volume_backups(backup_name)
        problems = compare_pod_volumes(operation="backup", expected=expected, records=found)
        if problems:
            raise RestoreDrillError(
                f"PodVolumeBackups of Backup {backup_name} do not match: {'; '.join(problems)}",
                remedy="a missing one means fs-backup skipped the volume (hostPath PV? no node-agent on the "
                "node? opted out by annotation?)")
        return found

    # ---- restores ---------------------------------------------------------------------------------
    def create_restore(self, name: str, *, backup_name: str, included_namespaces: Sequence[str] | None = None,
                       namespace_mapping: Mapping[str, str] | None = None,
                       restore_pvs: bool | None = None, include_cluster_resources: bool | None = None,
                       resource_modifier: str | None = None, labels: Mapping[str, str] | None = None,
                       restore_status: Sequence[str] = (), excluded_resources: Sequence[str] = ()) -> Manifest:
        self.check_bsl_available()
        self.wait_for_discovery()
        body = restore_manifest(name=name, backup_name=backup_name, namespace=self.namespace,
                                included_namespaces=included_namespaces, namespace_mapping=namespace_mapping,
                                restore_pvs=restore_pvs, include_cluster_resources=include_cluster_resources,
                                resource_modifier=resource_modifier, labels=labels, restore_status=restore_status,
                                excluded_resources=excluded_resources)
        return self.ctx.create_object(GROUP, VERSION, "restores", self.namespace, body)

    def wait_for_restore(self, name: str) -> Manifest:
        def probe() -> tuple[Manifest | None, str]:
            restore = self.ctx.get_object(GROUP, VERSION, "restores", self.namespace, name) or {}
            phase = str((restore.get("status") or {}).get("phase", ""))
            return (restore if phase in RESTORE_DONE else None), f"phase {phase or '(none)'}"

        return wait_until(f"Restore {name}", probe, timeout=self.ctx.timeout("restore"),
                          remedy=f"`velero restore describe {name} --details`")

    def list_pod_volume_restores(self, restore_name: str) -> list[Manifest]:
        return self.ctx.list_objects(GROUP, VERSION, "podvolumerestores", self.namespace,
                                     label_selector=f"{RESTORE_NAME_LABEL}={velero_label_value(restore_name)}")

    def pod_volume_restores(self, restore_name: str) -> list[PodVolumeRecord]:
        return records(self.list_pod_volume_restores(restore_name))

    def wait_for_pod_volume_restores(self, restore_name: str, *, expected: int | None = None) -> list[Manifest]:
        """Wait until the Restore is finished AND every PodVolumeRestore is (velero issue 9365).

        With `expected`, also until that many PodVolumeRestores exist: a Restore can report
        Completed before its PodVolumeRestores are even created.
        """

        def probe() -> tuple[list[Manifest] | None, str]:
            restore = self.ctx.get_object(GROUP, VERSION, "restores", self.namespace, restore_name) or {}
            phase = str((restore.get("status") or {}).get("phase", ""))
            items = self.list_pod_volume_restores(restore_name)
            phases = [str((item.get("status") or {}).get("phase", "")) for item in items]
            seen = f"Restore {phase or '(none)'}; PodVolumeRestores: {phases or 'none'}"
            enough = expected is None or len(items) >= expected
            # A Restore that failed will create no more PodVolumeRestores: stop and let the caller report.
            failed = phase in RESTORE_DONE - {"Completed"} and all(p in POD_VOLUME_DONE for p in phases)
            done = failed or (phase in RESTORE_DONE and enough and all(p in POD_VOLUME_DONE for p in phases))
            return (items if done else None), seen

        return wait_until(f"PodVolumeRestores of Restore {restore_name}", probe,
                          timeout=self.ctx.timeout("pod_volume_restores"),
                          remedy=f"`kubectl -n {self.namespace} get podvolumerestores -l "
                          f"{RESTORE_NAME_LABEL}={velero_label_value(restore_name)} -o yaml`")

    # ---- results and logs (velero's DownloadRequests) ------------------------------------------
    def download(self, kind: str, name: str, *, fetch: Callable[[str], bytes]) -> bytes:
        """What `velero restore describe/logs` read: a DownloadRequest's object, gunzipped.

        `fetch(url)` fetches the pre-signed URL from somewhere that resolves the object store's
        in-cluster name (the drill uses a pod in the cluster).
        """
        request = f"{name[:40]}-{kind.lower()[:12]}-{time.time_ns() % 10**8}"
        self.ctx.create_object(GROUP, VERSION, "downloadrequests", self.namespace, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "DownloadRequest",
            "metadata": {"name": request, "namespace": self.namespace},
            "spec": {"target": {"kind": kind, "name": name}}})

        def probe() -> tuple[str | None, str]:
            obj = self.ctx.get_object(GROUP, VERSION, "downloadrequests", self.namespace, request) or {}
            status = obj.get("status") or {}
            return (status.get("downloadURL") if status.get("phase") == "Processed" else None), str(status)

        try:
            url = wait_until(f"DownloadRequest {request} ({kind} {name})", probe,
                             timeout=self.ctx.timeout("download_request"), interval=1.0)
            data = fetch(url)
        finally:
            self.ctx.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, "downloadrequests",
                                                            request)
        return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data

    def restore_results(self, name: str, *, fetch: Callable[[str], bytes]) -> dict[str, Any]:
        """The Restore's errors and warnings, by scope (velero / cluster / namespace)."""
        data = self.download("RestoreResults", name, fetch=fetch)
        parsed = json.loads(data or b"{}")
        return parsed if isinstance(parsed, dict) else {}

    def backup_results(self, name: str, *, fetch: Callable[[str], bytes]) -> dict[str, Any]:
        """The Backup's errors and warnings, by scope, as `velero backup describe --details` reads them."""
        data = self.download("BackupResults", name, fetch=fetch)
        parsed = json.loads(data or b"{}")
        return parsed if isinstance(parsed, dict) else {}

    def get_backup(self, name: str) -> Manifest:
        return self.ctx.get_object(GROUP, VERSION, "backups", self.namespace, name) or {}

    def get_restore(self, name: str) -> Manifest:
        return self.ctx.get_object(GROUP, VERSION, "restores", self.namespace, name) or {}

    def request_backup_deletion(self, name: str) -> None:
        """What `velero backup delete NAME` does: a DeleteBackupRequest (the data in the store goes too)."""
        self.ctx.create_object(GROUP, VERSION, "deletebackuprequests", self.namespace, {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "DeleteBackupRequest",
            "metadata": {"generateName": f"{name[:50]}-", "namespace": self.namespace},
            "spec": {"backupName": name}})
