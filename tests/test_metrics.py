"""reports/metrics.prom: the drills' outcomes in Prometheus text format, for alerts on a failed or stale drill.

The format is checked with prometheus_client's own parser (a dev dependency); the suite writes the
file itself, without it.
"""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from restoredrill.report import drill_metrics, last_successes
from tests.conftest import PROJECT_ROOT, user_project

pytest_plugins = ("pytester",)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the file, as Prometheus reads it: (name, labels) -> value."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(text: str, name: str, **labels: str) -> float | None:
    return samples(text).get((name, tuple(sorted(labels.items()))))


def entry(app: str, outcome: str, **facts: Any) -> dict[str, Any]:
    return {"nodeid": f"suites/drills/test_namespace_restore.py::test_namespace_restore[{app}]", "outcome": outcome,
            "duration_s": 300.5, "app": app, "scenario": "namespace-restore", **facts}


def test_each_drill_has_its_outcome_rto_backup_age_and_last_success() -> None:
    results = [entry("pelican", "passed", rto_s=95.2, backup_age_s=312.4),
               entry("gatus", "failed", rto_s=None, backup_age_s=20.0),
               entry("immich", "passed-with-runbook-steps", rto_s=140.0),
               {"nodeid": "suites/static/test_rules.py::test_x[pelican]", "outcome": "failed", "app": "pelican",
                "scenario": "static"}]
    finished = {results[0]["nodeid"]: 1_733_100_000.5}
    text = drill_metrics(results, finished=finished, previous="", now=1_733_100_100.0, exit_status=1)
    assert text is not None
    families = {family.name: family for family in text_string_to_metric_families(text)}
    assert all(family.type == "gauge" and family.documentation for family in families.values())
    pelican = {"app": "pelican", "scenario": "namespace-restore"}
    gatus = {"app": "gatus", "scenario": "namespace-restore"}
    assert value(text, "restoredrill_drill_success", **pelican) == 1
    assert value(text, "restoredrill_drill_success", **gatus) == 0
    assert value(text, "restoredrill_drill_success", app="immich", scenario="namespace-restore") == 1
    assert value(text, "restoredrill_drill_outcome", **gatus, outcome="failed") == 1
    assert value(text, "restoredrill_drill_outcome", **gatus, outcome="passed") == 0
    assert value(text, "restoredrill_drill_rto_seconds", **pelican) == 95.2
    assert value(text, "restoredrill_drill_rto_seconds", **gatus) is None  # never restored: no RTO
    assert value(text, "restoredrill_backup_age_seconds", **pelican) == 312.4
    assert value(text, "restoredrill_drill_duration_seconds", **pelican) == 300.5
    assert value(text, "restoredrill_drill_last_success_timestamp_seconds", **pelican) == 1_733_100_000.5
    assert value(text, "restoredrill_drill_last_success_timestamp_seconds", **gatus) is None  # never succeeded
    assert value(text, "restoredrill_run_exit_status") == 1
    assert value(text, "restoredrill_run_timestamp_seconds") == 1_733_100_100
    # The static checks are no drill.
    assert not [key for key in samples(text) if ("scenario", "static") in key[1]]


def test_a_failed_drill_keeps_the_last_success_of_the_previous_file() -> None:
    first = drill_metrics([entry("pelican", "passed"), entry("gatus", "passed")], finished={}, previous="",
                          now=1000.0, exit_status=0)
    assert first is not None
    second = drill_metrics([entry("pelican", "failed")], finished={}, previous=first, now=2000.0, exit_status=1)
    assert second is not None
    assert value(second, "restoredrill_drill_success", app="pelican", scenario="namespace-restore") == 0
    # Failed now, passed at 1000: the staleness alert counts from then. gatus was not drilled now at all.
    assert value(second, "restoredrill_drill_last_success_timestamp_seconds", app="pelican",
                 scenario="namespace-restore") == 1000
    assert value(second, "restoredrill_drill_last_success_timestamp_seconds", app="gatus",
                 scenario="namespace-restore") == 1000
    third = drill_metrics([entry("pelican", "passed")], finished={}, previous=second, now=3000.0, exit_status=0)
    assert third is not None
    assert value(third, "restoredrill_drill_last_success_timestamp_seconds", app="pelican",
                 scenario="namespace-restore") == 3000


