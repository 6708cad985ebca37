"""The CloudNativePG operator, and helpers for the Clusters and Backups a drill makes.

The operator's manifests are upstream's own `config/default` of the pinned module, rendered with
`kubectl kustomize` (CRDs, RBAC, webhooks, the `cnpg-controller-manager` Deployment); we only set
the operator image (and OPERATOR_IMAGE_NAME, which instance pods copy `/manager` from) and
POSTGRES_IMAGE_NAME from the image set. 1.28 keeps the in-tree `barmanObjectStore` the runbook's
Option B uses (deprecated since 1.26), so backups go to the object store's CNPG bucket with the
image's barman-cloud tools.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from restoredrill.errors import CommandError, NotOursError
from restoredrill.platform.base import (
    Manifest,
    PlatformContext,
    PlatformError,
    image_ref,
    load_yaml_documents,
    module_source_dir,
    pod_name,
)
from restoredrill.platform.objectstore import ObjectStoreCredentials, S3Endpoint
from restoredrill.waits import wait_until

GROUP, VERSION = "postgresql.cnpg.io", "v1"
NAMESPACE = "cnpg-system"
DEPLOYMENT = "cnpg-controller-manager"
MUTATING_WEBHOOK = "cnpg-mutating-webhook-configuration"
HEALTHY = "Cluster in healthy state"
S3_SECRET = "cnpg-s3-credentials"


def module_dir() -> Path:
    """The pinned CNPG module's source in the Go module cache (downloaded on first use)."""
    return module_source_dir("cloudnative-pg")


def customize_operator(manifests: list[Manifest], images: Mapping[str, str]) -> list[Manifest]:
    """Upstream's rendered manifests with our images and pull policy (pure, unit-tested)."""
    operator = image_ref(images, "cnpg-operator")
    postgres = image_ref(images, "postgresql")
    result = []
    for manifest in manifests:
        if manifest.get("kind") == "Deployment" and manifest["metadata"]["name"] == DEPLOYMENT:
            container = manifest["spec"]["template"]["spec"]["containers"][0]
            container["image"] = operator
            container["imagePullPolicy"] = "IfNotPresent"
            env = [e for e in container.get("env", []) if e["name"] not in ("OPERATOR_IMAGE_NAME",
                                                                              "POSTGRES_IMAGE_NAME")]
            env += [{"name": "OPERATOR_IMAGE_NAME", "value": operator},
                    {"name": "POSTGRES_IMAGE_NAME", "value": postgres}]
            container["env"] = env
        result.append(manifest)
    return result


def s3_credentials_secret(credentials: ObjectStoreCredentials, *, namespace: str) -> Manifest:
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": S3_SECRET, "namespace": namespace},
        "stringData": {"ACCESS_KEY_ID": credentials.access_key, "ACCESS_SECRET_KEY": credentials.secret_key},
    }


def barman_object_store(endpoint: S3Endpoint, *, server_name: str | None = None) -> Manifest:
    store: dict[str, Any] = {
        "destinationPath": f"s3://{endpoint.cnpg_bucket}/",
        "endpointURL": endpoint.url,
        "s3Credentials": {
            "accessKeyId": {"name": S3_SECRET, "key": "ACCESS_KEY_ID"},
            "secretAccessKey": {"name": S3_SECRET, "key": "ACCESS_SECRET_KEY"},
        },
        "wal": {"compression": "gzip"},
    }
    if server_name:
        store["serverName"] = server_name
    return store


