"""The subscriber web pages through Flask's test client, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest
from itsdangerous import TimestampSigner
from subscriber_helpers import TEST_SECRET, confirm_link, csrf_from

from digest.config import config_from_dict
from digest.db import session_factory
from digest.errors import ConfigError
from digest.web import create_app
from subscribers import store
from subscribers.store import Status
from subscribers.tokens import Purpose, Tokens

# Fixtures db_engine, pg_schema_engine and session.
pytest_plugins = ("subscriber_fixtures",)

TOKENS = Tokens(TEST_SECRET)


def make_config(**web):
    return config_from_dict(
        {
            "newsletter": {"name": "Statecraft Weekly", "base_url": "http://localhost"},
            "web": {"primary_color": "#123456", "accent_color": "#abcdef", **web},
        }
    )


@pytest.fixture
def outbox():
    return []


@pytest.fixture
def app(db_engine, outbox):
    return create_app(make_config(), db_engine, secret_key=TEST_SECRET, send_mail=outbox.append)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def db(db_engine):
    def get(email):
        with session_factory(db_engine)() as s:
            return store.get_by_email(s, email)

    return get


def subscribe(client, email, name="", regions=(), *, wait=True, **extra):
    """POST the form; with `wait`, also wait for the background sign-up to finish."""
    page = client.get("/subscribe")
    data = {
        "email": email,
        "name": name,
        "region": list(regions),
        "csrf_token": csrf_from(page.text),
        **extra,
    }
    resp = client.post("/subscribe", data=data)
    if wait:
        client.application.extensions["digest.mail"].join()
    return resp


def path(url: str) -> str:
    return urlsplit(url).path


def test_subscribe_page_uses_configured_name_and_colours(client):
    page = client.get("/subscribe")
    assert page.status_code == 200
    assert "Statecraft Weekly" in page.text and 'name="viewport"' in page.text
    assert "Middle East" in page.text and "Asia-Pacific" in page.text
    cookie = page.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    css = client.get("/style.css").text
    assert "#123456" in css and "#abcdef" in css


def recipients(engine):
    with session_factory(engine)() as s:
        return [r.email for r in store.active_recipients(s)]


def test_subscribe_sends_one_confirmation_and_nothing_else(client, outbox, db, db_engine):
    resp = subscribe(client, "Reader@Example.org", name="Rea Der", regions=["Africa", "Europe"])
    assert resp.status_code == 200 and "Check your inbox" in resp.text
    assert len(outbox) == 1
    mail = outbox[0]
    (to,) = mail["To"].addresses
    # No name in the mail: whoever filled in the form may not own the address.
    assert (to.display_name, to.addr_spec) == ("", "Reader@example.org")
    assert "Rea Der" not in mail.as_string()
    assert mail["Subject"] == "Confirm your subscription to Statecraft Weekly"
    assert mail["Auto-Submitted"] == "auto-generated"
    sub = db("reader@example.org")
    assert sub.status == Status.PENDING and sub.regions == {"Africa", "Europe"}
    assert recipients(db_engine) == []  # nothing else until confirmed


def test_same_page_whether_or_not_the_address_is_known(client, outbox, db_engine):
    with session_factory(db_engine).begin() as s:
        store.add_subscriber(s, "known@example.org", name="K")
    known = subscribe(client, "known@example.org", name="K")
    unknown = subscribe(client, "stranger@example.org", name="K")
    assert known.status_code == unknown.status_code == 200
    assert known.text.replace("known@", "X@") == unknown.text.replace("stranger@", "X@")
    # The active subscriber is not mailed by a stranger's form; the new address gets its one mail.
    assert [m["To"].addresses[0].addr_spec for m in outbox] == ["stranger@example.org"]


def test_confirm_needs_a_post_and_works_once(client, outbox, db, db_engine):
    subscribe(client, "new@example.org")
    link = path(confirm_link(outbox[0]))
    page = client.get(link)  # what a mail scanner does
    assert page.status_code == 200 and "Yes, subscribe me" in page.text
    assert db("new@example.org").status == Status.PENDING
    done = client.post(link)
    assert done.status_code == 200 and "You are subscribed" in done.text
    assert recipients(db_engine) == ["new@example.org"]
    prefs = re.search(r'href="([^"]+/preferences/[^"]+)"', done.text).group(1)
    assert client.get(path(prefs)).status_code == 200
    again = client.post(link)
    assert again.status_code == 200 and "already subscribed" in again.text

    # Once they leave, the old confirm link is spent.
    sub = db("new@example.org")
    client.post(f"/unsubscribe/{TOKENS.make(sub.id, Purpose.UNSUBSCRIBE)}")
    replay = client.post(link)
    assert replay.status_code == 400 and "already used" in replay.text
    assert db("new@example.org").status == Status.UNSUBSCRIBED


def test_coming_back_after_unsubscribing(client, outbox, db_engine):
    with session_factory(db_engine).begin() as s:
        sub = store.add_subscriber(s, "back@example.org")
        store.unsubscribe(s, sub, source="web")
    subscribe(client, "back@example.org", regions=["Global"])
    assert len(outbox) == 1
    assert client.post(path(confirm_link(outbox[0]))).status_code == 200
    assert recipients(db_engine) == ["back@example.org"]


@pytest.mark.parametrize("status", [Status.PENDING, Status.UNSUBSCRIBED])
def test_a_strangers_sign_up_changes_no_record_and_puts_no_words_in_the_mail(
    client, outbox, db, db_engine, status
):
    """Someone else's pending or unsubscribed address: name and regions stay until the owner
    uses the confirm link, and the mail the owner gets carries nothing the stranger typed."""
    with session_factory(db_engine).begin() as s:
        sub = store.add_subscriber(s, "owner@example.org", name="Owner", regions={"Africa"}, status=status)
    subscribe(client, "owner@example.org", name="URGENT call 555-0100", regions=["Europe"])
    (mail,) = outbox
    # The Message-ID is random hex, which may hold "555" by chance: every other part may not.
    words = mail.as_string().replace(mail["Message-ID"], "")
    assert "URGENT" not in words and "555" not in words
    assert mail.get_body(("plain",)).get_content().startswith("Hello,\n")
    sub = db("owner@example.org")
    assert (sub.status, sub.name, sub.regions) == (status, "Owner", {"Africa"})

    # The link applies what its request asked for (only the newest request's link works).
    assert client.post(path(confirm_link(mail))).status_code == 200
    sub = db("owner@example.org")
    assert (sub.status, sub.name, sub.regions) == (Status.ACTIVE, "URGENT call 555-0100", {"Europe"})
    assert (sub.requested_name, sub.requested_regions) == (None, None)


def test_confirm_applies_the_newest_requests_choices(client, outbox, db):
    subscribe(client, "twice@example.org", name="First", regions=["Africa"])
    subscribe(client, "twice@example.org", name="Second", regions=[])
    sub = db("twice@example.org")
    assert (sub.name, sub.regions) == ("First", {"Africa"})  # the request that created the row
    assert client.post(path(confirm_link(outbox[1]))).status_code == 200
    sub = db("twice@example.org")
    assert (sub.status, sub.name, sub.regions) == (Status.ACTIVE, "Second", None)


def test_bounced_address_gets_no_mail(client, outbox, db_engine):
    with session_factory(db_engine).begin() as s:
        sub = store.add_subscriber(s, "gone@example.org")
        store.set_status(s, sub, Status.BOUNCED, source="bounce")
    assert subscribe(client, "gone@example.org").status_code == 200
    assert outbox == []


def test_expired_and_tampered_confirm_tokens(client, db, monkeypatch):
    subscribe(client, "late@example.org")
    sub = db("late@example.org")
    real = TimestampSigner.get_timestamp
    monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda self: real(self) - 8 * 24 * 3600)
    old = TOKENS.make(sub.id, Purpose.CONFIRM)
    monkeypatch.undo()
    resp = client.post(f"/confirm/{old}")
    assert resp.status_code == 400 and "expired" in resp.text
    good = TOKENS.make(sub.id, Purpose.CONFIRM)
    tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    for bad in (tampered, "garbage", "x" * 600, Tokens("another-secret").make(sub.id, Purpose.CONFIRM)):
        assert client.post(f"/confirm/{bad}").status_code == 400
        assert client.get(f"/confirm/{bad}").status_code == 400
    assert db("late@example.org").status == Status.PENDING


def test_tokens_are_bound_to_their_purpose(client, db_engine, db):
    with session_factory(db_engine).begin() as s:
        sub_id = store.add_subscriber(s, "bound@example.org").id
    for purpose in (Purpose.CONFIRM, Purpose.PREFERENCES):
        resp = client.post(f"/unsubscribe/{TOKENS.make(sub_id, purpose)}")
        assert resp.status_code == 400
    assert client.get(f"/preferences/{TOKENS.make(sub_id, Purpose.UNSUBSCRIBE)}").status_code == 400
    assert db("bound@example.org").status == Status.ACTIVE


def test_rfc8058_one_click_needs_no_cookie_or_csrf(app, db_engine, db):
    with session_factory(db_engine).begin() as s:
        sub_id = store.add_subscriber(s, "oneclick@example.org").id
    fresh = app.test_client(use_cookies=False)
    url = f"/unsubscribe/{TOKENS.make(sub_id, Purpose.UNSUBSCRIBE)}"
    assert fresh.get(url).status_code == 200  # the confirm page (scanners prefetch)
    assert db("oneclick@example.org").status == Status.ACTIVE
    resp = fresh.post(
        url, data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )
    assert resp.status_code == 200
    assert db("oneclick@example.org").status == Status.UNSUBSCRIBED
    assert recipients(db_engine) == []
    with session_factory(db_engine)() as s:
        sub = store.get_by_email(s, "oneclick@example.org")
        assert [e.source for e in store.events_for(s, sub)][-1] == "one-click"
        assert store.is_suppressed(s, "oneclick@example.org")
    assert fresh.post(url).status_code == 200  # repeating is harmless


def test_preferences_change_regions_and_pause_with_csrf(client, db_engine, db):
    with session_factory(db_engine).begin() as s:
        sub_id = store.add_subscriber(s, "prefs@example.org").id
    url = f"/preferences/{TOKENS.make(sub_id, Purpose.PREFERENCES)}"
    page = client.get(url)
    assert page.status_code == 200 and "p•" in page.text and "prefs@example.org" not in page.text
    token = csrf_from(page.text)

    no_csrf = client.post(url, data={"region": ["Africa"]})
    assert no_csrf.status_code == 400 and "Reload the page" in no_csrf.text
    assert client.post(url, data={"region": ["Africa"], "csrf_token": "ünïcode"}).status_code == 400
    cross_site = client.application.test_client().post(url, data={"region": ["Africa"], "csrf_token": token})
    assert cross_site.status_code == 400  # the token without its cookie is useless
    unknown = client.post(url, data={"region": ["Africa", "Atlantis"], "csrf_token": token})
    assert unknown.status_code == 400 and "Unknown region" in unknown.text
    assert db("prefs@example.org").regions is None

    saved = client.post(url, data={"region": ["Africa", "Middle East"], "csrf_token": token})
    assert saved.status_code == 200 and "Saved." in saved.text
    assert db("prefs@example.org").regions == {"Africa", "Middle East"}
    paused = client.post(url, data={"region": ["Africa"], "paused": "on", "csrf_token": token})
    assert paused.status_code == 200
    assert recipients(db_engine) == []
    client.post(url, data={"csrf_token": token})
    sub = db("prefs@example.org")
    assert (sub.paused, sub.regions) == (False, None)
    assert recipients(db_engine) == ["prefs@example.org"]


@pytest.mark.parametrize(
    "fields,fragment",
    [
        ({"email": "not-an-address"}, "not a valid e-mail address"),
        ({"email": "a@example.org\r\nBcc: b@example.org"}, "line break"),
        ({"email": "x" * 300 + "@example.org"}, "too long"),
        ({"email": "ok@example.org", "name": "Eve\r\nBcc: victim@example.org"}, "single line"),
        ({"email": "ok@example.org", "name": "n" * 201}, "too long"),
        ({"email": "ok@example.org", "regions": ["Atlantis"]}, "Unknown region"),
    ],
)
def test_bad_subscribe_input_changes_nothing(client, outbox, db, fields, fragment):
    fields = dict(fields)
    resp = subscribe(
        client, fields.pop("email"), name=fields.pop("name", ""), regions=fields.pop("regions", ())
    )
    assert resp.status_code == 400
    assert fragment in resp.text
    assert outbox == []
    assert db("ok@example.org") is None


def test_oversized_request_and_missing_csrf(client, outbox):
    page = client.get("/subscribe")
    huge = client.post(
        "/subscribe",
        data={"email": "a@example.org", "name": "x" * 40_000, "csrf_token": csrf_from(page.text)},
    )
    assert huge.status_code == 413 and "larger than this form allows" in huge.text
    assert client.post("/subscribe", data={"email": "a@example.org"}).status_code == 400
    assert outbox == []


def test_rate_limit_per_mailbox(db_engine, outbox):
    app = create_app(
        make_config(confirm_limit_per_mailbox=2),
        db_engine,
        secret_key=TEST_SECRET,
        send_mail=outbox.append,
    )
    client = app.test_client()
    for _ in range(4):
        assert subscribe(client, "flood@example.org").status_code == 200
    assert len(outbox) == 2


def test_rate_limit_per_client(db_engine, outbox):
    app = create_app(
        make_config(subscribe_limit_per_client=3),
        db_engine,
        secret_key=TEST_SECRET,
        send_mail=outbox.append,
    )
    client = app.test_client()
    codes = [subscribe(client, f"r{i}@example.org").status_code for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    assert len(outbox) == 3
    other = app.test_client()
    page = other.get("/subscribe")
    resp = other.post(
        "/subscribe",
        data={"email": "z@example.org", "csrf_token": csrf_from(page.text)},
        environ_base={"REMOTE_ADDR": "192.0.2.7"},
    )
    assert resp.status_code == 200
    app.extensions["digest.mail"].join()
    assert len(outbox) == 4


def test_mail_failure_shows_the_same_page(db_engine):
    def broken(_message):
        raise OSError("relay down")

    app = create_app(make_config(), db_engine, secret_key=TEST_SECRET, send_mail=broken)
    assert subscribe(app.test_client(), "x@example.org").status_code == 200


@pytest.mark.parametrize("background", [True, False])
def test_failure_building_the_mail_shows_the_same_page(db_engine, monkeypatch, background):
    import digest.web.signup as web_app

    def broken(*_args, **_kwargs):
        raise ValueError("cannot build this mail")

    monkeypatch.setattr(web_app, "confirmation_message", broken)
    outbox: list = []
    app = create_app(
        make_config(), db_engine, secret_key=TEST_SECRET, send_mail=outbox.append, background_mail=background
    )
    resp = subscribe(app.test_client(), "x@example.org")
    assert resp.status_code == 200 and "Check your inbox" in resp.text
    assert outbox == []


def test_secret_comes_from_the_environment(db_engine, monkeypatch):
    monkeypatch.delenv("DIGEST_SECRET_KEY", raising=False)
    with pytest.raises(ConfigError, match="DIGEST_SECRET_KEY"):
        create_app(make_config(), db_engine)
    monkeypatch.setenv("DIGEST_SECRET_KEY", "Xr5Kq2Vw8Ln3Tz7Bc1Hm6Jd4Fg9Ps0YaQe7Wn2Rb5Mk-t3")
    assert create_app(make_config(), db_engine).secret_key == "Xr5Kq2Vw8Ln3Tz7Bc1Hm6Jd4Fg9Ps0YaQe7Wn2Rb5Mk-t3"


def test_unknown_page_and_method(client):
    assert client.get("/nope").status_code == 404
    assert client.delete("/subscribe").status_code == 405


def test_serve_command_builds_the_app(tmp_path, monkeypatch):
    from flask import Flask

    from digest import cli

    monkeypatch.delenv("DIGEST_SECRET_KEY", raising=False)
    config = tmp_path / "digest.toml"
    config.write_text(
        '[newsletter]\nbase_url = "http://127.0.0.1:8123"\n[database]\nurl = "sqlite:///s.db"\n'
        "[web]\nport = 8123\n",
        encoding="utf-8",
    )
    calls = []
    monkeypatch.setattr(Flask, "run", lambda self, **kw: calls.append((self, kw)))
    assert cli.main(["-c", str(config), "serve"]) == 2  # no secret: a config error naming the variable
    assert calls == []
    assert cli.main(["-c", str(config), "serve", "--dev-secret", "--host", "127.0.0.1"]) == 0
    app, kw = calls[0]
    assert (kw["host"], kw["port"]) == ("127.0.0.1", 8123)
    assert app.test_client().get("/subscribe").status_code == 200
    assert (tmp_path / "s.db").is_file()


def test_background_mail_does_not_hold_up_the_page(db_engine):
    """The page is answered before the mail goes out, so its timing says nothing about the address."""
    import threading

    release, sent = threading.Event(), []

    def slow(message):
        release.wait(timeout=10)
        sent.append(message)

    app = create_app(make_config(), db_engine, secret_key=TEST_SECRET, send_mail=slow)
    assert subscribe(app.test_client(), "bg@example.org", wait=False).status_code == 200
    assert sent == []  # still blocked in the mailer, yet the page came back
    release.set()
    app.extensions["digest.mail"].join()
    assert [m["To"].addresses[0].addr_spec for m in sent] == ["bg@example.org"]


def test_sign_up_work_happens_after_the_page_for_known_and_new_addresses(db_engine):
    """The handler does the same thing for every valid address: it answers, and only then does a
    background worker look the address up, write and mail. Blocked worker: pages still come back,
    and nothing is written yet, whether the address is known or new."""
    import threading

    entered, release, sent = threading.Event(), threading.Event(), []

    def mailer(message):
        if message["To"].addresses[0].addr_spec == "blocker@example.org":
            entered.set()
            release.wait(timeout=10)
        sent.append(message["To"].addresses[0].addr_spec)

    with session_factory(db_engine).begin() as s:
        store.add_subscriber(s, "known@example.org", name="K")
    app = create_app(make_config(), db_engine, secret_key=TEST_SECRET, send_mail=mailer)
    client = app.test_client()
    try:
        subscribe(client, "blocker@example.org", wait=False)
        assert entered.wait(timeout=10)  # the worker is now stuck in the blocker's mail

        def events():
            with session_factory(db_engine)() as s:
                return len(store.events_for(s, store.get_by_email(s, "known@example.org")))

        before = events()
        known = subscribe(client, "known@example.org", name="K", wait=False)
        new = subscribe(client, "new@example.org", name="K", wait=False)
        assert known.status_code == new.status_code == 200
        assert known.text.replace("known@", "X@") == new.text.replace("new@", "X@")
        with session_factory(db_engine)() as s:
            assert store.get_by_email(s, "new@example.org") is None  # nothing written yet
        assert events() == before
        assert sent == []
    finally:
        release.set()
    app.extensions["digest.mail"].join()
    # Afterwards the sign-ups happened: the new address is pending and mailed, the known one not.
    assert sent == ["blocker@example.org", "new@example.org"]
    with session_factory(db_engine)() as s:
        assert store.get_by_email(s, "new@example.org").status == Status.PENDING
    assert events() == before


def test_transport_mailer_keeps_international_addresses_intact(tmp_path):
    from email import message_from_string, policy

    from digest.web.mail import confirmation_message, transport_mailer

    config = config_from_dict(
        {"newsletter": {"base_url": "http://localhost"}, "transport": {"outbox_dir": str(tmp_path / "out")}}
    )
    mail = confirmation_message(config, to_email="伊昭傑@郵件.商務", confirm_url="http://localhost/confirm/x")
    transport_mailer(config)(mail)
    (written,) = (tmp_path / "out").glob("web-*.eml")
    raw = written.read_bytes()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    parsed = message_from_string(raw.decode("utf-8"), policy=policy.default)  # SMTPUTF8: raw UTF-8
    assert parsed["To"].addresses[0].addr_spec == "伊昭傑@郵件.商務"
    assert "http://localhost/confirm/x" in parsed.get_body(("plain",)).get_content()


def test_confirmation_goes_through_the_smtp_transport(db_engine, smtp_server):
    """With [transport] kind = "smtp", the sign-up's one confirmation mail reaches the SMTP server."""
    config = config_from_dict(
        {
            "newsletter": {"name": "Statecraft Weekly", "base_url": "http://localhost"},
            "transport": {"kind": "smtp", "smtp": {"host": smtp_server.host, "port": smtp_server.port}},
        }
    )
    app = create_app(config, db_engine, secret_key=TEST_SECRET)
    assert subscribe(app.test_client(), "smtp-reader@example.org").status_code == 200
    assert [rcpts for _f, rcpts, _d in smtp_server.messages] == [["smtp-reader@example.org"]]
    assert b"/confirm/" in smtp_server.messages[0][2]


