"""The whole pipeline once: papermill runs every notebook (smoke profile) and Jupyter Book builds."""
import re

import nbformat
import pytest

from helpers.paths import ROOT


def test_source_notebooks_have_parameters_and_no_outputs():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert any("parameters" in c.metadata.get("tags", []) for c in code), path.name
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} has outputs"


@pytest.mark.slow
def test_reproduce_smoke_builds_the_book_with_figures(smoke_site):
    html = smoke_site / "book" / "_build" / "html"
    assert (html / "index.html").is_file()
    models = (html / "book" / "models.html").read_text()
    assert "models_training.png" in models and re.search(r"Figure \d+", models)  # numbered (the number moves)
    assert (html / "_images" / "models_training.png").is_file()
    executed = nbformat.read(smoke_site / "book" / "generated" / "00_models.ipynb", as_version=4)
    assert any(o.get("output_type") == "display_data" and "image/png" in o.get("data", {})
               for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert (smoke_site / "book" / "figures" / "models_training.svg").is_file()
    # the executed notebook is rendered as a page with its figure
    assert "<img" in (html / "book" / "generated" / "00_models.html").read_text()
    # no partial notebook is left behind
    assert not list((smoke_site / "book" / "generated").glob("*.partial.ipynb"))


@pytest.mark.slow
def test_every_toc_notebook_was_executed(smoke_site):
    from saliency_sanity.book.layout import toc_notebooks

    for name in toc_notebooks(ROOT):
        nb = nbformat.read(smoke_site / "book" / "generated" / name, as_version=4)
        errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.get("output_type") == "error"]
        assert not errors, f"{name}: {errors[:1]}"


@pytest.mark.slow
def test_every_figure_the_chapters_cite_was_produced(smoke_site):
    cited = set()
    for chapter in (ROOT / "book").glob("*.md"):
        cited |= set(re.findall(r"figures/([\w.-]+\.png)", chapter.read_text()))
    assert cited, "no chapter cites a figure"
    produced = {p.name for p in (smoke_site / "book" / "figures").glob("*.png")}
    assert cited <= produced, f"cited but not produced: {sorted(cited - produced)}"
    for name in cited:  # every cited figure has a vector twin
        assert (smoke_site / "book" / "figures" / name.replace(".png", ".svg")).is_file()


@pytest.mark.slow
def test_no_page_prints_nan_none_or_na(smoke_site):
    """A computed sentence must never show a missing number: scan the visible text of every built page."""
    import html as html_lib

    site = smoke_site / "book" / "_build" / "html"
    # "None of ..." is English; a bare None is a Python value that leaked into the text
    bad = re.compile(r"(?<![\w-])(nan|NaN|None(?! of\b)|<NA>|NA)(?![\w-])")
    found = {}
    pages = sorted(site.rglob("*.html"))
    assert len(pages) > 10
    # the API reference quotes docstrings, where None and NaN are Python values named on purpose
    pages = [p for p in pages if p.relative_to(site).as_posix() != "book/api.html"]
    for page in pages:
        text = page.read_text()
        # visible text only: scripts, styles and code listings (which may name None in Python) left out
        text = re.sub(r"(?s)<(script|style|pre|code)\b.*?</\1>", " ", text)
        text = html_lib.unescape(re.sub(r"<[^>]+>", " ", text))
        hits = sorted({m.group(0) for m in bad.finditer(text)})
        if hits:
            found[str(page.relative_to(site))] = hits
    assert not found, f"pages print a missing value: {found}"
