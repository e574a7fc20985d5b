"""The "rerun and cite" block under every figure (book/_ext/figure_citations.py): which notebook made
a figure, its papermill command, the BibTeX entry keyed by the figure's label, the dirty-tree
marker; and, in a two-page Sphinx build, the block after a figure and the list on the cite page."""
import importlib.util
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.paths import ROOT

EXT = ROOT / "book" / "_ext"


def _load():
    spec = importlib.util.spec_from_file_location("figure_citations", EXT / "figure_citations.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up; Sphinx below imports the same one
    spec.loader.exec_module(module)
    return module


fc = _load()


def _notebook(path: Path, cells=(), ours=None, papermill=None) -> Path:
    metadata = {"kernelspec": {"name": "python3"}}
    if ours is not None:
        metadata["saliency_sanity"] = ours
    if papermill is not None:
        metadata["papermill"] = papermill
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": metadata,
          "cells": [{"cell_type": "code", "metadata": {}, "source": src, "outputs": [], "execution_count": None}
                    for src in cells]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(nb))
    return path


def test_the_notebook_whose_recorded_outputs_hold_the_png_made_the_figure(tmp_path):
    gen = tmp_path / "book" / "generated"
    _notebook(gen / "02_randomization.ipynb", ours={
        "execution_key": "k2", "profile": "default",
        "parameters": {"profile": "default", "figures_dir": "book/figures"},
        "outputs": ["book/figures/randomization_cascading_vgg.png", "book/figures/randomization_cascading_vgg.svg",
                    "book/generated/tables/randomization.csv"]})
    # a notebook whose source *mentions* the name does not win over the recorded outputs
    _notebook(gen / "01_gallery.ipynb", cells=['ch.save(fig, "randomization_cascading_vgg")'],
              ours={"execution_key": "k1", "profile": "default", "outputs": ["book/figures/gallery_vgg.png"]})
    # an interrupted run's leftover is never a source
    _notebook(gen / "02_randomization.partial.ipynb", ours={"execution_key": "x", "profile": "smoke",
                                                             "outputs": ["book/figures/models_training.png"]})
    notebooks = fc.read_executed(gen)
    assert [n.name for n in notebooks] == ["01_gallery.ipynb", "02_randomization.ipynb"]
    nb, how = fc.notebook_for_figure("randomization_cascading_vgg", notebooks)
    assert (nb.name, how) == ("02_randomization.ipynb", "recorded outputs")
    assert fc.notebook_for_figure("gallery_vgg", notebooks)[0].name == "01_gallery.ipynb"
    # the svg twin or a table is not the figure's png
    assert fc.notebook_for_figure("randomization", notebooks) == (None, "")
    assert fc.notebook_for_figure("models_training", notebooks) == (None, "")


def test_without_recorded_outputs_the_save_call_in_the_source_decides(tmp_path):
    gen = tmp_path / "generated"
    _notebook(gen / "00_models.ipynb", cells=['%matplotlib inline\nch.save(plotting.training_curves(h), "models_training")'],
              papermill={"parameters": {"profile": "smoke", "figures_dir": "book/figures"}})
    _notebook(gen / "02_randomization.ipynb",
              cells=['for mode in modes:\n    for arch in archs:\n        ch.save(grid, f"randomization_{mode}_{arch}")',
                     'save_figure(fig, name="data_randomization_vgg")', "this is not python ("])
    notebooks = fc.read_executed(gen)
    assert fc.notebook_for_figure("models_training", notebooks) == (notebooks[0], "notebook source")
    assert fc.notebook_for_figure("randomization_independent_resnet", notebooks)[0].name == "02_randomization.ipynb"
    assert fc.notebook_for_figure("data_randomization_vgg", notebooks)[0].name == "02_randomization.ipynb"
    assert fc.notebook_for_figure("randomization_", notebooks) == (None, "")  # {mode} is one or more characters
    assert fc.notebook_for_figure("gallery_vgg", notebooks) == (None, "")
    # papermill's own record gives the profile when ours is missing
    assert notebooks[0].profile == "smoke" and notebooks[1].profile is None


def test_two_notebooks_claiming_a_name_by_pattern_find_none(tmp_path):
    gen = tmp_path / "generated"
    _notebook(gen / "a.ipynb", cells=['ch.save(f, f"maps_{arch}")'])
    _notebook(gen / "b.ipynb", cells=['ch.save(f, f"{kind}_vgg")'])
    notebooks = fc.read_executed(gen)
    assert fc.notebook_for_figure("maps_vgg", notebooks) == (None, "")
    _notebook(gen / "c.ipynb", cells=['ch.save(f, "maps_vgg")'])  # an exact name beats the patterns
    assert fc.notebook_for_figure("maps_vgg", fc.read_executed(gen))[0].name == "c.ipynb"


