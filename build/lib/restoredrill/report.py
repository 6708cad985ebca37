"""`restoredrill report`: one HTML file from the Allure results, and a text summary; and the drills'
Prometheus metrics (`reports/metrics.prom`, written by the suite at the end of a session).

The HTML is rendered by Allure 3 (the npm `allure` package, which needs Node.js but no Java),
installed once into the cache at the version pinned in pins.toml.

History across runs is Allure 3's own: its `historyPath` file (JSON Lines, one line per rendered
report: each test's status and duration by historyId, with its labels, and the run's `metrics`) is
read when a render starts and appended when it ends (`@allurereport/core/dist/history.js`). Each
drill's RTO and backup age go in as Allure metrics (a `*-perf.json` results file), so the report's
Metrics section shows each app's values over the runs, and the text summary reads the same file for
each app's pass rate. Allure rewrites the file in place and would cut it to its `historyLimit`, so
restoredrill sets no limit, gives Allure a copy, checks that the copy is the old file plus one line,
and only then renames it over the kept file.
"""

from __future__ import annotations

import argparse
import calendar
import json
import os
import re
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from restoredrill.audit import write_atomically
from restoredrill.errors import CommandError, ConfigError, MissingToolError
from restoredrill.pins import cache_dir, load_pins
from restoredrill.process import run
from restoredrill.timeouts import timeout


def allure_cli_path() -> Path:
    """Where the pinned Allure CLI is (or will be) installed in the cache."""
    version = load_pins()["npm"]["allure"]["version"]
    return cache_dir() / "node" / f"allure@{version}" / "node_modules" / ".bin" / "allure"


def allure_cli(*, progress: Any = print) -> Path:
    """The pinned Allure CLI, installed into the cache with npm on first use."""
    pin = load_pins()["npm"]["allure"]
    binary = allure_cli_path()
    prefix = binary.parents[2]
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


HISTORY_FILE = Path("history") / "allure-history.jsonl"  # under the reports folder
METRICS_RESULTS_FILE = "restoredrill-drills-perf.json"  # Allure's reader takes `*-perf.json` as metrics
# Allure metric groups (the key's first dot-separated part): kind -> (group title, short name, unit).
# Lower is better for both.
METRIC_KINDS = {
    "rto": ("RTO: restore started to every pod Ready", "RTO", "s"),
    "backup-age": ("Age of the restored backup when the drill restored it", "backup age", "h"),
}


def render_html(*, results_dir: Path, output_dir: Path, name: str = "restoredrill", history: Path | None = None,
                metrics: Sequence[Mapping[str, Any]] = (), progress: Any = print) -> Path:
    """Render the Allure results into `output_dir/index.html`, a single self-contained file.

    With `history`, the report shows the runs that file holds and this run is appended to it; the
    file only ever grows (see the module docstring). `metrics` are Allure metric samples
    (`allure_metrics`), kept in the history with the run."""
    if not results_dir.is_dir() or not any(results_dir.glob("*-result.json")):
        raise ConfigError(f"no Allure results in {results_dir}",
                          remedy="run the suites first (e.g. `pytest suites -m static`), or pass --reports-dir")
    earlier = read_history(history) if history is not None else []
    binary = allure_cli(progress=progress)
    with tempfile.TemporaryDirectory(prefix="restoredrill-allure-") as workdir:
        work = Path(workdir)
        config: dict[str, Any] = {
            "name": name,
            "output": str(output_dir.resolve()),
            "plugins": {"awesome": {"options": {"singleFile": True, "reportName": name,
                                                "groupBy": ["epic", "feature", "story"]}}},
            "performance": {"groups": {kind: {"title": title} for kind, (title, _, _) in METRIC_KINDS.items()}},
        }
        kept = b""
        if history is not None:
            kept = history.read_bytes() if history.exists() else b""
            if kept and not kept.endswith(b"\n"):
                kept += b"\n"  # Allure appends right after the last byte: without this the two lines would merge
            (work / "history.jsonl").write_bytes(kept)
            # No historyLimit: with one, Allure drops the oldest lines (and empties the file at 0).
            config["historyPath"] = str(work / "history.jsonl")
            config["variables"] = {"history": f"{_runs(len(earlier))} kept in {history.name}, this one appended"}
        config_path = work / "allurerc.json"
        config_path.write_text(json.dumps(config))
        sources = [str(results_dir.resolve())]
        if metrics:
            (work / "metrics").mkdir()
            (work / "metrics" / METRICS_RESULTS_FILE).write_text(json.dumps(list(metrics)))
            sources.append(str(work / "metrics"))
        command = [str(binary), "generate", "--config", str(config_path), *sources]
        _run(command, timeout=timeout("report_render"), cwd=work, remedy="see the Allure output above")
        if history is not None:
            _keep_history(history, kept=kept, appended=(work / "history.jsonl").read_bytes(), command=command)
    index = output_dir / "index.html"
    if not index.exists():
        raise CommandError([str(binary), "generate"], returncode=0, output=f"no {index} was written",
                           remedy="check the Allure version pinned in restoredrill/pins.toml")
    return index


