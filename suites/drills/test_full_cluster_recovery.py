"""The runbook's "Full Cluster Recovery Sequence": every app backed up, the cluster destroyed, a new one
built, the platform installed, the Backups synced, every app restored in Flux dependency order and
verified as the namespace drill verifies it (restoredrill.drill.fullcluster holds the sequence).

It takes the whole cluster away, so it runs last in a session (see fixtures/drills.py), only on a
cluster restoredrill made with the local provider, and not beside other xdist workers; anywhere else
it fails saying why (a selected drill that does not run proved nothing). `full_cluster_apps` limits it
to some apps (`--full-cluster-apps pelican,immich`).
"""

from __future__ import annotations

from collections.abc import Callable

import allure
import pytest

from fixtures.cluster import SHARED_CLUSTER_KEY
from fixtures.drills import attach_evidence, drill_apps, load_app_images, nothing_to_drill, remove_app
from fixtures.reporting import titled
from restoredrill.catalogue import Catalogue
from restoredrill.cluster import ClusterHandle, ClusterProvider
from restoredrill.config import DrillConfig
from restoredrill.drill.fullcluster import FullClusterRecovery, select_plans
from restoredrill.drill.gitops import GitOpsDeployment
from restoredrill.drill.plan import plan_app
from restoredrill.images.standins import AppImageLoader
from restoredrill.platform import ObjectStore
from restoredrill.platform.base import PlatformContext
from restoredrill.platform.images import DEFAULT_LOCAL_IMAGES, build_local_images

pytestmark = [pytest.mark.cluster, pytest.mark.platform, pytest.mark.drill, pytest.mark.full_cluster]


@titled("full-cluster-recovery")
def test_full_cluster_recovery(catalogue: Catalogue, drill_config: DrillConfig, worker_id: str, run_id: str,
                               record_result: Callable[..., None], request: pytest.FixtureRequest) -> None:
    apps = drill_apps(catalogue, drill_config)
    if not apps:
        nothing_to_drill(catalogue, drill_config).fail()
    plans = select_plans([plan_app(catalogue, app) for app in apps], drill_config.full_cluster_apps)
    cluster: ClusterHandle = request.getfixturevalue("cluster")
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
    cluster_provider: ClusterProvider = request.getfixturevalue("cluster_provider")
    gitops_deployment: GitOpsDeployment = request.getfixturevalue("gitops_deployment")
    object_store: ObjectStore = request.getfixturevalue("object_store")
    platform_images: dict[str, str] = request.getfixturevalue("platform_images")
    # What the recovered apps run, and nothing more: on the session's cluster now, on the new one in load_images.
    recovered = [app for app in apps if app.name in {plan.app for plan in plans}]
    app_images: AppImageLoader | None = request.getfixturevalue("app_images")
    image_lines = {app.name: app_images.load(app) for app in recovered} if app_images is not None else {}

    def load_images(provider: ClusterProvider, ctx: PlatformContext) -> None:
        provider.load_images(build_local_images(tuple(dict.fromkeys((*DEFAULT_LOCAL_IMAGES, object_store.kind)))))
        load_app_images(provider, catalogue, recovered, ctx.images)

    recovery = FullClusterRecovery(provider=cluster_provider, cluster_lock=shared.lock,
                                   ctx=request.getfixturevalue("platform_context"), object_store=object_store,
                                   gitops=gitops_deployment, velero=request.getfixturevalue("velero"),
                                   cnpg=request.getfixturevalue("cnpg"),
                                   plans=plans, busybox_image=platform_images["busybox"], run_id=run_id,
                                   worker_id=worker_id, load_images=load_images, out=gitops_deployment.out,
                                   restore_status=request.getfixturevalue("drill_config").restore_status)
    for drill in recovery.drills:
        drill.record.standins = [*drill.record.standins, *image_lines.get(drill.plan.app, [])]
    try:
        recovery.run()
    except BaseException:
        for drill in recovery.drills:
            if drill.record.restore or drill.record.backup:
                attach_evidence(drill)
        raise
    finally:
        record_result(**recovery.record.facts())
        allure.attach(str(recovery.record.facts()), name="full cluster recovery",
                      attachment_type=allure.attachment_type.TEXT)
    for drill in recovery.drills:
        remove_app(drill, drill.ctx, drill.flux, run_id=run_id, worker_id=worker_id)
