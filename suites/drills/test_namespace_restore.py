"""The runbook's "Restoring an Application", for every stateful app of the repo under test.

One test per app (its id is the app's name, so `pytest -k immich` runs immich's drill): deploy it
through Flux, seed it, back it up from its own Schedule, destroy the namespace, restore, verify on
evidence and hand it back to Flux. A failure names every problem found and attaches the evidence
(Backup/Restore objects, PodVolume*, restore results, events, pod logs, Velero logs, the
Kustomization's status) to the Allure report.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from fixtures.drills import attach_evidence, drill_apps
from fixtures.gitops import session_catalogue
from fixtures.options import DRILL_CONFIG_KEY
from restoredrill.catalogue import App
from restoredrill.drill.namespace import NamespaceDrill

pytestmark = [pytest.mark.cluster, pytest.mark.platform, pytest.mark.drill]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "app" in metafunc.fixturenames:
        config = metafunc.config
        apps = drill_apps(session_catalogue(config), config.stash[DRILL_CONFIG_KEY])
        metafunc.parametrize("app", apps, ids=[app.name for app in apps])


def test_namespace_restore(app: App, namespace_drill: Callable[[App], NamespaceDrill]) -> None:
    drill = namespace_drill(app)
    try:
        drill.run()
    except BaseException:
        attach_evidence(drill)
        raise
