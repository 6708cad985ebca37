#!/usr/bin/env python3
"""The static suite over several GitOps repos: tests, failures by rule, warnings and wall time per repo.

Prints, never asserts (the aim: every repo in under 10 s). Each repo runs in its own pytest process,
as a user would run it; the counts come from that run's summary.json.
Usage: .venv/bin/python bench/static_corpus.py [--apps-path P] [--findings FILE] REPO [REPO ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def run_repo(repo: Path, *, apps_path: str | None, reports: Path) -> tuple[float, dict[str, Any]]:
    command = [sys.executable, "-m", "pytest", "suites", "-m", "static", "-q", "-p", "no:cacheprovider",
               "--gitops-repo", str(repo), "--reports-dir", str(reports)]
    if apps_path:
        command += ["--apps-path", apps_path]
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    wall = time.perf_counter() - started
    summary_path = reports / "summary.json"
    if not summary_path.exists():
        return wall, {"error": (completed.stdout + completed.stderr)[-2000:], "results": []}
    summary: dict[str, Any] = json.loads(summary_path.read_text())
    return wall, summary


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("repos", nargs="+", type=Path)
    parser.add_argument("--apps-path", help="passed to the suite as --apps-path")
    parser.add_argument("--findings", type=Path, help="also write every failure and warning message to this file")
    args = parser.parse_args()

    lines: list[str] = []
    print(f"{'repo':<44} {'tests':>6} {'failed':>7} {'warned':>7} {'wall s':>7}  failures by rule")
    for repo in args.repos:
        with tempfile.TemporaryDirectory(prefix="restoredrill-bench-") as reports:
            wall, summary = run_repo(repo, apps_path=args.apps_path, reports=Path(reports))
        results = summary.get("results", [])
        if "error" in summary:
            print(f"{repo.name:<44} run failed: {summary['error'].strip().splitlines()[-1:]}")
            continue
        failed = [r for r in results if r["outcome"] == "failed"]
        warned = [r for r in results if r.get("warnings")]
        by_rule = Counter(str(r.get("rule")) for r in failed)
        rules = ", ".join(f"{rule} {count}" for rule, count in by_rule.most_common())
        print(f"{repo.name:<44} {len(results):>6} {len(failed):>7} {len(warned):>7} {wall:>7.2f}  {rules}")
        for r in failed:
            lines += [f"### {repo.name} FAILED {r.get('rule')} [{r.get('subject')}]", str(r.get("message", "")), ""]
        for r in warned:
            for warning in r["warnings"]:
                lines += [f"### {repo.name} WARNING {r.get('rule')} [{r.get('subject')}]", str(warning), ""]
    if args.findings:
        args.findings.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
