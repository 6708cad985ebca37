#!/usr/bin/env python3
"""Figures for the audit: wall time of `restoredrill audit` against a cluster, split into reading
(the GET requests) and checking, with the number of objects read; and the command's own wall time
(a new process: interpreter, imports, reads, checks), which is what an operator or a cron job waits.

Prints, never asserts (the issue's aim: under 10 s on the first cluster). Usage:
  .venv/bin/python bench/audit.py --kubeconfig K [--context C] [--runs N]
  .venv/bin/python bench/audit.py --fake-apps N   # a recording stand-in API server with N apps
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def fake_cluster(apps: int, *, nodes: int = 3) -> dict[str, list[dict[str, Any]]]:
    """List paths and items of a cluster with `apps` backed-up apps, one claim each, all healthy."""
    now = datetime.now(UTC)
    started, old = _ts(now - timedelta(minutes=30)), _ts(now - timedelta(days=3))
    node_names = [f"node-{n}" for n in range(nodes)]
    ready = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    agent = {"role": "node-agent"}
    available = {"phase": "Available", "lastValidationTime": _ts(now)}
    paths: dict[str, list[dict[str, Any]]] = {
        "/apis/velero.io/v1/backupstoragelocations": [{"metadata": {"namespace": "velero", "name": "default"},
                                                       "status": available}],
        "/apis/velero.io/v1/volumesnapshotlocations": [],
        "/apis/apps/v1/deployments": [{"metadata": {"namespace": "velero", "name": "velero"}, "spec": {}}],
        "/apis/apps/v1/daemonsets": [{"metadata": {"namespace": "velero", "name": "node-agent"}}],
        "/api/v1/nodes": [{"metadata": {"name": n}} for n in node_names],
        "/api/v1/pods": [{"metadata": {"namespace": "velero", "name": f"node-agent-{n}", "labels": agent,
                                       "creationTimestamp": old}, "spec": {"nodeName": n}, "status": ready}
                         for n in node_names],
        "/apis/velero.io/v1/schedules": [], "/apis/velero.io/v1/backups": [],
        "/apis/velero.io/v1/podvolumebackups": [], "/api/v1/persistentvolumeclaims": [],
        "/api/v1/persistentvolumes": [], "/apis/postgresql.cnpg.io/v1/clusters": [],
    }
    for i in range(apps):
        ns, backup = f"app-{i}", f"app-{i}-daily-1"
        paths["/apis/velero.io/v1/schedules"].append(
            {"metadata": {"namespace": "velero", "name": f"{ns}-daily", "creationTimestamp": old},
             "spec": {"schedule": "@every 24h", "template": {"includedNamespaces": [ns]}}})
        paths["/apis/velero.io/v1/backups"].append(
            {"metadata": {"namespace": "velero", "name": backup, "labels": {"velero.io/schedule-name": f"{ns}-daily"}},
             "spec": {"includedNamespaces": [ns]}, "status": {"phase": "Completed", "startTimestamp": started}})
        paths["/api/v1/pods"].append(
            {"metadata": {"namespace": ns, "name": f"{ns}-0", "creationTimestamp": old,
                          "annotations": {"backup.velero.io/backup-volumes": "data"}},
             "spec": {"nodeName": node_names[i % nodes],
                      "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}]}, "status": ready})
        paths["/api/v1/persistentvolumeclaims"].append(
            {"metadata": {"namespace": ns, "name": "data", "uid": f"uid-{i}"}, "spec": {"volumeName": f"pv-{i}"}})
        paths["/api/v1/persistentvolumes"].append({"metadata": {"name": f"pv-{i}"}, "spec": {"local": {"path": "/x"}}})
        paths["/apis/velero.io/v1/podvolumebackups"].append(
            {"metadata": {"namespace": "velero", "name": f"{backup}-pvb",
                          "labels": {"velero.io/backup-name": backup, "velero.io/pvc-uid": f"uid-{i}"}},
             "spec": {"pod": {"namespace": ns, "name": f"{ns}-0"}, "volume": "data"},
             "status": {"phase": "Completed", "progress": {"totalBytes": 1 << 20}}})
    return paths


@contextmanager
def fake_kubeconfig(apps: int) -> Iterator[tuple[Path, str]]:
    sys.path.insert(0, str(ROOT))
    from tests.providers.fake_apiserver import running_fake_apiserver

    with running_fake_apiserver() as server, tempfile.TemporaryDirectory() as directory:
        server.collections.update(fake_cluster(apps))
        yield server.kubeconfig(Path(directory)), f"recording stand-in API server, {apps} apps"
        writes = server.writes()
        print(f"requests sent: {len(server.requests)}, of which writes: {len(writes)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--kubeconfig", help="the cluster to audit (read-only)")
    where.add_argument("--fake-apps", type=int, metavar="N", help="audit a stand-in API server holding N apps")
    parser.add_argument("--context")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from restoredrill.audit import audit, read_cluster
    from restoredrill.kube import load_api_client

    @contextmanager
    def target() -> Iterator[tuple[Path, str]]:
        if args.kubeconfig:
            yield Path(args.kubeconfig), f"context {args.context or '(current)'} of {args.kubeconfig}"
        else:
            with fake_kubeconfig(args.fake_apps) as found:
                yield found

    with target() as (kubeconfig, label):
        reads, checks, totals = [], [], []
        for _ in range(args.runs):
            api = load_api_client(kubeconfig, args.context)
            started = time.perf_counter()
            state = read_cluster(api)
            read_s = time.perf_counter() - started
            report = audit(state)
            total_s = time.perf_counter() - started
            api.close()  # type: ignore[no-untyped-call]
            reads.append(read_s)
            checks.append(total_s - read_s)
            totals.append(total_s)
        print(f"audit of {label}: {', '.join(f'{n} {k}' for k, n in report.checked.items())}; "
              f"{len(report.errors)} errors, {len(report.findings) - len(report.errors)} warnings")
        print(f"  read   median {statistics.median(reads):.3f} s")
        print(f"  checks median {statistics.median(checks):.3f} s")
        print(f"  total  median {statistics.median(totals):.3f} s over {args.runs} runs (aim: under 10 s)")
        walls, own = [], []
        for _ in range(args.runs):
            command = [sys.executable, "-m", "restoredrill.cli", "audit", "--kubeconfig", str(kubeconfig), "--json",
                       *(["--context", args.context] if args.context else [])]
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
            walls.append(time.perf_counter() - started)
            if done.returncode not in (0, 1):  # 1: error findings, still a complete audit
                print(f"  `restoredrill audit` failed ({done.returncode}): {done.stderr.strip()[-400:]}")
                return 1
            own.append(float(json.loads(done.stdout)["duration_s"]))
        print(f"  `restoredrill audit --json` median {statistics.median(walls):.3f} s wall (its own duration_s "
              f"median {statistics.median(own):.3f} s) over {args.runs} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
