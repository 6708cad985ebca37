"""Database drills that cannot lie, on a real cluster: a hook that did not run, a row deleted after
the restore, a CNPG recovery pointed at an empty bucket.

pricebuddy (in-pod MariaDB with freeze hooks in its Schedule) is deployed and seeded once; the
hook test backs it up with the hooks aimed at no pod, then the real drill runs to the restore and
the row test deletes a row from the restored table.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable, Iterator

import pytest

from restoredrill.catalogue import App, Catalogue
from restoredrill.drill import data
from restoredrill.drill.databases import CnpgRecovery, RecoveryFailed
from restoredrill.drill.namespace import DrillFailed, NamespaceDrill
from restoredrill.platform import CloudNativePG, ObjectStore
from restoredrill.platform.base import PlatformContext

pytestmark = [pytest.mark.cluster, pytest.mark.platform, pytest.mark.drill]


def app_named(catalogue: Catalogue, name: str) -> App:
    return next(app for app in catalogue.apps if app.name == name)


@pytest.fixture(scope="module")
def seeded(catalogue: Catalogue, module_namespace_drill: Callable[[App], NamespaceDrill]) -> NamespaceDrill:
    drill = module_namespace_drill(app_named(catalogue, "pricebuddy"))
    assert drill.plan.mysql, "the example's pricebuddy runs an in-pod MariaDB"
    drill.step("deploy", drill.deploy)
    drill.step("seed", drill.seed)
    drill.step("record", drill.take_snapshot)
    return drill


DrillFactory = Callable[[App], NamespaceDrill]


def test_a_hook_that_did_not_run_makes_the_backup_inconsistent(seeded: NamespaceDrill, catalogue: Catalogue,
                                                               module_namespace_drill: DrillFactory) -> None:
    """The Schedule's freeze hooks select no pod (a relabelled database): Velero runs none, silently."""
    schedule = copy.deepcopy(seeded.plan.schedule)
    for resource in schedule["spec"]["template"]["hooks"]["resources"]:
        resource["labelSelector"] = {"matchLabels": {"app.kubernetes.io/component": "no-such-database"}}
    drill = module_namespace_drill(app_named(catalogue, "pricebuddy"))
    drill.plan = dataclasses.replace(drill.plan, schedule=schedule)
    drill.snapshot = seeded.snapshot
    with pytest.raises(DrillFailed) as caught:
        drill.backup()
    message = str(caught.value)
    assert "backup hooks" in message and "attempted 0" in message and "not consistent" in message, message


@pytest.fixture(scope="module")
def restored(seeded: NamespaceDrill) -> Iterator[NamespaceDrill]:
    for step, action in (("backup", seeded.backup), ("sentinel", seeded.write_sentinels),
                         ("suspend", seeded.suspend), ("destroy", seeded.destroy), ("restore", seeded.restore)):
        seeded.step(step, action)
    yield seeded


def test_the_freeze_hooks_ran_for_the_real_backup(restored: NamespaceDrill) -> None:
    hooks = restored.record.hooks
    assert int(hooks.get("hooksAttempted", 0)) == 2 and int(hooks.get("hooksFailed", 0)) == 0, hooks


def test_the_restored_database_verifies(restored: NamespaceDrill) -> None:
    restored.step("verify", restored.verify)
    assert restored.record.rows_verified == data.ROWS


def test_a_row_deleted_after_the_restore_fails_the_drill(restored: NamespaceDrill) -> None:
    workload = restored.plan.mysql[0].workload
    restored.mysql(workload, f"DELETE FROM {data.TABLE} WHERE id = 500;")
    with pytest.raises(DrillFailed) as caught:
        restored.verify()
    message = str(caught.value)
    assert f"mysql:{workload}: table {data.TABLE} has {data.ROWS - 1} rows" in message, message
    assert f"{data.ROWS} rows" in message


def test_a_cnpg_recovery_from_an_empty_bucket_fails_at_once(catalogue: Catalogue, platform_context: PlatformContext,
                                                            cnpg: CloudNativePG, object_store: ObjectStore,
                                                            platform_images: dict[str, str]) -> None:
    cluster = catalogue.cnpg_clusters[0]
    with object_store.client() as s3:
        recovery = CnpgRecovery(ctx=platform_context, cnpg=cnpg, s3=s3, source_namespace=str(cluster.namespace),
                                cluster=cluster.manifest.obj, database="immich", image=platform_images["postgresql"])
        started = time.monotonic()
        with pytest.raises(RecoveryFailed) as caught:
            recovery.recover_from_object_store(namespace="restoredrill-never-created", server_name="nothing-here")
    message = str(caught.value)
    assert f"s3://{object_store.endpoint.cnpg_bucket}/nothing-here/base/" in message, message
    assert "serverName" in message
    print(f"empty-bucket recovery refused in {time.monotonic() - started:.2f} s")
