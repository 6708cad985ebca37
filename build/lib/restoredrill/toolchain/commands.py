"""`restoredrill toolchain`: build the pinned binaries the local provider runs."""

from __future__ import annotations

import argparse
import time
from typing import Any

from restoredrill.toolchain import ensure_toolchain, load_recipes


def add_commands(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "toolchain",
        help="install the pinned Debian packages and build the pinned Go binaries into the cache",
        description="Idempotent: components whose stamp matches are skipped; an interrupted build "
        "resumes from Go's caches. Components marked default=false (e.g. seaweedfs) build only "
        "when named with --only.",
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="build just these components")
    parser.add_argument("--no-apt", action="store_true", help="skip the Debian package step")
    parser.add_argument("--list", action="store_true", help="list the components and exit")
    parser.add_argument("--no-images", action="store_true",
                        help="skip building the local provider's image archives (built anyway by `cluster up`)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for recipe in load_recipes().values():
            flag = "" if recipe.default else "  (only when asked for)"
            print(f"{recipe.name:24} {recipe.version:10} {', '.join(recipe.binaries)}{flag}")
        return 0
    started = time.monotonic()
    outcomes = ensure_toolchain(only=args.only, apt=not args.no_apt)
    if not args.only and not args.no_images:
        from restoredrill.images import LocalImageBuilder

        archives = LocalImageBuilder().build()
        print(f"[toolchain] {len(archives)} image archives ready in {next(iter(archives.values())).parent}",
              flush=True)
    built = [o for o in outcomes if o.built]
    print(f"[toolchain] done in {(time.monotonic() - started) / 60:.1f} min: {len(built)} built, "
          f"{len(outcomes) - len(built)} up to date", flush=True)
    return 0
