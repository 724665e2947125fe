"""The sign-up form other sites embed (POST /subscribe/embed), through HTTP with the real app.

The clock is injected: the minimum fill time is passed by moving it, never by sleeping.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from subscriber_helpers import TEST_SECRET, csrf_from
from werkzeug.datastructures import MultiDict

from digest.config import config_from_dict
from digest.db import make_engine, migrate, session_factory
from digest.errors import ConfigError
from digest.web import create_app
from digest.web.embed import embed_snippet
from subscribers import store

BASE = "https://news.example.org"
SITE = "https://responsiblestatecraft.org"
JSON = {"Accept": "application/json"}
STARTED_RE = re.compile(r'name="started" value="([^"]+)"')


class Clock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.at

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)


@pytest.fixture
def site(tmp_path):
    """The app with [web] embed_origins = [SITE], its clock, outbox and database."""

    def build(**web):
        web = {"embed_origins": [SITE], "embed_min_seconds": 3, **web}
        config = config_from_dict({"newsletter": {"name": "Statecraft Weekly", "base_url": BASE}, "web": web})
        engine = make_engine(f"sqlite:///{tmp_path / 'web.db'}")
        migrate(engine)
        engines.append(engine)
        clock, outbox = Clock(), []
        app = create_app(config, engine, secret_key=TEST_SECRET, send_mail=outbox.append, clock=clock)
        return app, clock, outbox, engine

    engines: list = []
    yield build
    for engine in engines:
        engine.dispose()


def fields_of(snippet: str) -> MultiDict:
    """What a browser posts from the snippet as pasted (hidden inputs with their values)."""
    names = re.findall(r'<input[^>]*name="([^"]+)"', snippet)
    return MultiDict([(n, "") for n in names if n not in ("region",)])


def post(client, data, headers=None):
    return client.post("/subscribe/embed", data=data, headers=headers or {})


def queued_jobs(engine) -> int:
    from digest.web.queue import SignupJob

    with session_factory(engine)() as db:
        return db.query(SignupJob).count()


def test_the_plain_form_works_with_no_script_after_one_more_press(site) -> None:
    app, clock, outbox, engine = site()
    client = app.test_client()
    with app.test_request_context():
        snippet = embed_snippet(app.extensions["digest.embed"].config, with_regions=True)
    assert f'action="{BASE}/subscribe/embed"' in snippet and "csrf" not in snippet
    form = fields_of(snippet)
    assert set(form) == {"email", "website", "started"}
    form["email"] = "reader@example.org"
    form.add("region", "Africa")

    # As pasted, the form carries no signed time: our page asks for one more press, filled in.
    step = post(client, form, headers={"Origin": SITE})
    assert step.status_code == 200 and "One more step" in step.text
    assert 'value="reader@example.org"' in step.text and 'value="Africa"\n      checked' in step.text
    assert step.headers["Referrer-Policy"] == "same-origin"  # so its post carries our Origin
    assert queued_jobs(engine) == 0
    started = STARTED_RE.search(step.text)[1]
    again = MultiDict({"email": "reader@example.org", "region": "Africa", "website": "", "started": started})
    # Pressed at once (a bot that follows the page): still not taken.
    assert "One more step" in post(client, again, headers={"Origin": BASE}).text
    clock.advance(3)
    done = post(client, again, headers={"Origin": BASE})
    assert done.status_code == 200 and "Check your inbox" in done.text
    app.extensions["digest.mail"].join()
    assert [m["To"] for m in outbox] == ["reader@example.org"]
    with session_factory(engine)() as db:
        sub = store.get_by_email(db, "reader@example.org")
        assert sub is not None and sub.status.value == "pending"  # double opt-in: not in until confirmed


def test_the_script_path_answers_json_with_cors_for_the_site_only(site) -> None:
    app, clock, outbox, _ = site()
    client = app.test_client()
    start = client.get("/subscribe/embed/start", headers={"Origin": SITE, **JSON})
    assert start.headers["Access-Control-Allow-Origin"] == SITE and "Origin" in start.headers["Vary"]
    data = {"email": "reader@example.org", "website": "", "started": start.json["started"]}
    soon = post(client, data, headers={"Origin": SITE, **JSON})
    assert soon.json["again"] is True and soon.json["started"] and not soon.json["ok"]
    clock.advance(5)
    resp = post(client, data, headers={"Origin": SITE, **JSON})
    assert resp.status_code == 200 and resp.json["ok"] is True
    assert "Check your inbox" in resp.json["message"]
    assert resp.headers["Access-Control-Allow-Origin"] == SITE
    assert "Access-Control-Allow-Credentials" not in resp.headers  # no cookies cross over
    bad = post(client, {**data, "email": "not an address"}, headers={"Origin": SITE, **JSON})
    assert bad.status_code == 400 and "not a valid e-mail address" in bad.json["errors"]["email"]
    regions = post(client, {**data, "region": "Mars"}, headers={"Origin": SITE, **JSON})
    assert regions.status_code == 400 and "regions" in regions.json["errors"]
    script = client.get("/subscribe/embed.js", headers={"Origin": SITE})
    assert script.mimetype == "text/javascript" and "digest-signup" in script.text
    assert script.headers["Cache-Control"] == "public, max-age=3600"
    app.extensions["digest.mail"].join()
    assert len(outbox) == 1


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "https://responsiblestatecraft.org.evil.example"},
        {"Origin": "null"},
        {"Referer": "https://evil.example/article"},
        {},
    ],
    ids=["other-site", "lookalike", "null-origin", "other-referer", "no-origin"],
)
def test_a_post_from_elsewhere_is_refused_with_a_clear_page(site, headers) -> None:
    app, clock, outbox, engine = site()
    client = app.test_client()
    started = client.get("/subscribe/embed/start").json["started"]
    clock.advance(10)
    resp = post(client, {"email": "r@example.org", "started": started}, headers=headers)
    assert resp.status_code == 403
    assert "We cannot take this sign-up here" in resp.text and "Nothing was saved" in resp.text
    assert 'href="/subscribe"' in resp.text
    assert "Access-Control-Allow-Origin" not in resp.headers
    app.extensions["digest.mail"].join()
    assert outbox == [] and queued_jobs(engine) == 0


def test_referer_stands_in_for_a_missing_origin(site) -> None:
    app, clock, _, engine = site()
    client = app.test_client()
    started = client.get("/subscribe/embed/start").json["started"]
    clock.advance(10)
    data = {"email": "r@example.org", "started": started}
    resp = post(client, data, headers={"Referer": f"{SITE}/2025/10/30/article/"})
    assert resp.status_code == 200 and "Check your inbox" in resp.text


def test_honeypot_gets_the_same_answer_and_nothing_happens(site) -> None:
    app, clock, outbox, engine = site()
    client = app.test_client()
    started = client.get("/subscribe/embed/start").json["started"]
    clock.advance(10)
    data = {"email": "r@example.org", "started": started}
    bot = post(client, {**data, "website": "http://spam.example"}, headers={"Origin": SITE})
    person = post(client, data, headers={"Origin": SITE})
    assert bot.status_code == person.status_code == 200 and bot.text == person.text
    app.extensions["digest.mail"].join()
    assert len(outbox) == 1 and queued_jobs(engine) == 1  # only the person's


def test_the_answer_is_the_same_for_a_known_address(site) -> None:
    app, clock, outbox, engine = site()
    with session_factory(engine).begin() as db:
        store.add_subscriber(db, "known@example.org", source="test")
    client = app.test_client()
    started = client.get("/subscribe/embed/start").json["started"]
    clock.advance(10)
    answers = []
    for email in ("known@example.org", "fresh@example.org"):
        for headers in ({"Origin": SITE}, {"Origin": SITE, **JSON}):
            resp = post(client, {"email": email, "started": started}, headers=headers)
            answers.append((resp.status_code, resp.get_data(as_text=True).replace(email, "ADDRESS")))
    assert answers[0] == answers[2] and answers[1] == answers[3]
    app.extensions["digest.mail"].join()
    assert {m["To"] for m in outbox} == {"fresh@example.org"}  # an active reader gets nothing


def test_per_client_limit_is_shared_with_the_subscribe_page(site) -> None:
    app, clock, _, _ = site(subscribe_limit_per_client=2)
    client = app.test_client()
    started = client.get("/subscribe/embed/start").json["started"]
    clock.advance(10)
    page = client.get("/subscribe")
    own = client.post("/subscribe", data={"email": "a@example.org", "csrf_token": csrf_from(page.text)})
    assert own.status_code == 200
    data = {"email": "b@example.org", "started": started}
    assert post(client, data, headers={"Origin": SITE}).status_code == 200
    refused = post(client, data, headers={"Origin": SITE, **JSON})
    assert refused.status_code == 429
    assert refused.headers["Access-Control-Allow-Origin"] == SITE  # the script can read the refusal


def test_per_mailbox_limit_holds_for_embedded_sign_ups(site) -> None:
    app, clock, outbox, _ = site(subscribe_limit_per_client=100)
    client = app.test_client()
    started = client.get("/subscribe/embed/start").json["started"]
    clock.advance(10)
    for email in (
        "victim@example.org",
        "Victim+1@example.org",
        "VICTIM+2@example.org",
        "victim+3@example.org",
    ):
        resp = post(client, {"email": email, "started": started}, headers={"Origin": SITE})
        assert resp.status_code == 200
    app.extensions["digest.mail"].join()
    assert len(outbox) == 2  # [web] confirm_limit_per_mailbox, as on /subscribe


def test_gmail_spellings_of_one_inbox_count_as_one_mailbox_here_too(site) -> None:
    """The embed takes /subscribe's path, so it counts mailboxes as the provider delivers them."""
    app, clock, outbox, _ = site(subscribe_limit_per_client=100)
    client = app.test_client()
    started = client.get("/subscribe/embed/start").json["started"]
    clock.advance(10)
    for email in (
        "jane.doe@gmail.com",
        "janedoe@googlemail.com",
        "J.a.n.e.Doe+x@gmail.com",
        "jaNe.D.oe@gmail.com",
    ):
        assert post(client, {"email": email, "started": started}, {"Origin": SITE}).status_code == 200
    app.extensions["digest.mail"].join()
    assert len(outbox) == 2


