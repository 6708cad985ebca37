"""Figures of the restore drills, printed (not asserted).

Runs the drill suites (`pytest suites/drills`, or the `-k` selection given) into a reports folder
of its own and prints, from its summary.json:

  per app: RTO (restore created -> every PodVolumeRestore done and every pod Ready), the backup's
      seconds, PodVolumeBackups/Restores, files and rows verified, the whole drill's seconds
  per CNPG option (A = the namespace drill of a CNPG app, B = object-store recovery, C = pg_dump):
      seconds to a healthy, verified Cluster
  full-cluster recovery: each step, each app's RTO and the whole sequence (aim: 30 min on 2 cores)
  wall time of the run

Run: `.venv/bin/python bench/drills.py [-k EXPR] [--reports DIR] [-- extra pytest args]`, or
`.venv/bin/python bench/drills.py --from-summary reports/summary.json` for the figures of a run
already made (`make drill`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run(selection: str | None, reports: Path, extra: list[str]) -> tuple[int, float]:
    command = [sys.executable, "-m", "pytest", "suites/drills", "-p", "no:cacheprovider", "--reports-dir",
               str(reports), *(["-k", selection] if selection else []), *extra]
    print("$", " ".join(command), flush=True)
    started = time.monotonic()
    code = subprocess.run(command, cwd=ROOT, check=False).returncode
    return code, time.monotonic() - started


def figures(summary: dict[str, Any]) -> list[str]:
    lines = []
    results = [r for r in summary.get("results", []) if r.get("phase") == "call"]
    drills = [r for r in results if r.get("scenario") == "namespace-restore"]
    if drills:
        lines.append(f"{'app':<20}{'outcome':<9}{'RTO s':>8}{'backup s':>10}{'PVB':>5}{'PVR':>5}{'files':>7}"
                     f"{'rows':>7}{'drill s':>9}")
        for r in sorted(drills, key=lambda r: str(r.get("app"))):
            steps = r.get("steps") or {}
            lines.append(f"{r.get('app', '?'):<20}{r['outcome']:<9}{_n(r.get('rto_s')):>8}{_n(steps.get('backup')):>10}"
                         f"{_n(r.get('pod_volume_backups')):>5}{_n(r.get('pod_volume_restores')):>5}"
                         f"{_n(r.get('files_verified')):>7}{_n(r.get('rows_verified')):>7}{_n(r.get('duration_s')):>9}")
    options = [r for r in results if str(r.get("scenario", "")).startswith("cnpg-option-")]
    cnpg_apps = {r.get("app") for r in options}
    for r in drills:
        if r.get("app") in cnpg_apps:
            lines.append(f"CNPG option A ({r['app']}, Velero PVC restore): {_n(r.get('rto_s'))} s, {r['outcome']}")
    for r in sorted(options, key=lambda r: str(r.get("scenario"))):
        option = str(r["scenario"]).rsplit("-", 1)[-1].upper()
        lines.append(f"CNPG option {option} ({r.get('app')}): {_n(r.get('rto_s'))} s, {r['outcome']}")
    for r in results:
        if "rto_s_by_app" in r:
            lines.append(f"full-cluster recovery ({r['outcome']}): sequence {_n(r.get('sequence_s'))} s "
                         f"({_n((r.get('sequence_s') or 0) / 60)} min, aim 30 min)")
            for name, seconds in (r.get("steps") or {}).items():
                lines.append(f"  {name:<40}{_n(seconds):>8} s")
            for app, seconds in (r.get("rto_s_by_app") or {}).items():
                lines.append(f"  RTO {app:<36}{_n(seconds):>8} s")
    return lines


def _n(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", dest="selection", help="pytest -k expression (default: every drill)")
    parser.add_argument("--reports", type=Path, help="reports folder (default: a temporary one)")
    parser.add_argument("--from-summary", type=Path, help="print the figures of this summary.json, run nothing")
    parser.add_argument("extra", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args()
    if args.from_summary:
        for line in figures(json.loads(args.from_summary.read_text())):
            print(line)
        return 0
    reports = args.reports or Path(tempfile.mkdtemp(prefix="restoredrill-bench-"))
    code, seconds = run(args.selection, reports, args.extra)
    summary = json.loads((reports / "summary.json").read_text())
    print()
    for line in figures(summary):
        print(line)
    print(f"wall time: {seconds:.0f} s ({seconds / 60:.1f} min); pytest exit status {code}; reports in {reports}")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
