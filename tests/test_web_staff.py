"""The staff console through Flask's test client, on real SQLite files (and PostgreSQL where noted)."""

from __future__ import annotations

import io
import re
from email import message_from_bytes, policy

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select
from staff_helpers import (  # noqa: F401  (cheap_password_hashes is an autouse fixture)
    ADMIN,
    EDITOR,
    ISSUE_DAY,
    ORIGIN,
    PASSWORD,
    Staff,
    as_staff,
    cheap_password_hashes,
    close_site,
    csrf,
    make_site,
    staff_config,
)

from digest.db import session_factory
from digest.drafts import load_draft
from digest.models import DeliveryStatus, Recipient
from digest.pipeline import prepare_issue
from digest.send import Delivery, start_run
from digest.web import staff_sessions, staff_store
from digest.web.login_throttle import LoginFailures
from digest.web.site import SCHEDULES_KEY
from digest.web.staff_store import Role
from subscribers import store
from subscribers.reports import BounceEvent
from subscribers.store import Status

# Fixtures db_engine, pg_schema_engine and session.
pytest_plugins = ("subscriber_fixtures",)


@pytest.fixture
def site(tmp_path, smtp_server):
    config = staff_config(ORIGIN, tmp_path, smtp=(smtp_server.host, smtp_server.port))
    s = make_site(config)
    yield s
    close_site(s)


def draft(site):
    with session_factory(site.engine)() as s:
        from datetime import date

        return load_draft(s, date.fromisoformat(ISSUE_DAY))


# --- login ---------------------------------------------------------------------------


def test_every_page_asks_for_a_login_first(site):
    client = site.app.test_client()
    for path in (
        "/staff/",
        "/staff/issue",
        "/staff/preview",
        "/staff/subscribers",
        "/staff/charts/growth.svg",
    ):
        resp = client.get(path)
        assert resp.status_code == 303 and resp.headers["Location"].endswith("/staff/login"), path
    page = client.get("/staff/login")
    assert page.status_code == 200 and "Statecraft Weekly" in page.text
    assert page.headers["Referrer-Policy"] == "same-origin"
    assert "script-src" not in page.headers["Content-Security-Policy"]
    assert page.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert page.headers["Cache-Control"] == "no-store"
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie  # http base_url
    css = client.get("/staff/staff.css")
    assert css.mimetype == "text/css" and "#1d3557" in css.text
    assert css.headers["Cache-Control"] == "public, max-age=3600"


def test_session_cookie_is_secure_on_https(tmp_path):
    site = make_site(staff_config("https://news.example.org", tmp_path))
    page = site.app.test_client().get("/staff/login", base_url="https://news.example.org")
    assert "Secure" in page.headers["Set-Cookie"]
    close_site(site)


def test_wrong_password_and_unknown_address_get_one_answer(site):
    staff = Staff(site.app)
    staff.token = csrf(staff.get("/staff/login").text)
    wrong = staff.post("/staff/login", {"email": EDITOR, "password": "not the password"})
    unknown = staff.post("/staff/login", {"email": "nobody@example.org", "password": "not the password"})
    assert wrong.status_code == unknown.status_code == 401
    assert "Wrong e-mail address or password." in wrong.text and "Wrong e-mail address" in unknown.text
    assert staff.get("/staff/").status_code == 303  # still not logged in
    assert staff.post("/staff/login", {"email": EDITOR.upper(), "password": PASSWORD}).status_code == 303
    assert staff.get("/staff/").status_code == 200


def _login_from(site, address: str, email: str, password: str):
    client = Staff(site.app)
    client.client.environ_base["REMOTE_ADDR"] = address
    client.token = csrf(client.get("/staff/login").text)
    return client.post("/staff/login", {"email": email, "password": password})


