"""The report's history across runs: Allure 3's `historyPath` file, kept by `restoredrill report`.

Most tests render with a stand-in for the Allure CLI (a small script that appends one history line
the way Allure does, or misbehaves on request), so they run anywhere; the last renders twice with
the real, cached Allure CLI."""

from __future__ import annotations

import json
import shutil
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from restoredrill import report
from restoredrill.cli import main
from restoredrill.errors import CommandError, ConfigError
from restoredrill.report import (
    HISTORY_FILE,
    allure_cli,
    allure_metrics,
    history_summary,
    read_history,
    render_html,
)

# Reads the allurerc.json it is given, writes output/index.html and appends one history line built
# from the results' statuses and the metrics files, as Allure 3 does; FAKE_ALLURE_MODE makes it
# rewrite the history short (what a historyLimit does) or not append at all (Allure's "Failed to
# append history", exit 0).
FAKE_ALLURE = '''
import json, os, sys
from pathlib import Path
config = json.loads(Path(sys.argv[sys.argv.index("--config") + 1]).read_text())
sources = [Path(a) for a in sys.argv[sys.argv.index("--config") + 2:]]
output = Path(config["output"])
output.mkdir(parents=True, exist_ok=True)
(output / "index.html").write_text("<html>" + json.dumps(config.get("variables", {})) + "</html>")
results, metrics = {}, {}
for source in sources:
    for path in source.iterdir():
        if path.name.endswith("-result.json"):
            r = json.loads(path.read_text())
            results[r["historyId"]] = {"status": r["status"], "labels": r["labels"]}
        elif path.name.endswith("-perf.json"):
            metrics.update({m["key"]: m["value"] for m in json.loads(path.read_text())})
mode = os.environ.get("FAKE_ALLURE_MODE", "")
history = config.get("historyPath")
if history and mode != "no-append":
    line = json.dumps({"uuid": "u", "timestamp": 1767321600000, "testResults": results, "metrics": metrics})
    old = Path(history).read_text() if Path(history).exists() else ""
    Path(history).write_text(("" if mode == "truncate" else old) + line + "\\n")
'''


@pytest.fixture
def fake_allure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "fake-allure"
    script.write_text(f"#!{sys.executable}\n{FAKE_ALLURE}")
    script.chmod(0o755)
    monkeypatch.setattr(report, "allure_cli", lambda **_: script)
    return script


def write_run(reports: Path, *, outcomes: dict[str, str], rto: dict[str, float], generated_at: str) -> None:
    """Allure results (one drill per app, its app as the epic) and a summary.json, as a run leaves them."""
    results = reports / "allure-results"
    shutil.rmtree(results, ignore_errors=True)
    results.mkdir(parents=True)
    for app, outcome in outcomes.items():
        name = f"{uuid.uuid4()}-result.json"
        (results / name).write_text(json.dumps({
            "uuid": name, "name": f"test_namespace_restore[{app}]", "historyId": f"history-{app}",
            "fullName": f"suites.drills.test_namespace_restore#test_namespace_restore[{app}]",
            "status": "passed" if outcome.startswith("passed") else outcome, "start": 1, "stop": 2,
            "labels": [{"name": "epic", "value": app}, {"name": "tag", "value": "drill"}]}))
    entries = [{"nodeid": f"suites/drills/test_namespace_restore.py::test_namespace_restore[{app}]", "app": app,
                "scenario": "namespace-restore", "outcome": outcome, "rto_s": rto.get(app), "backup_age_s": 5400.0}
               for app, outcome in outcomes.items()]
    (reports / "summary.json").write_text(json.dumps({
        "generated_at": generated_at, "gitops_repo": "repo", "exit_status": 0, "totals": {}, "results": entries}))


def render(reports: Path, history: Path) -> Path:
    facts = json.loads((reports / "summary.json").read_text())
    return render_html(results_dir=reports / "allure-results", output_dir=reports / "html", history=history,
                       metrics=allure_metrics(facts["results"], at_ms=1767321600000), progress=lambda _: None)


def render_two_nights(reports: Path, history: Path) -> tuple[bytes, Path]:
    """Two nights rendered in turn (gatus fails the first): the history after the first, the second's index."""
    write_run(reports, outcomes={"pelican": "passed", "gatus": "failed"}, rto={"pelican": 41.5, "gatus": 12.0},
              generated_at="2026-01-01T02:17:00Z")
    render(reports, history)
    first = history.read_bytes()
    write_run(reports, outcomes={"pelican": "passed", "gatus": "passed"}, rto={"pelican": 39.0, "gatus": 11.0},
              generated_at="2026-01-02T02:17:00Z")
    return first, render(reports, history)