def test_the_profile_falls_back_to_the_build_then_default(tmp_path):
    gen = tmp_path / "generated"
    gen.mkdir()
    assert fc.build_profile(gen) == "default"
    (gen / "timings.json").write_text(json.dumps({"smoke": {"00_models.ipynb": 6.8}}))
    assert fc.build_profile(gen) == "smoke"
    (gen / "execution.json").write_text(json.dumps({
        "smoke": {"00_models.ipynb": {"status": "reused", "build": "2026-01-02T10:00:00+00:00"}},
        "default": {"00_models.ipynb": {"status": "executed", "build": "2026-01-03T09:00:00+00:00"}}}))
    assert fc.build_profile(gen) == "default"  # the latest build
    # a notebook that recorded neither profile nor parameters runs with the build's profile
    _notebook(gen / "00_models.ipynb", cells=['ch.save(fig, "models_training")'])
    rerun = fc.rerun_for("models_training", fc.read_executed(gen), fc.build_profile(gen))
    assert (rerun.notebook, rerun.profile, rerun.profile_recorded) == ("00_models.ipynb", "default", False)
    assert rerun.command == ("papermill notebooks/00_models.ipynb book/generated/00_models.ipynb "
                             "-p profile default -p figures_dir book/figures")
    # no notebook at all: the whole book, under the build's profile
    missing = fc.rerun_for("nowhere", [], "smoke")
    assert missing.notebook is None and missing.command == "python -m saliency_sanity reproduce --profile smoke"


def test_the_papermill_command_keeps_every_parameter_and_its_type():
    assert fc.papermill_command("02_randomization.ipynb", {"figures_dir": "book/figures", "profile": "default"}) == (
        "papermill notebooks/02_randomization.ipynb book/generated/02_randomization.ipynb "
        "-p profile default -p figures_dir book/figures")
    cmd = fc.papermill_command("x.ipynb", {"profile": "smoke", "seeds": 3, "tag": "007", "dir": "my figs",
                                           "flag": True, "layers": [1, 2]})
    argv = shlex.split(cmd)
    assert argv[:3] == ["papermill", "notebooks/x.ipynb", "book/generated/x.ipynb"]
    assert argv[3:6] == ["-p", "profile", "smoke"]  # the profile first
    pairs = {argv[i + 1]: (argv[i], argv[i + 2]) for i in range(3, len(argv) - 1) if argv[i] in ("-p", "-r")}
    assert pairs["seeds"] == ("-p", "3") and pairs["flag"] == ("-p", "True")
    assert pairs["tag"] == ("-r", "007")  # -p would make the string a number
    assert pairs["dir"] == ("-p", "my figs")  # quoted in the command, one argument
    assert json.loads(argv[argv.index("-y") + 1]) == {"layers": [1, 2]}


def test_the_rerun_uses_the_notebooks_own_profile_and_parameters(tmp_path):
    gen = tmp_path / "generated"
    _notebook(gen / "04_positive_handling.ipynb", ours={
        "execution_key": "k", "profile": "full", "parameters": {"profile": "full", "figures_dir": "out/figs"},
        "outputs": ["out/figs/positive_handling_summary.png"]})
    rerun = fc.rerun_for("positive_handling_summary", fc.read_executed(gen), "smoke")
    assert rerun.profile == "full" and rerun.profile_recorded
    assert rerun.command == ("papermill notebooks/04_positive_handling.ipynb book/generated/04_positive_handling.ipynb "
                             "-p profile full -p figures_dir out/figs")


def _citation(**over):
    rerun = fc.Rerun("04_positive_handling.ipynb", "recorded outputs", "smoke", True,
                     {"profile": "smoke", "figures_dir": "book/figures"})
    fields = dict(label="fig-positive-handling", image="book/figures/positive_handling_summary.png",
                  url="book/positive_handling.html#fig-positive-handling",
                  title="Scatter of 50% of the methods & more, coloured by handling.", number="Figure 15",
                  book_title="Do saliency maps explain the prediction?", author="The saliency-sanity contributors",
                  year="2026", version="0.1.0", commit="abc1234 (uncommitted changes)", rerun=rerun)
    return fc.FigureCitation(**{**fields, **over})


def test_the_bibtex_entry_is_keyed_by_the_figures_label():
    bib = _citation().bibtex()
    lines = bib.splitlines()
    assert lines[0] == "@misc{fig-positive-handling,"
    assert lines[-1] == "}"
    assert "  url          = {book/positive_handling.html#fig-positive-handling}," in lines
    assert "  title        = {Scatter of 50\\% of the methods \\& more, coloured by handling}," in lines
    assert "  author       = {{The saliency-sanity contributors}}," in lines
    assert "  howpublished = {Figure 15 in \\emph{Do saliency maps explain the prediction?}}," in lines
    note = next(line for line in lines if line.lstrip().startswith("note"))
    for part in ("positive\\_handling\\_summary.png", "notebooks/04\\_positive\\_handling.ipynb", "profile smoke",
                 "saliency-sanity 0.1.0", "commit abc1234 (uncommitted changes)"):
        assert part in note
    assert bib.count("{") == bib.count("}")
    assert "None" not in bib and "nan" not in bib.lower().replace("\\emph", "")
    # without numfig, a book title or a notebook: still a whole entry, no empty or None field
    bare = _citation(number="", book_title="", title="", rerun=fc.Rerun(None, "", "default", False, {})).bibtex()
    assert "@misc{fig-positive-handling," in bare and "title        = {fig-positive-handling}" in bare
    assert "howpublished = {Figure}" in bare and "None" not in bare and "{}" not in bare


