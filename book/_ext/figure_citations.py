"""Sphinx extension: a "rerun and cite" block under every figure of the book, and the list of all
figures' BibTeX entries on the "How to cite" page.

Which figures
    Every ``figure`` node that has a ``:name:`` label and whose image is ``.../figures/<stem>.png``.
    The label is the figure's stable name: the BibTeX key and the page anchor.

Which notebook made a figure
    Each executed notebook in ``book/generated`` records the files it wrote in
    ``metadata.saliency_sanity.outputs`` (see :mod:`saliency_sanity.book.execution`); the notebook whose
    outputs hold ``<stem>.png`` made the figure. Notebooks executed before that record existed carry
    none: for them the code cells are searched for the call that saved the figure
    (``ch.save(fig, "name")`` or ``save_figure(fig, "name")``, an f-string name matching as a pattern).
    The profile and parameters are the notebook's own (``metadata.saliency_sanity``, else what
    papermill recorded in ``metadata.papermill.parameters``); when neither is there, the profile of
    the last build in ``book/generated/execution.json`` (else the only profile in ``timings.json``,
    else ``default``).

What the block says
    The papermill command that regenerates the figure, the package version, the git commit of the
    build (with "(uncommitted changes)" when ``git status --porcelain`` prints anything), the
    profile, and a BibTeX entry keyed by the figure's label whose URL is the page with the anchor:
    ``html.baseurl`` of ``_config.yml`` when set, else the chapter's source in the ``repository.url``
    at the build's commit, else the page's path relative to the book's root.

The block is HTML only (a ``<details>`` element around ordinary code blocks); the ``figure-citations``
directive (used in ``book/cite.md``) renders for every builder.

This module lives outside the ``saliency_sanity`` package on purpose: every notebook's execution key
and every cached table digest the package's source (``cache.source_hash``), so a change here would
otherwise re-execute the whole book.
"""
from __future__ import annotations

import ast
import json
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from urllib.parse import urljoin

from docutils import nodes
from docutils.parsers.rst import Directive

GENERATED = "book/generated"
FIGURES_DIR = "book/figures"  # the default of every notebook's ``figures_dir`` parameter
METADATA = "saliency_sanity"  # metadata.saliency_sanity of an executed notebook
FIGURE_IMAGE = re.compile(r"(?:^|/)figures/([^/]+)\.png$")
SAVE_CALLS = ("save", "save_figure")  # Chapter.save(fig, name), plotting.save_figure(fig, name)
DIRTY = "(uncommitted changes)"
NO_COMMIT = "not recorded (not a git checkout)"


# --------------------------------------------------------------------------- what a build knows


@dataclass(frozen=True)
class ExecutedNotebook:
    """What an executed notebook in ``book/generated`` says about its own execution."""

    name: str  # "02_randomization.ipynb"
    outputs: tuple[str, ...] = ()  # files it wrote, relative to the project root
    profile: str | None = None  # the profile it was executed with, when recorded
    parameters: dict = field(default_factory=dict)  # its papermill parameters, when recorded
    code: tuple[str, ...] = ()  # the source of its code cells
    recorded: bool = False  # whether it carries metadata.saliency_sanity


def read_executed(generated: Path) -> list[ExecutedNotebook]:
    """The executed notebooks in ``generated`` (``*.partial.ipynb`` left out), by name."""
    found = []
    for path in sorted(Path(generated).glob("*.ipynb")):
        if path.name.endswith(".partial.ipynb"):
            continue
        try:
            nb = json.loads(path.read_text(encoding="utf-8"))
            metadata = nb.get("metadata") or {}
        except (OSError, ValueError, AttributeError):
            continue
        ours = metadata.get(METADATA) if isinstance(metadata.get(METADATA), dict) else {}
        papermill = metadata.get("papermill") if isinstance(metadata.get("papermill"), dict) else {}
        parameters = ours.get("parameters") or papermill.get("parameters") or {}
        parameters = dict(parameters) if isinstance(parameters, dict) else {}
        profile = ours.get("profile") or parameters.get("profile")
        code = tuple("".join(c.get("source", "")) if isinstance(c.get("source"), list) else str(c.get("source", ""))
                     for c in nb.get("cells", []) if isinstance(c, dict) and c.get("cell_type") == "code")
        outputs = ours.get("outputs") if isinstance(ours.get("outputs"), list) else []
        found.append(ExecutedNotebook(path.name, tuple(str(o) for o in outputs),
                                      str(profile) if profile else None, parameters, code, bool(ours)))
    return found