def test_wrong_passwords_slow_the_address_and_never_lock_the_owner(tmp_path):
    """Issue 19, finding 3: 5 wrong passwords locked the account (403 even for the right one),
    so anyone could keep every admin out. Now the address that guesses waits longer and longer;
    the owner, elsewhere, logs in."""
    site = make_site(staff_config(ORIGIN, tmp_path, staff_login_limit="1000 per minute"))
    attacker = "203.0.113.5"
    codes = [_login_from(site, attacker, ADMIN, f"guess {i}").status_code for i in range(6)]
    assert codes == [401] * 6  # the 6th imposes the first wait (1 s)
    waiting = _login_from(site, attacker, ADMIN, PASSWORD)  # even the right password waits here
    assert waiting.status_code == 429 and int(waiting.headers["Retry-After"]) >= 1
    assert "Try again in 1 second." in waiting.text
    assert _login_from(site, "192.0.2.9", ADMIN, PASSWORD).status_code == 303  # the owner
    waits = []
    for i in range(12):
        site.clock.advance(seconds=400)
        assert _login_from(site, attacker, ADMIN, f"again {i}").status_code == 401
        waits.append(
            int(re.search(r"Try again in (\d+) second", _login_from(site, attacker, ADMIN, "x").text)[1])
        )
    assert waits[:4] == [2, 4, 8, 16] and max(waits) == 300  # growing, never past the cap
    site.clock.advance(seconds=300)
    assert _login_from(site, attacker, ADMIN, PASSWORD).status_code == 303  # no lock, ever
    close_site(site)


def test_guesses_from_many_addresses_slow_each_of_them_but_not_the_owner(tmp_path):
    site = make_site(staff_config(ORIGIN, tmp_path, staff_login_limit="1000 per minute"))
    for i in range(40):
        assert _login_from(site, f"198.51.100.{i}", ADMIN, f"guess {i}").status_code == 401
    # Each guessing address now waits, as the account's failures mount up...
    assert _login_from(site, "198.51.100.39", ADMIN, "guess").status_code == 429
    # ...but an address that never guessed is not held up.
    assert _login_from(site, "192.0.2.9", ADMIN, PASSWORD).status_code == 303
    close_site(site)


def test_known_and_unknown_addresses_answer_alike_with_the_same_work(tmp_path, monkeypatch):
    """Issue 19, finding 3: the lock answer (403 at once) against 401 after a hash told which
    staff addresses exist. Now every step is the same: status, page, and one Argon2 check."""
    site = make_site(staff_config(ORIGIN, tmp_path, staff_login_limit="1000 per minute"))
    verified = []

    class CountingHasher(PasswordHasher):
        def verify(self, hash, password):  # noqa: A002  (argon2's own parameter name)
            verified.append(1)
            return super().verify(hash, password)

    monkeypatch.setattr(staff_store, "_hasher", CountingHasher(time_cost=1, memory_cost=8, parallelism=1))

    def attempts(email: str, address: str) -> list[tuple[int, str, int]]:
        seen = []
        for i in range(9):
            before = len(verified)
            resp = _login_from(site, address, email, f"wrong {i}")
            page = re.sub(r'value="[^"]*"', "", resp.text.replace(email, "EMAIL"))
            seen.append((resp.status_code, page, len(verified) - before))
        return seen

    known, unknown = attempts(EDITOR, "203.0.113.7"), attempts("nobody@example.org", "203.0.113.8")
    assert known == unknown
    assert [code for code, _page, _work in known] == [401] * 6 + [429] * 3
    assert {work for code, _page, work in known if code == 401} == {1}
    close_site(site)


def test_a_new_password_ends_the_accounts_sessions(site):
    staff = as_staff(site)
    with session_factory(site.engine).begin() as s:
        staff_store.set_password(s, EDITOR, "a brand new password")
    assert staff.get("/staff/").status_code == 303
    assert Staff(site.app).login(EDITOR, "a brand new password").status_code == 303


