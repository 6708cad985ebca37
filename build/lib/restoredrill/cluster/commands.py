"""`restoredrill cluster up|down|status|leftovers` for the local provider."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from restoredrill.cluster.local import LocalCluster, LocalClusterConfig


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "cluster", help="bring the local single-node cluster up, tear it down, or report on it",
        description="The local provider: etcd, the control plane, containerd, kubelet and kube-proxy as "
        "host processes (root needed). `up` reuses a running healthy cluster in the same directory.",
    )
    parser.add_argument("--cluster-dir", type=Path, default=None,
                        help="where the cluster keeps its state, logs and kubeconfig "
                        "(default: $RESTOREDRILL_CACHE/clusters/local)")
    parser.add_argument("--name", default="restoredrill", help="cluster, node and kubeconfig context name")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    up = actions.add_parser("up", help="start the cluster and wait until the node and add-ons are ready")
    up.add_argument("--keep-on-failure", action="store_true",
                    help="if `up` fails, leave the half-started cluster running for inspection")
    up.set_defaults(func=_up)
    down = actions.add_parser("down", help="remove everything the cluster created")
    down.add_argument("--keep-data", type=Path, action="append", default=[], metavar="DIR",
                      help="a directory under the cluster dir to keep (repeatable)")
    down.set_defaults(func=_down)
    status = actions.add_parser("status", help="which processes run, and whether the node is Ready")
    status.set_defaults(func=_status)
    leftovers = actions.add_parser("leftovers", help="list anything of ours still on the host; exit 1 if any")
    leftovers.set_defaults(func=_leftovers)


def _cluster(args: argparse.Namespace) -> LocalCluster:
    keep_on_failure = bool(getattr(args, "keep_on_failure", False))
    if args.cluster_dir is not None:
        return LocalCluster(LocalClusterConfig(cluster_dir=args.cluster_dir.resolve(), name=args.name,
                                               keep_on_failure=keep_on_failure))
    return LocalCluster(LocalClusterConfig(name=args.name, keep_on_failure=keep_on_failure))


def _up(args: argparse.Namespace) -> int:
    handle = _cluster(args).up()
    print(f"kubeconfig: {handle.kubeconfig} (context {handle.context}); logs: {handle.log_dir}")
    return 0


def _down(args: argparse.Namespace) -> int:
    _cluster(args).down(keep=[path.resolve() for path in args.keep_data])
    return 0


def _status(args: argparse.Namespace) -> int:
    print(_cluster(args).status())
    return 0


def _leftovers(args: argparse.Namespace) -> int:
    found = _cluster(args).leftovers()
    for item in found:
        print(item)
    return 1 if found else 0