def _saved_names(code: str) -> list[str | re.Pattern]:
    """The figure names a cell's ``save``/``save_figure`` calls pass: a string, or for an f-string
    a pattern (each ``{...}`` one or more characters)."""
    source = "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in code.splitlines())
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str | re.Pattern] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        if called not in SAVE_CALLS:
            continue
        arg = node.args[1] if len(node.args) > 1 else next(
            (k.value for k in node.keywords if k.arg == "name"), None)
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            names.append(arg.value)
        elif isinstance(arg, ast.JoinedStr):
            parts = [re.escape(v.value) if isinstance(v, ast.Constant) else ".+" for v in arg.values]
            names.append(re.compile("".join(parts)))
    return names


def notebook_for_figure(stem: str, notebooks: list[ExecutedNotebook]) -> tuple[ExecutedNotebook | None, str]:
    """The executed notebook that wrote ``figures/<stem>.png`` and how it was found:
    ``"recorded outputs"``, ``"notebook source"`` or ``""`` (not found; also when the source is ambiguous)."""
    wanted = f"{stem}.png"
    for nb in notebooks:
        if any(PurePosixPath(o).name == wanted for o in nb.outputs):
            return nb, "recorded outputs"
    exact, pattern = [], []
    for nb in notebooks:
        names = [n for cell in nb.code for n in _saved_names(cell)]
        if stem in names:
            exact.append(nb)
        elif any(isinstance(n, re.Pattern) and n.fullmatch(stem) for n in names):
            pattern.append(nb)
    for candidates in (exact, pattern):
        if len(candidates) == 1:
            return candidates[0], "notebook source"
        if candidates:
            return None, ""
    return None, ""


def build_profile(generated: Path) -> str:
    """The profile of the last build: the profile in ``execution.json`` with the latest ``build``
    stamp, else the only profile in ``timings.json``, else ``default``."""
    generated = Path(generated)
    try:
        records = json.loads((generated / "execution.json").read_text())
        latest = {profile: max((str(r.get("build") or "") for r in notebooks.values() if isinstance(r, dict)),
                               default="")
                  for profile, notebooks in records.items() if isinstance(notebooks, dict) and notebooks}
        if latest:
            return max(latest, key=lambda p: (latest[p], p))
    except (OSError, ValueError, AttributeError):
        pass
    try:
        timings = json.loads((generated / "timings.json").read_text())
        if isinstance(timings, dict) and len(timings) == 1:
            return str(next(iter(timings)))
    except (OSError, ValueError):
        pass
    return "default"


def default_parameters(profile: str) -> dict:
    """The papermill parameters ``reproduce`` passes (:func:`saliency_sanity.book.layout.papermill_parameters`)."""
    return {"profile": profile, "figures_dir": FIGURES_DIR}


@dataclass(frozen=True)
class Rerun:
    """How to regenerate one figure."""

    notebook: str | None  # "02_randomization.ipynb"; None: no executed notebook says it wrote the figure
    how: str  # "recorded outputs" | "notebook source" | ""
    profile: str
    profile_recorded: bool  # False: the build's profile stands in for the notebook's
    parameters: dict

    @property
    def command(self) -> str:
        if self.notebook is None:
            return f"python -m saliency_sanity reproduce --profile {shlex.quote(self.profile)}"
        return papermill_command(self.notebook, self.parameters)


def rerun_for(stem: str, notebooks: list[ExecutedNotebook], fallback_profile: str) -> Rerun:
    nb, how = notebook_for_figure(stem, notebooks)
    if nb is None:
        return Rerun(None, "", fallback_profile, False, default_parameters(fallback_profile))
    profile = nb.profile or fallback_profile
    parameters = {**(nb.parameters or default_parameters(profile)), "profile": profile}
    return Rerun(nb.name, how, profile, nb.profile is not None, parameters)


# --------------------------------------------------------------------------- the command


def _papermill_would_convert(text: str) -> bool:
    """Whether papermill's ``-p`` turns ``text`` into something else than a string."""
    if text in ("True", "False", "None"):
        return True
    try:
        float(text)
    except ValueError:
        return False
    return True