def test_the_console_says_why_a_password_is_refused_and_a_new_one_ends_the_sessions(site):
    """Issue 19, finding 5, in the console: the page gives zxcvbn's reason."""
    staff = as_staff(site, EDITOR)
    other = as_staff(site, EDITOR)
    weak = {"current": PASSWORD, "new": "aaaaaaaaaaaa", "again": "aaaaaaaaaaaa"}
    assert staff.post("/staff/account/password", weak).status_code == 303
    page = staff.get("/staff/account").text
    assert "too easy to guess" in page and "Repeats like" in page
    wrong = {"current": "not it at all", "new": "plum orchard lantern", "again": "plum orchard lantern"}
    staff.post("/staff/account/password", wrong)
    assert "current password is not right" in staff.get("/staff/account").text
    good = {"current": PASSWORD, "new": "plum orchard lantern", "again": "plum orchard lantern"}
    resp = staff.post("/staff/account/password", good)
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/staff/login")
    assert "Log in with it" in staff.get("/staff/login").text
    assert staff.get("/staff/").status_code == 303 and other.get("/staff/").status_code == 303
    assert Staff(site.app).login(EDITOR, "plum orchard lantern").status_code == 303


def test_sessions_expire_and_logout_ends_them(site):
    staff = as_staff(site)
    site.clock.advance(hours=13)  # [web] staff_session_hours = 12
    assert staff.get("/staff/").status_code == 303
    staff = as_staff(site)
    assert staff.post("/staff/logout").status_code == 303
    assert staff.get("/staff/").status_code == 303


def test_a_removed_accounts_cookie_never_opens_a_new_account_with_its_id(site):
    """Issue 19, finding 1: the cookie carried only {id, v, at}, and SQLite gives a new account
    the id of a removed one: the removed editor's cookie opened the new admin's console."""
    with session_factory(site.engine).begin() as s:
        staff_store.add_account(s, "late@example.org", PASSWORD, Role.EDITOR)
    editor = as_staff(site, "late@example.org")
    with session_factory(site.engine).begin() as s:
        old_id = staff_store.get_by_email(s, "late@example.org").id
        staff_store.remove_account(s, "late@example.org")
        new_admin = staff_store.add_account(s, "new-admin@example.org", PASSWORD, Role.ADMIN)
        assert new_admin.id == old_id  # the id is used again: the cookie must not follow it
    assert editor.get("/staff/subscribers").status_code == 303
    assert editor.get("/staff/").status_code == 303


def test_logout_ends_the_session_even_for_a_copied_cookie(site):
    """Issue 19, finding 2: a copied cookie still worked after log-out."""
    staff = as_staff(site)
    copied = staff.client.get_cookie("digest_session").value
    assert staff.post("/staff/logout").status_code == 303
    thief = site.app.test_client()
    thief.set_cookie("digest_session", copied)
    assert thief.get("/staff/").status_code == 303


def test_a_role_change_ends_the_accounts_sessions(site):
    staff = as_staff(site, EDITOR)
    with session_factory(site.engine).begin() as s:
        staff_store.set_role(s, EDITOR, Role.ADMIN)
    assert staff.get("/staff/").status_code == 303
    assert as_staff(site, EDITOR).get("/staff/subscribers").status_code == 200


def test_an_admin_sees_and_ends_a_staff_members_sessions(site):
    phone = Staff(site.app)
    phone.client.environ_base["HTTP_USER_AGENT"] = "Phone Browser/1.0"
    assert phone.login(EDITOR).status_code == 303
    laptop = as_staff(site, EDITOR)
    admin = as_staff(site, ADMIN)
    assert as_staff(site, EDITOR).get("/staff/team").status_code == 403  # admins only
    page = admin.get("/staff/team")
    assert page.status_code == 200 and "Phone Browser/1.0" in page.text and "this session" in page.text
    with session_factory(site.engine)() as s:
        editor_id = staff_store.get_by_email(s, EDITOR).id
        phone_sid = next(r.id for r in staff_sessions.of_account(s, editor_id) if "Phone" in r.user_agent)
    assert admin.post(f"/staff/team/sessions/{phone_sid}/end").status_code == 303
    assert phone.get("/staff/").status_code == 303 and laptop.get("/staff/").status_code == 200
    assert admin.post(f"/staff/team/{editor_id}/end-sessions").status_code == 303
    assert laptop.get("/staff/").status_code == 303
    assert admin.get("/staff/").status_code == 200  # the admin's own session goes on
    # Without the Origin of the console, nothing is ended.
    other = as_staff(site, EDITOR)
    assert (
        admin.post(f"/staff/team/{editor_id}/end-sessions", origin="https://evil.example").status_code == 403
    )
    assert other.get("/staff/").status_code == 200


