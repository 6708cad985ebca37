"""The `restoredrill` command line.

Each subcommand lives in the module that owns its system; a module listed in `COMMAND_MODULES`
exposes `add_commands(subparsers)` and sets `func` on the parsers it adds.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from restoredrill.errors import RestoreDrillError

COMMAND_MODULES: tuple[str, ...] = (
    "restoredrill.report",
    "restoredrill.schemas",
    "restoredrill.toolchain.commands",
    "restoredrill.cluster.commands",
    "restoredrill.timeouts",
    "restoredrill.audit",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="restoredrill",
        description="Prove that Velero backups of a Flux-managed cluster restore.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except RestoreDrillError as error:
        print(f"restoredrill {args.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"restoredrill {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