def test_two_renders_keep_both_runs_and_the_first_line_unchanged(tmp_path: Path, fake_allure: Path) -> None:
    reports, history = tmp_path / "reports", tmp_path / "reports" / HISTORY_FILE
    first, index = render_two_nights(reports, history)

    assert history.read_bytes().startswith(first)
    runs = read_history(history)
    assert len(runs) == 2
    assert [run["metrics"]["rto.namespace-restore.pelican"] for run in runs] == [41.5, 39.0]
    assert "1 earlier run kept in allure-history.jsonl" in index.read_text()  # the report header says so
    text = history_summary(runs, path=history, earlier=1)
    assert "held 1 earlier run; with this run appended it holds 2" in text
    assert _row(text, "gatus").split()[:3] == ["gatus", "1/2", "50%"]
    assert _row(text, "pelican namespace-restore").split()[2:] == ["41.5", "39", "1.5", "1.5"]


def _row(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"{name} "))


def test_a_corrupt_history_line_is_an_error_naming_the_file_and_line_and_changes_nothing(
        tmp_path: Path, fake_allure: Path) -> None:
    reports, history = tmp_path / "reports", tmp_path / "history.jsonl"
    write_run(reports, outcomes={"pelican": "passed"}, rto={"pelican": 40.0}, generated_at="2026-01-01T02:17:00Z")
    history.write_text('{"uuid": "a", "testResults": {}}\n\n{"uuid": "b", "testRes\n{"uuid": "c", "testResults": {}}\n')
    before = history.read_bytes()
    with pytest.raises(ConfigError, match=rf"(?s){history}:3: Allure history line is not JSON.*fix: repair or "
                                          r"delete line 3"):
        render(reports, history)
    assert history.read_bytes() == before
    assert not (reports / "html").exists()  # stopped before Allure ran


