"""The editor's week once end to end in headless Chromium, at 375 and 1280 px, against a real
server on 127.0.0.1, a real SMTP server (aiosmtpd) and a real HTTP server for a story added by
URL: subject and preheader, a story edited, one dragged into place, a region left out (and what
it costs), a story added by URL, test copies to two addresses, the run's page with its skipped
readers, the runs and subscribers tables. Nothing may stick out sideways.

Set DIGEST_SCREENSHOTS=<folder> to keep the screenshots of each page.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, time

import pytest
from site_helpers import LocalServer
from staff_helpers import (  # noqa: F401  (cheap_password_hashes is an autouse fixture)
    ADMIN,
    EDITOR,
    ISSUE_DAY,
    cheap_password_hashes,
    close_site,
    make_site,
    staff_config,
)
from test_web_staff_chromium import DESKTOP, PHONE, browser, log_in, shoot, story  # noqa: F401

from digest.db import session_factory
from digest.drafts import load_draft
from digest.screenshot import CHROMIUM
from subscribers import store

# Fixture local_server: an HTTP server on 127.0.0.1.
pytest_plugins = ("collect_fixtures",)

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium (Debian package chromium)"),
]

IRAQ = "Iraq faces first quiet election"
IRAN = "How will Iran respond"
ARTICLE_PAGE = """<!doctype html><html><head>
<meta property="og:title" content="Kharkiv's winter">
<meta property="og:description" content="The cold is the front line now.">
<meta property="og:image" content="https://images.example.org/kharkiv.jpg">
</head><body></body></html>"""


@pytest.fixture
def week(tmp_path, smtp_server):
    server = LocalServer()
    base = server.base
    config = staff_config(base, tmp_path, smtp=(smtp_server.host, smtp_server.port))
    config = dataclasses.replace(
        config, collect=dataclasses.replace(config.collect, fetch_allow=("127.0.0.1",))
    )
    site = make_site(config)
    with session_factory(site.engine).begin() as db:
        store.add_subscriber(
            db, "only-africa@example.org", name="Amina Diallo", regions={"Africa"}, source="cli"
        )
        store.add_subscriber(db, "everything-and-a-long-address@example.org", source="cli")
    server.serve(site.app)
    try:
        yield base, site
    finally:
        server.close()
        close_site(site)


def region(page, name: str):  # noqa: ANN001, ANN201
    return page.locator("fieldset.region", has=page.locator("legend", has_text=name))


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["375px", "1280px"])
def test_the_editors_week(week, browser, smtp_server, local_server, tmp_path, viewport, monkeypatch):  # noqa: F811
    monkeypatch.setenv(
        "DIGEST_SECRET_KEY", "Yw3q9Jx2Lr8vTz5Kp1Nd7Hs4Fb6Gc0Me2Ua9Qi3Xo8Wt"
    )  # the send signs links
    base, site = week
    width = viewport["width"]
    context = browser.new_context(viewport=viewport, device_scale_factor=1)
    context.set_default_timeout(20_000)
    page = context.new_page()
    log_in(page, base, EDITOR)
    page.wait_for_url(f"{base}/staff/")  # inner_text does not wait for the next page
    assert page.locator("h1").inner_text() == "Dashboard"

    # Curation: subject, preheader, a story edited, one dragged to the top of its region.
    page.get_by_role("link", name="This week's issue", exact=True).click()
    page.wait_for_url(f"{base}/staff/issue")
    shoot(page, tmp_path, f"week-{width}-1-issue", width)
    page.get_by_label("Subject", exact=True).fill("Iraq votes; Sudan waits")
    page.get_by_label("Preheader", exact=True).fill("The week in five regions")
    iraq = story(page, IRAQ)
    iraq.locator("summary").click()
    iraq.get_by_label("Headline").fill("Iraq votes, quietly")
    iraq.get_by_label("Credit").fill("Photo: Staff")
    middle_east = region(page, "Middle East").locator("li.story")
    first, second = middle_east.nth(0), middle_east.nth(1)
    moved_title = second.locator(".story-title a").inner_text()
    assert second.get_attribute("draggable") == "true"  # the page's script ran
    # The drag, as the browser reports it to the page's script: Chromium's synthetic mouse drag
    # under Playwright ends at once (dragstart, dragend), so the events are dispatched here, with
    # the second story dropped on the upper half of the first.
    page.evaluate(
        """([from, to]) => {
            const source = document.getElementById(from), target = document.getElementById(to);
            const data = new DataTransfer(), box = target.getBoundingClientRect();
            const at = {bubbles: true, cancelable: true, dataTransfer: data,
                        clientX: box.left + 10, clientY: box.top + 4};
            source.dispatchEvent(new DragEvent("dragstart", at));
            target.dispatchEvent(new DragEvent("dragover", at));
            target.dispatchEvent(new DragEvent("drop", at));
            source.dispatchEvent(new DragEvent("dragend", at));
        }""",
        [second.get_attribute("id"), first.get_attribute("id")],
    )
    assert (
        region(page, "Middle East").locator("li.story").nth(0).locator(".story-title a").inner_text()
        == moved_title
    )
    assert (
        region(page, "Middle East").locator("li.story").nth(0).get_by_label("Position").input_value() == "1"
    )
    # Africa's every story left out: the page says what that costs once saved.
    for item in region(page, "Africa").locator("li.story").all():
        item.get_by_label("Include").uncheck()
    page.get_by_role("button", name="Save the draft").first.click()
    page.wait_for_url("**/staff/issue?saved=1")
    assert "Saved." in page.locator("p.notice[role=status]").first.inner_text()
    cost = page.locator("p.cost").inner_text()
    assert "Africa" in cost and "1 reader gets no issue at all" in cost
    shoot(page, tmp_path, f"week-{width}-2-saved", width)
    with session_factory(site.engine)() as db:
        draft = load_draft(db, date.fromisoformat(ISSUE_DAY))
    assert (draft.subject, draft.preheader) == ("Iraq votes; Sudan waits", "The week in five regions")
    edits = next(iter(v for v in draft.edits.values()))
    assert edits == {"title": "Iraq votes, quietly", "image_credit": "Photo: Staff"}

    # A story added by URL, into Europe.
    local_server.expect_request("/kharkiv").respond_with_data(ARTICLE_PAGE, content_type="text/html")
    page.get_by_label("Story URL").fill(local_server.url_for("/kharkiv"))
    page.get_by_label("Region", exact=True).select_option("Europe")
    page.get_by_role("button", name="Add the story").click()
    page.wait_for_url("**/staff/issue?added=1*")
    assert "Story added." in page.locator("main").inner_text()
    assert "Kharkiv's winter" in region(page, "Europe").inner_text()
    shoot(page, tmp_path, f"week-{width}-3-added", width)

    # Test copies to two addresses, of the variant shown.
    page.get_by_role("link", name="Preview", exact=True).click()
    page.get_by_label("Test addresses").fill("desk@example.org\nchief@example.org")
    page.get_by_role("button", name="Send test copies").click()
    page.wait_for_url(f"{base}/staff/preview/test")
    said = page.locator("p.notice[role=status]").inner_text()
    assert "desk@example.org" in said and "chief@example.org" in said
    assert sorted(r for _f, rcpts, _d in smtp_server.messages for r in rcpts) == [
        "chief@example.org",
        "desk@example.org",
    ]
    shoot(page, tmp_path, f"week-{width}-4-preview", width)
    context.close()

    # The send goes out (as the schedule would send it); the run's page names who was skipped.
    from rich.console import Console

    from digest.pipeline import prepare_issue, send_issue
    from digest.transports import make_transport

    friday = datetime.combine(date.fromisoformat(ISSUE_DAY), time(9), tzinfo=site.config.tz)  # the send
    issue = prepare_issue(site.config, friday)
    assert issue.renderer.render(issue.digest).subject == "Iraq votes; Sudan waits"
    outcome = send_issue(
        site.config, site.engine, make_transport(site.config), issue=issue, console=Console(quiet=True)
    )
    admin = browser.new_context(viewport=viewport, device_scale_factor=1)
    admin.set_default_timeout(20_000)
    page = admin.new_page()
    log_in(page, base, ADMIN)
    page.wait_for_url(f"{base}/staff/")
    page.get_by_role("link", name="Runs", exact=True).click()
    page.wait_for_url(f"{base}/staff/runs")
    shoot(page, tmp_path, f"week-{width}-5-runs", width)
    page.goto(f"{base}/staff/runs/{outcome.report.run_id}")
    assert "no articles this week in the chosen regions" in page.locator("#skipped-reasons").inner_text()
    shoot(page, tmp_path, f"week-{width}-6-run", width)
    page.get_by_role("link", name="Subscribers", exact=True).click()
    page.wait_for_url(f"{base}/staff/subscribers")
    assert "only-africa@example.org" in page.locator("main").inner_text()
    shoot(page, tmp_path, f"week-{width}-7-subscribers", width)
    admin.close()