def papermill_command(notebook: str, parameters: dict, generated: str = GENERATED) -> str:
    """``papermill notebooks/NB book/generated/NB -p profile P -p ...`` (profile first), to run from
    the project root, as ``python -m saliency_sanity reproduce`` does."""
    parts = ["papermill", f"notebooks/{notebook}", f"{generated}/{notebook}"]
    ordered = sorted(parameters.items(), key=lambda kv: (kv[0] != "profile", kv[0]))
    for name, value in ordered:
        if isinstance(value, str):
            flag = "-r" if _papermill_would_convert(value) else "-p"
            parts += [flag, name, value]
        elif isinstance(value, (bool, int, float)) or value is None:
            parts += ["-p", name, repr(value)]
        else:  # lists, dicts: as YAML (JSON is YAML)
            parts += ["-y", json.dumps({name: value})]
    return " ".join(shlex.quote(str(p)) for p in parts)


# --------------------------------------------------------------------------- version and commit


@dataclass(frozen=True)
class GitState:
    commit: str | None  # short hash; None outside a git checkout
    dirty: bool = False

    def describe(self) -> str:
        """``0395353``, ``0395353 (uncommitted changes)`` or a sentence saying there is none."""
        if not self.commit:
            return NO_COMMIT
        return f"{self.commit} {DIRTY}" if self.dirty else self.commit


def git_state(root: Path) -> GitState:
    """The commit of ``root``'s checkout (``git rev-parse --short HEAD``) and whether
    ``git status --porcelain`` lists anything."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = (git("rev-parse", "--short", "HEAD") or "").strip()
    if not commit:
        return GitState(None)
    status = git("status", "--porcelain")
    return GitState(commit, dirty=status is None or bool(status.strip()))


def package_version() -> str:
    """The installed version of saliency-sanity (its distribution metadata, else ``__version__``)."""
    from importlib import metadata

    try:
        return metadata.version("saliency-sanity")
    except metadata.PackageNotFoundError:
        pass
    try:
        import saliency_sanity

        return str(saliency_sanity.__version__)
    except Exception:  # noqa: BLE001 -- the book still builds; the block says so
        return "unknown"


# --------------------------------------------------------------------------- BibTeX


_LATEX = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "%": r"\%", "&": r"\&", "#": r"\#",
          "$": r"\$", "_": r"\_", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX.get(ch, ch) for ch in " ".join(str(text).split()))


def bibtex_key(label: str) -> str:
    """The label itself; characters BibTeX cannot take in a key (none in ``fig-...`` labels) become ``-``."""
    return re.sub(r"[^A-Za-z0-9_:.+/-]", "-", label)


def figure_url(target: str, anchor: str, baseurl: str = "", repository_url: str = "",
               source: str = "", ref: str = "") -> tuple[str, str]:
    """The URL of a figure and what it is based on.

    ``target``: the page's path in the built site (``book/positive_handling.html``); ``source``: the
    chapter's source file (``book/positive_handling.md``), ``ref``: a commit or branch, both for
    the repository URL."""
    if baseurl:
        return urljoin(baseurl.rstrip("/") + "/", target) + f"#{anchor}", "html.baseurl"
    if repository_url and source:
        return (f"{repository_url.rstrip('/')}/blob/{ref or 'HEAD'}/{source}#{anchor}",
                "repository url (the chapter's source)")
    return f"{target}#{anchor}", "relative to the book's root"


@dataclass(frozen=True)
class FigureCitation:
    label: str  # the figure's :name:, its stable name
    image: str  # "book/figures/positive_handling_summary.png"
    url: str
    title: str  # the figure's alt text or caption
    number: str  # "Figure 15", or "" without numfig
    book_title: str
    author: str
    year: str
    version: str
    commit: str  # GitState.describe()
    rerun: Rerun

    def bibtex(self) -> str:
        figure = self.number or "Figure"
        where = f"{figure} in \\emph{{{latex_escape(self.book_title)}}}" if self.book_title else figure
        notebook = f"notebook notebooks/{self.rerun.notebook}, " if self.rerun.notebook else ""
        note = (f"Figure file {self.image}; {notebook}profile {self.rerun.profile}; "
                f"saliency-sanity {self.version}, commit {self.commit}")
        title = " ".join(self.title.split()).rstrip(".") or self.label
        fields = [("title", latex_escape(title)),
                  ("author", "{" + latex_escape(self.author) + "}"),
                  ("year", latex_escape(self.year)),
                  ("howpublished", where),
                  ("url", self.url.replace("{", "%7B").replace("}", "%7D")),
                  ("note", latex_escape(note))]
        body = ",\n".join(f"  {name:<12} = {{{value}}}" for name, value in fields if value)
        return f"@misc{{{bibtex_key(self.label)},\n{body},\n}}"

    def summary(self) -> str:
        profile = self.rerun.profile if self.rerun.profile_recorded else f"{self.rerun.profile} (the build's)"
        return f"saliency-sanity {self.version} · commit {self.commit} · profile {profile}"


def copyright_year(copyright: str, now: datetime | None = None) -> str:
    years = re.findall(r"\b(?:19|20)\d{2}\b", str(copyright or ""))
    return years[-1] if years else str((now or datetime.now(timezone.utc)).year)


# --------------------------------------------------------------------------- Sphinx


class figure_citations_list(nodes.General, nodes.Element):
    """Placeholder the ``figure-citations`` directive leaves; filled when the doctree is resolved."""


class FigureCitationsDirective(Directive):
    """``{figure-citations}``: every figure's BibTeX entry, in the order of the book."""

    has_content = False

    def run(self):
        env = self.state.document.settings.env
        _cite_docs(env).add(env.docname)
        return [figure_citations_list()]