def test_a_form_shown_more_than_a_day_ago_needs_a_fresh_time(site) -> None:
    app, clock, outbox, engine = site()
    client = app.test_client()
    started = client.get("/subscribe/embed/start").json["started"]
    clock.advance(25 * 3600)
    resp = post(client, {"email": "r@example.org", "started": started}, headers={"Origin": SITE})
    assert "One more step" in resp.text and queued_jobs(engine) == 0
    forged = started[:-2] + ("AA" if not started.endswith("AA") else "BB")
    resp = post(client, {"email": "r@example.org", "started": forged}, headers={"Origin": SITE})
    assert "One more step" in resp.text and queued_jobs(engine) == 0


def test_embed_origins_must_be_origins() -> None:
    for bad in ("https://example.org/", "example.org", "https://example.org/news", "HTTPS://Example.org"):
        with pytest.raises(ConfigError, match=r"\[web\] embed_origins"):
            config_from_dict({"web": {"embed_origins": [bad]}})


def test_honeypot_answers_even_errors_as_a_person_would_get_them(site) -> None:
    app, clock, outbox, engine = site()
    client = app.test_client()
    started = client.get("/subscribe/embed/start").json["started"]
    clock.advance(10)
    for email in ("Reader@Example.ORG", "not an address"):
        data = {"email": email, "started": started}
        bot = post(client, {**data, "website": "x"}, {"Origin": SITE, **JSON})
        person = post(client, data, {"Origin": SITE, **JSON})
        assert (bot.status_code, bot.json) == (person.status_code, person.json)
    app.extensions["digest.mail"].join()
    assert queued_jobs(engine) == 1  # the person's valid one only


def test_min_seconds_zero_turns_the_time_check_off(site) -> None:
    app, _, outbox, _ = site(embed_min_seconds=0)
    resp = post(app.test_client(), {"email": "r@example.org", "started": ""}, {"Origin": SITE})
    assert resp.status_code == 200 and "Check your inbox" in resp.text
    app.extensions["digest.mail"].join()
    assert len(outbox) == 1
