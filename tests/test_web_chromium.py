"""The reader's whole path in headless Chromium at phone width:
subscribe -> confirm -> change preferences -> unsubscribe, against a real server on 127.0.0.1.

Set DIGEST_SCREENSHOTS=<folder> to keep the screenshots of each page.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from site_helpers import LocalServer
from subscriber_helpers import TEST_SECRET, confirm_link

from digest.config import config_from_dict
from digest.db import make_engine, migrate, session_factory
from digest.screenshot import CHROMIUM, CHROMIUM_ARGS
from digest.web import create_app
from subscribers import store
from subscribers.store import Status

PHONE = {"width": 375, "height": 740}

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (Debian package chromium)"),
]


@pytest.fixture
def live_server(tmp_path):
    """A threaded WSGI server on a free port, with the app built once the port is known."""
    server = LocalServer()
    base = server.base
    config = config_from_dict(
        {"newsletter": {"name": "Statecraft Weekly", "base_url": base}, "web": {"primary_color": "#1d3557"}}
    )
    engine = make_engine(f"sqlite:///{tmp_path / 'web.db'}")
    migrate(engine)
    outbox: list = []
    app = create_app(config, engine, secret_key=TEST_SECRET, send_mail=outbox.append)
    server.serve(app)
    try:
        yield base, engine, outbox, app.extensions["digest.mail"]
    finally:
        server.close()
        engine.dispose()


@pytest.fixture
def page():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport=PHONE, device_scale_factor=1, is_mobile=True, has_touch=True)
        context.set_default_timeout(10_000)
        pg = context.new_page()
        try:
            yield pg
        finally:
            context.close()
            browser.close()


def shoot(page, tmp_path: Path, name: str) -> None:
    # Nothing may stick out sideways on a phone.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], name
    folder = Path(os.environ.get("DIGEST_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def subscriber(engine, email):
    with session_factory(engine)() as s:
        return store.get_by_email(s, email)


def test_reader_path_on_a_phone(live_server, page, tmp_path):
    base, engine, outbox, mail_queue = live_server

    page.goto(f"{base}/subscribe")
    shoot(page, tmp_path, "1-subscribe")
    page.fill("#email", "not an address")
    page.click("button[type=submit]")
    assert page.locator(".error").first.inner_text().startswith("That is not a valid e-mail address")
    shoot(page, tmp_path, "1b-subscribe-error")
    page.fill("#email", "reader@example.org")
    page.fill("#name", "Rea Der")
    page.check("input[value='Africa']")
    page.click("button[type=submit]")
    assert page.locator("h1").inner_text() == "Check your inbox"
    shoot(page, tmp_path, "2-check-inbox")
    mail_queue.join()  # the sign-up runs on a background thread after the page
    assert subscriber(engine, "reader@example.org").status == Status.PENDING

    assert len(outbox) == 1
    page.goto(confirm_link(outbox[0]))
    shoot(page, tmp_path, "3-confirm")
    page.click("text=Yes, subscribe me")
    assert page.locator("h1").inner_text() == "You are subscribed"
    shoot(page, tmp_path, "4-confirmed")
    assert subscriber(engine, "reader@example.org").status == Status.ACTIVE

    page.click("text=Choose your regions")
    assert page.locator("h1").inner_text() == "Your preferences"
    assert page.is_checked("input[value='Africa']")
    page.check("input[value='Middle East']")
    page.check("input[name='paused']")
    page.click("text=Save preferences")
    assert page.locator("[role=status]").inner_text() == "Saved."
    shoot(page, tmp_path, "5-preferences-saved")
    sub = subscriber(engine, "reader@example.org")
    assert (sub.regions, sub.paused) == ({"Africa", "Middle East"}, True)
    page.uncheck("input[name='paused']")
    page.click("text=Save preferences")
    assert subscriber(engine, "reader@example.org").paused is False

    page.click("a:text('Unsubscribe')")
    assert page.locator("h1").inner_text() == "Unsubscribe"
    shoot(page, tmp_path, "6-unsubscribe")
    assert subscriber(engine, "reader@example.org").status == Status.ACTIVE  # GET changed nothing
    page.click("button:text('Unsubscribe')")
    assert page.locator("h1").inner_text() == "You are unsubscribed"
    shoot(page, tmp_path, "7-unsubscribed")
    assert subscriber(engine, "reader@example.org").status == Status.UNSUBSCRIBED
    with session_factory(engine)() as s:
        assert store.active_recipients(s) == []
