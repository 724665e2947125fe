"""The console's Embed page: the snippet an admin pastes into the site's article template."""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

import pytest
from site_helpers import LocalServer
from staff_helpers import ADMIN, EDITOR, PASSWORD, as_staff, close_site, make_site, staff_config

from digest.screenshot import CHROMIUM, CHROMIUM_ARGS
from digest.web.embed import embed_snippet

SITE = "https://responsiblestatecraft.org"
TEXTAREA = re.compile(r'<textarea id="(snippet-\w+)"[^>]*>(.*?)</textarea>', re.S)


@pytest.fixture
def site(tmp_path):
    s = make_site(staff_config("http://localhost", tmp_path, embed_origins=[SITE]))
    yield s
    close_site(s)


def test_admin_gets_the_snippets_to_paste(site) -> None:
    page = as_staff(site, ADMIN).get("/staff/embed")
    assert page.status_code == 200
    assert 'href="/staff/embed"' in page.text  # in the console's menu for admins
    shown = {name: html.unescape(text) for name, text in TEXTAREA.findall(page.text)}
    with site.app.test_request_context():
        assert shown["snippet-regions"] == embed_snippet(site.config, with_regions=True)
        assert shown["snippet-plain"] == embed_snippet(site.config, with_regions=False)
    assert 'action="http://localhost/subscribe/embed"' in shown["snippet-regions"]
    assert 'name="region" value="Middle East"' in shown["snippet-regions"]
    assert 'name="region"' not in shown["snippet-plain"]
    for snippet in shown.values():
        assert "style=" not in snippet and "<style" not in snippet  # styled by the site
        for field in re.findall(r'<input[^>]*id="([^"]+)"', snippet):
            assert (
                f'<label class="digest-signup__label" for="{field}"' in snippet or f'for="{field}"' in snippet
            )
    assert SITE in page.text and "<script" not in page.text.replace("&lt;script", "")  # shown, not run


def test_the_page_says_when_no_site_is_allowed(tmp_path) -> None:
    site = make_site(staff_config("http://localhost", tmp_path))
    try:
        page = as_staff(site, ADMIN).get("/staff/embed")
        assert "No site may post this form yet" in page.text and "embed_origins" in page.text
    finally:
        close_site(site)


def test_editors_do_not_get_the_page(site) -> None:
    staff = as_staff(site, EDITOR)
    assert staff.get("/staff/embed").status_code == 403
    assert 'href="/staff/embed"' not in staff.get("/staff/").text


@pytest.mark.chromium
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (Debian package chromium)")
@pytest.mark.parametrize("width", [375, 1280])
def test_the_page_reads_on_a_phone_and_a_desktop(tmp_path, width) -> None:
    """Real server, headless Chromium: the snippets are labelled fields and nothing scrolls sideways."""
    sync_api = pytest.importorskip("playwright.sync_api")
    server = LocalServer()
    base = server.base
    site = make_site(staff_config(base, tmp_path, embed_origins=[SITE]))
    server.serve(site.app)
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
            page = browser.new_context(viewport={"width": width, "height": 900}).new_page()
            page.goto(f"{base}/staff/login")
            page.get_by_label("E-mail").fill(ADMIN)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.goto(f"{base}/staff/embed")
            snippet = page.get_by_label("HTML to paste (readers get every region)")
            assert snippet.input_value().startswith('<form class="digest-signup"')
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            folder = Path(os.environ.get("DIGEST_SCREENSHOTS") or tmp_path)
            folder.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(folder / f"console-embed-{width}.png"), full_page=True)
            browser.close()
    finally:
        server.close()
        close_site(site)
