"""Run every notebook of the book with papermill under a profile, then build the Jupyter Book."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from tqdm.auto import tqdm

from .profiles import get_profile

# benchmarks/results: the performance appendix includes its generated tables
BOOK_SOURCES = ("_config.yml", "_toc.yml", "book", "notebooks", "benchmarks/results")
GENERATED = Path("book/generated")
FIGURES = Path("book/figures")


def find_root(start: Path | None = None) -> Path:
    """The project root: the nearest folder upwards holding ``_toc.yml`` and ``notebooks/``."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "_toc.yml").is_file() and (d / "notebooks").is_dir():
            return d
    raise FileNotFoundError(f"no project root (a folder with _toc.yml and notebooks/) at or above {here}; "
                            "run from the saliency-sanity checkout or pass --root")


def toc_notebooks(root: Path) -> list[str]:
    """Names of the executed notebooks the table of contents points at (``book/generated/NAME``)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "file" and str(value).startswith(str(GENERATED) + "/"):
                    found.append(Path(value).stem + ".ipynb")
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return found


def _copy_sources(root: Path, site: Path) -> None:
    site.mkdir(parents=True, exist_ok=True)
    for name in BOOK_SOURCES:
        src, dst = root / name, site / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("_build", "generated", "figures"))
        else:
            shutil.copy2(src, dst)


def execute_notebooks(root: Path, site: Path, profile: str, only: list[str] | None = None,
                      progress: bool = True) -> dict[str, float]:
    """Execute each source notebook into ``site/book/generated`` with ``profile``; returns seconds each."""
    import papermill

    names = toc_notebooks(root)
    if only:
        unknown = sorted(set(only) - {Path(n).stem for n in names})
        if unknown:
            raise ValueError(f"unknown notebook(s) {unknown}; the book has {[Path(n).stem for n in names]}")
        names = [n for n in names if Path(n).stem in only]
    (site / GENERATED).mkdir(parents=True, exist_ok=True)
    (site / FIGURES).mkdir(parents=True, exist_ok=True)
    timings = {}
    bar = tqdm(names, desc=f"notebooks ({profile})", unit="nb", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        source = root / "notebooks" / name
        if not source.is_file():
            raise FileNotFoundError(f"_toc.yml lists {GENERATED / name} but notebooks/{name} does not exist")
        tic = time.perf_counter()
        target = site / GENERATED / name
        partial = target.with_suffix(".partial.ipynb")
        try:
            papermill.execute_notebook(str(source), str(partial), cwd=str(site), kernel_name="python3",
                                       parameters={"profile": profile, "figures_dir": str(FIGURES)},
                                       progress_bar=False, log_output=False)
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        timings[name] = time.perf_counter() - tic
        _record_timing(site, profile, name, timings[name])
    return timings


TIMINGS = GENERATED / "timings.json"


def _record_timing(site: Path, profile: str, name: str, seconds: float) -> None:
    """Keep the wall time of each notebook (per profile) for the reproducibility chapter."""
    import json

    from .cache import atomic_write_json

    path = site / TIMINGS
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.setdefault(profile, {})[name] = round(seconds, 1)
    atomic_write_json(data, path)


def notebook_parameters(root: Path | None = None) -> "pandas.DataFrame":
    """Every notebook's papermill parameters with their defaults and comments, as a table."""
    import pandas as pd
    import papermill

    root = find_root(root)
    rows = []
    for name in toc_notebooks(root):
        for param in papermill.inspect_notebook(str(root / "notebooks" / name)).values():
            rows.append({"notebook": Path(name).stem, "parameter": param["name"], "default": param["default"],
                         "meaning": param.get("help", "")})
    return pd.DataFrame(rows)


def build_book(site: Path, warnings_as_errors: bool = True) -> Path:
    """``jupyter-book build`` of ``site`` into ``site/book/_build/html``."""
    cmd = [sys.executable, "-c", "from jupyter_book.cli.main import main; main()", "build", str(site), "--path-output", str(site / "book"),
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
              only: list[str] | None = None, build: bool = True, progress: bool = True) -> Path | None:
    """Execute the notebooks under ``profile`` and build the book; ``site`` builds a copy elsewhere."""
    get_profile(profile)
    root = find_root(root)
    site = Path(site).resolve() if site else root
    if site != root:
        _copy_sources(root, site)
    timings = execute_notebooks(root, site, profile, only, progress)
    for name, seconds in timings.items():
        print(f"  {name}: {seconds:.1f} s")
    return build_book(site) if build else None
