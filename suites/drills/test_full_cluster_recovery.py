"""The runbook's "Full Cluster Recovery Sequence": every app backed up, the cluster destroyed, a new one
built, the platform installed, the Backups synced, every app restored in Flux dependency order and
verified as the namespace drill verifies it; the NFS library intact without a restore.

It takes the whole cluster away, so it runs last in a session (see fixtures/drills.py), only on a
cluster restoredrill made with the local provider, and not beside other xdist workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import allure
import pytest

from fixtures.cluster import SHARED_CLUSTER_KEY
from fixtures.drills import attach_evidence, drill_apps, load_app_images, remove_app
from restoredrill.catalogue import Catalogue
from restoredrill.cluster import ClusterHandle, ClusterProvider
from restoredrill.config import DrillConfig
from restoredrill.drill.fullcluster import (
    FullClusterRecord,
    dependency_order,
    restore_app,
    timed,
    wait_for_synced_backups,
)
from restoredrill.drill.gitops import GitOpsDeployment
from restoredrill.drill.namespace import NamespaceDrill
from restoredrill.drill.plan import plan_app
from restoredrill.kube import load_api_client
from restoredrill.platform import CloudNativePG, ObjectStore, PlatformStack, Velero
from restoredrill.platform.base import PlatformContext
from restoredrill.platform.images import DEFAULT_LOCAL_IMAGES, build_local_images

pytestmark = [pytest.mark.cluster, pytest.mark.platform, pytest.mark.drill, pytest.mark.full_cluster]


def test_full_cluster_recovery(cluster: ClusterHandle, cluster_provider: ClusterProvider, catalogue: Catalogue,
                               drill_config: DrillConfig, gitops_deployment: GitOpsDeployment,
                               platform_context: PlatformContext, object_store: ObjectStore,
                               platform_images: dict[str, str], velero: Velero, cnpg: CloudNativePG, run_id: str,
                               worker_id: str, record_result: Callable[..., None],
                               request: pytest.FixtureRequest) -> None:
    if cluster.provider != "local" or not cluster.created_by_us:
        pytest.skip("full-cluster recovery destroys and rebuilds the cluster: only on one the local provider made")
    if worker_id != "master":
        pytest.skip("full-cluster recovery takes the whole cluster away: run it without xdist (-n)")
    shared = request.config.stash.get(SHARED_CLUSTER_KEY, None)
    if shared is None or shared.others():
        pytest.skip("full-cluster recovery takes the whole cluster away and another live session uses it: "
                    f"{shared.others() if shared else 'unknown users'}")
    allure.dynamic.epic("cluster")
    allure.dynamic.feature("full cluster recovery")
    allure.dynamic.story("full cluster recovery")
    allure.dynamic.label("scenario", "full-cluster-recovery")
    record = FullClusterRecord()
    plans = dependency_order([plan_app(catalogue, app) for app in drill_apps(catalogue, drill_config)])
    record.apps = [plan.app for plan in plans]
    drills = [NamespaceDrill(plan=plan, ctx=platform_context, velero=velero, flux=gitops_deployment.flux, cnpg=cnpg,
                             gitops=gitops_deployment, run_id=run_id, busybox_image=platform_images["busybox"],
                             out=gitops_deployment.out)
              for plan in plans]
    def step(name: str, action: Callable[[], Any]) -> Any:
        return timed(record, name, action, out=gitops_deployment.out)

    started = time.monotonic()
    try:
        for drill in drills:  # what the nightly Schedules leave behind
            for step, action in (("deploy", drill.deploy), ("seed", drill.seed), ("record", drill.take_snapshot),
                                 ("backup", drill.backup), ("sentinel", drill.write_sentinels)):
                drill.step(step, action)
        record.steps.append(("back up every app", round(time.monotonic() - started, 1)))
        sequence = time.monotonic()

        # 1. Provision the cluster: the old one is destroyed; the object store and NFS folders stay.
        with shared.lock:  # nobody joins the cluster while it is replaced
            step("destroy the cluster", cluster_provider.down)
            handle = step("new cluster up", cluster_provider.up)
        ctx = PlatformContext(cluster=handle, api=load_api_client(handle.kubeconfig, handle.context),
                              images=platform_context.images)

        # 2-3. Infrastructure and backup storage: the platform, with the store's old data and credentials.
        def platform() -> PlatformStack:
            store = object_store.kind
            cluster_provider.load_images(build_local_images(tuple(dict.fromkeys((*DEFAULT_LOCAL_IMAGES, store)))))
            load_app_images(cluster_provider, catalogue, [a for a in catalogue.apps if a.name in record.apps],
                            ctx.images)
            stack = PlatformStack.create(ctx, object_store=store, data_dir=object_store.data_dir,
                                         credentials=object_store.credentials, reuse_installed=False)
            stack.install()
            return stack

        stack = step("platform installed", platform)
        gitops = GitOpsDeployment(ctx=ctx, flux=stack.flux, catalogue=catalogue, run_id=run_id, worker_id=worker_id,
                                  sops_age_key=drill_config.sops_age_key, out=gitops_deployment.out)

        def flux_source() -> None:
            if any(m.group == "gateway.networking.k8s.io" for m in catalogue.deployed()):
                gitops.install_gateway_api(stack.velero)
            gitops.alias_storage_classes(sorted({c for plan in plans for c in plan.storage_classes}))
            gitops.publish()

        step("Flux source ready", flux_source)
        synced = step("backups synced", lambda: wait_for_synced_backups(
            _rebind(drills[0], ctx, stack, gitops), {d.record.backup: d.record.pod_volume_backups for d in drills},
            timeout=ctx.timeout("backup")))
        record.synced_backups = len(synced)

        # 4-5. Suspend and restore every app, in dependency order; verify each.
        for drill in drills:
            _rebind(drill, ctx, stack, gitops)
            drill.record.scenario = "full-cluster-recovery"
            step(f"restore {drill.plan.app}", lambda d=drill: restore_app(d))
            record.rto_s[drill.plan.app] = drill.record.rto_s
        record.total_s = round(time.monotonic() - sequence, 1)
    except BaseException:
        for drill in drills:
            if drill.record.restore or drill.record.backup:
                attach_evidence(drill)
        raise
    finally:
        record_result(**record.facts())
        allure.attach(str(record.facts()), name="full cluster recovery", attachment_type=allure.attachment_type.TEXT)
    for drill in drills:
        remove_app(drill, drill.ctx, drill.flux, run_id=run_id, worker_id=worker_id)


def _rebind(drill: NamespaceDrill, ctx: PlatformContext, stack: PlatformStack,
            gitops: GitOpsDeployment) -> NamespaceDrill:
    drill.ctx, drill.velero, drill.flux, drill.cnpg, drill.gitops = ctx, stack.velero, stack.flux, stack.cnpg, gitops
    return drill
