"""`restoredrill report`: one HTML file from the Allure results, and a text summary; and the drills'
Prometheus metrics (`reports/metrics.prom`, written by the suite at the end of a session).

The HTML is rendered by Allure 3 (the npm `allure` package, which needs Node.js but no Java),
installed once into the cache at the version pinned in pins.toml.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from restoredrill.errors import CommandError, ConfigError, MissingToolError
from restoredrill.pins import cache_dir, load_pins
from restoredrill.process import run
from restoredrill.timeouts import timeout


def allure_cli(*, progress: Any = print) -> Path:
    """The pinned Allure CLI, installed into the cache with npm on first use."""
    pin = load_pins()["npm"]["allure"]
    prefix = cache_dir() / "node" / f"allure@{pin['version']}"
    binary = prefix / "node_modules" / ".bin" / "allure"
    if binary.exists():
        return binary
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            raise MissingToolError(tool, remedy="install Node.js 20 or newer with npm (`apt-get install nodejs npm`)")
    progress(f"[report] installing {pin['package']}@{pin['version']} from the npm registry into {prefix}")
    prefix.mkdir(parents=True, exist_ok=True)
    command = ["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error",
               f"{pin['package']}@{pin['version']}"]
    _run(command, timeout=timeout("npm_install"), remedy="check that the npm registry is reachable")
    return binary


def render_html(*, results_dir: Path, output_dir: Path, name: str = "restoredrill", progress: Any = print) -> Path:
    """Render the Allure results into `output_dir/index.html`, a single self-contained file."""
    if not results_dir.is_dir() or not any(results_dir.glob("*-result.json")):
        raise ConfigError(f"no Allure results in {results_dir}",
                          remedy="run the suites first (e.g. `pytest suites -m static`), or pass --reports-dir")
    binary = allure_cli(progress=progress)
    with tempfile.TemporaryDirectory(prefix="restoredrill-allure-") as workdir:
        config = {
            "name": name,
            "output": str(output_dir.resolve()),
            "plugins": {"awesome": {"options": {"singleFile": True, "reportName": name,
                                                "groupBy": ["epic", "feature", "story"]}}},
        }
        config_path = Path(workdir) / "allurerc.json"
        config_path.write_text(json.dumps(config))
        _run([str(binary), "generate", "--config", str(config_path), str(results_dir.resolve())],
             timeout=timeout("report_render"), cwd=Path(workdir), remedy="see the Allure output above")
    index = output_dir / "index.html"
    if not index.exists():
        raise CommandError([str(binary), "generate"], returncode=0, output=f"no {index} was written",
                           remedy="check the Allure version pinned in restoredrill/pins.toml")
    return index


def _run(command: list[str], *, timeout: float, remedy: str, cwd: Path | None = None) -> None:
    run(command, timeout=timeout, remedy=remedy, cwd=cwd, env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"})


def text_summary(summary_path: Path) -> str:
    """A per-app table of outcomes from summary.json, failures first."""
    summary = json.loads(summary_path.read_text())
    by_app: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    failures = []
    for result in summary["results"]:
        app = result.get("app") or "cluster-wide"
        by_app[app][result["outcome"]] += 1
        if result["outcome"] == "failed":
            failures.append(result)
    lines = [f"restoredrill summary ({summary['generated_at']}, repo {summary['gitops_repo']})", ""]
    lines.append(f"{'app':<24} {'passed':>7} {'failed':>7} {'skipped':>8} {'passed with runbook steps':>26}")
    for app in sorted(by_app, key=lambda a: (-by_app[a]["failed"], a)):
        counts = by_app[app]
        lines.append(f"{app:<24} {counts['passed']:>7} {counts['failed']:>7} {counts['skipped']:>8} "
                     f"{counts['passed-with-runbook-steps']:>26}")
    drills = [r for r in summary["results"] if r.get("rto_s") is not None or r.get("sequence_s") is not None]
    if drills:
        lines += ["", f"{'drill':<44} {'outcome':<26} {'RTO s':>7} {'PVB':>4} {'PVR':>4} {'files':>6} {'rows':>6}"]
        for r in sorted(drills, key=lambda r: (str(r.get("scenario")), str(r.get("app")))):
            name = f"{r.get('app') or 'cluster'} {r.get('scenario')}"
            rto = r.get("rto_s") if r.get("rto_s") is not None else r.get("sequence_s")
            lines.append(f"{name:<44} {r['outcome']:<26} {rto:>7} {r.get('pod_volume_backups', '-'):>4} "
                         f"{r.get('pod_volume_restores', '-'):>4} {r.get('files_verified', '-'):>6} "
                         f"{r.get('rows_verified', '-'):>6}")
    for failure in failures:
        message = (failure.get("message") or "").strip().splitlines()
        # pytest's error lines ("E   ...") say what failed; the traceback around them does not.
        errors = [line[1:].strip() for line in message if line.startswith("E ")]
        lines += ["", f"FAILED {failure['nodeid']}", *(f"  {line}" for line in (errors or message)[:8])]
    for result in summary["results"]:
        for step in result.get("manual_steps") or []:
            lines += ["", f"RUNBOOK STEP done by the drill for {result.get('app') or 'cluster'}: {step}"]
    return "\n".join(lines)


METRICS_FILE = "metrics.prom"
SUCCESSFUL_OUTCOMES = ("passed", "passed-with-runbook-steps")
OUTCOMES = ("passed", "passed-with-runbook-steps", "failed", "skipped")
LAST_SUCCESS = "restoredrill_drill_last_success_timestamp_seconds"
# name -> help, in the order written; each is a gauge with app and scenario labels.
DRILL_METRICS = {
    "restoredrill_drill_success": "1 if the last drill of the app and scenario passed (with or without runbook "
                                  "steps done by the drill), 0 if it failed or was skipped.",
    "restoredrill_drill_outcome": "The last drill's outcome: 1 for the outcome it had, 0 for the others.",
    "restoredrill_drill_rto_seconds": "Recovery time of the last drill: restore started to every pod Ready.",
    "restoredrill_backup_age_seconds": "Age of the backup the last drill restored, when the restore was done.",
    "restoredrill_drill_duration_seconds": "Wall time of the last drill's test.",
    LAST_SUCCESS: "When the app and scenario last had a successful drill (kept across runs that failed it or did "
                  "not drill it).",
}


def _label(value: str) -> str:
    """A label value as the text format escapes it: backslash, double quote and line feed."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    """At most three decimals, none when whole (`1`, `95.2`, `1733100000.5`)."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def _unlabel(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: "\n" if m.group(1) == "n" else m.group(1), value)


