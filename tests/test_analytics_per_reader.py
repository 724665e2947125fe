"""[analytics] per_reader (off by default): story links then also name their reader, a click is
kept per subscriber, erased with them, and the subscribe page says so."""

from __future__ import annotations

import pytest
from analytics_helpers import BROWSER, LINK_SECRET, Clock, config_for, links_in, send_to, serving
from conftest import free_port
from sqlalchemy import select
from test_analytics_http import fetch

from digest.clicks import ReaderClick
from digest.config import config_from_dict
from digest.db import make_engine, migrate, session_factory
from digest.web import create_app
from subscribers import store

A, B = "a@example.org", "b@example.org"


@pytest.fixture(autouse=True)
def secret_key(monkeypatch) -> None:
    monkeypatch.setenv("DIGEST_SECRET_KEY", LINK_SECRET)


def reader_rows(db_path) -> list[tuple[str, int, int]]:
    engine = make_engine(f"sqlite:///{db_path}")
    try:
        with session_factory(engine)() as s:
            rows = s.scalars(select(ReaderClick))
            return [(store.get(s, r.subscriber_id).email, r.story, r.human) for r in rows]
    finally:
        engine.dispose()


def test_off_by_default_links_name_no_reader_and_nothing_is_kept_per_reader(tmp_path) -> None:
    port = free_port()
    config = config_for(f"http://127.0.0.1:{port}", tmp_path)
    assert config.analytics.per_reader is False
    sent = send_to(config, tmp_path, {A: None, B: None})
    base = f"http://127.0.0.1:{port}"
    assert "?r=" not in sent.html(A)
    with serving(config, sent.db_path, Clock(), port) as (_base, app, _engine):
        fetch(links_in(sent.text(A), base)[0] + "?r=forged")
        page = app.test_client().get("/subscribe").text
    assert reader_rows(sent.db_path) == []
    assert "per-reader-notice" not in page


def test_on_links_carry_the_reader_and_clicks_are_kept_until_erasure(tmp_path) -> None:
    port = free_port()
    config = config_for(f"http://127.0.0.1:{port}", tmp_path, per_reader=True)
    sent = send_to(config, tmp_path, {A: None, B: None})
    base = f"http://127.0.0.1:{port}"
    a_links, b_links = links_in(sent.text(A), base), links_in(sent.text(B), base)
    assert all("?r=" in u for u in a_links) and a_links != b_links  # personal links, one render
    assert [u.split("?")[0] for u in a_links] == [u.split("?")[0] for u in b_links]
    with serving(config, sent.db_path, Clock(), port) as (_base, app, _engine):
        assert fetch(a_links[0]).status == 302
        assert fetch(b_links[0].split("?")[0] + "?r=changed", agent=BROWSER + " b").status == 302
        page = app.test_client().get("/subscribe").text
    # One row, A's: B's changed token counted for the story only.
    assert [(email, human) for email, _story, human in reader_rows(sent.db_path)] == [(A, 1)]
    assert "which stories each subscriber opens" in page
    engine = make_engine(f"sqlite:///{sent.db_path}")
    with session_factory(engine).begin() as s:
        store.delete_subscriber(s, store.get_by_email(s, A), source="test")
    engine.dispose()
    assert reader_rows(sent.db_path) == []


def test_the_embedded_sign_up_form_says_so_too(tmp_path) -> None:
    site = "https://responsiblestatecraft.org"
    config = config_from_dict(
        {
            "newsletter": {"base_url": "https://news.example.org"},
            "web": {"embed_origins": [site]},
            "analytics": {"per_reader": True},
        }
    )
    engine = make_engine(f"sqlite:///{tmp_path / 'web.db'}")
    migrate(engine)
    client = create_app(config, engine, secret_key=LINK_SECRET, send_mail=[].append).test_client()
    step = client.post("/subscribe/embed", data={"email": "reader@example.org"}, headers={"Origin": site})
    engine.dispose()
    assert "One more step" in step.text and "which stories each subscriber opens" in step.text
