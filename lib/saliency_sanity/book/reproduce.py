"""Run the notebooks of the book with papermill under a profile, then build the Jupyter Book.

Only the notebooks whose inputs changed are executed: :mod:`saliency_sanity.book.execution` says which
and keeps the record; :mod:`saliency_sanity.book.layout` says where the pieces are.
"""
from __future__ import annotations

from pathlib import Path
import subprocess
import sys

from .execution import execute_notebooks
from .layout import copy_sources, find_root
from .profiles import get_profile


def build_book(site: Path, warnings_as_errors: bool = True) -> Path:
    """``jupyter-book build`` of ``site`` into ``site/book/_build/html``."""
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(site),
           "--path-output", str(site / "book"),
           "--all"]
    if warnings_as_errors:
        cmd += ["-W", "-n", "--keep-going"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"jupyter-book build failed (exit {result.returncode}):\n"
                           f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    index = site / "book" / "_build" / "html" / "index.html"
    if not index.is_file():
        raise RuntimeError(f"jupyter-book build finished but {index} is missing")
    return index


def reproduce(profile: str = "default", *, root: Path | None = None, site: Path | None = None,
              only: list[str] | None = None, build: bool = True, progress: bool = True,
              force: bool = False) -> Path | None:
    """Execute the notebooks under ``profile`` and build the book; ``site`` builds a copy elsewhere.

    Only notebooks whose inputs changed are executed (see the module's docstring); ``force``
    executes all of them, ``only`` exactly the named ones.
    """
    get_profile(profile)
    root = find_root(root)
    site = Path(site).resolve() if site else root
    if site != root:
        copy_sources(root, site)
    records = execute_notebooks(root, site, profile, only, progress, force=force)
    reused = [name for name, r in records.items() if r["status"] == "reused"]
    for name, r in records.items():
        if r["status"] == "executed":
            print(f"  {name}: {r['seconds']:.1f} s ({r['reason']})")
    if reused:
        print(f"  reused {len(reused)} unchanged notebook(s): {', '.join(reused)}")
    return build_book(site) if build else None
