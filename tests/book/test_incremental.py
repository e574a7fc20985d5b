"""Rebuilds execute only the notebooks whose inputs changed (saliency_sanity.book.execution).

A tiny book of three notebooks, really executed by papermill: ``a_writer`` writes a table,
``b_figure`` a figure, ``c_reader`` reads the table (its source calls ``read_table(``). Every
notebook appends a line to ``run.log`` when it runs, so the log says which ones a build executed.
The first build is made once per module and copied for each test (keys and outputs travel with it).
"""
import json
import shutil
from dataclasses import replace
from pathlib import Path

import nbformat
import pytest

from saliency_sanity import cli
from saliency_sanity._core import cache
from saliency_sanity.book import execution, reproduce
from saliency_sanity.book.profiles import PROFILES

NAMES = ("a_writer", "b_figure", "c_reader")

BODIES = {
    "a_writer": '''
from pathlib import Path
VERSION = "v1"
with open("run.log", "a") as log:
    log.write(f"a_writer {profile}\\n")
tables = Path(figures_dir).parent / "generated" / "tables"
tables.mkdir(parents=True, exist_ok=True)
(tables / "t.csv").write_text(f"version,profile\\n{VERSION},{profile}\\n")
''',
    "b_figure": '''
from pathlib import Path
with open("run.log", "a") as log:
    log.write(f"b_figure {profile}\\n")
Path(figures_dir).mkdir(parents=True, exist_ok=True)
(Path(figures_dir) / "b.txt").write_text(profile)
''',
    "c_reader": '''
from pathlib import Path
def read_table(name):
    return (Path(figures_dir).parent / "generated" / "tables" / f"{name}.csv").read_text()
with open("run.log", "a") as log:
    log.write(f"c_reader {profile}\\n")
(Path(figures_dir) / "c.txt").write_text(read_table("t"))
''',
}


def _write_notebook(path: Path, body: str) -> None:
    params = nbformat.v4.new_code_cell('profile = "default"\nfigures_dir = "book/figures"')
    params.metadata["tags"] = ["parameters"]
    nb = nbformat.v4.new_notebook(cells=[params, nbformat.v4.new_code_cell(body.strip())])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def _make_book(root: Path) -> Path:
    (root / "notebooks").mkdir(parents=True)
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n"
                                   + "".join(f"  - file: book/generated/{n}\n" for n in NAMES))
    for name in NAMES:
        _write_notebook(root / "notebooks" / f"{name}.ipynb", BODIES[name])
    return root


def _build(root: Path, profile: str = "smoke", **kwargs):
    return execution.execute_notebooks(root, root, profile, progress=False, **kwargs)


def _log(root: Path) -> list[str]:
    path = root / "run.log"
    return path.read_text().splitlines() if path.is_file() else []


def _ran(root: Path, before: int) -> list[str]:
    """The notebooks executed since the log had ``before`` lines."""
    return [line.split()[0] for line in _log(root)[before:]]


def _statuses(root: Path, profile: str = "smoke") -> dict[str, str]:
    data = json.loads((root / execution.EXECUTION).read_text())
    return {Path(n).stem: r["status"] for n, r in data[profile].items()}


def _edit(root: Path, name: str, old: str, new: str) -> None:
    path = root / "notebooks" / f"{name}.ipynb"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


@pytest.fixture(scope="module")
def first_build(tmp_path_factory):
    """The three notebooks executed once with the smoke profile."""
    root = _make_book(tmp_path_factory.mktemp("incremental") / "book")
    records = _build(root)
    assert [r["status"] for r in records.values()] == ["executed"] * 3
    assert _ran(root, 0) == list(NAMES)
    return root


@pytest.fixture
def book(first_build, tmp_path):
    """A private copy of the first build."""
    root = tmp_path / "book"
    shutil.copytree(first_build, root)
    return root


