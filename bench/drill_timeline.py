"""Where each drill's time goes, printed (not asserted), from the objects' own timestamps.

For each app whose drill recorded a "timeline" fact in summary.json (restoredrill.timeline: the
Backup, Restore, PodVolumeBackups/Restores and pods' timestamps), prints every step of the drill
(facts["steps"]) with its seconds and whom they belong to (velero, kubelet, flux, restoredrill);
the backup and restore steps split into their parts (queued, objects, pod start, data, pods
Ready...), what the timestamps do not cover going to restoredrill; the RTO from the objects, the
moment each pod became Ready, each PodVolumeRestore/Backup's seconds and bytes; then one line per
app of seconds per owner.

Run: `.venv/bin/python bench/drill_timeline.py [--from-summary reports/summary.json]` for a run
already made (`make drill`), or `.venv/bin/python bench/drill_timeline.py --run` (every drill) or `-k EXPR`
[--reports DIR] [-- extra pytest args] to run the drills first (as bench/drills.py does).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.drills import run as run_drills
from restoredrill.timeline import OWNERS, format_timeline, owner_totals, step_breakdown

DEFAULT_SUMMARY = Path("reports/summary.json")
HINT = ("run a drill first: `.venv/bin/python bench/drill_timeline.py -k pelican` (runs pelican's drill, "
        "then prints), or `make drill` and then this script")


class NoTimeline(Exception):
    """The summary holds nothing this bench can print; the message says why and what to run."""


def timed_results(summary: Mapping[str, Any], *, source: Path) -> list[Mapping[str, Any]]:
    """The summary's test entries that carry a "timeline" fact, by app."""
    results = [r for r in summary.get("results") or [] if isinstance(r, Mapping) and r.get("phase") == "call"]
    timed = [r for r in results if isinstance(r.get("timeline"), Mapping)]
    if not timed:
        drills = [r for r in results if r.get("steps")]
        seen = (f"{len(drills)} drill results, none with timeline facts (a run from before the drill recorded them?)"
                if drills else f"{len(results)} test results, no drill among them")
        raise NoTimeline(f"no timeline facts in {source}: {seen}; {HINT}")
    return sorted(timed, key=lambda r: (str(r.get("app")), str(r.get("scenario"))))


def load_summary(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise NoTimeline(f"no {path}; {HINT}")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise NoTimeline(f"{path} is not JSON ({error}); {HINT}") from error
    if not isinstance(summary, dict):
        raise NoTimeline(f"{path} holds no summary object; {HINT}")
    return summary


def report(summary: Mapping[str, Any], *, source: Path) -> list[str]:
    lines: list[str] = []
    totals: list[tuple[str, dict[str, float]]] = []
    for result in timed_results(summary, source=source):
        app = str(result.get("app") or "?")
        timeline, steps = result["timeline"], result.get("steps") or {}
        lines.append(f"{app} ({result.get('scenario', '?')}, {result.get('outcome', '?')}): drill "
                     f"{_figure(result.get('duration_s'))} s, RTO from the objects "
                     f"{_figure((timeline.get('restore') or {}).get('rto_s'))} s, by the drill's clock "
                     f"{_figure(result.get('rto_s'))} s")
        lines += format_timeline(timeline=timeline, steps=steps)
        lines.append("")
        totals.append((app, owner_totals(step_breakdown(timeline=timeline, steps=steps))))
    lines.append(f"{'seconds by owner':<24}" + "".join(f"{owner:>14}" for owner in OWNERS) + f"{'total':>10}")
    for app, by_owner in totals:
        lines.append(f"{app:<24}" + "".join(f"{_figure(by_owner.get(owner)):>14}" for owner in OWNERS)
                     + f"{_figure(round(sum(by_owner.values()), 1)):>10}")
    return lines


def _figure(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-summary", type=Path, default=DEFAULT_SUMMARY,
                        help=f"the summary.json to print (default: {DEFAULT_SUMMARY}); ignored with --run")
    parser.add_argument("--run", action="store_true", help="run the drills first (pytest suites/drills), then print")
    parser.add_argument("-k", dest="selection", help="run the drills -k selects (pytest -k expression), then print")
    parser.add_argument("--reports", type=Path, help="when running: reports folder (default: a temporary one)")
    parser.add_argument("extra", nargs="*", help="when running: more pytest arguments (after --)")
    args = parser.parse_args()
    code = 0
    source = args.from_summary
    if args.run or args.selection or args.reports or args.extra:
        reports = args.reports or Path(tempfile.mkdtemp(prefix="restoredrill-timeline-"))
        code, seconds = run_drills(args.selection, reports, args.extra)
        source = reports / "summary.json"
        print(f"\nwall time: {seconds:.0f} s; pytest exit status {code}; reports in {reports}\n")
    try:
        lines = report(load_summary(source), source=source)
    except NoTimeline as error:
        print(error, file=sys.stderr)
        return code or 1
    for line in lines:
        print(line)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