def read_history(path: Path) -> list[dict[str, Any]]:
    """The runs an Allure history file holds, oldest first; [] when there is no file yet.

    A line that is not a JSON object is an error naming the file and line: Allure itself would stop
    with a bare SyntaxError, and skipping the line would mean rewriting the file without it."""
    if not path.exists():
        return []
    runs = []
    # Split at line feeds only, as Allure's readline does: str.splitlines() also splits at U+2028,
    # which JSON.stringify leaves unescaped inside a test's message.
    for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").split("\n"), start=1):
        if not line.strip():
            continue  # Allure skips blank lines too
        try:
            point = json.loads(line)
        except json.JSONDecodeError as error:
            raise _corrupt(path, number, f"not JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(point, dict) or not isinstance(point.get("testResults", {}), dict):
            raise _corrupt(path, number, "not an Allure history entry (a JSON object with testResults)")
        runs.append(point)
    return runs


def _corrupt(path: Path, line: int, what: str) -> ConfigError:
    return ConfigError(f"{path}:{line}: Allure history line is {what}",
                       remedy=f"repair or delete line {line} of {path} (every other line is one earlier run and "
                              "is kept), or render with another history (--history PATH) or none (--no-history)")


def _keep_history(path: Path, *, kept: bytes, appended: bytes, command: list[str]) -> None:
    """Rename Allure's copy over `path` if it is the kept file plus one run; otherwise leave `path` alone."""
    added = appended[len(kept):] if appended.startswith(kept) else b""
    lines = [line for line in added.decode("utf-8", errors="replace").split("\n") if line.strip()]
    try:
        complete = len(lines) == 1 and isinstance(json.loads(lines[0]), dict)
    except json.JSONDecodeError:
        complete = False
    if not complete:
        raise CommandError(command, returncode=0,
                           output=f"Allure's history copy is not {path} plus one run "
                                  f"({len(kept)} bytes kept, {len(appended)} written); {path} was left unchanged",
                           remedy="see Allure's output above (\"Failed to append history\"); the HTML report "
                                  "was written")
    write_atomically(path, appended.decode("utf-8"))


def _runs(count: int) -> str:
    return f"{count} earlier run" if count == 1 else f"{count} earlier runs"


def _metric_key(kind: str, app: str, scenario: str) -> str:
    return f"{kind}.{scenario}.{app}"  # scenario before app: an app name may hold a dot, a scenario does not


def _parse_metric_key(key: str) -> tuple[str, str, str] | None:
    """(kind, app, scenario) of a key `_metric_key` made, None for anyone else's metric."""
    parts = key.split(".", 2)
    if len(parts) != 3 or parts[0] not in METRIC_KINDS:
        return None
    return parts[0], parts[2], parts[1]


def allure_metrics(results: Sequence[Mapping[str, Any]], *, at_ms: int) -> list[dict[str, Any]]:
    """Allure metric samples (the `*-perf.json` format) of each drill's RTO (s) and backup age (h)."""
    samples = []
    for app, scenario, entry, rto in _drills(results):
        values = {"rto": rto, "backup-age": None if entry.get("backup_age_s") is None
                  else float(entry["backup_age_s"]) / 3600}
        for kind, value in values.items():
            if value is None:
                continue
            _, short, unit = METRIC_KINDS[kind]
            key = _metric_key(kind, app, scenario)
            samples.append({"id": f"restoredrill:{key}", "key": key, "title": f"{app} {scenario} {short}",
                            "group": kind, "unit": unit, "better": "lower", "value": round(float(value), 3),
                            "start": at_ms, "stop": at_ms})
    return samples


def history_summary(runs: Sequence[Mapping[str, Any]], *, path: Path, earlier: int, last: int = 5) -> str:
    """How many runs `path` holds, each app's pass rate over them, and each drill's last RTOs and ages.

    An app's run is green when every one of its tests (its Allure epic) that ran passed; a run that
    only skipped the app does not count."""
    held = f"History: {path} held {_runs(earlier)}; with this run appended it holds {len(runs)}"
    lines = [f"{held}, from {_when(runs[0])} to {_when(runs[-1])}." if runs else f"{held}."]
    green: dict[str, list[bool]] = defaultdict(list)
    for point in runs:
        statuses: dict[str, list[str]] = defaultdict(list)
        for item in (point.get("testResults") or {}).values():
            app = next((label.get("value") for label in item.get("labels") or []
                        if label.get("name") == "epic"), None)
            if app and item.get("status") not in ("skipped", "unknown"):
                statuses[str(app)].append(str(item.get("status")))
        for app, seen in statuses.items():
            green[app].append(all(status == "passed" for status in seen))
    if green:
        lines += ["", f"{'app':<24} {'green runs':>10} {'pass rate':>10}  last {last} runs (oldest first)"]
        for app in sorted(green, key=lambda a: (sum(green[a]) / len(green[a]), a)):
            marks = " ".join("pass" if ok else "FAIL" for ok in green[app][-last:])
            lines.append(f"{app:<24} {f'{sum(green[app])}/{len(green[app])}':>10} "
                         f"{sum(green[app]) / len(green[app]):>10.0%}  {marks}")
    window = [{parsed: float(value) for key, value in (point.get("metrics") or {}).items()
               if (parsed := _parse_metric_key(key)) is not None and isinstance(value, (int, float))}
              for point in runs[-last:]]
    series = {(app, scenario): {kind: ["-" if (kind, app, scenario) not in found
                                       else _number(found[(kind, app, scenario)]) for found in window]
                                for kind in METRIC_KINDS}
              for app, scenario in {(app, scenario) for found in window for _, app, scenario in found}}
    if series:
        lines += ["", f"{'drill':<44} {f'RTO s, last {last} runs':<32} backup age h, last {last} runs"]
        for (app, scenario), values in sorted(series.items()):
            lines.append(f"{f'{app} {scenario}':<44} {' '.join(values['rto']):<32} {' '.join(values['backup-age'])}")
    return "\n".join(lines)


def _epoch_ms(generated_at: object) -> int:
    """summary.json's `generated_at` (`2026-01-02T02:40:00Z`) in epoch milliseconds; now if it is not one."""
    try:
        return int(calendar.timegm(time.strptime(str(generated_at), "%Y-%m-%dT%H:%M:%SZ")) * 1000)
    except ValueError:
        return int(time.time() * 1000)


def _when(point: Mapping[str, Any]) -> str:
    stamp = point.get("timestamp")
    if not isinstance(stamp, (int, float)):
        return "?"
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(stamp / 1000))


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
    history = None if args.no_history else Path(args.history or reports / HISTORY_FILE)
    metrics: list[dict[str, Any]] = []
    if summary.exists():
        print(text_summary(summary), end="\n\n", flush=True)  # shown even if the history stops the render
        facts = json.loads(summary.read_text())
        metrics = allure_metrics(facts["results"], at_ms=_epoch_ms(facts.get("generated_at")))
    earlier = read_history(history) if history is not None else []
    index = render_html(results_dir=reports / "allure-results", output_dir=Path(args.output or reports / "html"),
                        history=history, metrics=metrics)
    if history is not None:
        print(history_summary(read_history(history), path=history, earlier=len(earlier)))
        print()
    print(f"HTML report: {index}  (open it in a browser; it is one self-contained file)")
    return 0


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser("report", help="render the HTML report from the reports folder",
                                   description="Render reports/allure-results as one HTML file and print a summary.")
    parser.add_argument("--reports-dir", default="reports", help="the folder pytest wrote to (default: reports)")
    parser.add_argument("--output", help="where to write the HTML report (default: REPORTS_DIR/html)")
    parser.add_argument("--history", metavar="PATH",
                        help="Allure 3 history file (JSON Lines, one line per rendered run) the report reads and "
                             f"this run is appended to; keep it between runs (default: REPORTS_DIR/{HISTORY_FILE})")
    parser.add_argument("--no-history", action="store_true",
                        help="neither read nor append a history (a one-off render that must not count as a run)")
    parser.set_defaults(func=_command)
