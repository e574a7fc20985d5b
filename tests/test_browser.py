"""Open every page of the smoke-built site in headless Chromium, as a reader would.

Fails on a page that does not load, an image that does not render, a broken internal link or a
figure without its caption; saves screenshots of the home page and one results page.
"""
import functools
import http.server
import os
import shutil
import threading
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.slow


def _require_browser():
    if CHROMIUM is None:
        message = "Debian's chromium is not installed (make test installs it as root: apt-get install chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return pytest.importorskip("playwright.sync_api")


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


def test_every_page_loads_with_images_links_and_captions(served_site):
    sync_api = _require_browser()
    html, base = served_site
    pages = sorted(p.relative_to(html).as_posix() for p in html.rglob("*.html")
                   if not p.name.startswith(("genindex", "search")) and "_static" not in p.parts
                   and p != html / "index.html")  # the root index is a redirect, checked below
    assert "book/models.html" in pages and "book/intro.html" in pages
    problems = []
    shots = html.parent / "screenshots"
    shots.mkdir(exist_ok=True)
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(base) else route.abort())
        checked_links: dict[str, int] = {}
        for rel in pages:
            response = page.goto(base + rel, wait_until="load")
            if response is None or response.status != 200:
                problems.append(f"{rel}: HTTP {response and response.status}")
                continue
            broken = page.eval_on_selector_all(
                "img", "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
            problems += [f"{rel}: image does not render: {src}" for src in broken]
            uncaptioned = page.eval_on_selector_all(
                "figure", "fs => fs.filter(f => !f.querySelector('figcaption') || "
                          "!f.querySelector('figcaption').innerText.trim()).length")
            if uncaptioned:
                problems.append(f"{rel}: {uncaptioned} figure(s) without a caption")
            for href in page.eval_on_selector_all("a[href]", "as => as.map(a => a.href)"):
                url = urljoin(base + rel, href).split("#")[0]
                if not url.startswith(base) or url in checked_links:
                    continue
                checked_links[url] = page.request.get(url).status
                if checked_links[url] != 200:
                    problems.append(f"{rel}: broken internal link {urlparse(url).path} ({checked_links[url]})")
        page.goto(base + "index.html")
        page.wait_for_url("**/book/intro.html")
        page.screenshot(path=str(shots / "home.png"), full_page=True)
        page.goto(base + "book/models.html", wait_until="load")
        page.screenshot(path=str(shots / "results.png"), full_page=True)
        browser.close()
    assert not problems, "\n".join(problems)
    assert (shots / "home.png").stat().st_size > 10_000
