"""Open every page of the smoke-built site in headless Chromium, as a reader would.

Fails on a page that does not load, an image that does not render, a broken internal link, an
in-page anchor (``#fragment``) that names no element on its target page, or a figure without its
caption. Keeps a full-page screenshot of the home page and of every results page (every page with a
figure) as build artefacts in ``book/_build/screenshots/`` of the checkout (or
``$SALIENCY_SANITY_SCREENSHOTS``), replacing those of the previous run.

A missing browser is a failure, never a skip: ``make test`` installs Debian's chromium (as root
with apt). To leave this test out on purpose, deselect it: ``pytest -m "not slow"`` or
``make test-fast``.
"""
import functools
import http.server
import importlib
import os
from pathlib import Path
import shutil
import sys
import threading
from urllib.parse import unquote, urldefrag, urljoin, urlparse

import pytest

from helpers.paths import ROOT

SCREENSHOTS = Path(os.environ.get("SALIENCY_SANITY_SCREENSHOTS", ROOT / "book" / "_build" / "screenshots"))
INSTALL_HINT = ("install it with `make browser` (as root: apt-get install chromium) or "
                "`sudo apt-get install chromium`; to leave this test out on purpose, run "
                "`pytest -m \"not slow\"` or `make test-fast`")


def _require_browser(which=shutil.which):
    """Playwright's sync API and Debian's chromium, or a test failure that says how to get them."""
    chromium = which("chromium") or which("chromium-browser")
    if chromium is None:
        pytest.fail(f"Debian's chromium is not on PATH; {INSTALL_HINT}", pytrace=False)
    try:
        sync_api = importlib.import_module("playwright.sync_api")
    except ImportError as error:
        pytest.fail(f"playwright is not importable ({error}); install the test extra "
                    f"(pip install -e \".[test]\", or `make install`)", pytrace=False)
    return sync_api, chromium


def test_missing_chromium_fails_not_skips():
    with pytest.raises(pytest.fail.Exception, match="chromium is not on PATH.*apt-get install chromium"):
        _require_browser(which=lambda name: None)


def test_missing_playwright_fails_not_skips(monkeypatch):
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)  # makes the import raise ImportError
    with pytest.raises(pytest.fail.Exception, match="playwright is not importable"):
        _require_browser(which=lambda name: "/usr/bin/" + name)


@pytest.fixture(scope="module")
def served_site(smoke_site):
    html = smoke_site / "book" / "_build" / "html"
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield html, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


# every id in the document, and the names of <a name=...>: what a fragment can point to
ANCHOR_TARGETS_JS = ("() => [...document.querySelectorAll('[id]')].map(e => e.id).concat("
                     "[...document.querySelectorAll('a[name]')].map(a => a.getAttribute('name')))")


@pytest.mark.slow
def test_every_page_loads_with_images_links_anchors_and_captions(served_site):
    sync_api, chromium = _require_browser()
    html, base = served_site
    pages = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                   if not p.name.startswith(("genindex", "search")) and "_static" not in p.parts
                   and p != html / "index.html")  # the root index is a redirect, checked below
    assert "book/models.html" in pages and "book/intro.html" in pages
    problems = []
    shots = SCREENSHOTS
    shots.mkdir(parents=True, exist_ok=True)
    for old in shots.glob("*.png"):  # the artefacts are this build's, never a mix with an older one
        old.unlink()
    results_pages: dict[str, Path] = {}  # page -> its screenshot
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base) else route.abort())
        checked_links: dict[str, int] = {}
        anchors: dict[str, set[str]] = {}  # page url -> the ids and names on it, as rendered
        fragments: list[tuple[str, str, str]] = []  # (linking page, target page url, fragment)
        for rel in pages:
            response = page.goto(base + rel, wait_until="load")
            if response is None or response.status != 200:
                problems.append(f"{rel}: HTTP {response and response.status}")
                continue
            anchors[base + rel] = set(page.evaluate(ANCHOR_TARGETS_JS))
            broken = page.eval_on_selector_all(
                "img", "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
            problems += [f"{rel}: image does not render: {src}" for src in broken]
            uncaptioned = page.eval_on_selector_all(
                "figure", "fs => fs.filter(f => !f.querySelector('figcaption') || "
                          "!f.querySelector('figcaption').innerText.trim()).length")
            if uncaptioned:
                problems.append(f"{rel}: {uncaptioned} figure(s) without a caption")
            if page.locator("figure").count():  # a results page: keep what a reader sees
                results_pages[rel] = shots / (rel.removesuffix(".html").replace("/", "__") + ".png")
                page.screenshot(path=str(results_pages[rel]), full_page=True)
            for href in page.eval_on_selector_all("a[href]", "as => as.map(a => a.href)"):
                url, fragment = urldefrag(urljoin(base + rel, href))
                if not url.startswith(base):
                    continue
                if fragment:
                    fragments.append((rel, url, unquote(fragment)))
                if url in checked_links:
                    continue
                checked_links[url] = page.request.get(url).status
                if checked_links[url] != 200:
                    problems.append(f"{rel}: broken internal link {urlparse(url).path} ({checked_links[url]})")
        # in-page anchors, on this page or another one: the fragment must name an element there
        for rel, url, fragment in fragments:
            if url not in anchors:  # a target outside `pages` (genindex, search, ...): load it once
                anchors[url] = set()
                response = page.goto(url, wait_until="load") if checked_links.get(url) == 200 else None
                if response is not None and response.status == 200:
                    anchors[url] = set(page.evaluate(ANCHOR_TARGETS_JS))
            if checked_links.get(url) == 200 and fragment != "top" and fragment not in anchors[url]:
                target = urlparse(url).path.removeprefix("/")
                where = "" if target == rel else f" on {target}"
                problems.append(f"{rel}: broken anchor #{fragment}{where}")
        page.goto(base + "index.html")
        page.wait_for_url("**/book/intro.html")
        page.screenshot(path=str(shots / "home.png"), full_page=True)
        browser.close()
    assert not problems, "\n".join(sorted(set(problems)))
    assert (shots / "home.png").stat().st_size > 10_000
    # every chapter with results is among the screenshots, each an image of a real page
    chapters = {"book/models.html", "book/randomization.html", "book/class_sensitivity.html",
                "book/positive_handling.html", "book/soundness.html", "book/instability.html", "book/scorecard.html"}
    assert chapters <= set(results_pages), f"results pages without a screenshot: {sorted(chapters - set(results_pages))}"
    small = [rel for rel, png in results_pages.items() if png.stat().st_size <= 10_000]
    assert not small, f"screenshots too small to show a page: {small}"
    print(f"{len(results_pages)} results pages and the home page kept as screenshots in {shots}")
