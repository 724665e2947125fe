"""An editor's week in headless Chromium, against a real server on 127.0.0.1: log in, curate the
issue (leave a story out, choose the lead, write an intro), preview it at 375 px and 600 px, and
send a test to an aiosmtpd server. On phone and desktop widths; nothing may stick out sideways.

Set DIGEST_SCREENSHOTS=<folder> to keep the screenshots of each page.
"""

from __future__ import annotations

import os
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from site_helpers import LocalServer
from staff_helpers import (  # noqa: F401  (cheap_password_hashes is an autouse fixture)
    ADMIN,
    EDITOR,
    ISSUE_DAY,
    PASSWORD,
    cheap_password_hashes,
    close_site,
    make_site,
    staff_config,
    wait_for_console_sends,
)

from digest.db import session_factory
from digest.drafts import load_draft
from digest.screenshot import CHROMIUM, CHROMIUM_ARGS

PHONE = {"width": 375, "height": 740}
DESKTOP = {"width": 1280, "height": 900}
SUDAN = "Sudan's bloody war"
IRAN = "How will Iran respond"

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (Debian package chromium)"),
]


@pytest.fixture
def console(tmp_path, smtp_server):
    server = LocalServer()
    base = server.base
    site = make_site(staff_config(base, tmp_path, smtp=(smtp_server.host, smtp_server.port)))
    server.serve(site.app)
    try:
        yield base, site
    finally:
        server.close()
        close_site(site)


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def shoot(page, tmp_path: Path, name: str, width: int) -> None:
    page.wait_for_load_state()
    assert page.evaluate("document.documentElement.scrollWidth") <= width, f"{name} is wider than {width} px"
    folder = Path(os.environ.get("DIGEST_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def story(page, title: str):
    return page.locator("li.story", has_text=title)


def phone_page(browser):  # noqa: ANN001, ANN201
    """A phone-sized browser context and its page; the test closes the context."""
    phone = browser.new_context(viewport=PHONE, device_scale_factor=1, is_mobile=True, has_touch=True)
    phone.set_default_timeout(15_000)
    return phone, phone.new_page()


def log_in(page, base: str, email: str) -> None:  # noqa: ANN001
    page.goto(f"{base}/staff/login")
    page.get_by_label("E-mail address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_log_in_curate_preview_and_send_a_test(console, browser, smtp_server, tmp_path):
    base, site = console
    phone, page = phone_page(browser)

    page.goto(f"{base}/staff/")
    assert page.url == f"{base}/staff/login"
    page.keyboard.press("Tab")  # the keyboard reaches the form first
    assert page.evaluate("document.activeElement.id") == "email"
    page.keyboard.type(EDITOR)
    page.get_by_label("Password").fill("not my password")
    page.get_by_role("button", name="Log in").click()
    assert "Wrong e-mail address or password." in page.locator("[role=alert]").inner_text()
    shoot(page, tmp_path, "staff-1-login-error", PHONE["width"])
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    assert page.locator("h1").inner_text() == "Dashboard"
    assert "schedule “weekly”" in page.locator("main").inner_text()  # seeded from [schedule]
    shoot(page, tmp_path, "staff-2-dashboard", PHONE["width"])

    page.get_by_role("link", name="This week's issue", exact=True).click()
    assert page.locator("h1").inner_text() == "This week's issue"
    story(page, SUDAN).get_by_label("Include").uncheck()
    story(page, IRAN).get_by_label("Lead story").check()
    page.get_by_label("Introduction").fill("Talks in Europe, war in Sudan.\n\nAnd a quiet vote in Iraq.")
    page.get_by_role("button", name="Save the draft").first.click()
    assert "Saved." in page.locator("[role=status]").inner_text()
    assert story(page, SUDAN).get_by_label("Include").is_checked() is False
    assert "leads the issue" in story(page, IRAN).inner_text()
    shoot(page, tmp_path, "staff-3-issue", PHONE["width"])
    with session_factory(site.engine)() as s:
        from datetime import date

        draft = load_draft(s, date.fromisoformat(ISSUE_DAY))
    assert draft.intro == "Talks in Europe, war in Sudan.\n\nAnd a quiet vote in Iraq."
    assert draft.lead == "https://responsiblestatecraft.org/iran-azerbaijan-armenia/"
    assert draft.excluded == {"https://responsiblestatecraft.org/sudan-el-fasher/"}

    page.get_by_role("link", name="Preview", exact=True).click()
    assert page.locator("h1").inner_text() == "Preview"
    shoot(page, tmp_path, "staff-4-preview-phone", PHONE["width"])
    cookies = phone.cookies()
    phone.close()

    # The same session on a desktop, where the two widths stand side by side.
    desktop = browser.new_context(viewport=DESKTOP)
    desktop.set_default_timeout(15_000)
    desktop.add_cookies(cookies)
    page = desktop.new_page()
    page.goto(f"{base}/staff/preview")
    narrow, wide = page.locator("iframe").all()
    n, w = narrow.bounding_box(), wide.bounding_box()
    assert (round(n["width"]), round(w["width"])) == (375 + 2, 600 + 2)  # with their 1 px borders
    assert n["y"] == w["y"] and n["x"] + n["width"] < w["x"]
    phone_frame = page.frame(name="phone")
    phone_frame.wait_for_load_state()
    assert phone_frame.evaluate("document.documentElement.scrollWidth") <= 375
    body = phone_frame.locator("body").inner_text()
    assert "Talks in Europe, war in Sudan." in body and "And a quiet vote in Iraq." in body
    assert SUDAN not in body
    lower = body.lower()  # the "Top story" label is upper-cased by CSS
    assert lower.index("talks in europe") < lower.index("top story") < lower.index(IRAN.lower())
    shoot(page, tmp_path, "staff-5-preview-desktop", DESKTOP["width"])

    page.get_by_role("button", name=f"Send a test to me ({EDITOR})").click()
    assert f"A test copy went to {EDITOR}" in page.locator("[role=status]").inner_text()
    ((_from, rcpts, data),) = smtp_server.messages
    assert rcpts == [EDITOR]
    msg = message_from_bytes(data, policy=policy.default)
    assert msg["Subject"].startswith("[TEST] ")
    text = msg.get_body(("plain",)).get_content()
    assert "Talks in Europe, war in Sudan." in text and SUDAN not in text
    assert text.index("Talks in Europe") < text.index("TOP STORY") < text.index(IRAN)
    desktop.close()


def test_admin_pages_on_a_phone(console, browser, tmp_path):
    from subscribers import store

    base, site = console
    with session_factory(site.engine).begin() as s:
        store.add_subscriber(
            s, "amina.diallo@example.net", name="Amina Diallo", regions={"Africa"}, source="cli"
        )
    phone, page = phone_page(browser)
    log_in(page, base, ADMIN)
    page.get_by_role("link", name="Subscribers", exact=True).click()
    page.get_by_label("Address or name contains").fill("amina")
    page.get_by_role("button", name="Search").click()
    # The results page, not the form still unloading (a loaded machine shows the gap).
    page.get_by_role("link", name="amina.diallo@example.net").wait_for()
    shoot(page, tmp_path, "staff-6-subscribers", PHONE["width"])
    page.get_by_role("link", name="amina.diallo@example.net").click()
    assert page.locator("h1").inner_text() == "amina.diallo@example.net"
    assert "Africa" in page.locator(".facts").inner_text()
    shoot(page, tmp_path, "staff-7-subscriber", PHONE["width"])

    page.goto(f"{base}/staff/subscribers/import")
    csv = tmp_path / "list.csv"
    csv.write_text("email,name\nnew.reader@example.org,New Reader\nnot-an-address,Bad\n", encoding="utf-8")
    page.get_by_label("CSV file (UTF-8)").set_input_files(str(csv))
    page.get_by_role("button", name="Import").click()
    report = page.locator("#import-errors").inner_text()
    assert "line 3" in report and "1 added" in page.locator("main").inner_text()
    shoot(page, tmp_path, "staff-8-import-report", PHONE["width"])
    with session_factory(site.engine)() as s:
        assert store.get_by_email(s, "new.reader@example.org") is not None
    phone.close()


def test_admin_sets_a_schedule_pauses_resumes_approves_and_reads_the_runs(
    console, browser, smtp_server, tmp_path, monkeypatch
):
    """Set a review schedule, pause and resume it, approve its issue, then open the run history
    and send one failed delivery again (to the aiosmtpd server), on a phone."""
    from datetime import UTC, datetime

    from sqlalchemy import select

    from digest.models import DeliveryStatus, Recipient
    from digest.schedule import Approval, Schedule
    from digest.send import Delivery, RunStatus, SendRun, start_run
    from subscribers import store

    monkeypatch.setenv(
        "DIGEST_SECRET_KEY", "Xr5Kq2Vw8Ln3Tz7Bc1Hm6Jd4Fg9Ps0YaQe7Wn2Rb5Mk-t3"
    )  # the resend signs its links
    base, site = console
    with session_factory(site.engine)() as s:
        for address in ("ada@example.org", "bo@example.org"):
            store.add_subscriber(s, address, source="cli")
        s.commit()
        ids = {a: store.get_by_email(s, a).id for a in ("ada@example.org", "bo@example.org")}
        run_id = start_run(
            s,
            [Recipient(i, a) for a, i in ids.items()],
            issue="2026-11-13",
            window_end=datetime(2026, 11, 13, 14, tzinfo=UTC),
        )
        for row in s.scalars(select(Delivery).where(Delivery.run_id == run_id)):
            failed = row.email == "bo@example.org"
            row.status = DeliveryStatus.FAILED if failed else DeliveryStatus.SENT
            row.detail = "550 mailbox full" if failed else "250 OK"
        run = s.get(SendRun, run_id)
        run.status, run.open_slot, run.finished_at = RunStatus.FINISHED, None, site.clock()
        s.commit()

    phone, page = phone_page(browser)
    log_in(page, base, ADMIN)

    menu = page.get_by_role("navigation", name="Console")
    menu.get_by_role("link", name="Schedules", exact=True).click()
    assert page.locator("h1").inner_text() == "Schedules"
    assert "weekly fri 09:00" in page.locator("#schedule-weekly").inner_text()  # seeded
    form = page.locator("#add-schedule")
    form.get_by_label("Name").fill("thursday")
    form.get_by_label("When").fill("thu 10:00")
    form.get_by_label("Review: prepared ahead").check()
    form.get_by_role("button", name="Add the schedule").click()
    added = page.locator("[role=status]").inner_text()
    assert "Schedule “thursday” added: weekly thu 10:00, review." in added
    card = page.locator("#schedule-thursday")
    assert "Thu 19 Nov 2026, 10:00 EST · 15:00 UTC" in card.locator(".next").inner_text()
    shoot(page, tmp_path, "staff-9-schedules", PHONE["width"])

    card.get_by_role("button", name="Pause thursday").click()
    assert "paused" in page.locator("[role=status]").inner_text()
    assert page.locator("#schedule-thursday .state").inner_text() == "paused"
    page.locator("#schedule-thursday").get_by_role("button", name="Resume thursday").click()
    assert page.locator("#schedule-thursday .state").inner_text() == "active"
    assert "Thu 19 Nov 2026, 10:00 EST" in page.locator("#schedule-thursday .next").inner_text()
    with session_factory(site.engine)() as s:
        row = s.get(Schedule, "thursday")
        assert (row.trigger_expr, row.mode, row.paused) == ("thu 10:00", "review", False)

    # The editor's side: the issue page of the coming (review) issue has the approval.
    menu.get_by_role("link", name="This week's issue", exact=True).click()
    assert "Thursday 19 November 2026" in page.locator("main").inner_text()
    page.get_by_role("button", name="Approve the issue of 2026-11-19").click()
    assert "approved by admin@example.org" in page.locator("[role=status]").last.inner_text()
    assert page.get_by_role("button", name="Revoke the approval of 2026-11-19").is_visible()
    with session_factory(site.engine)() as s:
        assert s.get(Approval, "2026-11-19").approved_by == ADMIN

    menu.get_by_role("link", name="Runs", exact=True).click()
    assert page.locator("h1").inner_text() == "Runs"
    page.get_by_role("link", name=run_id).click()
    assert page.locator("h1").inner_text() == f"Run {run_id}"
    problems = page.locator("#problems").inner_text()
    assert "bo@example.org" in problems and "550 mailbox full" in problems and "ada@" not in problems
    shoot(page, tmp_path, "staff-10-run", PHONE["width"])
    page.get_by_label("Send again to bo@example.org").check()
    page.get_by_role("button", name="Send again to the ticked rows").click()
    assert "sending again to 1 delivery of this run" in page.locator("[role=status]").first.inner_text()
    wait_for_console_sends(site)
    assert [rcpts for _from, rcpts, _data in smtp_server.messages] == [["bo@example.org"]]
    page.reload()
    assert "1 failed" not in page.locator("#run-totals").inner_text()
    assert "done: run" in page.locator("#jobs").inner_text()
    phone.close()


def test_second_factor_on_a_phone_and_the_sessions_page(console, browser, tmp_path):
    """Issue 19: an admin turns the second factor on from the QR code page, logs in with a code,
    and sees (and could end) the staff's sessions; nothing sticks out at 375 px."""
    import re

    import pyotp

    base, site = console
    phone, page = phone_page(browser)
    log_in(page, base, ADMIN)
    page.get_by_role("link", name="Your account").click()
    page.get_by_role("button", name="Set up a second factor").click()
    qr = page.locator("figure.qr svg").bounding_box()
    assert qr is not None and qr["width"] > 100 and qr["width"] <= PHONE["width"]
    shoot(page, tmp_path, "staff-9-second-factor", PHONE["width"])
    secret = re.sub(r"\s", "", page.locator("#totp-secret").inner_text())
    page.get_by_label("The code your app shows").fill(pyotp.TOTP(secret).at(site.clock()))
    page.get_by_role("button", name="Turn it on").click()
    assert page.locator(".recovery-codes li").count() == 10
    shoot(page, tmp_path, "staff-10-recovery-codes", PHONE["width"])

    site.clock.advance(seconds=30)
    page.get_by_role("button", name="Log out").click()
    log_in(page, base, ADMIN)
    page.get_by_label("The code from your authenticator app, or a recovery code").fill(
        pyotp.TOTP(secret).at(site.clock())
    )
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("link", name="Staff", exact=True).click()
    assert "second factor on" in page.locator("main").inner_text()
    assert "this session" in page.locator("main").inner_text()
    shoot(page, tmp_path, "staff-11-sessions", PHONE["width"])
    phone.close()


def test_run_now_asks_first_and_an_alert_stays_until_acknowledged_on_a_phone(console, browser, tmp_path):
    """What an admin sees: the dashboard's banner for a held issue, Acknowledge; then "Run now"
    on a page of its own with the issue date, the readers and the approval, confirmed."""
    from datetime import UTC, datetime

    from digest.schedule import ScheduleService, fire
    from subscribers import store

    base, site = console
    with session_factory(site.engine)() as s:
        for address in ("ada@example.org", "bo@example.org"):
            store.add_subscriber(s, address, source="cli")
        s.commit()
    with ScheduleService(site.config, site.engine, clock=site.clock) as service:
        service.add("friday-review", weekly="fri 09:00", mode="review")
    friday = datetime(2026, 11, 20, 14, tzinfo=UTC)
    fire(site.config, site.engine, "friday-review", friday, scheduled_for=friday)  # held: an alert

    phone, page = phone_page(browser)
    log_in(page, base, ADMIN)
    banner = page.locator(".alert-banner")
    assert "The issue of 2026-11-20 is held (schedule friday-review)" in banner.inner_text()
    shoot(page, tmp_path, "staff-alert-banner", PHONE["width"])
    banner.get_by_role("button", name="Acknowledge").click()
    assert page.locator(".alert-banner").count() == 0

    page.get_by_role("navigation", name="Console").get_by_role("link", name="Schedules", exact=True).click()
    page.locator("#schedule-friday-review").get_by_role("link", name="Run friday-review now…").click()
    plan = page.locator("#run-now-plan").inner_text()
    assert "2026-11-20" in plan and "not approved" in plan
    assert page.locator("#run-now-readers").inner_text() == "2"
    assert page.locator("#run-now-held").is_visible()  # nothing to confirm: it would be held
    shoot(page, tmp_path, "staff-run-now-held", PHONE["width"])
    page.go_back()
    page.locator("#schedule-weekly").get_by_role("link", name="Run weekly now…").click()
    assert "not needed (send mode)" in page.locator("#run-now-approval").inner_text()
    page.get_by_label("Send the issue of").check()
    page.get_by_role("button", name="Send it now").click()
    assert "is collecting and sending in the background" in page.locator("[role=status]").inner_text()
    phone.close()