def cluster_manifest(*, name: str, namespace: str, image: str, endpoint: S3Endpoint, instances: int = 1,
                     storage_size: str = "1Gi", storage_class: str | None = None,
                     recover_from: str | None = None) -> Manifest:
    """A CNPG Cluster with in-tree barmanObjectStore backups; `recover_from` bootstraps it from the
    backups of the Cluster of that name (`bootstrap.recovery` from an external cluster)."""
    storage: dict[str, Any] = {"size": storage_size}
    if storage_class:
        storage["storageClass"] = storage_class
    spec: dict[str, Any] = {
        "instances": instances,
        "imageName": image,
        "imagePullPolicy": "IfNotPresent",
        "storage": storage,
        "backup": {"barmanObjectStore": barman_object_store(endpoint, server_name=name)},
        # Small and quick on 2 cores.
        "postgresql": {"parameters": {"shared_buffers": "32MB", "max_connections": "30"}},
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}},
    }
    if recover_from:
        spec["bootstrap"] = {"recovery": {"source": recover_from}}
        spec["externalClusters"] = [{"name": recover_from,
                                     "barmanObjectStore": barman_object_store(endpoint, server_name=recover_from)}]
    else:
        spec["bootstrap"] = {"initdb": {"database": "app", "owner": "app"}}
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Cluster",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def backup_manifest(*, name: str, namespace: str, cluster: str) -> Manifest:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "Backup", "metadata": {"name": name, "namespace": namespace},
            "spec": {"cluster": {"name": cluster}, "method": "barmanObjectStore"}}


