"""Figures of the local provider, printed (not asserted).

  toolchain build: per component, the duration recorded in its stamp by the last build
      (cold only if the Go caches were empty then; `--cold` rebuilds into empty caches, ~40 min)
  warm toolchain: `ensure_toolchain()` with everything stamped
  warm `up` to node Ready and to add-ons ready; `down`
  resident memory of the control plane + kubelet (and containerd, kube-proxy) from /proc

Run as root: `.venv/bin/python bench/cluster.py [--keep] [--cold]`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from restoredrill.cluster.local import CONTROL_PLANE, LocalCluster
from restoredrill.pins import cache_dir
from restoredrill.toolchain import GoToolchain, ensure_toolchain

MIB = 1024 * 1024


def cold_build(toolchain_out: list[str]) -> None:
    """Rebuild every component with empty Go module and build caches (what a fresh CI machine pays)."""
    with tempfile.TemporaryDirectory(prefix="rd-cold-") as scratch:
        os.environ["GOMODCACHE"] = f"{scratch}/mod"
        os.environ["GOCACHE"] = f"{scratch}/build"
        cache = Path(scratch) / "cache"
        toolchain = GoToolchain(cache=cache, out=toolchain_out.append)
        go_version = toolchain.go_version()
        for recipe in toolchain.recipes.values():
            if recipe.default:
                outcome = toolchain.build(recipe, go_version=go_version)
                print(f"cold build {recipe.name:24} {outcome.seconds / 60:6.1f} min")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", action="store_true", help="leave the cluster up afterwards")
    parser.add_argument("--cold", action="store_true", help="also time a cold toolchain build (~40 min)")
    args = parser.parse_args()

    print("== toolchain: duration of the last build of each component, from its stamp "
          "(cold only if Go's module and build caches were empty then; --cold measures that)")
    for stamp in sorted((cache_dir() / "stamps").glob("*.json")):
        data = json.loads(stamp.read_text())
        print(f"  {data['name']:24} {data['version']:10} {data['seconds'] / 60:6.1f} min  built {data['built_at']}")
    if args.cold:
        cold_build([])

    started = time.monotonic()
    ensure_toolchain(out=lambda line: None)
    print(f"== warm toolchain (all stamped): {time.monotonic() - started:.1f} s")

    cluster = LocalCluster(out=lambda line: None)
    if cluster.leftovers():
        cluster.down()
    cluster.up()
    print(f"== warm up: node Ready after {cluster.timings['node_ready']:.1f} s "
          f"(aim <= 30 s); CoreDNS + provisioner ready after {cluster.timings['addons_ready']:.1f} s")
    rss = cluster.process_rss()
    for name, size in sorted(rss.items()):
        print(f"  RSS {name:24} {size / MIB:7.1f} MiB")
    control = sum(size for name, size in rss.items() if name in (*CONTROL_PLANE, "kubelet"))
    print(f"== RSS control plane + kubelet: {control / MIB:.0f} MiB (aim < 1536 MiB); "
          f"all host processes: {sum(rss.values()) / MIB:.0f} MiB")
    if args.keep:
        print(f"cluster kept: kubeconfig {cluster.layout.kubeconfig}")
        return 0
    cluster.down()
    print(f"== down: {cluster.timings['down']:.1f} s; leftovers: {cluster.leftovers() or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
