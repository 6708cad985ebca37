#!/usr/bin/env python3
"""Figures for the static suite: wall time of a full run on a GitOps repo, and peak memory.

Prints, never asserts (the issue's aim: the whole static suite in under 10 s on the example repo).
Usage: .venv/bin/python bench/static_suite.py [--repo PATH] [--runs N]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(ROOT / "examples" / "home-cluster"))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    # Catalogue and rules alone, in this process: what the suite costs before pytest's own overhead.
    sys.path.insert(0, str(ROOT))
    from restoredrill.catalogue import build_catalogue
    from restoredrill.config import build_config
    from restoredrill.rules import RULES, RuleContext
    from restoredrill.schemas import cached_schemas

    started = time.perf_counter()
    catalogue = build_catalogue(Path(args.repo))
    catalogue_s = time.perf_counter() - started
    config = build_config(defaults={"gitops_repo": args.repo, "reports_dir": "reports"}, ini={}, cli={},
                          base_dir=ROOT)
    context = RuleContext(catalogue=catalogue, config=config, schema_loader=lambda: cached_schemas(fetch=True))
    started = time.perf_counter()
    checks = sum(len(rule.evaluate(s, context)) >= 0 for rule in RULES.values() for s in rule.subjects(context))
    rules_s = time.perf_counter() - started

    walls = []
    with tempfile.TemporaryDirectory() as reports:
        for _ in range(args.runs):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "pytest", "suites", "-m", "static", "-q", "-p", "no:cacheprovider",
                 "--gitops-repo", args.repo, "--reports-dir", reports],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300, check=False,
                env={**os.environ, "PYTHONPATH": str(ROOT)})
            walls.append(time.perf_counter() - started)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024

    print(f"repo: {args.repo}")
    print(f"objects catalogued: {len(catalogue.manifests)}, apps: {len(catalogue.apps)}, rule checks: {checks}")
    print(f"catalogue build: {catalogue_s * 1000:.0f} ms; all rules (schemas loaded): {rules_s * 1000:.0f} ms")
    print(f"pytest suites -m static, {args.runs} runs: median {statistics.median(walls):.2f} s, "
          f"min {min(walls):.2f} s, max {max(walls):.2f} s (aim: under 10 s)")
    print(f"peak RSS of a run: {peak_mib:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