def test_login_is_rate_limited_per_client(tmp_path):
    site = make_site(staff_config(ORIGIN, tmp_path, staff_login_limit="3 per hour"))
    staff = Staff(site.app)
    staff.token = csrf(staff.get("/staff/login").text)
    codes = [staff.post("/staff/login", {"email": ADMIN, "password": "wrong"}).status_code for _ in range(4)]
    assert codes == [401, 401, 401, 429]
    # Refused before the password is looked at: even the right one, and no failure is counted.
    assert staff.post("/staff/login", {"email": ADMIN, "password": PASSWORD}).status_code == 429
    with session_factory(site.engine)() as s:
        pairs = s.scalars(select(LoginFailures).where(LoginFailures.key.startswith("p:"))).all()
        assert [p.failures for p in pairs] == [3]
    other = Staff(site.app)
    other.token = csrf(other.get("/staff/login").text)
    resp = other.post(
        "/staff/login", {"email": ADMIN, "password": PASSWORD}, environ_base={"REMOTE_ADDR": "192.0.2.9"}
    )
    assert resp.status_code == 303
    close_site(site)


# --- CSRF, Origin, roles --------------------------------------------------------------


def test_csrf_missing_or_wrong_is_refused_and_changes_nothing(site):
    staff = as_staff(site)
    missing = staff.post("/staff/issue", {"intro": "Injected"}, token=False)
    wrong = staff.post("/staff/issue", {"intro": "Injected", "csrf_token": "ünïcode.forged"})
    assert missing.status_code == wrong.status_code == 400
    assert "Reload the page" in missing.text
    assert draft(site) is None
    # The login form is protected too (login CSRF).
    fresh = Staff(site.app)
    assert fresh.post("/staff/login", {"email": EDITOR, "password": PASSWORD}, token=False).status_code == 400


def test_origin_must_be_this_site(site):
    staff = as_staff(site)
    evil = staff.post("/staff/issue", {"intro": "From elsewhere"}, origin="https://evil.example")
    assert evil.status_code == 403 and "did not come from the console" in evil.text
    none = staff.post("/staff/issue", {"intro": "No origin"}, origin=None)
    assert none.status_code == 403
    null = staff.post("/staff/issue", {"intro": "Null"}, origin="null")
    assert null.status_code == 403
    assert draft(site) is None
    # Without Origin, a Referer of this site will do.
    ok = staff.post(
        "/staff/issue", {"intro": "Fine"}, origin=None, headers={"Referer": f"{ORIGIN}/staff/issue"}
    )
    assert ok.status_code == 303 and draft(site).intro == "Fine"


def test_an_editor_gets_403_on_admin_pages_and_changes_nothing(site):
    staff = as_staff(site, EDITOR)
    for path in ("/staff/subscribers", "/staff/subscribers/import", "/staff/subscribers/1"):
        resp = staff.get(path)
        assert resp.status_code == 403 and "Admins only" in resp.text, path
    csv = io.BytesIO(b"email\nsneaky@example.org\n")
    resp = staff.post(
        "/staff/subscribers/import", {"file": (csv, "list.csv")}, content_type="multipart/form-data"
    )
    assert resp.status_code == 403
    with session_factory(site.engine)() as s:
        assert store.get_by_email(s, "sneaky@example.org") is None
    assert 'href="/staff/subscribers"' not in staff.get("/staff/").text  # not in an editor's menu
    assert 'href="/staff/subscribers"' in as_staff(site, ADMIN).get("/staff/").text


# --- this week's issue ----------------------------------------------------------------


def stories(html: str) -> dict[str, str]:
    """URL -> the story's form index, from the issue page."""
    return {url: i for i, url in re.findall(r'name="key-(\d+)" value="([^"]+)"', html)}