_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)\{(?P<labels>.*)\} (?P<value>\S+)(?: \S+)?$')
_LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)",?')


def last_successes(text: str) -> dict[tuple[str, str], float]:
    """(app, scenario) -> the last-success timestamp, from a metrics.prom this module wrote before."""
    found: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        sample = _SAMPLE.match(line)
        if sample is None or sample["name"] != LAST_SUCCESS:
            continue
        labels = {m["key"]: _unlabel(m["value"]) for m in _LABEL.finditer(sample["labels"])}
        try:
            found[(labels.get("app", ""), labels.get("scenario", ""))] = float(sample["value"])
        except ValueError:
            continue
    return found


def _drills(results: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, Mapping[str, Any], float | None]]:
    """(app, scenario, entry, rto) of each drill in summary.json's results: the full-cluster recovery
    counts once per app it recovered. A drill that stopped before recording its facts has scenario "drill"."""
    drills = []
    for entry in results:
        scenario = entry.get("scenario")
        if scenario in (None, "static"):
            continue
        if entry.get("apps"):
            by_app = entry.get("rto_s_by_app") or {}
            drills += [(str(app), str(scenario), entry, by_app.get(app)) for app in entry["apps"]]
        elif entry.get("app"):
            drills.append((str(entry["app"]), str(scenario), entry, entry.get("rto_s")))
    return drills


def drill_metrics(results: Sequence[Mapping[str, Any]], *, finished: Mapping[str, float], previous: str,
                  now: float, exit_status: int) -> str | None:
    """metrics.prom (Prometheus text format) for summary.json's `results`, or None when no drill ran.

    `finished` gives each test's end (epoch seconds, by nodeid); `previous` is the file as the last
    run left it: a last success it names is kept for a drill that failed or did not run now, so an
    alert on its age fires for a drill that stopped passing or stopped being run."""
    drills = _drills(results)
    if not drills and not any(r.get("scenario") not in (None, "static") for r in results):
        return None
    values: dict[str, list[tuple[dict[str, str], float]]] = {name: [] for name in DRILL_METRICS}
    successes = last_successes(previous)
    for app, scenario, entry, rto in drills:
        labels = {"app": app, "scenario": scenario}
        outcome = str(entry.get("outcome"))
        success = outcome in SUCCESSFUL_OUTCOMES
        values["restoredrill_drill_success"].append((labels, 1.0 if success else 0.0))
        values["restoredrill_drill_outcome"] += [({**labels, "outcome": state}, 1.0 if state == outcome else 0.0)
                                                 for state in OUTCOMES]
        if rto is not None:
            values["restoredrill_drill_rto_seconds"].append((labels, float(rto)))
        if entry.get("backup_age_s") is not None:
            values["restoredrill_backup_age_seconds"].append((labels, float(entry["backup_age_s"])))
        if entry.get("duration_s") is not None:
            values["restoredrill_drill_duration_seconds"].append((labels, float(entry["duration_s"])))
        if success:
            successes[(app, scenario)] = finished.get(str(entry.get("nodeid")), now)
    values[LAST_SUCCESS] = [({"app": app, "scenario": scenario}, moment)
                            for (app, scenario), moment in sorted(successes.items())]
    lines = []
    for name, help_text in DRILL_METRICS.items():
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
        for labels, value in values[name]:
            rendered = ",".join(f'{key}="{_label(text)}"' for key, text in labels.items())
            lines.append(f"{name}{{{rendered}}} {_number(value)}")
    lines += ["# HELP restoredrill_run_timestamp_seconds When the last session that ran drills ended.",
              "# TYPE restoredrill_run_timestamp_seconds gauge", f"restoredrill_run_timestamp_seconds {now:.0f}",
              "# HELP restoredrill_run_exit_status pytest's exit status of that session (0: every test passed).",
              "# TYPE restoredrill_run_exit_status gauge", f"restoredrill_run_exit_status {exit_status}"]
    return "\n".join(lines) + "\n"


def _command(args: argparse.Namespace) -> int:
    reports = Path(args.reports_dir)
    summary = reports / "summary.json"
    if summary.exists():
        print(text_summary(summary))
        print()
    index = render_html(results_dir=reports / "allure-results", output_dir=Path(args.output or reports / "html"))
    print(f"HTML report: {index}  (open it in a browser; it is one self-contained file)")
    return 0


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser("report", help="render the HTML report from the reports folder",
                                   description="Render reports/allure-results as one HTML file and print a summary.")
    parser.add_argument("--reports-dir", default="reports", help="the folder pytest wrote to (default: reports)")
    parser.add_argument("--output", help="where to write the HTML report (default: REPORTS_DIR/html)")
    parser.set_defaults(func=_command)
