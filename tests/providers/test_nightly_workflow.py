"""The nightly drill workflow: actionlint passes it (and fails a broken copy), and it runs the drill
the way the README tells users to, with the versions the kind provider is written for."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from restoredrill.cluster import kind
from restoredrill.errors import MissingToolError
from restoredrill.toolchain import GoToolchain

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "nightly-restore-drill.yml"


def actionlint() -> str:
    """actionlint pinned in pins.toml and built by the toolchain, or from PATH; a missing linter
    fails, it does not skip."""
    try:
        return str(GoToolchain().binary("actionlint"))
    except MissingToolError as error:
        on_path = shutil.which("actionlint")
        if on_path:
            return on_path
        pytest.fail(f"actionlint is not built: {error}")


def run_actionlint(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [actionlint(), "-no-color", str(path)], capture_output=True, text=True, timeout=120, check=False
    )


def workflow() -> dict[Any, Any]:
    document = yaml.safe_load(WORKFLOW.read_text())
    assert isinstance(document, dict)
    return document


def steps() -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = workflow()["jobs"]["drill"]["steps"]
    return result


def test_actionlint_passes_the_workflow() -> None:
    result = run_actionlint(WORKFLOW)

    assert result.returncode == 0, f"actionlint found problems:\n{result.stdout}{result.stderr}"


def test_actionlint_fails_a_broken_copy(tmp_path: Path) -> None:
    # The control: the same linter, on the same file with one mistake, must say no.
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(WORKFLOW.read_text().replace("${{ inputs.selection }}", "${{ inputs.selecton }}"))

    result = run_actionlint(broken)

    assert result.returncode == 1, result.stdout + result.stderr
    assert "selecton" in result.stdout


def test_runs_nightly_and_on_demand() -> None:
    # PyYAML reads the key `on` as the boolean True.
    triggers = workflow()[True]

    assert "workflow_dispatch" in triggers
    assert [entry["cron"] for entry in triggers["schedule"]] == ["17 2 * * *"]


def test_pins_the_kind_the_provider_is_written_for() -> None:
    assert workflow()["env"]["KIND_VERSION"] == kind.KIND_VERSION


def test_runs_the_drills_on_kind_with_python_3_11() -> None:
    python = next(step for step in steps() if step.get("uses", "").startswith("actions/setup-python@"))
    drill = next(step for step in steps() if step.get("name") == "Run the restore drills")

    assert python["with"]["python-version"] == "3.11"
    assert "--cluster-provider kind" in drill["run"]
    assert '-m "static or drill"' in drill["run"]
    assert "--alluredir reports/allure-results" in drill["run"]
    assert "--junitxml reports/junit.xml" in drill["run"]


def test_report_and_artifacts_are_published_even_when_a_drill_fails() -> None:
    report = next(step for step in steps() if "restoredrill report" in step.get("run", ""))
    uploads = [step for step in steps() if step.get("uses") == "actions/upload-artifact@v4"]

    assert report["if"] == "${{ !cancelled() }}"
    assert {step["with"]["path"].strip() for step in uploads} == {
        "reports/",
        "reports/summary.json\nreports/summary.txt\nreports/junit.xml",
    }
    assert all(step["if"] == "${{ !cancelled() }}" for step in uploads)
    assert "--reports-dir reports" in report["run"]


def test_kind_and_kubectl_downloads_are_checksum_verified() -> None:
    install = next(step for step in steps() if step.get("name") == "Install kind and kubectl")

    assert install["run"].count("sha256sum -c -") == 2