def test_label_values_are_escaped_and_read_back() -> None:
    odd = 'we"ird\\app\nname'
    text = drill_metrics([entry(odd, "passed")], finished={}, previous="", now=5.0, exit_status=0)
    assert text is not None
    assert value(text, "restoredrill_drill_success", app=odd, scenario="namespace-restore") == 1
    assert last_successes(text) == {(odd, "namespace-restore"): 5.0}


def test_the_full_cluster_recovery_counts_once_per_app() -> None:
    recovery = {"nodeid": "suites/drills/test_full_cluster_recovery.py::test_full_cluster_recovery",
                "outcome": "passed", "duration_s": 1800.0, "scenario": "full-cluster-recovery",
                "apps": ["pelican", "gatus"], "rto_s_by_app": {"pelican": 95.2, "gatus": None}}
    text = drill_metrics([recovery], finished={}, previous="", now=5.0, exit_status=0)
    assert text is not None
    for app in ("pelican", "gatus"):
        assert value(text, "restoredrill_drill_success", app=app, scenario="full-cluster-recovery") == 1
    assert value(text, "restoredrill_drill_rto_seconds", app="pelican", scenario="full-cluster-recovery") == 95.2


def test_a_session_without_drills_writes_nothing() -> None:
    static = [{"nodeid": "x", "outcome": "passed", "scenario": "static", "app": "pelican"}]
    assert drill_metrics(static, finished={}, previous="", now=5.0, exit_status=0) is None


FAKE_DRILL = """
import os

import pytest

pytestmark = [pytest.mark.drill]


@pytest.mark.parametrize("app", ["pelican", "gatus"])
def test_namespace_restore(app, record_result):
    record_result(app=app, scenario="namespace-restore", rto_s=12.5, backup_age_s=60.0)
    assert app not in os.environ.get("FAIL_APPS", "").split(","), f"{app}: verify failed"
"""


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT))
    user_project(pytester.path, repo=False)
    pytester.makepyfile(test_fake_drill=FAKE_DRILL)
    return pytester


def test_the_session_writes_metrics_prom_beside_summary_json(project: pytest.Pytester,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAIL_APPS", "gatus")
    result = project.runpytest_subprocess("test_fake_drill.py", "-p", "no:cacheprovider", "--reports-dir", "out")
    result.assert_outcomes(passed=1, failed=1)
    reports = project.path / "out"
    assert (reports / "summary.json").exists()
    text = (reports / "metrics.prom").read_text()
    assert value(text, "restoredrill_drill_success", app="pelican", scenario="namespace-restore") == 1
    assert value(text, "restoredrill_drill_success", app="gatus", scenario="namespace-restore") == 0
    assert value(text, "restoredrill_drill_rto_seconds", app="gatus", scenario="namespace-restore") == 12.5
    passed_at = value(text, "restoredrill_drill_last_success_timestamp_seconds", app="pelican",
                      scenario="namespace-restore")
    assert passed_at is not None
    assert not [p for p in reports.iterdir() if p.name.startswith(".metrics.prom")]  # no partial file left

    # The next night pelican fails: its last success stays the first night's.
    monkeypatch.setenv("FAIL_APPS", "pelican,gatus")
    project.runpytest_subprocess("test_fake_drill.py", "-p", "no:cacheprovider", "--reports-dir", "out")
    text = (reports / "metrics.prom").read_text()
    assert value(text, "restoredrill_drill_success", app="pelican", scenario="namespace-restore") == 0
    assert value(text, "restoredrill_drill_last_success_timestamp_seconds", app="pelican",
                 scenario="namespace-restore") == passed_at


def test_a_static_only_session_leaves_the_drills_metrics_alone(project: pytest.Pytester) -> None:
    reports = project.path / "out"
    reports.mkdir()
    (reports / "metrics.prom").write_text("# the last drills' file\n")
    project.makepyfile(test_static_only="import pytest\n\n@pytest.mark.static\ndef test_rule():\n    pass\n")
    project.runpytest_subprocess("test_static_only.py", "-p", "no:cacheprovider", "--reports-dir", "out")
    assert (reports / "metrics.prom").read_text() == "# the last drills' file\n"
