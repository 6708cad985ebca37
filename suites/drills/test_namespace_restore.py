"""The runbook's "Restoring an Application", for every stateful app of the repo under test.

One test per app (its id is the app's name, so `pytest -k immich` runs immich's drill): deploy it
through Flux, seed it, back it up from its own Schedule, destroy the namespace, restore, verify on
evidence and hand it back to Flux. On a cluster restoredrill did not create (`existing`), the drill
is the non-destructive one instead: a copy restored beside the app (restoredrill.drill.mapped).
A failure names every problem found and attaches the evidence (Backup/Restore objects, PodVolume*,
restore results, events, pod logs, Velero logs, the Kustomization's status) to the Allure report.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fixtures.drills import NothingToDrill, attach_evidence, drill_apps, drill_parameters, nothing_to_drill
from fixtures.gitops import session_catalogue
from fixtures.options import DRILL_CONFIG_KEY
from fixtures.reporting import titled
from restoredrill.catalogue import App
from restoredrill.cluster import ClusterHandle
from restoredrill.drill.mapped import MappedNamespaceDrill
from restoredrill.drill.namespace import NamespaceDrill

pytestmark = [pytest.mark.cluster, pytest.mark.platform, pytest.mark.drill]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "app" in metafunc.fixturenames:
        catalogue, drill_config = session_catalogue(metafunc.config), metafunc.config.stash[DRILL_CONFIG_KEY]
        apps = drill_apps(catalogue, drill_config)
        metafunc.parametrize("app", drill_parameters(apps, empty=nothing_to_drill(catalogue, drill_config)))


@titled("namespace-restore")
def test_namespace_restore(app: App | NothingToDrill, request: pytest.FixtureRequest) -> None:
    if isinstance(app, NothingToDrill):
        app.fail()
    cluster: ClusterHandle = request.getfixturevalue("cluster")
    drill: NamespaceDrill | MappedNamespaceDrill
    if cluster.created_by_us:
        namespace_drill: Callable[[App], NamespaceDrill] = request.getfixturevalue("namespace_drill")
        drill = namespace_drill(app)
    else:  # someone else's cluster: restore a copy beside the app, touch nothing of theirs
        mapped_drill: Callable[[App], MappedNamespaceDrill] = request.getfixturevalue("mapped_namespace_drill")
        drill = mapped_drill(app)
    try:
        drill.run()
    except BaseException:
        attach_evidence(drill)
        raise
