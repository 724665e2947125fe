"""The embedded sign-up as a reader meets it: inside a newsroom's article page, in headless
Chromium at 375 and 1280 px, served by a real HTTP server on another origin and posting to the
app on 127.0.0.1. With the script it sends in place; without it, it works as a plain form.

The article page has the seed page's shape (masthead, headline, deck, label, body, "keep reading"
teasers, then the round-up's sign-up block at the end). Set DIGEST_SCREENSHOTS=<folder> to keep
the screenshots.
"""

from __future__ import annotations

import os
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from subscriber_helpers import TEST_SECRET
from werkzeug.serving import make_server

from digest.config import config_from_dict
from digest.db import make_engine, migrate
from digest.screenshot import CHROMIUM, CHROMIUM_ARGS
from digest.web import create_app
from digest.web.embed import embed_snippet

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (Debian package chromium)"),
]

WIDTHS = {"phone": {"width": 375, "height": 740}, "desktop": {"width": 1280, "height": 900}}

# The site's own styles for the documented class names: the snippet brings none.
SITE_CSS = """
body { margin: 0; font: 18px/1.6 Georgia, serif; color: #1a1a1a; }
header { background: #0b2545; color: #fff; padding: 12px 20px; font: 700 20px/1.2 sans-serif; }
article, aside.newsletter { max-width: 720px; margin: 0 auto; padding: 0 20px; }
h1 { font-size: 2rem; line-height: 1.2; }
.label { text-transform: uppercase; font: 600 13px sans-serif; color: #8a1c1c; }
.teaser { border-top: 1px solid #ddd; padding: 12px 0; }
aside.newsletter { background: #f3f1ec; padding: 20px; margin-bottom: 40px; box-sizing: border-box; }
.digest-signup__title { font: 700 22px sans-serif; margin: 0 0 8px; }
.digest-signup__label { display: block; font: 600 15px sans-serif; margin-bottom: 4px; }
.digest-signup__input { width: 100%; box-sizing: border-box; font-size: 17px; padding: 10px; }
.digest-signup__regions { border: 0; padding: 0; margin: 12px 0; display: flex; flex-wrap: wrap;
  gap: 4px 16px; }
.digest-signup__legend { font: 600 15px sans-serif; }
.digest-signup__check { font: 15px sans-serif; }
.digest-signup__button { margin-top: 12px; font: 700 16px sans-serif; padding: 10px 24px; background: #8a1c1c;
  color: #fff; border: 0; }
.digest-signup__error { color: #a40000; font: 600 15px sans-serif; margin: 6px 0 0; }
.digest-signup__status { font: 600 16px sans-serif; min-height: 1.5em; }
.digest-signup__note { font: 14px sans-serif; color: #555; }
"""

ARTICLE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>How will Iran respond to renewed conflict between Azerbaijan and Armenia?</title>
<style>{css}</style></head>
<body>
<header>Responsible Statecraft</header>
<article>
  <p class="label">Analysis | Middle East</p>
  <h1>How will Iran respond to renewed conflict between Azerbaijan and Armenia?</h1>
  <p><em>The complicated nature of the geopolitics of the region has made it more difficult for Iran
  to clearly define its policy towards the Nagorno-Karabakh conflict.</em></p>
  {paragraphs}
  <div class="teaser"><p class="label">Asia-Pacific</p><h2>Can Trump finally break with Biden's failed China
  policy?</h2><p>keep reading</p></div>
  <div class="teaser"><p class="label">Middle East</p><h2>Iraq faces first quiet election in decades.
  Don't let that fool you.</h2><p>keep reading</p></div>
</article>
<aside class="newsletter" aria-label="Newsletter">
{snippet}
</aside>
</body></html>
"""

ARTICLE_PATH = "/2020/07/21/iran-azerbaijan-armenia/"
PARAGRAPH = (
    "<p>Conflict between Azerbaijan and Armenia over the disputed region of Nagorno-Karabakh has "
    "been longstanding. The last time the two states clashed and exchanged fire was a set of "
    "skirmishes in 2016, which lasted for four days.</p>"
)


class Clock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


def serve_article(pages: dict[str, str]) -> ThreadingHTTPServer:
    """The newsroom's site: a real HTTP server on its own port (another origin than the app's)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            body = pages["article"].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


