"""Figures of the backup platform on a running cluster, printed (not asserted).

  time from an empty cluster to all four components ready (object store, Velero + node-agent,
      CNPG, Flux), per step and in total (aim: 120 s warm on 2 cores)
  memory they use: working set per component namespace, from the kubelet's summary API
  one PVC (1 MiB of data) backed up with fs-backup, and restored: seconds for each

The cluster must be up (`restoredrill cluster up`, or kind); on the local provider the bench builds
(cached) and loads the platform's images. `--fresh` uninstalls the platform first, so the install is
timed from an empty cluster: it deletes the namespaces flux-system, velero, cnpg-system and the
object store's, so it refuses any cluster restoredrill did not create (today: anything but the
running local cluster, whose kubeconfig is the default on `--provider local`).

Run: `.venv/bin/python bench/backup_platform.py [--provider local] [--fresh]`, or
`--provider kind --kubeconfig PATH` (without `--fresh`).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import json
import time
import uuid
from typing import Any

from restoredrill.cluster import ClusterHandle
from restoredrill.cluster.local import LocalCluster, LocalClusterConfig
from restoredrill.cluster.namespaces import create_owned_namespace, delete_owned_namespace, new_run_id
from restoredrill.errors import NotOursError, RestoreDrillError
from restoredrill.kube import load_api_client
from restoredrill.pins import cache_dir
from restoredrill.platform import PlatformContext, PlatformStack
from restoredrill.platform.images import DEFAULT_LOCAL_IMAGES, build_local_images, platform_image_set
from restoredrill.timeouts import timeout
from restoredrill.waits import wait_until

MIB = 1024 * 1024
COMPONENT_NAMESPACES = {"object store": None, "velero": "velero", "cnpg": "cnpg-system", "flux": "flux-system"}


def memory_by_namespace(ctx: PlatformContext) -> dict[str, int]:
    """Working-set bytes of all pods per namespace, summed over nodes (kubelet summary API)."""
    totals: dict[str, int] = {}
    for node in ctx.core.list_node().items:
        name = node.metadata.name if node.metadata else ""
        raw = ctx.kubectl(["get", "--raw", f"/api/v1/nodes/{name}/proxy/stats/summary"])
        for pod in json.loads(raw).get("pods", []):
            namespace = pod["podRef"]["namespace"]
            totals[namespace] = totals.get(namespace, 0) + int((pod.get("memory") or {}).get("workingSetBytes", 0))
    return totals


def settled_memory(ctx: PlatformContext, *, namespaces: list[str]) -> dict[str, int]:
    """Memory per namespace once the kubelet reports every one of `namespaces`: right after an
    install its summary API has no stats yet for new pods, and a 0 would be a wrong figure."""
    def probe() -> tuple[dict[str, int] | None, str]:
        memory = memory_by_namespace(ctx)
        missing = [ns for ns in namespaces if not memory.get(ns)]
        return (None if missing else memory), f"no memory stats yet for {', '.join(missing) or 'none'}"

    return wait_until("the kubelet's memory stats of the platform's pods", probe,
                      timeout=timeout("pod_ready"), interval=5)


def single_pvc_drill(stack: PlatformStack, ctx: PlatformContext) -> tuple[float, float]:
    run_id = new_run_id()
    namespace = f"rd-bench-{uuid.uuid4().hex[:6]}"
    create_owned_namespace(ctx.api, namespace, run_id=run_id)
    try:
        ctx.apply([
            {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data", "namespace": namespace},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}}},
            {"apiVersion": "v1", "kind": "Pod",
             "metadata": {"name": "writer", "namespace": namespace, "labels": {"app": "writer"}},
             "spec": {"containers": [{"name": "writer", "image": ctx.images["busybox"],
                                      "imagePullPolicy": "IfNotPresent",
                                      "command": ["sh", "-c", "[ -f /data/file ] || head -c 1048576 /dev/urandom "
                                                  "> /data/file; exec sleep 100000"],
                                      "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                      "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
                      "terminationGracePeriodSeconds": 1}},
        ])
        ctx.wait_for_pods_ready(namespace=namespace, selector="app=writer", what="writer", expected=1,
                                timeout_name="pod_ready")
        backup = f"{namespace}-b"
        started = time.monotonic()
        stack.velero.create_backup_from_schedule_template(
            {"includedNamespaces": [namespace], "defaultVolumesToFsBackup": True, "storageLocation": "default",
             "ttl": "1h0m0s"}, backup)
        stack.velero.wait_for_backup(backup)
        backup_seconds = time.monotonic() - started
        stack.velero.check_pod_volume_backups(backup, [(f"{namespace}/writer", "data")])
        delete_owned_namespace(ctx.api, namespace, run_id=run_id, wait_timeout=timeout("namespace_deleted"))
        restore = f"{namespace}-r"
        started = time.monotonic()
        stack.velero.create_restore(restore, backup_name=backup, included_namespaces=[namespace])
        stack.velero.wait_for_pod_volume_restores(restore, expected=1)
        restore_seconds = time.monotonic() - started
        return backup_seconds, restore_seconds
    finally:
        delete_owned_namespace(ctx.api, namespace, run_id=run_id, wait_timeout=timeout("namespace_deleted"))


def bench_cluster(*, provider: str, kubeconfig: Path | None, context: str | None) -> ClusterHandle:
    """The cluster to measure; `created_by_us` only for the running local cluster's own kubeconfig."""
    if provider == "local":
        local = LocalCluster(LocalClusterConfig(), out=lambda line: None)
        if kubeconfig is None or kubeconfig.resolve() == local.layout.kubeconfig.resolve():
            if not local.healthy():
                raise RestoreDrillError(f"no running local cluster in {local.layout.root}",
                                        remedy="`restoredrill cluster up` first")
            return local.handle()
    if kubeconfig is None:
        raise RestoreDrillError(f"--provider {provider} needs --kubeconfig")
    return ClusterHandle(provider=provider, name="bench", kubeconfig=kubeconfig, context=context,
                         created_by_us=False)