def form_of(html: str) -> dict:
    """The issue form as the browser would send it unchanged."""
    data: dict = {"story": [], "intro": ""}
    for i, url in re.findall(r'name="key-(\d+)" value="([^"]+)"', html):
        data["story"].append(i)
        data[f"key-{i}"] = url
        if re.search(rf'name="include-{i}"[^>]*checked', html):
            data[f"include-{i}"] = "on"
        data[f"pos-{i}"] = re.search(rf'name="pos-{i}"[^>]*value="(\d+)"', html).group(1)
    return data


def test_issue_page_shows_stories_by_region_and_what_collect_dropped(site):
    page = as_staff(site).get("/staff/issue")
    assert page.status_code == 200
    assert "Friday 20 November 2026" in page.text
    for region in ("Middle East", "Africa", "Asia-Pacific", "Europe", "Americas"):
        assert f"<legend>{region}</legend>" in page.text
    assert "no known region in [&#39;QIOSK&#39;]" in page.text and "outside the week window" in page.text
    assert "No draft saved yet" in page.text


def test_curate_exclude_lead_reorder_intro_and_the_send_uses_it(site):
    staff = as_staff(site)
    page = staff.get("/staff/issue").text
    keys = stories(page)
    iraq = "https://responsiblestatecraft.org/iraq-elections-2025/"
    iran = "https://responsiblestatecraft.org/iran-azerbaijan-armenia/"
    sudan = "https://responsiblestatecraft.org/sudan-el-fasher/"
    form = form_of(page)
    form.pop(f"include-{keys[sudan]}")  # leave Sudan out
    form["lead"] = keys[iran]
    form[f"pos-{keys[iran]}"], form[f"pos-{keys[iraq]}"] = "1", "2"  # Iran first in the Middle East
    form["intro"] = "A week of talks.\r\n\r\nAnd of wars."
    resp = staff.post("/staff/issue", form)
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/staff/issue?saved=1")
    saved = draft(site)
    assert saved.excluded == {sudan} and saved.lead == iran
    assert saved.order["Middle East"] == (iran, iraq)
    assert saved.intro == "A week of talks.\n\nAnd of wars." and saved.updated_by == EDITOR

    # The send at Friday 09:00 builds exactly this.
    from datetime import datetime

    issue = prepare_issue(site.config, datetime(2026, 11, 20, 9, tzinfo=site.config.tz))
    assert issue.digest.lead.url == iran and issue.digest.intro == saved.intro
    middle_east = next(s for s in issue.digest.sections if s.region == "Middle East")
    assert [t.url for t in middle_east.teasers] == [iran, iraq]
    assert sudan not in {t.url for s in issue.digest.sections for t in s.teasers}
    assert "A week of talks." in issue.renderer.render(issue.digest).text

    # The page shows it back; "Move down" on Iran swaps it with Iraq; a re-collect keeps it all.
    page = staff.get("/staff/issue?saved=1").text
    assert "Saved." in page and "left out" in page and "A week of talks." in page
    form = form_of(page)
    form.update({"lead": stories(page)[iran], "intro": saved.intro, "move": f"{stories(page)[iran]}:down"})
    assert staff.post("/staff/issue", form).status_code == 303
    assert draft(site).order["Middle East"] == (iraq, iran)
    assert staff.post("/staff/issue/collect").status_code == 303
    again = draft(site)
    assert (again.excluded, again.lead) == ({sudan}, iran)
    page = staff.get("/staff/issue").text
    assert re.search(rf'name="include-{stories(page)[sudan]}"[^>]*checked', page) is None


def test_a_bad_intro_is_refused_and_nothing_saved(site):
    staff = as_staff(site)
    resp = staff.post("/staff/issue", {"intro": "Use @@digest:email@@ here"})
    assert resp.status_code == 400 and "cannot contain" in resp.text
    assert 'aria-invalid="true"' in resp.text
    assert draft(site) is None


# --- preview and test -----------------------------------------------------------------