def test_the_url_uses_the_baseurl_else_the_repository_else_a_relative_path():
    page, anchor = "book/positive_handling.html", "fig-positive-handling"
    assert fc.figure_url(page, anchor) == ("book/positive_handling.html#fig-positive-handling",
                                           "relative to the book's root")
    url, basis = fc.figure_url(page, anchor, baseurl="https://example.org/sanity")
    assert (url, basis) == ("https://example.org/sanity/book/positive_handling.html#fig-positive-handling",
                            "html.baseurl")
    url, basis = fc.figure_url(page, anchor, repository_url="https://github.com/o/r/", source="book/positive_handling.md",
                               ref="abc1234")
    assert url == "https://github.com/o/r/blob/abc1234/book/positive_handling.md#fig-positive-handling"
    assert basis.startswith("repository url")
    assert fc.figure_url(page, anchor, baseurl="https://example.org/", repository_url="https://github.com/o/r")[1] \
        == "html.baseurl"


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git")
def test_a_dirty_tree_says_so(tmp_path):
    assert fc.git_state(tmp_path).describe() == fc.NO_COMMIT  # not a checkout: said, not None
    repo = tmp_path / "repo"
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], check=True)
    (repo / "a.md").write_text("one\n")
    subprocess.run([*git, "add", "a.md"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    clean = fc.git_state(repo)
    assert (clean.commit, clean.dirty, clean.describe()) == (head, False, head)
    (repo / "a.md").write_text("two\n")
    assert fc.git_state(repo).describe() == f"{head} (uncommitted changes)"
    (repo / "a.md").write_text("one\n")
    (repo / "new.md").write_text("untracked\n")  # git status --porcelain lists it: dirty too
    assert fc.git_state(repo).dirty


def test_the_version_is_the_installed_packages():
    from importlib.metadata import version

    assert fc.package_version() == version("saliency-sanity")


def test_a_small_sphinx_build_puts_the_block_under_each_labelled_figure_and_lists_them(tmp_path):
    """Two pages and the cite list through Sphinx itself (-W): the real event handlers, no book build."""
    from sphinx.application import Sphinx
    from sphinx.util.docutils import docutils_namespace

    src = tmp_path / "src"
    (src / "book" / "figures").mkdir(parents=True)
    for stem in ("curve", "unlabelled"):
        (src / "book" / "figures" / f"{stem}.png").write_bytes(
            bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
                          "0000000d49444154789c6360000002000100ffff03000006000557bfabd40000000049454e44ae426082"))
    _notebook(src / "book" / "generated" / "02_randomization.ipynb", ours={
        "execution_key": "k", "profile": "smoke", "parameters": {"profile": "smoke", "figures_dir": "book/figures"},
        "outputs": ["book/figures/curve.png", "book/figures/curve.svg"]})
    (src / "index.rst").write_text("Book\n====\n\n.. toctree::\n\n   book/chapter\n   book/cite\n")
    (src / "book" / "chapter.rst").write_text(
        "Chapter\n=======\n\n.. figure:: figures/curve.png\n   :name: fig-curve\n   :alt: A curve & 50% of it.\n\n"
        "   The curve.\n\n.. figure:: figures/unlabelled.png\n\n   No label, no block.\n")
    (src / "book" / "cite.rst").write_text("Cite\n====\n\n.. figure-citations::\n")
    (src / "conf.py").write_text(
        f"import sys\nif {str(EXT)!r} not in sys.path:\n    sys.path.append({str(EXT)!r})\n"
        "extensions = ['figure_citations']\n"
        "numfig = True\nnumfig_format = {'figure': 'Figure %s'}\nhtml_title = 'The Book'\n"
        "author = 'The authors'\ncopyright = '2026'\nhtml_theme = 'basic'\n")
    out = tmp_path / "html"
    with docutils_namespace():  # the directive and node are registered for this build only
        app = Sphinx(str(src), str(src), str(out), str(tmp_path / "doctrees"), "html",
                     status=None, warning=None, warningiserror=True, freshenv=True)
        app.build(force_all=True)
    assert app.statuscode == 0
    chapter = (out / "book" / "chapter.html").read_text()
    assert chapter.count("<details") == chapter.count("</details>") == 1
    block = chapter[chapter.index("<details"):chapter.index("</details>")]
    assert chapter.index('id="fig-curve"') < chapter.index("<details")  # after the figure
    assert "Rerun and cite this figure" in block
    text = block.replace("&quot;", '"')
    for part in ("papermill", "notebooks/02_randomization.ipynb", "book/generated/02_randomization.ipynb",
                 "profile", "smoke", "figures_dir", "fig-curve", "book/chapter.html#fig-curve",
                 f"saliency-sanity {fc.package_version()}", fc.NO_COMMIT):
        assert part in text, part
    assert "None" not in text
    cite = (out / "book" / "cite.html").read_text()
    assert 'href="chapter.html#fig-curve"' in cite and "@misc" in cite and "fig-curve" in cite
    assert "unlabelled" not in cite and "<details" not in cite
