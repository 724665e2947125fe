"""The run's page in the console shows the clicks, in headless Chromium at 375 and 1280 px:
the most-clicked stories, clicks and recipients per region as charts with their table, per
variant, and a CSV download. Against a real server on 127.0.0.1 and a real SQLite file.

Set DIGEST_SCREENSHOTS=<folder> to keep the screenshots.
"""

from __future__ import annotations

import csv
import io
import os
import threading
from pathlib import Path

import pytest
from analytics_helpers import BROWSER, DISGUISED_SCANNER, LINK_SECRET, links_in, send_to
from conftest import free_port
from staff_helpers import (  # noqa: F401  (cheap_password_hashes is an autouse fixture)
    EDITOR,
    PASSWORD,
    Clock,
    Site,
    as_staff,
    cheap_password_hashes,
    close_site,
)
from test_analytics_http import fetch
from werkzeug.serving import make_server

from digest.config import config_from_dict
from digest.db import make_engine, session_factory
from digest.screenshot import CHROMIUM, CHROMIUM_ARGS
from digest.web import create_app, staff_store
from digest.web.staff_store import Role

WIDTHS = (375, 1280)


@pytest.fixture
def clicked(tmp_path, monkeypatch):
    """An issue sent to three readers, one story followed by two people, every link by a scanner;
    then the console on the same database, serving on the links' port."""
    monkeypatch.setenv("DIGEST_SECRET_KEY", LINK_SECRET)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config = config_from_dict(
        {
            "newsletter": {"name": "Statecraft Weekly", "base_url": base},
            "database": {"url": f"sqlite:///{tmp_path / 'console.db'}"},
            "transport": {"kind": "outbox", "outbox_dir": str(tmp_path / "outbox")},
            "web": {"archive_dir": str(tmp_path / "archive")},
        }
    )
    first = config.regions.order[0]
    sent = send_to(config, tmp_path, {"a@example.org": None, "b@example.org": None, "c@example.org": {first}})
    site = console_site(config)
    server = make_server("127.0.0.1", port, site.app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    links = links_in(sent.text("a@example.org"), base)
    chosen = links[1]
    fetch(chosen, agent=BROWSER)
    fetch(chosen, agent=BROWSER + " (another reader)")
    for url in links_in(sent.html("b@example.org"), base):
        fetch(url, agent=DISGUISED_SCANNER)
    site.app.extensions["digest.redirects"].recorder.flush()
    try:
        yield base, site, sent
    finally:
        server.shutdown()
        thread.join(timeout=5)
        close_site(site)


def console_site(config) -> Site:
    """The console as `staff_helpers.make_site` makes it, with the key the links were signed with."""
    engine = make_engine(config.database.url)
    with session_factory(engine).begin() as s:
        staff_store.add_account(s, EDITOR, PASSWORD, Role.EDITOR)
    clock = Clock()
    app = create_app(config, engine, secret_key=LINK_SECRET, background_mail=False, clock=clock)
    return Site(config=config, engine=engine, app=app, clock=clock)


def test_csv_and_charts_need_a_log_in(clicked) -> None:
    _base, site, sent = clicked
    client = site.app.test_client()
    for path in ("clicks.csv", "clicks.svg", "recipients.svg"):
        resp = client.get(f"/staff/runs/{sent.run_id}/{path}")
        assert resp.status_code in (302, 303) and "/staff/login" in resp.headers["Location"]
    staff = as_staff(site)
    body = staff.get(f"/staff/runs/{sent.run_id}/clicks.csv").text.lstrip("\ufeff")
    rows = list(csv.reader(io.StringIO(body)))
    assert rows[0] == ["url", "title", "region", "human", "filtered"]
    assert rows[1][3] == "2"  # the most-clicked story first
    assert staff.get("/staff/runs/nope/clicks.csv").status_code == 404
    chart = staff.get(f"/staff/runs/{sent.run_id}/clicks.svg")
    assert chart.mimetype == "image/svg+xml" and b"Clicks by region" in chart.data


@pytest.mark.chromium
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (Debian package chromium)")
@pytest.mark.parametrize("width", WIDTHS)
def test_the_run_page_shows_the_clicks(clicked, width, tmp_path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    base, _site, sent = clicked
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        phone = width < 500
        context = browser.new_context(
            viewport={"width": width, "height": 800}, is_mobile=phone, has_touch=phone, accept_downloads=True
        )
        context.set_default_timeout(15_000)
        page = context.new_page()
        try:
            page.goto(f"{base}/staff/login")
            page.get_by_label("E-mail address").fill(EDITOR)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.goto(f"{base}/staff/runs/{sent.run_id}")
            summary = page.locator("#clicks-summary").inner_text()
            assert summary.startswith("2 clicks by people")
            top = page.locator("#top-stories tbody tr").first
            assert top.locator("td.num").first.inner_text() == "2"
            assert page.locator("#clicks-regions tbody tr").count() >= 1
            assert page.locator("#clicks-variants tbody tr").count() == 2
            for img in page.locator("#clicks img").all():  # both charts drawn
                img.scroll_into_view_if_needed()
                assert img.evaluate("i => i.complete && i.naturalWidth > 0")
            assert page.evaluate("document.documentElement.scrollWidth") <= width
            folder = Path(os.environ.get("DIGEST_SCREENSHOTS") or tmp_path)
            folder.mkdir(parents=True, exist_ok=True)
            page.locator("#clicks").screenshot(path=str(folder / f"clicks-{width}.png"))
            with page.expect_download() as download:
                page.locator("#clicks-csv").click()
            text = Path(download.value.path()).read_text(encoding="utf-8-sig")
            assert text.startswith("url,title,region,human,filtered")
        finally:
            context.close()
            browser.close()
