"""A run that was asked to drill and drilled nothing fails, naming why (pytester, in a subprocess).

None of these needs a cluster: each path fails before one would be made, which is the point.
"""

from __future__ import annotations

import pytest

from tests.conftest import PROJECT_ROOT, user_project

pytest_plugins = ("pytester",)


@pytest.fixture
def project(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """A folder like the checkout: the root conftest, the suites and a copy of the example repo."""
    monkeypatch.setenv("PYTHONPATH", str(PROJECT_ROOT))
    user_project(pytester.path)
    return pytester


def test_a_repo_with_no_app_under_apps_path_fails_naming_the_folder(project: pytest.Pytester) -> None:
    result = project.runpytest_subprocess("suites/drills", "--gitops-repo", "repo", "--apps-path", "clusters/apps",
                                          "-rs", "-p", "no:cacheprovider")
    assert result.ret == 1
    result.assert_outcomes(failed=2, skipped=3)
    result.stdout.fnmatch_lines([
        "*nothing was drilled: */repo/clusters/apps does not exist*",
        "*fix: pass --apps-path with the folder of */repo that holds <namespace>/<app>/ks.yaml*",
        # CNPG options B and C say they do not apply; they are no part of what was drilled.
        "*not applicable: no drilled app has a CNPG Cluster*",
    ])
    # Without production credentials the production-backup drill does not apply either.
    result.stdout.fnmatch_lines(["*not applicable: no --production-credentials given*"])


def test_a_repo_without_stateful_apps_fails_saying_there_is_no_state(project: pytest.Pytester) -> None:
    apps = project.path / "repo/kubernetes/apps"
    for claim in apps.rglob("*.yaml"):
        text = claim.read_text()
        if "kind: PersistentVolumeClaim" in text or "kind: Cluster\n" in text or "volumeClaimTemplates" in text:
            claim.unlink()
    result = project.runpytest_subprocess("suites/drills/test_namespace_restore.py", "--gitops-repo", "repo",
                                          "-p", "no:cacheprovider")
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*nothing was drilled: * apps found under */kubernetes/apps, none with a "
                                 "PersistentVolumeClaim or a CNPG Cluster*"])


SKIPPING_DRILL = """
import pytest

pytestmark = [pytest.mark.drill]

def test_skipped_drill():
    pytest.skip("the platform is only installed on a cluster restoredrill created")

@pytest.mark.not_applicable
@pytest.mark.skip(reason="not applicable: no CNPG Cluster")
def test_not_applicable():
    pass

@pytest.mark.xfail(reason="known", strict=False)
def test_expected_failure():
    assert False
"""


def test_a_selected_drill_that_skips_fails_with_its_reason(project: pytest.Pytester) -> None:
    project.makepyfile(test_drill_skip=SKIPPING_DRILL)
    result = project.runpytest_subprocess("test_drill_skip.py", "-p", "no:cacheprovider")
    result.assert_outcomes(failed=1, skipped=1, xfailed=1)
    result.stdout.fnmatch_lines([
        "*this drill was selected and did not run, so nothing was proven: "
        "the platform is only installed on a cluster restoredrill created*",
        "*fix: deselect it (-k / -m), or pass --allow-skipped-drills true*",
    ])


def test_skips_are_accepted_when_the_user_says_so(project: pytest.Pytester) -> None:
    project.makepyfile(test_drill_skip=SKIPPING_DRILL)
    result = project.runpytest_subprocess("test_drill_skip.py", "--allow-skipped-drills", "true",
                                          "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=2, xfailed=1)
    assert result.ret == 0


RUNBOOK_STEP_DRILL = """
import pytest

pytestmark = [pytest.mark.drill]

def test_drill_with_runbook_step(record_result):
    record_result(app="immich", manual_steps=["PersistentVolume immich-library: claimRef removed"])

def test_plain_drill(record_result):
    record_result(app="pelican", manual_steps=None)
"""


def test_summary_says_passed_with_runbook_steps_and_keeps_the_head_of_messages(project: pytest.Pytester) -> None:
    import json

    project.makepyfile(test_steps=RUNBOOK_STEP_DRILL)
    result = project.runpytest_subprocess("test_steps.py", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    summary = json.loads((project.path / "reports" / "summary.json").read_text())
    outcomes = {entry["app"]: entry["outcome"] for entry in summary["results"]}
    assert outcomes == {"immich": "passed-with-runbook-steps", "pelican": "passed"}
    assert summary["totals"] == {"passed-with-runbook-steps": 1, "passed": 1}


def test_the_production_drill_selected_without_credentials_fails_naming_the_option(project: pytest.Pytester) -> None:
    """`-m production` asks for production's backups: without the credentials it fails, it is not skipped."""
    result = project.runpytest_subprocess("suites/drills", "-m", "production", "-k", "pelican", "-p",
                                          "no:cacheprovider")
    assert result.ret == 1
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*the production drill was selected (-m production) without credentials*",
                                 "*fix: pass --production-credentials FILE*"])