def refuse_fresh_on_a_foreign_cluster(cluster: ClusterHandle) -> None:
    """`--fresh` deletes the platform's namespaces: only on a cluster restoredrill created."""
    if not cluster.created_by_us:
        raise NotOursError(
            f"--fresh would delete the namespaces {', '.join(ns for ns in COMPONENT_NAMESPACES.values() if ns)} "
            f"and the object store's on the cluster of {cluster.kubeconfig}, which restoredrill did not create",
            remedy="run the bench on the local cluster (`restoredrill cluster up`, then omit --kubeconfig), "
            "or drop --fresh to measure the platform as it is installed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", type=Path, default=None,
                        help="default on --provider local: the running local cluster's")
    parser.add_argument("--context", default=None)
    parser.add_argument("--provider", default="local", choices=("local", "kind"))
    parser.add_argument("--object-store", default="minio", choices=("minio", "seaweedfs"))
    parser.add_argument("--data-dir", type=Path, default=None, help="object store host directory")
    parser.add_argument("--fresh", action="store_true", help="uninstall the platform first (time from empty)")
    args = parser.parse_args()

    cluster = bench_cluster(provider=args.provider, kubeconfig=args.kubeconfig, context=args.context)
    if args.fresh:
        refuse_fresh_on_a_foreign_cluster(cluster)
    ctx = PlatformContext(cluster=cluster, api=load_api_client(cluster.kubeconfig, cluster.context),
                          images=platform_image_set(args.provider), out=lambda line: None)
    if cluster.provider == "local" and cluster.created_by_us:
        # A fresh local cluster has none of the platform's images: build (cached) and import them.
        LocalCluster(LocalClusterConfig()).load_images(build_local_images(DEFAULT_LOCAL_IMAGES))
    data_dir = (args.data_dir or cache_dir() / "object-store" / f"bench-{args.object_store}").resolve()
    if args.fresh:
        PlatformStack.create(ctx, object_store=args.object_store, data_dir=data_dir, reuse_installed=False).uninstall()
    stack = PlatformStack.create(ctx, object_store=args.object_store, data_dir=data_dir,
                                 reuse_installed=not args.fresh)
    seconds = stack.install()
    for step, value in seconds.items():
        print(f"install {step:28} {value:7.1f} s")
    store_ns = stack.object_store.namespace
    backup_seconds, restore_seconds = single_pvc_drill(stack, ctx)
    memory = settled_memory(ctx, namespaces=[ns or store_ns for ns in COMPONENT_NAMESPACES.values()])
    for component, namespace in COMPONENT_NAMESPACES.items():
        used = memory.get(namespace or store_ns, 0)
        print(f"memory  {component:28} {used / MIB:7.1f} MiB")
    print(f"single-PVC fs-backup                 {backup_seconds:7.1f} s")
    print(f"single-PVC restore (PVRs Completed)  {restore_seconds:7.1f} s")
    summary: dict[str, Any] = {"install": seconds, "memory_mib": {k: round(memory.get(v or store_ns, 0) / MIB, 1)
                                                                   for k, v in COMPONENT_NAMESPACES.items()},
                               "backup_seconds": round(backup_seconds, 1), "restore_seconds": round(restore_seconds, 1)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except RestoreDrillError as error:
        print(f"bench/backup_platform.py: {error}", file=sys.stderr)
        raise SystemExit(2) from None