@pytest.fixture
def article_and_app(tmp_path):
    """The app on one port, the newsroom's article (with the pasted snippet) on another."""
    holder: dict = {}
    app_server = make_server("127.0.0.1", 0, lambda env, start: holder["app"](env, start), threaded=True)
    base = f"http://127.0.0.1:{app_server.server_port}"
    pages: dict[str, str] = {}
    site = serve_article(pages)
    site_url = f"http://127.0.0.1:{site.server_address[1]}"
    config = config_from_dict(
        {
            "newsletter": {"name": "Responsible Statecraft Weekly", "base_url": base},
            "web": {"embed_origins": [site_url], "embed_min_seconds": 3},
        }
    )
    engine = make_engine(f"sqlite:///{tmp_path / 'web.db'}")
    migrate(engine)
    outbox: list = []
    clock = Clock()
    app = create_app(config, engine, secret_key=TEST_SECRET, send_mail=outbox.append, clock=clock)
    holder["app"] = app
    with app.test_request_context():
        snippet = embed_snippet(config, with_regions=True)
    pages["article"] = ARTICLE.format(css=SITE_CSS, paragraphs=PARAGRAPH * 8, snippet=snippet)
    threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in (app_server, site)]
    for t in threads:
        t.start()
    try:
        yield site_url, clock, outbox, app.extensions["digest.mail"]
    finally:
        app_server.shutdown()
        site.shutdown()
        site.server_close()
        for t in threads:
            t.join(timeout=5)
        engine.dispose()


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def open_article(browser, url: str, width: str, *, scripts: bool):
    size = WIDTHS[width]
    context = browser.new_context(
        viewport=size, device_scale_factor=1, is_mobile=width == "phone", java_script_enabled=scripts
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(url)
    return context, page


def check_fits_and_shoot(page, tmp_path: Path, name: str, width: str) -> None:
    """The form is on screen when scrolled to, and nothing sticks out sideways."""
    form = page.locator("form.digest-signup")
    form.scroll_into_view_if_needed()
    assert form.is_visible(), name
    box = form.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= WIDTHS[width]["width"], (
        name,
        box,
    )
    assert page.evaluate("document.documentElement.scrollWidth") <= WIDTHS[width]["width"], name
    assert not page.locator("input[name=website]").is_visible()  # the honeypot stays hidden
    folder = Path(os.environ.get("DIGEST_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"embed-{name}-{width}.png"), full_page=True)


@pytest.mark.parametrize("width", list(WIDTHS))
def test_with_the_script_it_signs_up_in_place(article_and_app, browser, tmp_path, width) -> None:
    site_url, clock, outbox, queue = article_and_app
    context, page = open_article(browser, f"{site_url}{ARTICLE_PATH}", width, scripts=True)
    try:
        # The script fetched a signed time for the form when the page loaded.
        page.wait_for_function("document.querySelector('input[name=started]').value !== ''")
        check_fits_and_shoot(page, tmp_path, "script", width)
        clock.advance(10)  # the reader takes their time: past [web] embed_min_seconds

        # A typo the browser lets through: the server's message is tied to the field.
        page.get_by_label("E-mail address").fill("reader@localhost")
        page.get_by_role("button", name="Subscribe").click()
        error = page.locator(".digest-signup__error")
        error.wait_for()
        field = page.get_by_label("E-mail address")
        assert field.get_attribute("aria-invalid") == "true"
        assert field.get_attribute("aria-describedby") == error.get_attribute("id")

        field.fill("reader@example.org")
        page.get_by_label("Africa").check()
        page.get_by_role("button", name="Subscribe").click()
        status = page.locator(".digest-signup__status")
        page.wait_for_function(
            "document.querySelector('.digest-signup__status').textContent.includes('Check your inbox')"
        )
        assert page.url.startswith(site_url)  # the reader never left the article
        assert "reader@example.org" in status.text_content()
        assert page.locator(".digest-signup__error").count() == 0
        check_fits_and_shoot(page, tmp_path, "script-done", width)
    finally:
        context.close()
    queue.join()
    assert [m["To"] for m in outbox] == ["reader@example.org"]


@pytest.mark.parametrize("width", list(WIDTHS))
def test_without_scripts_the_plain_form_works(article_and_app, browser, tmp_path, width) -> None:
    site_url, clock, outbox, queue = article_and_app
    context, page = open_article(browser, f"{site_url}{ARTICLE_PATH}", width, scripts=False)
    try:
        check_fits_and_shoot(page, tmp_path, "noscript", width)
        page.get_by_label("E-mail address").fill("reader@example.org")
        page.get_by_label("Europe").check()
        page.get_by_role("button", name="Subscribe").click()
        # The pasted form has no signed time: one more press, on our page, with the form filled in.
        page.get_by_role("heading", name="One more step").wait_for()
        assert page.get_by_label("E-mail address").input_value() == "reader@example.org"
        assert page.get_by_label("Europe").is_checked()
        assert page.evaluate("document.documentElement.scrollWidth") <= WIDTHS[width]["width"]
        clock.advance(10)
        page.get_by_role("button", name="Subscribe").click()
        page.get_by_role("heading", name="Check your inbox").wait_for()
        folder = Path(os.environ.get("DIGEST_SCREENSHOTS") or tmp_path)
        page.screenshot(path=str(folder / f"embed-noscript-done-{width}.png"), full_page=True)
    finally:
        context.close()
    queue.join()
    assert [m["To"] for m in outbox] == ["reader@example.org"]
