"""A drill's Allure page reads as the runbook (pytester, in a subprocess, no cluster).

The fake drills run the real `NamespaceDrill.step` and `FullClusterRecovery.step` with stand-in
actions and report through the suite's plugins, as `namespace_drill` does: facts recorded by the
fixture after the test body. The Allure results JSON is what the report renders.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PROJECT_ROOT, user_project

FAKE_DRILLS = '''
from pathlib import Path
from types import SimpleNamespace

import allure
import pytest

from fixtures.drills import drill_parameters
from fixtures.reporting import titled
from restoredrill.catalogue import App
from restoredrill.drill.fullcluster import FullClusterRecovery
from restoredrill.drill.namespace import DrillFailed, NamespaceDrill

pytestmark = [pytest.mark.drill]
APPS = [App(name=name, namespace=name, directory=Path(name), kustomizations=(), manifests=())
        for name in ("pelican", "gatus")]


def make_drill(app):
    plan = SimpleNamespace(app=app.name, namespace=app.namespace)
    return NamespaceDrill(plan=plan, ctx=None, velero=None, flux=None, cnpg=None, gitops=None, run_id="r1",
                          busybox_image="busybox", out=lambda line: None)


@pytest.fixture
def fake_drill(record_result):
    made = []

    def make(app):
        allure.dynamic.label("scenario", "namespace-restore")
        made.append(make_drill(app))
        return made[-1]

    yield make
    for drill in made:
        record_result(**drill.record.facts())


def backup(drill):
    drill.record.backup = f"{drill.plan.app}-daily-drill-r1"
    drill.record.pod_volume_backups = 2
    drill.record.backup_age_s = 312.4


def restore(drill):
    drill.record.restore = f"{drill.plan.app}-restore-r1"
    drill.record.pod_volume_restores = 2
    drill.record.rto_s = 95.2


def verify(drill):
    if drill.plan.app == "gatus":
        drill.fail(["PVC gatus/data: restoredrill-seed/big.bin differs (sha256)"])
    drill.record.files_verified, drill.record.rows_verified, drill.record.volumes_verified = 12, 1000, 2
    drill.record.standins = ["image ghcr.io/example/pelican:1 by the stand-in server"]


@titled("namespace-restore")
@pytest.mark.parametrize("app", drill_parameters(APPS))
def test_namespace_restore(app, fake_drill):
    drill = fake_drill(app)
    drill.step("deploy", lambda: None)
    drill.step("backup", lambda: backup(drill))
    drill.step("restore", lambda: restore(drill))
    drill.step("verify", lambda: verify(drill))


@pytest.mark.full_cluster
@titled("full-cluster-recovery")
def test_full_cluster_recovery(record_result):
    recovery = FullClusterRecovery(provider=None, cluster_lock=None, ctx=None, object_store=None, gitops=None,
                                   velero=None, cnpg=None, plans=[], busybox_image="busybox", run_id="r1",
                                   worker_id="master", load_images=lambda provider, ctx: None,
                                   out=lambda line: None)
    recovery.record.apps = ["pelican", "gatus"]
    drill = make_drill(APPS[0])
    recovery.step("destroy the cluster", lambda: None)
    recovery.step("restore pelican", lambda: drill.step("restore", lambda: restore(drill)))
    recovery.record.rto_s = {"pelican": 95.2, "gatus": 40.0}
    record_result(**recovery.record.facts())
'''


@pytest.fixture(scope="module")
def allure_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """The fake drills run once (a passing and a failing namespace drill, a full-cluster recovery):
    their Allure results by test name, each with its containers' fixtures under `fixtures`."""
    folder = tmp_path_factory.mktemp("allure-pages")
    user_project(folder, repo=False)
    (folder / "test_fake_drills.py").write_text(FAKE_DRILLS)
    # Run by hand (pytester is per test; these results are read by every test of the module).
    completed = subprocess.run([sys.executable, "-m", "pytest", "test_fake_drills.py", "-p", "no:cacheprovider",
                                "-q"], cwd=folder, capture_output=True, text=True, timeout=300,
                               env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    assert completed.returncode == 1, completed.stdout + completed.stderr  # gatus fails
    results_dir = folder / "reports" / "allure-results"
    results = {}
    containers = [json.loads(p.read_text()) for p in results_dir.glob("*-container.json")]
    for path in results_dir.glob("*-result.json"):
        result = json.loads(path.read_text())
        result["fixtures"] = [fixture for container in containers if result["uuid"] in container.get("children", [])
                              for fixture in (*container.get("befores", []), *container.get("afters", []))]
        result["folder"] = str(results_dir)
        results[result["fullName"].rsplit("#", 1)[-1] + (f"[{_param(result, 'app')}]" if _param(result, "app")
                                                       else "")] = result
    return results


def _param(result: dict[str, Any], name: str) -> str | None:
    return next((p["value"] for p in result.get("parameters", []) if p["name"] == name), None)


def _steps(result: dict[str, Any]) -> list[tuple[str, str]]:
    def walk(steps: list[dict[str, Any]], depth: int) -> list[tuple[str, str]]:
        found = []
        for step in steps:
            found.append(("  " * depth + step["name"], step["status"]))
            found += walk(step.get("steps", []), depth + 1)
        return found
    return walk(result.get("steps", []), 0)


def test_a_passing_drill_is_titled_by_its_app_and_scenario(allure_results: dict[str, dict[str, Any]]) -> None:
    result = allure_results["test_namespace_restore[pelican]"]
    assert result["status"] == "passed"
    assert result["name"] == "pelican: restore the namespace from its Velero backup"


def test_the_app_is_a_plain_parameter_and_the_facts_are_parameters(allure_results: dict[str, dict[str, Any]]) -> None:
    result = allure_results["test_namespace_restore[pelican]"]
    shown = {p["name"]: p["value"] for p in result["parameters"] if p.get("mode") != "hidden"}
    assert shown["app"] == "pelican"  # not App(name='pelican', ...), not 'pelican' in quotes
    assert shown["backup"] == "pelican-daily-drill-r1"
    assert shown["backup age"] == "5 min 12 s"
    assert shown["restore"] == "pelican-restore-r1"
    assert shown["RTO"] == "95.2 s"
    assert shown["volume backups"] == "2" and shown["volume restores"] == "2"  # PodVolumeBackups/Restores
    assert shown["files verified"] == "12" and shown["rows verified"] == "1000"
    assert shown["stand-ins"] == "image ghcr.io/example/pelican:1 by the stand-in server"
    # The run's own names and timings are excluded from the test's identity (its history in Allure).
    assert all(p.get("excluded") for p in result["parameters"] if p["name"] not in ("app",))


def test_each_drill_step_is_an_allure_step_with_its_duration_and_outcome(
        allure_results: dict[str, dict[str, Any]]) -> None:
    passed = allure_results["test_namespace_restore[pelican]"]
    assert _steps(passed) == [("deploy the app through Flux", "passed"), ("back up from the app's Schedule", "passed"),
                              ("restore from the backup", "passed"), ("verify the restore on evidence", "passed")]
    assert all(step["stop"] >= step["start"] for step in passed["steps"])

    failed = allure_results["test_namespace_restore[gatus]"]
    assert failed["status"] == "failed"
    assert failed["name"] == "gatus: restore the namespace from its Velero backup"
    assert _steps(failed)[-1] == ("verify the restore on evidence", "failed")
    assert "big.bin differs" in failed["steps"][-1]["statusDetails"]["message"]
    # What the drill reached before the failure is still there.
    shown = {p["name"]: p["value"] for p in failed["parameters"]}
    assert shown["RTO"] == "95.2 s" and shown["files verified"] == "0"


def test_the_verification_table_is_attached_to_the_drill_itself(allure_results: dict[str, dict[str, Any]]) -> None:
    result = allure_results["test_namespace_restore[pelican]"]
    table = next(a for a in result["attachments"] if a["name"] == "what was verified")
    assert table["type"] == "text/html"
    text = (Path(result["folder"]) / table["source"]).read_text()
    assert "<th>files equal to the inventory (type, size, SHA-256, link, mode, owner, mtime)</th><td>12</td>" in text
    assert "<td>2 (Backup pelican-daily-drill-r1)</td>" in text
    assert "<th>step: restore from the backup</th>" in text


def test_pytests_own_finalizers_are_not_reported_as_tear_downs(allure_results: dict[str, dict[str, Any]]) -> None:
    for result in allure_results.values():
        names = [fixture["name"] for fixture in result["fixtures"]]
        assert not [name for name in names if "<lambda>" in name], names
        assert all(fixture.get("status") for fixture in result["fixtures"]), result["fixtures"]
    # The drill fixture's real tear-down (where it records the facts) is still there, named after it.
    names = [f["name"] for f in allure_results["test_namespace_restore[pelican]"]["fixtures"]]
    assert names.count("fake_drill") == 2 and "fake_drill::1" not in names  # its set-up and its tear-down


def test_the_full_cluster_recovery_names_its_apps_and_nests_their_steps(
        allure_results: dict[str, dict[str, Any]]) -> None:
    result = allure_results["test_full_cluster_recovery"]
    assert result["name"] == "recover the whole cluster from its Velero backups (pelican, gatus)"
    assert _steps(result) == [("destroy the cluster", "passed"), ("restore pelican", "passed"),
                              ("  pelican: restore from the backup", "passed")]
    shown = {p["name"]: p["value"] for p in result["parameters"]}
    assert shown["RTO pelican"] == "95.2 s" and shown["RTO gatus"] == "40.0 s"