@dataclass
class BuildInfo:
    notebooks: list[ExecutedNotebook]
    profile: str
    version: str
    git: GitState
    baseurl: str
    repository_url: str
    repository_branch: str
    book_title: str
    author: str
    year: str


def _read_user_config(root: Path) -> dict:
    """``_config.yml`` as written (jupyter-book fills in a placeholder repository url of its own)."""
    try:
        import yaml

        data = yaml.safe_load((root / "_config.yml").read_text())
        return data if isinstance(data, dict) else {}
    except Exception:  # noqa: BLE001 -- no config: no repository url
        return {}


def _info(app) -> BuildInfo:
    info = getattr(app, "_figure_citations_info", None)
    if info is None:
        root = Path(app.srcdir)
        user = _read_user_config(root)
        repository = user.get("repository") if isinstance(user.get("repository"), dict) else {}
        generated = root / app.config.figure_citations_generated
        info = BuildInfo(read_executed(generated), build_profile(generated), package_version(), git_state(root),
                         str(app.config.html_baseurl or ""), str(repository.get("url") or ""),
                         str(repository.get("branch") or ""), str(app.config.html_title or user.get("title") or ""),
                         str(app.config.author or ""), copyright_year(app.config.copyright))
        app._figure_citations_info = info
    return info


def _figures(env) -> dict:
    if not hasattr(env, "figure_citations"):
        env.figure_citations = {}
    return env.figure_citations


def _cite_docs(env) -> set:
    if not hasattr(env, "figure_citations_pages"):
        env.figure_citations_pages = set()
    return env.figure_citations_pages


def _figure_image(figure) -> tuple[str, str] | None:
    """(stem, alt) of a figure whose image is ``figures/<stem>.png``."""
    for image in figure.findall(nodes.image):
        for uri in (image.get("uri"), image.get("original_uri")):
            match = FIGURE_IMAGE.search(str(uri or ""))
            if match:
                return match.group(1), str(image.get("alt") or "")
    return None


def _labelled_figures(doctree):
    for figure in list(doctree.findall(nodes.figure)):
        found = _figure_image(figure)
        if found and figure.get("names") and figure.get("ids"):
            yield figure, found


def on_doctree_read(app, doctree) -> None:
    docname = app.env.docname
    records = []
    for figure, (stem, alt) in _labelled_figures(doctree):
        caption = next(iter(figure.findall(nodes.caption)), None)
        records.append({"label": figure["names"][0], "anchor": figure["ids"][0], "stem": stem,
                        "title": alt or (caption.astext() if caption is not None else "")})
    if records:
        _figures(app.env)[docname] = records
    else:
        _figures(app.env).pop(docname, None)


def on_purge_doc(app, env, docname) -> None:
    _figures(env).pop(docname, None)
    _cite_docs(env).discard(docname)


def on_merge_info(app, env, docnames, other) -> None:
    for docname in docnames:
        if docname in _figures(other):
            _figures(env)[docname] = _figures(other)[docname]
        if docname in _cite_docs(other):
            _cite_docs(env).add(docname)


def on_env_updated(app, env) -> list[str]:
    """Write again every page that shows a block or the list: the commit, the profile and the other
    pages' figures may have changed even where the page did not."""
    return sorted((set(_figures(env)) | _cite_docs(env)) & set(env.found_docs))


