"""`restoredrill report`: a text summary and one self-contained HTML file from real Allure results."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from restoredrill.errors import ConfigError
from restoredrill.report import render_html, text_summary
from tests.conftest import EXAMPLE_REPO, PROJECT_ROOT


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Reports of a real static run on a copy of the example repo with one broken schedule."""
    root = tmp_path_factory.mktemp("run")
    repo = root / "repo"
    shutil.copytree(EXAMPLE_REPO, repo)
    schedule = repo / "kubernetes/apps/velero/velero/app/schedules/gatus-schedule.yaml"
    schedule.write_text(schedule.read_text().replace("ttl: 720h0m0s", "ttl: 1h"))
    subprocess.run([sys.executable, "-m", "pytest", "suites", "-m", "static", "-q", "-p", "no:cacheprovider",
                    "--gitops-repo", str(repo), "--reports-dir", str(root / "reports")],
                   cwd=PROJECT_ROOT, capture_output=True, timeout=300, check=False)
    return root / "reports"


def test_text_summary_puts_failing_apps_first(reports: Path) -> None:
    text = text_summary(reports / "summary.json")
    table = text.splitlines()[3]
    assert table.split()[:3] == ["gatus", str(_count(reports, "gatus", "passed")), "1"]
    assert "FAILED suites/static/test_backup_policy.py::test_schedule_keeps_minimum_retention[gatus-daily]" in text
    assert "keeps backups for 1h0m0s" in text


def _count(reports: Path, app: str, outcome: str) -> int:
    summary = json.loads((reports / "summary.json").read_text())
    return sum(1 for r in summary["results"] if r.get("app") == app and r["outcome"] == outcome)


def test_html_report_is_one_self_contained_file(reports: Path, tmp_path: Path) -> None:
    index = render_html(results_dir=reports / "allure-results", output_dir=tmp_path / "html")
    html = index.read_text()
    assert index.name == "index.html" and len(html) > 100_000
    assert "<script" in html
    assert not [p for p in (tmp_path / "html").rglob("*.js")]  # nothing to fetch beside it


def test_no_results_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"(?s)no Allure results in .*fix: run the suites first"):
        render_html(results_dir=tmp_path, output_dir=tmp_path / "html")
