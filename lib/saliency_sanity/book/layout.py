"""Where the book's pieces are: the project root, the notebooks of the table of contents, the folders
the build writes, and the parameters papermill gives every notebook.
"""
from __future__ import annotations

from pathlib import Path
import shutil

import yaml

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


def copy_sources(root: Path, site: Path) -> None:
    """Copy the book's sources (not its built or generated files) from ``root`` to ``site``."""
    site.mkdir(parents=True, exist_ok=True)
    for name in BOOK_SOURCES:
        src, dst = root / name, site / name
        if src.is_dir():
            shutil.copytree(src, dst, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("_build", "generated", "figures"))
        else:
            shutil.copy2(src, dst)


def papermill_parameters(profile: str) -> dict:
    """The parameters papermill injects into every notebook."""
    return {"profile": profile, "figures_dir": str(FIGURES)}


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
