"""Production's own backups, drilled: `pytest suites -m production --production-credentials FILE [-k APP]`.

For every stateful app of the repo: in the drill cluster (ephemeral, made by restoredrill), the
backup of the app's Schedule that production's Velero wrote last night (or `--production-backup
random|NAME`) is read through a ReadOnly BackupStorageLocation, restored into the app's namespace,
verified against its Kopia snapshots, handed to Flux, and judged for its age against the Schedule
(RPO). restoredrill.drill.production holds the drill; what it never writes is written there.

Without credentials the scenario does not apply (the main job skips it, saying so); selected with
`-m production` and no credentials, it fails naming the option.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fixtures.drills import NothingToDrill, attach_evidence, drill_apps, drill_parameters, nothing_to_drill
from fixtures.gitops import session_catalogue
from fixtures.options import DRILL_CONFIG_KEY
from restoredrill.catalogue import App
from restoredrill.cluster import ClusterHandle
from restoredrill.config import DrillConfig
from restoredrill.drill.production import ProductionDrill

pytestmark = [pytest.mark.cluster, pytest.mark.platform, pytest.mark.drill, pytest.mark.production]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "app" in metafunc.fixturenames:
        catalogue, drill_config = session_catalogue(metafunc.config), metafunc.config.stash[DRILL_CONFIG_KEY]
        apps = drill_apps(catalogue, drill_config)
        metafunc.parametrize("app", drill_parameters(apps, empty=nothing_to_drill(catalogue, drill_config)))


def test_production_restore(app: App | NothingToDrill, request: pytest.FixtureRequest) -> None:
    drill_config: DrillConfig = request.config.stash[DRILL_CONFIG_KEY]
    if drill_config.production_credentials is None:
        if "production" in (request.config.option.markexpr or ""):
            pytest.fail("the production drill was selected (-m production) without credentials for production's "
                        "object store\n  fix: pass --production-credentials FILE (an AWS credentials file, as "
                        "Velero's Secret holds it)", pytrace=False)
        request.node.add_marker(pytest.mark.not_applicable)
        pytest.skip("not applicable: no --production-credentials given (this drill restores production's own "
                    "backups; select it with -m production)")
    if isinstance(app, NothingToDrill):
        app.fail()
    cluster: ClusterHandle = request.getfixturevalue("cluster")
    if not cluster.created_by_us:
        pytest.fail("the production drill restores into the app's own namespace, so it runs only in a drill cluster "
                    "restoredrill creates\n  fix: use --cluster-provider local or kind (not existing)", pytrace=False)
    production_drill: Callable[[App], ProductionDrill] = request.getfixturevalue("production_drill")
    drill = production_drill(app)
    try:
        drill.run()
    except BaseException:
        attach_evidence(drill)
        raise