def _citation(app, docname: str, record: dict) -> FigureCitation:
    info = _info(app)
    env = app.env
    number = env.toc_fignumbers.get(docname, {}).get("figure", {}).get(record["anchor"])
    label = ""
    if number:
        fmt = (app.config.numfig_format or {}).get("figure", "Fig. %s")
        label = fmt % ".".join(map(str, number))
    source = str(env.doc2path(docname, False))
    url, _ = figure_url(app.builder.get_target_uri(docname), record["anchor"], info.baseurl,
                        info.repository_url, PurePosixPath(source).as_posix(),
                        info.git.commit or info.repository_branch)
    return FigureCitation(record["label"], f"{FIGURES_DIR}/{record['stem']}.png", url, record["title"], label,
                          info.book_title, info.author, info.year, info.version, info.git.describe(),
                          rerun_for(record["stem"], info.notebooks, info.profile))


def _code(text: str, language: str):
    block = nodes.literal_block(text, text, language=language)
    block["force"] = True  # never a lexer warning (the book builds with -W)
    return block


def _block(citation: FigureCitation):
    rerun = citation.rerun
    if rerun.notebook is None:
        intro = "No executed notebook records this figure; the whole book regenerates it:"
    else:
        intro = f"Regenerate with notebook {Path(rerun.notebook).stem}, from the project root:"
    container = nodes.container(classes=["figure-rerun"])
    container += nodes.raw("", '<details class="figure-rerun" style="font-size: 0.85em; margin: -0.5em 0 1em;">'
                               "<summary>Rerun and cite this figure</summary>", format="html")
    container += nodes.paragraph(intro, intro)
    container += _code(rerun.command, "bash")
    container += nodes.paragraph(citation.summary(), citation.summary())
    container += _code(citation.bibtex(), "bibtex")
    container += nodes.raw("", "</details>", format="html")
    return container


def _doc_order(env) -> list[str]:
    """Documents in the order of the table of contents (then any others, by name)."""
    order, seen = [], set()

    def walk(doc):
        if doc in seen:
            return
        seen.add(doc)
        order.append(doc)
        for child in env.toctree_includes.get(doc, []):
            walk(child)

    walk(env.config.root_doc)
    return order + sorted(set(env.all_docs) - seen)


def _citation_list(app, fromdoc: str):
    figures = _figures(app.env)
    entries = [(doc, record, _citation(app, doc, record)) for doc in _doc_order(app.env) if doc in figures
               for record in figures[doc]]
    if not entries:
        return [nodes.paragraph("", "This build has no labelled figure.")]
    info = _info(app)
    _, basis = figure_url("page.html", "anchor", info.baseurl, info.repository_url, "page.md", "ref")
    intro = (f"Every figure of this build by its stable name, the BibTeX key (saliency-sanity {info.version}, "
             f"commit {info.git.describe()}). URLs: {basis}"
             + ("" if info.baseurl else "; set html.baseurl in _config.yml for absolute ones") + ".")
    items = nodes.bullet_list()
    for doc, record, c in entries:
        para = nodes.paragraph()
        para += nodes.reference("", c.number or c.label, internal=True,
                                refuri=app.builder.get_relative_uri(fromdoc, doc) + "#" + record["anchor"])
        para += nodes.Text(" — ")
        para += nodes.literal(c.label, c.label)
        if c.title:
            para += nodes.Text(f": {c.title}")
        items += nodes.list_item("", para)
    bib = "\n\n".join(c.bibtex() for _, _, c in entries)
    return [nodes.paragraph(intro, intro), items, _code(bib, "bibtex")]


def on_doctree_resolved(app, doctree, docname) -> None:
    for placeholder in list(doctree.findall(figure_citations_list)):
        placeholder.replace_self(_citation_list(app, docname))
    if app.builder.format != "html":
        return
    records = {r["anchor"]: r for r in _figures(app.env).get(docname, [])}
    for figure, _ in list(_labelled_figures(doctree)):
        record = records.get(figure["ids"][0])
        if record is not None:
            figure.parent.insert(figure.parent.index(figure) + 1, _block(_citation(app, docname, record)))


def setup(app):
    app.add_config_value("figure_citations_generated", GENERATED, "env")
    app.add_node(figure_citations_list)
    app.add_directive("figure-citations", FigureCitationsDirective)
    app.connect("doctree-read", on_doctree_read)
    app.connect("env-purge-doc", on_purge_doc)
    app.connect("env-merge-info", on_merge_info)
    app.connect("env-get-updated", on_env_updated)
    app.connect("doctree-resolved", on_doctree_resolved)
    return {"version": "1.0", "env_version": 1, "parallel_read_safe": True, "parallel_write_safe": True}
