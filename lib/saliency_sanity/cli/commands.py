"""Command line: ``python -m saliency_sanity reproduce --profile smoke|default|full`` (the book) and
``python -m saliency_sanity check --model ... --images DIR`` (the checks on your own model; under
``torchrun`` the images are split across processes).

``check`` fails early and in one line: an ``--out`` that cannot be written (missing folder, a file
where the folder should be, a folder that refuses new files) is reported before any computing, a
corrupt image names its file, and any error is one line on stderr (``... check: error: ...``) with
exit status 1 -- ``--traceback`` shows the full traceback instead. The CSV is written atomically
(:func:`saliency_sanity._core.cache.atomic_write_text`): a write that fails (full disk, file-size limit)
leaves the previous file at ``--out`` as it was and no temporary file.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
import sys
import time

from ..book.profiles import PROFILES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m saliency_sanity",
                                     description="Sanity checks for saliency maps: reproduce the paper.")
    sub = parser.add_subparsers(dest="command", required=True)
    rep = sub.add_parser("reproduce", help="run the notebooks that changed with papermill and build the book")
    rep.add_argument("--profile", default="default", choices=list(PROFILES),
                     help="how much work to do: smoke (CI, minutes), default (2 CPU cores, 20-45 min), full (GPU)")
    rep.add_argument("--root", type=Path, default=None, help="project root (default: found from the cwd)")
    rep.add_argument("--site", type=Path, default=None,
                     help="build a copy of the book in this folder instead of in place")
    rep.add_argument("--only", nargs="*", default=None,
                     help="notebook stems to execute (always, changed or not), e.g. 00_models")
    rep.add_argument("--force", action="store_true",
                     help="execute every notebook, also those whose inputs did not change "
                          "(by default an unchanged notebook's executed copy in book/generated is reused)")
    rep.add_argument("--no-build", action="store_true", help="execute notebooks, skip jupyter-book")
    chk = sub.add_parser("check", help="run the sanity checks on your own model and images")
    chk.add_argument("--model", required=True,
                     help="torchvision:NAME (e.g. torchvision:vgg16) or package.module:factory")
    chk.add_argument("--weights", default="none", help="none (random init), DEFAULT (torchvision's) or a state-dict path")
    chk.add_argument("--images", required=True, type=Path, help="a folder of images or of class subfolders")
    chk.add_argument("--methods", default="gradient,guided_backprop,gradcam", help="comma-separated method names")
    chk.add_argument("--tests", default="randomization,class_sensitivity", help="randomization,class_sensitivity")
    chk.add_argument("--metrics", default="spearman_abs,ssim", help="comma-separated similarity metrics")
    chk.add_argument("--mode", default="cascading", choices=["cascading", "independent"])
    chk.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1, ...")
    chk.add_argument("--batch-size", type=int, default=16)
    chk.add_argument("--limit", type=int, default=None, help="use the first N images only")
    chk.add_argument("--seed", type=int, default=0,
                     help="keys every random draw: the model's init under --weights none, SmoothGrad noise, "
                          "the random class, the re-initialisations")
    chk.add_argument("--out", type=Path, default=Path("results.csv"), help="CSV file for the tidy result table")
    chk.add_argument("--quiet", action="store_true", help="no progress bars")
    chk.add_argument("--traceback", action="store_true", help="on an error, show the traceback, not one line")
    args = parser.parse_args(argv)

    if args.command == "check":
        try:
            return _check(args)
        except Exception as err:  # noqa: BLE001 -- one line for the user; --traceback for the details
            if args.traceback:
                raise
            print(f"{parser.prog} check: error: {_one_line(err)}", file=sys.stderr)
            return 1

    if args.command == "reproduce":
        from ..book.reproduce import reproduce

        tic = time.perf_counter()
        index = reproduce(args.profile, root=args.root, site=args.site, only=args.only,
                          build=not args.no_build, force=args.force)
        print(f"profile {args.profile}: {time.perf_counter() - tic:.0f} s")
        if index:
            print(f"book: {index}")
    return 0


def _check(args) -> int:
    from .._core.cache import atomic_write_text, check_writable
    from .check import run_check, summary

    # Only the process that writes --out checks it: rank 0 (RANK is unset outside torchrun); the
    # other ranks' hosts need not even have that folder.
    if int(os.environ.get("RANK", "0")) == 0:
        check_writable(args.out)
    frame = run_check(args.model, args.images, weights=args.weights, methods=args.methods, tests=args.tests,
                      metrics=args.metrics, mode=args.mode, device=args.device, batch_size=args.batch_size,
                      limit=args.limit, seed=args.seed, progress=not args.quiet)
    if frame is not None:  # rank 0 of a torchrun launch, or the only process
        try:
            atomic_write_text(frame.to_csv(index=False), args.out)
        except OSError as err:
            raise OSError(err.errno, f"cannot write the results to {args.out}: {err.strerror or err} "
                                     "(any previous file there is unchanged)") from err
        print(summary(frame).to_string(float_format=lambda v: f"{v:.3f}"))
        print(f"{len(frame)} rows -> {args.out}")
    return 0


def _one_line(err: BaseException) -> str:
    """The error as one line: the message with its whitespace (newlines too) collapsed; OSErrors
    without their ``[Errno N]`` prefix; the type name in front of errors that are not the usual
    input errors (e.g. a RuntimeError from the model), with a pointer to ``--traceback``."""
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror + (f": {err.filename}" if err.filename else "")
    else:
        text = str(err)
    text = " ".join(text.split()) or type(err).__name__
    if not isinstance(err, (ValueError, TypeError, OSError, ImportError)):
        text = f"{type(err).__name__}: {text} (run with --traceback for details)"
    return text


if __name__ == "__main__":
    sys.exit(main())
