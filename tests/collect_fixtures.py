"""Shared helpers for the collect, source and fetcher tests (not conftest: the lead owns that)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from shared_data import TESTDATA

from digest.config import Config, config_from_dict
from digest.models import Article
from digest.sources.http import Fetcher

FEEDS = TESTDATA / "feeds"

NOW = datetime(2025, 11, 7, 14, 0, tzinfo=UTC)  # a Friday, 09:00 in New York


def feeds_dir() -> Path:
    if not FEEDS.is_dir():
        pytest.skip(f"shared feed fixtures not found at {FEEDS} (set DIGEST_TESTDATA)")
    return FEEDS


def local_fetcher(**kwargs: Any) -> Fetcher:
    """A fetcher allowed to reach 127.0.0.1 only (the fetcher refuses loopback by default)."""
    kwargs.setdefault("allow", ("127.0.0.1",))
    kwargs.setdefault("timeout", 5.0)
    return Fetcher(**kwargs)


def make_config(tmp_path: Path | None = None, **sections: Any) -> Config:
    """A Config from TOML-shaped dicts; paths resolve against tmp_path."""
    config = config_from_dict(sections)
    if tmp_path is not None:
        from dataclasses import replace

        config = replace(config, path=str(tmp_path / "digest.toml"))
    return config


def article(**kwargs: Any) -> Article:
    defaults: dict[str, Any] = {
        "guid": "g1",
        "url": "https://example.org/a/",
        "title": "A title",
        "lede": "A lede.",
        "published": datetime(2025, 11, 6, 12, 0, tzinfo=UTC),
        "categories": ("Middle East",),
    }
    defaults.update(kwargs)
    return Article(**defaults)


def rss(items: str, extra_ns: str = "") -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/" '
        f'xmlns:content="http://purl.org/rss/1.0/modules/content/" {extra_ns}>'
        f"<channel><title>T</title><link>https://example.org/</link><description>d</description>{items}"
        "</channel></rss>"
    ).encode()


def rss_item(
    slug: str,
    *,
    date: str = "Thu, 06 Nov 2025 12:00:00 GMT",
    categories: tuple[str, ...] = ("Middle East",),
    body: str = "",
    description: str = "",
    guid: str | None = None,
) -> str:
    from xml.sax.saxutils import escape

    cats = "".join(f"<category>{escape(c)}</category>" for c in categories)
    desc = f"<description>{escape(description)}</description>" if description else ""
    content = f"<content:encoded>{escape(body)}</content:encoded>" if body else ""
    return (
        f"<item><title>{slug}</title><link>https://example.org/{slug}/</link>"
        f"<guid>{escape(guid or 'https://example.org/?p=' + slug)}</guid><pubDate>{date}</pubDate>"
        f"{cats}{desc}{content}</item>"
    )


@pytest.fixture(scope="module")
def _local_server_module():
    from pytest_httpserver import HTTPServer

    # Our own server on 127.0.0.1 (not pytest-httpserver's shared "localhost" one): the
    # fetcher refuses ::1 unless allowed, and tests allow exactly 127.0.0.1.
    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    yield server
    server.clear()
    if server.is_running():
        server.stop()


@pytest.fixture
def local_server(_local_server_module):
    _local_server_module.clear()
    yield _local_server_module
    _local_server_module.clear()
