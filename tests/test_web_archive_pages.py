"""Readers follow the round-up without subscribing: /archive (paged) and /archive/feed.xml (Atom)."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import pytest
from subscriber_helpers import TEST_SECRET

from digest.archive import write_archive
from digest.config import config_from_dict
from digest.db import make_engine, migrate
from digest.pipeline import prepare_issue
from digest.sources.rss import parse_feed
from digest.web import create_app
from digest.web.editions import FEED_ISSUES, PAGE_SIZE

BASE = "https://news.example.org"
# A reader's own link: /unsubscribe/<token>, /preferences/<token>, or a marker left unfilled.
PERSONAL = re.compile(r"/(unsubscribe|preferences|confirm)/[A-Za-z0-9_.-]+|@@digest:")


@pytest.fixture
def archive(tmp_path: Path):
    """Web editions of the last PAGE_SIZE + 3 weeks, written as a send writes them."""
    config = config_from_dict(
        {"newsletter": {"base_url": BASE}, "web": {"archive_dir": str(tmp_path / "archive")}}
    )
    now = datetime.now(UTC)
    issue = prepare_issue(config, now, draft=None)
    weeks = PAGE_SIZE + 3
    dates = [issue.digest.issue_date - timedelta(weeks=w) for w in range(weeks)]
    for day in reversed(dates):  # oldest written first, as sends happen
        write_archive(config, dataclasses.replace(issue.digest, issue_date=day), issue.renderer)
    engine = make_engine(f"sqlite:///{tmp_path / 'web.db'}")
    migrate(engine)
    client = create_app(config, engine, secret_key=TEST_SECRET).test_client()
    yield client, [d.isoformat() for d in dates]
    engine.dispose()


def test_archive_lists_issues_newest_first_in_pages(archive) -> None:
    client, dates = archive
    first = client.get("/archive")
    assert first.status_code == 200 and first.mimetype == "text/html"
    listed = re.findall(r'href="/archive/(\d{4}-\d{2}-\d{2})"', first.text)
    assert listed == dates[:PAGE_SIZE]
    assert 'rel="next" href="/archive?page=2"' in first.text and 'rel="prev"' not in first.text
    assert 'type="application/atom+xml"' in first.text  # feed readers discover the feed
    assert 'href="/archive"' in client.get("/subscribe").text  # found from the sign-up page

    second = client.get("/archive?page=2")
    assert re.findall(r'href="/archive/(\d{4}-\d{2}-\d{2})"', second.text) == dates[PAGE_SIZE:]
    assert 'rel="prev" href="/archive?page=1"' in second.text and 'rel="next"' not in second.text
    for bad in ("/archive?page=3", "/archive?page=0", "/archive?page=x"):
        assert client.get(bad).status_code == 404, bad


def test_archive_page_when_nothing_was_sent(tmp_path: Path) -> None:
    config = config_from_dict({"web": {"archive_dir": str(tmp_path / "none")}})
    engine = make_engine(f"sqlite:///{tmp_path / 'web.db'}")
    migrate(engine)
    client = create_app(config, engine, secret_key=TEST_SECRET).test_client()
    assert "No issue has been sent yet" in client.get("/archive").text
    assert feedparser.parse(client.get("/archive/feed.xml").data).entries == []
    engine.dispose()


def test_feed_carries_each_issue_with_its_full_html(archive) -> None:
    client, dates = archive
    resp = client.get("/archive/feed.xml")
    assert resp.status_code == 200 and resp.mimetype == "application/atom+xml"
    feed = feedparser.parse(resp.data)
    assert not feed.bozo, feed.get("bozo_exception")
    assert feed.version == "atom10"
    assert feed.feed.title and feed.feed.link == f"{BASE}/archive"
    assert [e.link for e in feed.entries] == [f"{BASE}/archive/{d}" for d in dates[:FEED_ISSUES]]
    page = client.get(f"/archive/{dates[0]}").text
    for entry in feed.entries:
        body = entry.content[0].value
        assert entry.content[0].type == "text/html"
        assert "Keep reading" in body and len(body) > 5000  # the whole issue, not a title
        assert entry.title and entry.title in page.replace("&#39;", "'")
    again = client.get("/archive/feed.xml", headers={"If-None-Match": resp.headers["ETag"]})
    assert again.status_code == 304 and again.data == b""  # pollers fetch it only when it changed
    # The project's own reader takes it as any other feed.
    parsed = parse_feed(resp.data, name="our archive", base_url=BASE)
    assert parsed.warnings == []
    assert [a.url for a in parsed.articles] == [f"{BASE}/archive/{d}" for d in dates[:FEED_ISSUES]]


def test_web_edition_carries_no_reader_links(archive) -> None:
    client, dates = archive
    feed = client.get("/archive/feed.xml").text
    assert "/preferences" in feed  # the generic page, which has no token, is there...
    assert not PERSONAL.search(feed)  # ...but no reader's own link
    for issue in dates[:2]:
        assert not PERSONAL.search(client.get(f"/archive/{issue}").text)
    assert not PERSONAL.search(client.get("/archive").text)