def test_simultaneous_sign_ups_for_one_new_address(app, outbox, db_engine):
    """Racing requests for the same new address all get the page; one row results."""
    from concurrent.futures import ThreadPoolExecutor

    clients = [app.test_client() for _ in range(6)]
    forms = [(c, csrf_from(c.get("/subscribe").text)) for c in clients]

    def post(pair):
        c, token = pair
        return c.post("/subscribe", data={"email": "race@example.org", "csrf_token": token}).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = list(pool.map(post, forms))
    assert codes == [200] * 6
    app.extensions["digest.mail"].join()
    with session_factory(db_engine)() as s:
        assert [x.email for x in store.list_subscribers(s)] == ["race@example.org"]
    assert 1 <= len(outbox) <= 6


def test_address_limit_resets_after_the_window(db_engine, outbox):
    from datetime import UTC, datetime, timedelta

    clock = {"now": datetime(2030, 1, 1, 9, 0, tzinfo=UTC)}
    app = create_app(
        make_config(confirm_limit_per_mailbox=1, confirm_window_hours=1),
        db_engine,
        secret_key=TEST_SECRET,
        send_mail=outbox.append,
        clock=lambda: clock["now"],
    )
    client = app.test_client()
    subscribe(client, "window@example.org")
    clock["now"] += timedelta(minutes=59)
    subscribe(client, "window@example.org")
    assert len(outbox) == 1
    clock["now"] += timedelta(minutes=2)
    subscribe(client, "window@example.org")
    assert len(outbox) == 2


@pytest.mark.parametrize(
    "name",
    [
        "Maria José Fernández de la Cruz y Müller-Lüdenscheidt",  # folds when RFC 2047-encoded
        "Ünïcødé " * 24,
        "Evil <attacker@evil.com>",
        "a, b@evil.com",
        'Zoë, "x" <attacker@evil.com>',
    ],
)
def test_any_valid_name_gets_the_page_and_one_mail_to_the_address_alone(client, outbox, name):
    """Names once gave a 500 (only for unknown addresses: a tell) or rewrote the To header."""
    from email import message_from_bytes, policy

    from digest.web.mail import wire_bytes

    resp = subscribe(client, "victim@example.org", name=name)
    assert resp.status_code == 200 and "Check your inbox" in resp.text
    (mail,) = outbox
    parsed = message_from_bytes(wire_bytes(mail), policy=policy.default)
    assert [a.addr_spec for a in parsed["To"].addresses] == ["victim@example.org"]
