"""Command line: ``python -m saliency_sanity reproduce --profile smoke|default|full``."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .profiles import PROFILES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m saliency_sanity",
                                     description="Sanity checks for saliency maps: reproduce the paper.")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="run every notebook with papermill and build the book")
    rep.add_argument("--profile", default="default", choices=list(PROFILES),
                     help="how much work to do: smoke (CI, minutes), default (2 CPU cores, <30 min), full (GPU)")
    rep.add_argument("--root", type=Path, default=None, help="project root (default: found from the cwd)")
    rep.add_argument("--site", type=Path, default=None,
                     help="build a copy of the book in this folder instead of in place")
    rep.add_argument("--only", nargs="*", default=None, help="notebook stems to run, e.g. 00_models")
    rep.add_argument("--no-build", action="store_true", help="execute notebooks, skip jupyter-book")
    args = parser.parse_args(argv)

    if args.command == "reproduce":
        from .reproduce import reproduce

        tic = time.perf_counter()
        index = reproduce(args.profile, root=args.root, site=args.site, only=args.only,
                          build=not args.no_build)
        print(f"profile {args.profile}: {time.perf_counter() - tic:.0f} s")
        if index:
            print(f"book: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
