"""The pytest plugin and the static suite, run as a user runs them (pytester, in a subprocess)."""

import json
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, user_project

pytest_plugins = ("pytester",)


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A project folder like the checkout: the root conftest and the static suite."""
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT))
    user_project(pytester.path)
    return pytester


def run(suite: pytest.Pytester, *args: str) -> pytest.RunResult:
    return suite.runpytest_subprocess("suites", "-m", "static", "--gitops-repo", "repo", "-p", "no:cacheprovider",
                                      *args)


def test_example_repo_passes_with_the_td004_warning(suite: pytest.Pytester) -> None:
    result = run(suite, "-rw")
    result.assert_outcomes(passed=result.parseoutcomes()["passed"], warnings=1)
    assert result.ret == 0
    assert result.parseoutcomes()["passed"] > 100
    result.stdout.fnmatch_lines(["*PolicyWarning*Cluster immich/immich-postgres*"])


def test_a_failure_names_file_line_object_and_fix(suite: pytest.Pytester) -> None:
    schedule = suite.path / "repo/kubernetes/apps/velero/velero/app/schedules/pelican-schedule.yaml"
    schedule.write_text(schedule.read_text().replace("ttl: 720h0m0s", "ttl: 24h"))
    result = run(suite)
    assert result.ret == 1
    result.assert_outcomes(failed=1, passed=result.parseoutcomes()["passed"], warnings=1)
    result.stdout.fnmatch_lines([
        "*test_schedule_keeps_minimum_retention?pelican-daily?*",
        "*pelican-schedule.yaml:*: Schedule velero/pelican-daily: keeps backups for 24h0m0s*",
        "*fix: set spec.template.ttl to 720h0m0s or more*",
    ])
    assert "Traceback" not in result.stdout.str()


def test_k_selects_one_app(suite: pytest.Pytester) -> None:
    result = run(suite, "-k", "pelican", "--collect-only", "-q")
    ids = [line for line in result.stdout.lines if "::" in line]
    assert ids and all("pelican" in line for line in ids)
    assert any("pelican-daily" in line for line in ids)
    assert any("Deployment" not in line and "HTTPRoute/pelican/pelican" in line for line in ids)


def test_strict_rules_turn_the_warning_into_a_failure(suite: pytest.Pytester) -> None:
    result = run(suite, "--strict-rules", "cnpg-object-store-backup")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*Cluster immich/immich-postgres: has no object-store backup*"])


@pytest.mark.parametrize(("args", "message"), [
    (("--gitops-repo", "missing"), "*--gitops-repo*missing is not a folder*"),
    (("--min-ttl", "30d"), "*min_ttl from command line*unknown unit*"),
    (("--set", "apps.pelican.backup_requierd=false"), "*did you mean 'backup_required'*"),
])
def test_bad_input_is_a_usage_error(suite: pytest.Pytester, args: tuple[str, ...], message: str) -> None:
    result = run(suite, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_a_malformed_file_fails_one_test_and_the_rest_still_run(suite: pytest.Pytester) -> None:
    configmap = suite.path / "repo/kubernetes/apps/pelican/pelican/app/configmap.yaml"
    configmap.write_text(configmap.read_text().replace("metadata:\n", "metadata:\n   bad: [\n"))
    result = run(suite)
    result.stdout.fnmatch_lines(["*_ test_manifests_parse?pelican? _*",
                                 "kubernetes/apps/pelican/pelican/app/configmap.yaml:7: YAML does not parse*"])
    assert result.parseoutcomes()["failed"] == 1
    assert result.parseoutcomes()["passed"] > 100


def test_reports_are_written_with_labels_and_evidence(suite: pytest.Pytester) -> None:
    schedule = suite.path / "repo/kubernetes/apps/velero/velero/app/schedules/pelican-schedule.yaml"
    schedule.write_text(schedule.read_text().replace("includeClusterResources: true", "includeClusterResources: false"))
    run(suite)
    reports = suite.path / "reports"
    assert (reports / "junit.xml").exists()
    results = [json.loads(p.read_text()) for p in (reports / "allure-results").glob("*-result.json")]
    failed = [r for r in results if r["status"] == "failed"]
    assert len(failed) == 1
    labels = {label["name"]: label["value"] for label in failed[0]["labels"]}
    assert labels["epic"] == "pelican" and labels["rule"] == "schedule-cluster-resources"
    attachments = {a["name"] for a in failed[0]["attachments"]}
    assert any(name.endswith("pelican-schedule.yaml (as read)") for name in attachments)

    summary = json.loads((reports / "summary.json").read_text())
    assert summary["totals"]["failed"] == 1
    entry = next(r for r in summary["results"] if r["outcome"] == "failed")
    assert entry["app"] == "pelican" and entry["rule"] == "schedule-cluster-resources"
    assert entry["subject"] == "pelican-daily" and entry["scenario"] == "static"


def test_secrets_stay_out_of_the_reports(suite: pytest.Pytester) -> None:
    secret = suite.path / "repo/kubernetes/apps/pelican/pelican/app/secret.sops.yaml"
    secret.write_text(secret.read_text().replace("apiVersion: v1", "apiVersion: velero.io/v1"))  # force a finding
    run(suite)
    attachments = "".join(p.read_text(errors="ignore") for p in (suite.path / "reports/allure-results").iterdir()
                          if not p.name.endswith(".json"))
    assert "pelican-secrets" in attachments
    assert "ENC[" not in attachments and "<redacted>" in attachments


def test_runs_under_xdist(suite: pytest.Pytester) -> None:
    result = run(suite, "-n", "2")
    assert result.ret == 0
    summary = json.loads((suite.path / "reports/summary.json").read_text())
    assert summary["totals"]["passed"] == result.parseoutcomes()["passed"]
    assert all("app" in r or r["nodeid"] for r in summary["results"])


def test_missing_schemas_fail_the_schema_rule_and_say_how_to_get_them(suite: pytest.Pytester, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTOREDRILL_CACHE", str(tmp_path / "empty-cache"))
    result = run(suite, "--fetch-schemas", "false")
    outcomes = result.parseoutcomes()
    schema_tests = [line for line in result.stdout.lines if line.startswith("FAILED") and "crd_schema" in line]
    assert outcomes["failed"] == len(schema_tests) > 20
    result.stdout.fnmatch_lines(["*rule crd-schema could not be checked: the pinned CRD schemas are not in*",
                                 "*fix: run `restoredrill schemas`*"])