def test_preview_side_by_side_and_framed_only_here(site):
    staff = as_staff(site)
    page = staff.get("/staff/preview")
    assert page.status_code == 200
    assert "frame-src 'self'" in page.headers["Content-Security-Policy"]
    assert 'width="375"' in page.text and 'width="600"' in page.text
    assert re.search(r'id="subject">[^<]+<', page.text) and 'id="preheader"' in page.text
    frame = staff.get("/staff/preview/frame")
    assert frame.status_code == 200 and "<html" in frame.text
    assert "frame-ancestors 'self'" in frame.headers["Content-Security-Policy"]
    assert "@@digest:" not in frame.text and "reader@example.org" in frame.text
    africa = staff.get("/staff/preview/frame?region=Africa").text
    assert "Sudan" in africa and "Iraq" not in africa
    variant = staff.get("/staff/preview?region=Africa").text
    assert "/staff/preview/frame?region=Africa" in variant


def test_send_a_test_to_me_over_smtp(site, smtp_server):
    staff = as_staff(site)
    resp = staff.post("/staff/preview/test", {"region": ["Africa"]})
    assert resp.status_code == 200 and f"A test copy went to {EDITOR}" in resp.text
    ((mail_from, rcpts, data),) = smtp_server.messages
    assert rcpts == [EDITOR]
    msg = message_from_bytes(data, policy=policy.default)
    assert msg["Subject"].startswith("[TEST] ")
    assert "Sudan" in msg.get_body(("plain",)).get_content()
    with session_factory(site.engine)() as s:
        assert s.query(Delivery).count() == 0  # outside the ledger


def test_a_failed_test_send_says_why(site, smtp_server):
    smtp_server.rcpt_replies[EDITOR] = "550 no such user"
    resp = as_staff(site).post("/staff/preview/test")
    assert resp.status_code == 502 and "could not be sent" in resp.text


# --- dashboard and subscribers --------------------------------------------------------


@pytest.fixture
def pg_site(tmp_path, db_engine):
    s = make_site(staff_config(ORIGIN, tmp_path), db_engine)
    yield s
    s.app.extensions[SCHEDULES_KEY].close()  # the engine is the fixture's


def test_dashboard_runs_regions_and_growth(pg_site):
    site = pg_site
    with session_factory(site.engine).begin() as s:
        ids = []
        for email, regions in (
            ("a@example.org", None),
            ("b@example.org", {"Africa"}),
            ("c@example.org", {"Africa", "Europe"}),
        ):
            ids.append(store.add_subscriber(s, email, regions=regions, source="cli").id)
        gone = store.add_subscriber(s, "gone@example.org", source="cli")
        store.unsubscribe(s, gone, source="web")
    with session_factory(site.engine)() as s:
        run_id = start_run(s, [Recipient(i, f"r{i}@example.org") for i in ids], issue="2026-11-13")
        rows = s.query(Delivery).filter_by(run_id=run_id).order_by(Delivery.id).all()
        for row, status in zip(
            rows, (DeliveryStatus.SENT, DeliveryStatus.FAILED, DeliveryStatus.UNKNOWN), strict=True
        ):
            row.status = status
        s.add(BounceEvent(run_id=run_id, subscriber_id=ids[1], kind="bounce", hard=True, at=site.clock()))
        s.commit()
    staff = as_staff(site)
    page = staff.get("/staff/")
    assert page.status_code == 200
    # A new database gets the schedule "weekly" from [schedule] (fri 09:00 New York, send).
    assert "Friday 20 November 2026, 09:00" in page.text and "schedule “weekly”" in page.text
    assert "14:00 UTC" in page.text
    run_row = re.search(r"<tr><td>2026-11-13</td>.*?</tr>", page.text, re.S).group(0)
    # sent, failed, unknown, skipped, pending, bounced, complained
    assert re.findall(r'class="num">(\d+)<', run_row) == ["1", "1", "1", "0", "0", "1", "0"]
    assert f'href="/staff/runs/{run_id}"' in run_row
    assert re.search(
        r'<th scope="row">Africa</th><td class="num">2</td><td class="num">1</td><td class="num">3</td>',
        page.text,
    )
    for chart in ("/staff/charts/regions.svg", "/staff/charts/growth.svg"):
        svg = staff.get(chart)
        assert svg.status_code == 200 and svg.mimetype == "image/svg+xml"
        assert b"<svg" in svg.data and b"<script" not in svg.data
    assert b">Africa</text>" in staff.get("/staff/charts/regions.svg").data  # the axis labels the bars