def test_the_first_build_keeps_keys_outputs_and_a_record(book):
    for name in NAMES:
        meta = nbformat.read(book / "book" / "generated" / f"{name}.ipynb", as_version=4).metadata["saliency_sanity"]
        assert len(meta["execution_key"]) == 16 and meta["profile"] == "smoke"
        assert isinstance(meta["seconds"], float)
    outputs = {n: nbformat.read(book / "book" / "generated" / f"{n}.ipynb", as_version=4)
               .metadata["saliency_sanity"]["outputs"] for n in NAMES}
    assert outputs == {"a_writer": ["book/generated/tables/t.csv"], "b_figure": ["book/figures/b.txt"],
                       "c_reader": ["book/figures/c.txt"]}
    assert _statuses(book) == dict.fromkeys(NAMES, "executed")
    timings = json.loads((book / execution.TIMINGS).read_text())["smoke"]
    assert set(timings) == {f"{n}.ipynb" for n in NAMES}


def test_a_second_build_reuses_every_notebook_without_a_kernel(book, monkeypatch, capsys):
    import papermill

    def no_kernel(*args, **kwargs):
        raise AssertionError("a notebook was executed")

    monkeypatch.setattr(papermill, "execute_notebook", no_kernel)
    executed = {n: (book / "book" / "generated" / f"{n}.ipynb").read_bytes() for n in NAMES}
    reproduce.reproduce("smoke", root=book, build=False, progress=False)
    assert _ran(book, 3) == []
    assert _statuses(book) == dict.fromkeys(NAMES, "reused")
    # the executed notebooks are left as they were
    assert all((book / "book" / "generated" / f"{n}.ipynb").read_bytes() == executed[n] for n in NAMES)
    assert "reused 3 unchanged notebook(s): a_writer.ipynb, b_figure.ipynb, c_reader.ipynb" in capsys.readouterr().out
    # the reproducibility chapter's table
    table = execution.execution_table("smoke", book)
    assert list(table["notebook"]) == list(NAMES)
    assert list(table["this build"]) == ["reused"] * 3
    assert all(len(k) == 8 for k in table["key"])
    assert all(float(s) >= 0 for s in table["seconds (last execution)"])


def test_editing_a_notebook_reexecutes_it_and_its_reader_only(book):
    _edit(book, "a_writer", 'VERSION = \\"v1\\"', 'VERSION = \\"v2\\"')
    records = _build(book)
    assert _ran(book, 3) == ["a_writer", "c_reader"]
    assert _statuses(book) == {"a_writer": "executed", "b_figure": "reused", "c_reader": "executed"}
    assert records["a_writer.ipynb"]["reason"] == "changed: notebook source"
    assert records["c_reader.ipynb"]["reason"].startswith("changed: earlier notebooks")
    assert "v2,smoke" in (book / "book" / "figures" / "c.txt").read_text()  # the reader saw the new table
    assert _build(book) and _ran(book, 5) == []  # and now all is reused again


def test_only_executes_the_named_notebook_and_a_later_build_catches_its_reader_up(book):
    _edit(book, "a_writer", 'VERSION = \\"v1\\"', 'VERSION = \\"v3\\"')
    records = _build(book, only=["a_writer"])
    assert list(records) == ["a_writer.ipynb"] and _ran(book, 3) == ["a_writer"]
    assert records["a_writer.ipynb"]["reason"] == "named in --only"
    # c_reader's key chains a_writer's: the next full build executes it, though a_writer is reused
    plan = {s.name: s for s in execution.plan_execution(book, book, "smoke")}
    assert {n: s.action for n, s in plan.items()} == {
        "a_writer.ipynb": "reuse", "b_figure.ipynb": "reuse", "c_reader.ipynb": "execute"}
    assert plan["c_reader.ipynb"].reason == "changed: earlier notebooks"
    # --only executes a notebook even when nothing changed
    assert [s.action for s in execution.plan_execution(book, book, "smoke", only=["b_figure"])] == ["execute"]
    with pytest.raises(ValueError, match="unknown notebook"):
        execution.plan_execution(book, book, "smoke", only=["nope"])


def test_changing_the_profile_reexecutes_every_notebook(book):
    _build(book, profile="default")
    assert _ran(book, 3) == list(NAMES)
    assert _statuses(book, "default") == dict.fromkeys(NAMES, "executed")
    assert (book / "book" / "figures" / "b.txt").read_text() == "default"


