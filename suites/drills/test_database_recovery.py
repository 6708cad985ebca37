"""The runbook's "CNPG Database Recovery" options B and C for every app with a CNPG Cluster (immich).

Option A, the Velero PVC restore with the operator re-adopting the data, is that app's namespace
drill (test_namespace_restore). Here the app is deployed and seeded once; then
- B configures barman backups on the live Cluster (TD-004's fix), takes a CNPG Backup and
  bootstraps a new Cluster from the object store in a namespace of its own;
- C dumps the database with the runbook's pg_dump and restores it into a fresh initdb Cluster.
Both are verified by the drill table's row count and content digest, and timed (rto_s).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import allure
import pytest

from fixtures.drills import drill_apps, drill_parameters
from fixtures.gitops import session_catalogue
from fixtures.options import DRILL_CONFIG_KEY
from fixtures.reporting import titled
from restoredrill.catalogue import App, Catalogue
from restoredrill.cluster.namespaces import NamespaceFactory
from restoredrill.drill.databases import CnpgRecovery
from restoredrill.drill.namespace import NamespaceDrill
from restoredrill.platform import ObjectStore

pytestmark = [pytest.mark.cluster, pytest.mark.platform, pytest.mark.drill]


class RunbookWarning(UserWarning):
    """A runbook command that does not work as written; the drill says what worked instead."""


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "cnpg_app" in metafunc.fixturenames:
        catalogue = session_catalogue(metafunc.config)
        with_cnpg = {c.namespace for c in catalogue.cnpg_clusters}
        apps = [a for a in drill_apps(catalogue, metafunc.config.stash[DRILL_CONFIG_KEY]) if a.namespace in with_cnpg]
        metafunc.parametrize("cnpg_app", drill_parameters(apps, not_applicable="no drilled app has a CNPG Cluster"),
                             scope="module")


@pytest.fixture(scope="module")
def seeded(cnpg_app: App, module_namespace_drill: Callable[[App], NamespaceDrill]) -> NamespaceDrill:
    drill = module_namespace_drill(cnpg_app)
    drill.step("deploy", drill.deploy)
    drill.step("seed", drill.seed)
    return drill


@pytest.fixture
def recovery(seeded: NamespaceDrill, catalogue: Catalogue, object_store: ObjectStore,
             platform_images: dict[str, str]) -> Iterator[CnpgRecovery]:
    cluster = next(c for c in catalogue.cnpg_clusters if c.namespace == seeded.ns)
    with object_store.client() as s3:
        yield CnpgRecovery(ctx=seeded.ctx, cnpg=seeded.cnpg, s3=s3, source_namespace=seeded.ns,
                           cluster=cluster.manifest.obj, database=seeded.plan.cnpg_databases[cluster.name],
                           image=platform_images["postgresql"])


def label(app: App, option: str) -> None:
    allure.dynamic.epic(app.name)
    allure.dynamic.feature(app.name)
    allure.dynamic.story(f"CNPG option {option}")
    allure.dynamic.label("scenario", f"cnpg-option-{option}")


@titled("cnpg-option-b")
def test_cnpg_option_b_recovery_from_the_object_store(cnpg_app: App, seeded: NamespaceDrill, recovery: CnpgRecovery,
                                                      namespace_factory: NamespaceFactory,
                                                      record_result: Callable[..., None]) -> None:
    label(cnpg_app, "B")
    server = f"{recovery.name}-{seeded.run_id}"
    recovery.configure_object_store_backups(server_name=server)
    recovery.take_backup(name=f"{recovery.name}-drill-{seeded.tag}")
    before = recovery.check(seeded.ns)
    target = namespace_factory(f"{cnpg_app.name}-option-b")
    record = recovery.recover_from_object_store(namespace=target, server_name=server)
    after = recovery.check(target)
    record.rows = before.rows
    record_result(app=cnpg_app.name, **record.facts())
    assert after == before, (f"option B: {after.rows} rows (md5 {after.digest}) recovered, {before.rows} rows "
                             f"(md5 {before.digest}) at backup time")


@titled("cnpg-option-c")
def test_cnpg_option_c_pg_dump_and_pg_restore(cnpg_app: App, seeded: NamespaceDrill, recovery: CnpgRecovery,
                                              namespace_factory: NamespaceFactory,
                                              record_result: Callable[..., None]) -> None:
    label(cnpg_app, "C")
    before = recovery.check(seeded.ns)
    dump = recovery.dump()
    target = namespace_factory(f"{cnpg_app.name}-option-c")
    record = recovery.restore_dump(dump, namespace=target)
    after = recovery.check(target)
    record.rows = before.rows
    record_result(app=cnpg_app.name, dump_bytes=len(dump), runbook_findings=recovery.findings or None,
                  **record.facts())
    for finding in recovery.findings:
        allure.attach(finding, name="runbook finding", attachment_type=allure.attachment_type.TEXT)
        warnings.warn(RunbookWarning(finding), stacklevel=1)
    assert after == before, (f"option C: {after.rows} rows (md5 {after.digest}) restored, {before.rows} rows "
                             f"(md5 {before.digest}) dumped")