def test_growth_counts_joins_and_leaves_per_week(pg_site):
    from datetime import UTC, date, datetime

    from digest.web.console import weekly_growth

    site = pg_site
    with session_factory(site.engine).begin() as s:
        for email in ("x@example.org", "y@example.org"):
            store.add_subscriber(s, email, source="cli")
        store.add_subscriber(s, "p@example.org", status=Status.PENDING, source="web")  # not joined yet
        store.unsubscribe(s, store.get_by_email(s, "y@example.org"), source="web")
    with session_factory(site.engine)() as s:
        weeks = weekly_growth(s, datetime.now(UTC).date())
    assert len(weeks) == 12 and weeks[-1].start <= date.today()
    assert (weeks[-1].joined, weeks[-1].left) == (2, 1)
    assert sum(w.joined for w in weeks[:-1]) == 0


def test_admin_searches_and_opens_a_subscriber(site):
    with session_factory(site.engine).begin() as s:
        store.add_subscriber(s, "amina@example.net", name="Amina Diallo", regions={"Africa"}, source="cli")
        store.add_subscriber(s, "zoe@example.fr", name="Zoë", source="cli")
    staff = as_staff(site, ADMIN)
    found = staff.get("/staff/subscribers?q=AMINA")
    assert (
        found.status_code == 200 and "amina@example.net" in found.text and "zoe@example.fr" not in found.text
    )
    assert "zoe@example.fr" in staff.get("/staff/subscribers?q=Zo%C3%AB").text
    assert "amina" not in staff.get("/staff/subscribers?q=%25").text  # % is a character, not a wildcard
    sub_id = re.search(r'href="/staff/subscribers/(\d+)"', found.text).group(1)
    with session_factory(site.engine)() as s:
        run_id = start_run(s, [Recipient(int(sub_id), "amina@example.net")], issue="2026-11-13")
        s.query(Delivery).filter_by(run_id=run_id).update({"status": DeliveryStatus.SENT, "detail": "250 OK"})
        s.commit()
    one = staff.get(f"/staff/subscribers/{sub_id}")
    assert one.status_code == 200
    assert "Amina Diallo" in one.text and "Africa" in one.text and "subscribed" in one.text
    assert "2026-11-13" in one.text and "250 OK" in one.text
    assert staff.get("/staff/subscribers/99999").status_code == 404


def test_admin_imports_a_csv_with_a_per_row_error_report(site):
    staff = as_staff(site, ADMIN)
    assert staff.get("/staff/subscribers/import").status_code == 200
    csv = "email,name,regions\nnew@example.org,New,Africa\nnot-an-address,Bad,\nother@example.org,,Atlantis\n"
    resp = staff.post(
        "/staff/subscribers/import",
        {"file": (io.BytesIO(("\ufeff" + csv).encode()), "list.csv")},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 200
    assert "1 added" in resp.text and "2 error(s)" in resp.text
    errors = re.search(r'<ul class="report" id="import-errors">(.*?)</ul>', resp.text, re.S).group(1)
    assert "line 3" in errors and "line 4" in errors and "Atlantis" in errors
    with session_factory(site.engine)() as s:
        assert store.get_by_email(s, "new@example.org").regions == {"Africa"}
    latin1 = staff.post(
        "/staff/subscribers/import",
        {"file": (io.BytesIO("email,name\nz@example.org,Zoë\n".encode("latin-1")), "old.csv")},
        content_type="multipart/form-data",
    )
    assert latin1.status_code == 400 and "not UTF-8" in latin1.text
    with session_factory(site.engine)() as s:
        assert store.get_by_email(s, "z@example.org") is None
    # Larger than the reader forms' 16 KB limit, well under the import's.
    big = "email,name\n" + "".join(f"bulk{i}@example.org,{'Long Name ' * 8}\n" for i in range(200))
    resp = staff.post(
        "/staff/subscribers/import",
        {"file": (io.BytesIO(big.encode()), "big.csv")},
        content_type="multipart/form-data",
    )
    assert resp.status_code == 200 and "200 added" in resp.text and len(big) > 16 * 1024