class CloudNativePG:
    """Install / wait_ready / cluster helpers / uninstall of the CNPG operator."""

    def __init__(self, ctx: PlatformContext, *, endpoint: S3Endpoint | None,
                 credentials: ObjectStoreCredentials | None) -> None:
        self.ctx = ctx
        self.endpoint = endpoint
        self.credentials = credentials

    @classmethod
    def existing(cls, ctx: PlatformContext) -> CloudNativePG:
        """The cluster's own operator (on a cluster restoredrill did not create): watched, never installed."""
        return cls(ctx, endpoint=None, credentials=None)

    def store(self) -> tuple[S3Endpoint, ObjectStoreCredentials]:
        if self.endpoint is None or self.credentials is None:
            raise NotOursError("CloudNativePG here is the cluster's own: restoredrill makes no Clusters with "
                               "object-store credentials on it", remedy="run CNPG options B and C on a cluster "
                               "restoredrill creates (--cluster-provider local or kind)")
        return self.endpoint, self.credentials

    def manifests(self) -> list[Manifest]:
        rendered = self.ctx.kubectl(["kustomize", str(module_dir() / "config" / "default")],
                                    timeout=self.ctx.timeout("kustomize_build"))
        return customize_operator(load_yaml_documents(rendered), self.ctx.images)

    def install(self) -> None:
        self.store()  # refuses on the cluster's own operator
        manifests = self.manifests()
        crds = [m for m in manifests if m["kind"] == "CustomResourceDefinition"]
        self.ctx.apply(crds)
        self.ctx.wait_for_crds_established(["clusters.postgresql.cnpg.io", "backups.postgresql.cnpg.io"])
        self.ctx.apply([m for m in manifests if m["kind"] != "CustomResourceDefinition"])

    def wait_ready(self) -> None:
        """Operator pod Ready and its webhooks have a CA (the operator injects its own)."""
        self.ctx.wait_for_pods_ready(namespace=NAMESPACE, selector="app.kubernetes.io/name=cloudnative-pg",
                                     what="CNPG operator", expected=1)
        from kubernetes import client

        admission = client.AdmissionregistrationV1Api(self.ctx.api)

        def injected() -> tuple[bool | None, str]:
            config = admission.read_mutating_webhook_configuration(MUTATING_WEBHOOK)
            bundles = [w.client_config.ca_bundle for w in config.webhooks or []]
            return (True if bundles and all(bundles) else None), f"{sum(map(bool, bundles))}/{len(bundles)} CA bundles"

        wait_until("CNPG webhook CA injection", injected, timeout=self.ctx.timeout("platform_ready"))

    def uninstall(self) -> None:
        manifests = self.manifests()
        self.ctx.delete([m for m in manifests if m["kind"] not in ("CustomResourceDefinition", "Namespace")])
        self.ctx.delete([m for m in manifests if m["kind"] == "Namespace"], wait=True)

    # ---- clusters -----------------------------------------------------------------------------------
    def create_cluster(self, *, name: str, namespace: str, recover_from: str | None = None,
                       storage_class: str | None = None) -> Manifest:
        """A one-instance Cluster (with its S3 credentials Secret) in an existing namespace."""
        endpoint, credentials = self.store()
        self.ctx.apply([s3_credentials_secret(credentials, namespace=namespace)])
        body = cluster_manifest(name=name, namespace=namespace, image=image_ref(self.ctx.images, "postgresql"),
                                endpoint=endpoint, recover_from=recover_from, storage_class=storage_class)
        return self.ctx.create_object(GROUP, VERSION, "clusters", namespace, body)

    def wait_for_cluster_healthy(self, *, name: str, namespace: str) -> Manifest:
        def probe() -> tuple[Manifest | None, str]:
            cluster = self.ctx.get_object(GROUP, VERSION, "clusters", namespace, name) or {}
            status = cluster.get("status") or {}
            pods = self.ctx.core.list_namespaced_pod(namespace, label_selector=f"cnpg.io/cluster={name}").items
            from restoredrill.platform.base import check_pods_can_start

            check_pods_can_start(pods)
            ready = status.get("readyInstances", 0) == cluster.get("spec", {}).get("instances", -1)
            return (cluster if status.get("phase") == HEALTHY and ready else None), (
                f"phase {status.get('phase', '(none)')!r}, ready {status.get('readyInstances', 0)}; "
                f"{status.get('phaseReason', '')}")

        return wait_until(f"CNPG Cluster {namespace}/{name} to be healthy", probe,
                          timeout=self.ctx.timeout("cnpg_cluster_ready"),
                          remedy=f"`kubectl -n {namespace} describe cluster {name}`; operator logs in {NAMESPACE}")

    def create_backup(self, *, name: str, namespace: str, cluster: str) -> Manifest:
        return self.ctx.create_object(GROUP, VERSION, "backups", namespace,
                                      backup_manifest(name=name, namespace=namespace, cluster=cluster))

    def wait_for_backup(self, *, name: str, namespace: str) -> Manifest:
        def probe() -> tuple[Manifest | None, str]:
            backup = self.ctx.get_object(GROUP, VERSION, "backups", namespace, name) or {}
            status = backup.get("status") or {}
            phase = status.get("phase", "")
            if phase == "failed":
                raise PlatformError(f"CNPG Backup {namespace}/{name} failed: {status.get('error', '')}",
                                    remedy="check the instance pod's logs (barman-cloud-backup) and the object store")
            return (backup if phase == "completed" else None), f"phase {phase or '(none)'}"

        return wait_until(f"CNPG Backup {namespace}/{name}", probe, timeout=self.ctx.timeout("cnpg_backup"))

    def primary_pod(self, *, cluster: str, namespace: str) -> str:
        pods = self.ctx.core.list_namespaced_pod(
            namespace, label_selector=f"cnpg.io/cluster={cluster},cnpg.io/instanceRole=primary").items
        if not pods:
            raise PlatformError(f"CNPG Cluster {namespace}/{cluster} has no primary pod")
        return pod_name(pods[0]).partition("/")[2]

    def psql(self, *, cluster: str, namespace: str, sql: str, database: str = "app") -> str:
        """Run `sql` on the primary as the postgres superuser; tuples only, unaligned."""
        pod = self.primary_pod(cluster=cluster, namespace=namespace)
        try:
            return self.ctx.kubectl(["-n", namespace, "exec", pod, "-c", "postgres", "--", "psql", "-X", "-v",
                                     "ON_ERROR_STOP=1", "-U", "postgres", "-d", database, "-tAc", sql])
        except CommandError as error:
            raise PlatformError(f"psql on {namespace}/{pod} failed: {error.output.strip()[-500:]}") from error
