"""What backup platform a cluster restoredrill did not create already runs (read-only).

On such a cluster restoredrill never installs anything of its own: it uses the user's Velero (and,
for an app with a CNPG Cluster, the user's CloudNativePG operator), says which it found, and
refuses with the missing piece named when one is not there. Discovery only reads: CRDs,
Deployments, DaemonSets and BackupStorageLocations.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from restoredrill.errors import RestoreDrillError
from restoredrill.platform.base import PlatformContext
from restoredrill.platform.velero import GROUP, VERSION

VELERO_CRDS = ("backups.velero.io", "restores.velero.io", "podvolumerestores.velero.io",
               "backupstoragelocations.velero.io")
CNPG_CRD = "clusters.postgresql.cnpg.io"
FLUX_CRD = "kustomizations.kustomize.toolkit.fluxcd.io"


class PlatformMissing(RestoreDrillError):
    """The cluster lacks a part the drill needs, and restoredrill installs nothing on a cluster it did
    not create."""


@dataclass(frozen=True)
class DiscoveredPlatform:
    velero_namespace: str
    velero_image: str
    bsl: str  # the BackupStorageLocation marked default (or named `default`)
    node_agent: bool
    cnpg_namespace: str | None = None
    flux_namespace: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        parts = [f"Velero in {self.velero_namespace} ({self.velero_image}), BackupStorageLocation {self.bsl}, "
                 f"node-agent {'running' if self.node_agent else 'NOT deployed'}"]
        parts.append(f"CloudNativePG operator in {self.cnpg_namespace}" if self.cnpg_namespace
                     else "no CloudNativePG operator")
        parts.append(f"Flux in {self.flux_namespace}" if self.flux_namespace else "no Flux")
        return "the cluster's own platform (nothing of restoredrill's installed): " + "; ".join(parts)


def _crds(ctx: PlatformContext) -> set[str]:
    extensions = client.ApiextensionsV1Api(ctx.api)
    listed = extensions.list_custom_resource_definition().items
    return {str(crd["metadata"]["name"]) for crd in ctx.as_manifests(listed)}


def _deployment_with_image(ctx: PlatformContext, fragment: str, *, name: str | None = None) -> tuple[str, str] | None:
    """(namespace, image) of the first Deployment whose container image contains `fragment`."""
    for deployment in ctx.as_manifests(ctx.apps.list_deployment_for_all_namespaces().items):
        metadata = deployment["metadata"]
        if name is not None and metadata["name"] != name:
            continue
        for container in deployment["spec"]["template"]["spec"].get("containers") or []:
            if fragment in str(container.get("image")):
                return str(metadata["namespace"]), str(container["image"])
    return None


def discover_platform(ctx: PlatformContext, *, needs_cnpg: bool = False) -> DiscoveredPlatform:
    """The user's Velero (required), node-agent, default BSL, CNPG operator and Flux, or PlatformMissing."""
    crds = _crds(ctx)
    missing_crds = [name for name in VELERO_CRDS if name not in crds]
    if missing_crds:
        raise PlatformMissing(f"this cluster has no Velero: CustomResourceDefinitions {', '.join(missing_crds)} are "
                              "missing", remedy="install Velero on the cluster (restoredrill installs nothing on a "
                              "cluster it did not create), or drill with --cluster-provider local or kind")
    velero = _deployment_with_image(ctx, "velero", name="velero")
    if velero is None:
        raise PlatformMissing("this cluster has Velero's CRDs but no Deployment `velero` running Velero's image",
                              remedy="check that the Velero server is deployed (`kubectl get deploy -A | grep velero`)")
    namespace, image = velero
    node_agent = False
    try:
        (agent,) = ctx.as_manifests([ctx.apps.read_namespaced_daemon_set("node-agent", namespace)])
        node_agent = bool((agent.get("status") or {}).get("numberReady"))
    except ApiException as error:
        if error.status != 404:
            raise
    if not node_agent:
        raise PlatformMissing(f"Velero in {namespace} has no running node-agent DaemonSet: fs-backup would copy no "
                              "volume data", remedy="deploy the node-agent (Helm value deployNodeAgent: true)")
    locations = ctx.list_objects(GROUP, VERSION, "backupstoragelocations", namespace)
    default = next((b for b in locations if (b.get("spec") or {}).get("default")), None) or next(
        (b for b in locations if b["metadata"]["name"] == "default"), None)
    if default is None:
        raise PlatformMissing(f"Velero in {namespace} has no default BackupStorageLocation",
                              remedy="mark one BSL `spec.default: true` (`velero backup-location set --default`)")
    cnpg = _deployment_with_image(ctx, "cloudnative-pg") if CNPG_CRD in crds else None
    if needs_cnpg and cnpg is None:
        raise PlatformMissing("the app has a CNPG Cluster but this cluster runs no CloudNativePG operator",
                              remedy="install the CloudNativePG operator, or drill this app on --cluster-provider "
                              "local or kind")
    flux = _deployment_with_image(ctx, "kustomize-controller") if FLUX_CRD in crds else None
    return DiscoveredPlatform(velero_namespace=namespace, velero_image=image, bsl=str(default["metadata"]["name"]),
                              node_agent=node_agent, cnpg_namespace=cnpg[0] if cnpg else None,
                              flux_namespace=flux[0] if flux else None)