def test_a_line_that_is_json_but_no_history_entry_is_an_error_too(tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    history.write_text('{"uuid": "a", "testResults": {}}\n[1, 2]\n')
    with pytest.raises(ConfigError, match=rf"{history}:2: Allure history line is not an Allure history entry"):
        read_history(history)


@pytest.mark.parametrize("mode", ["truncate", "no-append"])
def test_the_history_is_never_cut_short_by_what_allure_writes(
        tmp_path: Path, fake_allure: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    reports, history = tmp_path / "reports", tmp_path / "history.jsonl"
    write_run(reports, outcomes={"pelican": "passed"}, rto={"pelican": 40.0}, generated_at="2026-01-01T02:17:00Z")
    render(reports, history)
    render(reports, history)
    before = history.read_bytes()
    monkeypatch.setenv("FAKE_ALLURE_MODE", mode)
    with pytest.raises(CommandError, match=rf"not {history} plus one run.*was left unchanged"):
        render(reports, history)
    assert history.read_bytes() == before
    assert len(read_history(history)) == 2


def test_a_line_separator_inside_a_message_does_not_split_the_line(tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    # JSON.stringify leaves U+2028 unescaped; Allure reads the file by line feeds only.
    history.write_text('{"uuid": "a", "testResults": {"h": {"message": "one\u2028two"}}}\r\n', encoding="utf-8")
    assert read_history(history)[0]["testResults"]["h"]["message"] == "one\u2028two"


def test_a_last_line_without_its_newline_is_kept_as_its_own_run(tmp_path: Path, fake_allure: Path) -> None:
    reports, history = tmp_path / "reports", tmp_path / "history.jsonl"
    write_run(reports, outcomes={"pelican": "passed"}, rto={"pelican": 40.0}, generated_at="2026-01-01T02:17:00Z")
    history.write_text('{"uuid": "earlier", "testResults": {}}')  # e.g. cut by a hand edit
    render(reports, history)
    assert [run["uuid"] for run in read_history(history)] == ["earlier", "u"]


def test_the_history_file_is_replaced_by_a_rename_not_rewritten(tmp_path: Path, fake_allure: Path) -> None:
    reports, history = tmp_path / "reports", tmp_path / "history.jsonl"
    write_run(reports, outcomes={"pelican": "passed"}, rto={"pelican": 40.0}, generated_at="2026-01-01T02:17:00Z")
    render(reports, history)
    inode = history.stat().st_ino
    render(reports, history)
    assert history.stat().st_ino != inode  # a reader of the old file never sees half of the new one
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_each_drill_gives_an_rto_and_a_backup_age_metric() -> None:
    results: list[dict[str, Any]] = [
        {"app": "pelican", "scenario": "namespace-restore", "outcome": "passed", "rto_s": 41.25,
         "backup_age_s": 9000},
        {"app": "gatus", "scenario": "namespace-restore", "outcome": "failed"},  # stopped before its facts
        {"scenario": "full-cluster", "apps": ["pelican", "gatus"], "rto_s_by_app": {"pelican": 300, "gatus": 280},
         "outcome": "passed"},
        {"app": "pelican", "scenario": "static", "outcome": "passed"},
    ]
    samples = {m["key"]: m for m in allure_metrics(results, at_ms=5)}
    assert sorted(samples) == ["backup-age.namespace-restore.pelican", "rto.full-cluster.gatus",
                               "rto.full-cluster.pelican", "rto.namespace-restore.pelican"]
    assert samples["rto.namespace-restore.pelican"] == {
        "id": "restoredrill:rto.namespace-restore.pelican", "key": "rto.namespace-restore.pelican",
        "title": "pelican namespace-restore RTO", "group": "rto", "unit": "s", "better": "lower", "value": 41.25,
        "start": 5, "stop": 5}
    assert samples["backup-age.namespace-restore.pelican"]["value"] == 2.5
    assert samples["backup-age.namespace-restore.pelican"]["unit"] == "h"


def test_the_summary_lines_up_a_drill_that_was_missing_from_some_runs() -> None:
    runs = [{"timestamp": 1767225600000, "metrics": {"rto.namespace-restore.pelican": 40}},
            {"timestamp": 1767312000000, "metrics": {"rto.namespace-restore.pelican": 42,
                                                     "rto.namespace-restore.gatus": 9, "someone.else": 1}}]
    text = history_summary(runs, path=Path("h.jsonl"), earlier=1)
    assert "from 2026-01-01 00:00 UTC to 2026-01-02 00:00 UTC" in text
    assert _row(text, "gatus namespace-restore").split()[2:] == ["-", "9", "-", "-"]
    assert _row(text, "pelican namespace-restore").split()[2:] == ["40", "42", "-", "-"]
    assert "someone" not in text


def test_restoredrill_report_notes_how_many_earlier_runs_the_history_holds(
        tmp_path: Path, fake_allure: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reports = tmp_path / "reports"
    write_run(reports, outcomes={"pelican": "passed"}, rto={"pelican": 40.0}, generated_at="2026-01-01T02:17:00Z")
    assert main(["report", "--reports-dir", str(reports)]) == 0
    assert main(["report", "--reports-dir", str(reports)]) == 0
    out = capsys.readouterr().out
    assert f"History: {reports / HISTORY_FILE} held 1 earlier run; with this run appended it holds 2" in out
    other = tmp_path / "elsewhere.jsonl"
    assert main(["report", "--reports-dir", str(reports), "--history", str(other)]) == 0
    assert len(read_history(other)) == 1 and len(read_history(reports / HISTORY_FILE)) == 2
    capsys.readouterr()
    assert main(["report", "--reports-dir", str(reports), "--no-history"]) == 0
    assert "History:" not in capsys.readouterr().out
    assert len(read_history(reports / HISTORY_FILE)) == 2


def test_restoredrill_report_stops_on_a_corrupt_history_after_printing_the_summary(
        tmp_path: Path, fake_allure: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reports = tmp_path / "reports"
    write_run(reports, outcomes={"pelican": "passed"}, rto={"pelican": 40.0}, generated_at="2026-01-01T02:17:00Z")
    (reports / HISTORY_FILE).parent.mkdir(parents=True)
    (reports / HISTORY_FILE).write_text("not json\n")
    assert main(["report", "--reports-dir", str(reports)]) == 1
    captured = capsys.readouterr()
    assert "restoredrill summary" in captured.out
    assert f"{reports / HISTORY_FILE}:1: Allure history line is not JSON" in captured.err


def test_the_real_allure_cli_appends_one_run_per_render_with_the_drill_metrics(tmp_path: Path) -> None:
    allure_cli()  # the pinned CLI, installed from npm as `restoredrill report` installs it on first use
    reports, history = tmp_path / "reports", tmp_path / "reports" / HISTORY_FILE
    first, index = render_two_nights(reports, history)

    assert history.read_bytes().startswith(first) and len(history.read_bytes()) > len(first)
    runs = read_history(history)
    assert len(runs) == 2 and runs[0]["uuid"] != runs[1]["uuid"]
    assert runs[1]["metrics"]["rto.namespace-restore.pelican"] == 39
    assert runs[1]["metrics"]["backup-age.namespace-restore.gatus"] == 1.5
    statuses = {item["name"]: item["status"] for item in runs[0]["testResults"].values()}
    assert statuses == {"test_namespace_restore[gatus]": "failed", "test_namespace_restore[pelican]": "passed"}
    assert '"metrics"' in index.read_text()  # the report's Metrics section, where the values are drawn over time
    assert _row(history_summary(runs, path=history, earlier=1), "gatus").split()[:3] == ["gatus", "1/2", "50%"]