def test_changed_profile_settings_or_package_source_change_the_key(book, monkeypatch):
    assert {s.action for s in execution.plan_execution(book, book, "smoke")} == {"reuse"}
    monkeypatch.setitem(PROFILES, "smoke", replace(PROFILES["smoke"], n_images=PROFILES["smoke"].n_images + 1))
    steps = execution.plan_execution(book, book, "smoke")
    assert [s.action for s in steps] == ["execute"] * 3
    assert steps[0].reason == "changed: profile settings"
    monkeypatch.undo()
    monkeypatch.setattr(cache, "source_hash", lambda length=16: "0" * length)
    steps = execution.plan_execution(book, book, "smoke")
    assert [s.action for s in steps] == ["execute"] * 3
    assert steps[1].reason == "changed: package source"


def test_force_from_the_command_line_reexecutes_every_notebook(book, capsys):
    assert cli.main(["reproduce", "--profile", "smoke", "--root", str(book), "--no-build", "--force"]) == 0
    assert _ran(book, 3) == list(NAMES)
    assert _statuses(book) == dict.fromkeys(NAMES, "executed")
    assert "reused" not in capsys.readouterr().out


def test_a_deleted_executed_notebook_is_reexecuted_with_the_readers_after_it(book):
    (book / "book" / "generated" / "b_figure.ipynb").unlink()
    records = _build(book)
    assert _ran(book, 3) == ["b_figure", "c_reader"]
    assert _statuses(book) == {"a_writer": "reused", "b_figure": "executed", "c_reader": "executed"}
    assert records["b_figure.ipynb"]["reason"] == "not executed yet"
    assert records["c_reader.ipynb"]["reason"] == "reads earlier results; re-executed before it: b_figure.ipynb"


def test_a_missing_table_reexecutes_the_notebook_that_wrote_it(book):
    (book / "book" / "generated" / "tables" / "t.csv").unlink()
    steps = execution.plan_execution(book, book, "smoke")
    assert [s.action for s in steps] == ["execute", "reuse", "execute"]
    assert steps[0].reason == "missing output: book/generated/tables/t.csv"
    (book / "book" / "figures" / "c.txt").unlink()  # the reader's own figure
    (book / "book" / "generated" / "tables" / "t.csv").write_text("version,profile\nv1,smoke\n")
    assert [s.action for s in execution.plan_execution(book, book, "smoke")] == ["reuse", "reuse", "execute"]


def test_a_failing_notebook_is_recorded_and_executed_again_next_time(book):
    import papermill

    before = (book / "book" / "generated" / "b_figure.ipynb").read_bytes()
    _edit(book, "b_figure", "from pathlib import Path", "raise RuntimeError('boom')")
    with pytest.raises(papermill.PapermillExecutionError):
        _build(book)
    assert _statuses(book)["b_figure"] == "failed"
    # the last good executed notebook stays, with its old key; no partial notebook is left
    assert (book / "book" / "generated" / "b_figure.ipynb").read_bytes() == before
    assert not list((book / "book" / "generated").glob("*.partial.ipynb"))
    assert [s.action for s in execution.plan_execution(book, book, "smoke")] == ["reuse", "execute", "execute"]


def test_time_goals_sum_each_profiles_recorded_notebooks(tmp_path):
    """The reproducibility chapter's time-goal table: the sum of the last executions per profile against
    its goal (5 min smoke, 30 min default), "no goal" for a profile without one."""
    from saliency_sanity.book.profiles import TIME_GOAL_MINUTES

    path = tmp_path / execution.TIMINGS
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"smoke": {"a.ipynb": 120.0, "b.ipynb": 200.0},
                                "default": {"a.ipynb": 1500.0, "b.ipynb": 300.0}, "full": {"a.ipynb": 60.0}}))
    table = execution.time_goals(tmp_path).set_index("profile")
    assert TIME_GOAL_MINUTES == {"smoke": 5, "default": 30}
    assert table.loc["smoke", "minutes"] == pytest.approx(320 / 60, abs=0.05)
    assert table.loc["smoke", "verdict"] == "above the goal"  # 5.3 > 5
    assert table.loc["default", "verdict"] == "within the goal"  # exactly 30.0 is within
    assert table.loc["full", "verdict"] == "no goal" and table.loc["smoke", "notebooks"] == 2
    assert execution.time_goals(tmp_path / "empty").empty
