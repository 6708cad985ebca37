"""Set-up time of one app's drill on a whole repo (`pytest -k APP` before an upgrade), printed.

Runs `pytest suites/drills -k "test_namespace_restore and APP" --gitops-repo REPO` with
`--durations=0` into a reports folder of its own and prints:

  set-up: the session's set-up before the drill's first step (cluster up or reused, the platform,
      the repo published with its stand-ins, the app's images): the test's time less its steps
  drill steps: each step of the drill from summary.json (deploy includes loading the app's images)
  wall time of the run, and how many apps the repo has (the set-up should not grow with them)

Run: `.venv/bin/python bench/app_setup.py REPO APP [--reports DIR] [-- extra pytest args]`.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_SETUP = re.compile(r"^\s*([0-9.]+)s setup\s+(\S+)", re.MULTILINE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", type=Path)
    parser.add_argument("app")
    parser.add_argument("--reports", type=Path, default=None)
    args, extra = parser.parse_known_args()
    extra = [arg for arg in extra if arg != "--"]
    from restoredrill.catalogue import build_catalogue

    started = time.monotonic()
    catalogue = build_catalogue(args.repo.resolve())
    read = time.monotonic() - started
    reports = args.reports or Path(tempfile.mkdtemp(prefix="restoredrill-bench-setup-"))
    command = [sys.executable, "-m", "pytest", "suites/drills", "-p", "no:cacheprovider", "--durations=0",
               "-k", f"test_namespace_restore and {args.app}", "--gitops-repo", str(args.repo.resolve()),
               "--reports-dir", str(reports), *extra]
    print("$", " ".join(command), flush=True)
    begun = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, check=False, capture_output=True, text=True)
    wall = time.monotonic() - begun
    sys.stdout.write(done.stdout[-4000:])
    setups = [(float(seconds), test) for seconds, test in _SETUP.findall(done.stdout)]
    print(f"\nrepo {args.repo}: {len(catalogue.apps)} apps, {len(catalogue.manifests)} objects; read in {read:.1f} s")
    if setups:
        seconds, test = max(setups)
        print(f"pytest setup phase: {seconds:.1f} s ({test})")
    summary = reports / "summary.json"
    if summary.is_file():
        for result in json.loads(summary.read_text()).get("results", []):
            steps = result.get("steps") or {}
            print(f"{result.get('app')} {result.get('scenario')}: {result.get('outcome')}; steps "
                  + ", ".join(f"{name} {value}" for name, value in steps.items()))
            # The session's fixtures (cluster, platform, the repo published, the app's images) are set
            # up when the drill asks for them, inside the test: its time less the drill's own steps.
            if result.get("duration_s") is not None:
                before = float(result["duration_s"]) - sum(float(v) for v in steps.values())
                print(f"set-up before the drill's first step: {before:.1f} s (the test's "
                      f"{float(result['duration_s']):.1f} s less its steps' {sum(map(float, steps.values())):.1f} s)")
    print(f"wall time {wall:.1f} s; pytest exit {done.returncode}")
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
