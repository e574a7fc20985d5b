"""Which notebooks a build executes, and the record of what it did: the incremental rebuild.

Rebuilds execute only what changed
----------------------------------
Each executed notebook in ``book/generated`` carries the *execution key* it was made with, in its
own metadata (``metadata.saliency_sanity.execution_key``, next to the inputs the key digests and
the files the notebook wrote). The key lives inside the executed notebook, not in a separate file,
because papermill's output is stamped and then moved into place with one ``os.replace``: a key can
never describe another notebook than the one beside it, whatever an interrupted run, ``make clean``
or a hand-deleted file leaves behind. The key is a content hash (:func:`saliency_sanity._core.cache.config_hash`) of

* the notebook's source: the type, text and tags of its cells (not outputs or editor metadata);
* its papermill parameters (the profile's name and ``figures_dir``);
* the profile's settings, ``get_profile(profile).as_dict()``;
* the package's source, :func:`saliency_sanity._core.cache.source_hash` (every ``.py`` of the package);
* for a notebook that reads what earlier notebooks made -- its source calls ``read_table(`` (the
  scorecard reads the tables of notebooks 02-06) or it is ``99_reproducibility`` (it reads the
  timings and this record) -- the keys of *every* notebook before it in the table of contents.

A notebook is executed when

1. ``--force`` is given, or ``--only`` names it (``--only`` executes exactly the named notebooks);
2. its executed notebook is missing or carries no key, or its key differs from the current one;
3. a file it wrote last time (a figure in ``book/figures``, a table in ``book/generated/tables``, ...)
   is missing; or
4. it reads earlier notebooks' results and a notebook before it is executed in this build.

Otherwise the executed notebook is reused as it is. Rule 4 and the chained keys complement each
other: rule 4 re-executes the readers after an earlier notebook was re-run for a missing file or
``--force`` (same key, fresh results), the chained keys after an earlier notebook was re-run in a
previous, partial build (``--only 02_randomization``, or a build stopped by an error). Not part of
any key: installed library versions, the data and model caches, the hardware; after changing those,
rebuild with ``--force`` (``make book FORCE=1``).

Every build records, per profile, what it did with each notebook in ``book/generated/execution.json``
(``executed`` / ``reused`` / ``failed``, the key, why it was executed, the seconds of its last
execution); ``book/generated/timings.json`` keeps the seconds of each notebook's last execution.
The reproducibility chapter (``notebooks/99_reproducibility.ipynb``) shows the record as a table.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
import json
import os
from pathlib import Path
import time

from tqdm.auto import tqdm

from .._core import cache
from .layout import FIGURES, GENERATED, find_root, papermill_parameters, toc_notebooks
from .profiles import get_profile

TIMINGS = GENERATED / "timings.json"
EXECUTION = GENERATED / "execution.json"
# where the executed notebook keeps its execution key: metadata.saliency_sanity.execution_key
METADATA = "saliency_sanity"
# notebooks that read what every earlier notebook made, besides those that call read_table(
READS_EARLIER = ("99_reproducibility",)
READ_MARKER = "read_table("


def _cells(source: Path) -> list[dict]:
    if not source.is_file():
        raise FileNotFoundError(f"_toc.yml lists {GENERATED / source.name} but notebooks/{source.name} does not exist")
    cells = json.loads(source.read_text())["cells"]
    return [{"type": c.get("cell_type"), "source": "".join(c.get("source", "")),
             "tags": list(c.get("metadata", {}).get("tags", []))} for c in cells]


def reads_earlier(name: str, cells: list[dict]) -> bool:
    """Whether notebook ``name`` reads what the notebooks before it made (see the module's docstring)."""
    return Path(name).stem in READS_EARLIER or any(
        c["type"] == "code" and READ_MARKER in c["source"] for c in cells)


@dataclass
class Step:
    """What a build does with one notebook: ``execute`` it (``reason`` says why) or ``reuse`` it."""

    name: str
    key: str
    inputs: dict  # the parts of the key, each a digest
    action: str  # "execute" | "reuse"
    reason: str  # why it is executed; "inputs unchanged" when reused
    reads_earlier: bool = False
    stored: dict | None = None  # metadata.saliency_sanity of the executed notebook in the site


def _stored_metadata(target: Path) -> dict | None:
    """``metadata.saliency_sanity`` of an executed notebook; None when missing or unreadable."""
    try:
        meta = json.loads(target.read_text())["metadata"].get(METADATA)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return meta if isinstance(meta, dict) and meta.get("execution_key") else None


def plan_execution(root: Path, site: Path, profile: str, only: list[str] | None = None,
                   force: bool = False) -> list[Step]:
    """Decide, for each notebook this build runs (all of the table of contents, or those ``only``
    names), whether to execute or reuse it; starts no kernel. The rule is in the module's docstring."""
    names = toc_notebooks(root)
    if only:
        unknown = sorted(set(only) - {Path(n).stem for n in names})
        if unknown:
            raise ValueError(f"unknown notebook(s) {unknown}; the book has {[Path(n).stem for n in names]}")
    selected = [n for n in names if not only or Path(n).stem in only]
    parameters = papermill_parameters(profile)
    common = {"parameters": cache.config_hash(parameters),
              "profile": cache.config_hash(get_profile(profile).as_dict()),
              "package": cache.source_hash()}
    keys: dict[str, str] = {}
    steps: list[Step] = []
    executed_before: list[str] = []
    for name in names:
        cells = _cells(root / "notebooks" / name)
        reader = reads_earlier(name, cells)
        inputs = {"notebook": cache.config_hash(cells), **common,
                  "earlier": cache.config_hash(dict(keys)) if reader else None}
        keys[name] = key = cache.config_hash(inputs)
        if name not in selected:
            continue
        target = site / GENERATED / name
        stored = _stored_metadata(target) if target.is_file() else None
        if force:
            reason = "--force"
        elif only:
            reason = "named in --only"
        elif not target.is_file():
            reason = "not executed yet"
        elif stored is None:
            reason = "no execution key in the executed notebook"
        elif stored["execution_key"] != key:
            old = stored.get("inputs") or {}
            changed = [label for part, label in (("notebook", "notebook source"), ("parameters", "parameters"),
                                                 ("profile", "profile settings"), ("package", "package source"),
                                                 ("earlier", "earlier notebooks"))
                       if old.get(part) != inputs[part]]
            reason = "changed: " + (", ".join(changed) or "execution key")
        elif missing := [p for p in stored.get("outputs", []) if not (site / p).exists()]:
            reason = f"missing output: {missing[0]}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else "")
        elif reader and executed_before:
            reason = f"reads earlier results; re-executed before it: {', '.join(executed_before)}"
        else:
            reason = ""
        action = "execute" if reason else "reuse"
        if action == "execute":
            executed_before.append(name)
        steps.append(Step(name, key, inputs, action, reason or "inputs unchanged", reader, stored))
    return steps


def _snapshot(site: Path) -> dict[str, tuple[int, int, int]]:
    """Every file a notebook may write (figures, tables, ...) under the site, with its identity."""
    skip = {site / GENERATED / n for n in ("timings.json", "execution.json")}
    found = {}
    for folder in (site / FIGURES, site / GENERATED):
        if not folder.is_dir():
            continue
        for path in folder.rglob("*"):
            if (path.name.startswith(".") or path in skip or not path.is_file()
                    or (path.parent == site / GENERATED and path.suffix == ".ipynb")):
                continue
            st = path.stat()
            found[path.relative_to(site).as_posix()] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return found


def _stamp(partial: Path, meta: dict) -> None:
    """Add ``metadata.saliency_sanity`` to the executed notebook papermill wrote."""
    import nbformat

    nb = nbformat.read(partial, as_version=4)
    nb.metadata[METADATA] = meta
    nbformat.write(nb, partial)


def execute_notebooks(root: Path, site: Path, profile: str, only: list[str] | None = None,
                      progress: bool = True, force: bool = False) -> dict[str, dict]:
    """Execute the notebooks that changed (all with ``force``; exactly those ``only`` names) into
    ``site/book/generated`` with ``profile``, reuse the others.

    Returns, in table-of-contents order, the record of each notebook this build ran:
    ``{"status": "executed" | "reused", "key", "reason", "seconds"}`` (``seconds``: of its last execution).
    """
    import papermill

    steps = plan_execution(root, site, profile, only, force)
    (site / GENERATED).mkdir(parents=True, exist_ok=True)
    (site / FIGURES).mkdir(parents=True, exist_ok=True)
    build = _now()
    records: dict[str, dict] = {}
    bar = tqdm(steps, desc=f"notebooks ({profile})", unit="nb", disable=not progress)
    for step in bar:
        name = step.name
        bar.set_postfix_str(f"{name} ({'run' if step.action == 'execute' else 'reused'})")
        target = site / GENERATED / name
        if step.action == "reuse":
            records[name] = _record(site, profile, name, "reused", step, build,
                                    seconds=step.stored.get("seconds"), executed_at=step.stored.get("executed_at"))
            continue
        # "executing" while it runs: the reproducibility notebook finds itself so in the record
        previous = (step.stored or {}).get("seconds")
        _record(site, profile, name, "executing", step, build, seconds=previous)
        tic = time.perf_counter()
        before = _snapshot(site)
        partial = target.with_suffix(".partial.ipynb")
        try:
            papermill.execute_notebook(str(root / "notebooks" / name), str(partial), cwd=str(site),
                                       kernel_name="python3", parameters=papermill_parameters(profile),
                                       progress_bar=False, log_output=False)
            seconds = time.perf_counter() - tic
            after = _snapshot(site)
            outputs = sorted(p for p, ident in after.items() if before.get(p) != ident)
            executed_at = _now()
            _stamp(partial, {"execution_key": step.key, "inputs": step.inputs, "profile": profile,
                             "parameters": papermill_parameters(profile), "outputs": outputs,
                             "seconds": round(seconds, 1), "executed_at": executed_at})
            os.replace(partial, target)
        except BaseException:
            try:
                _record(site, profile, name, "failed", step, build, seconds=previous)
            except OSError:  # keep the notebook's own error, not the record's
                pass
            raise
        finally:
            partial.unlink(missing_ok=True)
        records[name] = _record(site, profile, name, "executed", step, build, seconds=round(seconds, 1),
                                executed_at=executed_at)
        _record_timing(site, profile, name, seconds)
    return records


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _record(site: Path, profile: str, name: str, status: str, step: Step, build: str,
            seconds: float | None = None, executed_at: str | None = None) -> dict:
    """Keep what this build did with notebook ``name`` (per profile) in ``book/generated/execution.json``."""
    entry = {"status": status, "key": step.key, "reason": step.reason, "seconds": seconds,
             "executed_at": executed_at, "build": build}
    path = site / EXECUTION
    try:
        data = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        data = {}
    data.setdefault(profile, {})[name] = entry
    cache.atomic_write_json(data, path)
    return entry


def _record_timing(site: Path, profile: str, name: str, seconds: float) -> None:
    """Keep the wall time of each notebook's last execution (per profile) for the reproducibility chapter."""
    path = site / TIMINGS
    data = json.loads(path.read_text()) if path.is_file() else {}
    data.setdefault(profile, {})[name] = round(seconds, 1)
    cache.atomic_write_json(data, path)


def time_goals(site: Path | str = ".") -> "pandas.DataFrame":
    """The recorded run time of each profile's notebooks against its goal (:data:`profiles.TIME_GOAL_MINUTES`).

    One row per profile with timings: ``notebooks`` (how many have a recorded execution), ``minutes``
    (the sum of their last executions' seconds / 60; training inside a notebook included, the
    jupyter-book build not), ``goal`` (minutes; NaN where the profile has none) and ``verdict``
    ("within the goal" / "above the goal" / "no goal"). The sum is the time of a build that executes
    every notebook once with the caches as they were at each notebook's last execution.
    """
    import pandas as pd

    from .profiles import TIME_GOAL_MINUTES

    path = Path(site) / TIMINGS
    timings = json.loads(path.read_text()) if path.is_file() else {}
    rows = []
    for profile, notebooks in timings.items():
        minutes = sum(notebooks.values()) / 60
        goal = TIME_GOAL_MINUTES.get(profile, float("nan"))
        verdict = "no goal" if goal != goal else "within the goal" if minutes <= goal else "above the goal"
        rows.append({"profile": profile, "notebooks": len(notebooks), "minutes": round(minutes, 1),
                     "goal": goal, "verdict": verdict})
    return pd.DataFrame(rows, columns=["profile", "notebooks", "minutes", "goal", "verdict"])


def execution_table(profile: str, site: Path | str = ".") -> "pandas.DataFrame":
    """What the build did with each notebook under ``profile``: executed or reused, why, its key
    (short) and the seconds of its last execution; from ``book/generated/execution.json``."""
    import pandas as pd

    site = Path(site)
    path = site / EXECUTION
    records = json.loads(path.read_text()).get(profile, {}) if path.is_file() else {}
    try:
        order = {n: i for i, n in enumerate(toc_notebooks(find_root(site)))}
    except (FileNotFoundError, OSError):
        order = {}
    rows = []
    for name in sorted(records, key=lambda n: (order.get(n, len(order)), n)):
        r = records[name]
        running = r["status"] == "executing"
        seconds = r.get("seconds")
        rows.append({"notebook": Path(name).stem,
                     "this build": "executed (running)" if running else r["status"],
                     "why": r.get("reason") or "",
                     "key": (r.get("key") or "")[:8],
                     "seconds (last execution)": "this run" if running
                     else (f"{seconds:.1f}" if isinstance(seconds, (int, float)) else "not recorded")})
    return pd.DataFrame(rows, columns=["notebook", "this build", "why", "key", "seconds (last execution)"])
