"""RSS / Atom / JSON-less feeds through feedparser. Parsing never raises: problems become warnings."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import feedparser

from digest.models import Article
from digest.sources import SourceResult


def parse_feed(data: bytes | str, *, name: str) -> SourceResult:
    """Articles from feed text. Fields are raw here (HTML ledes); `collect` cleans them."""
    result = SourceResult(name=name)
    parsed = feedparser.parse(data)
    if parsed.get("bozo") and not parsed.entries:
        reason = parsed.get("bozo_exception") or "not a feed"
        result.warnings.append(f"{name}: could not parse the feed ({reason})")
        return result
    for index, entry in enumerate(parsed.entries):
        article = _article(entry, name)
        if article is None:
            result.warnings.append(f"{name}: entry {index + 1} has no link or date; skipped")
            continue
        result.articles.append(article)
    return result


def read_feed_file(path: Path, *, name: str) -> SourceResult:
    try:
        return parse_feed(path.read_bytes(), name=name)
    except OSError as err:
        return SourceResult(name=name, warnings=[f"{name}: cannot read {path} ({err.strerror})"])


def _article(entry: Any, source: str) -> Article | None:
    link = entry.get("link") or ""
    stamp = entry.get("published_parsed") or entry.get("updated_parsed")
    if not link or not stamp:
        return None
    published = datetime.fromtimestamp(calendar.timegm(stamp), tz=UTC)
    image_url = width = height = None
    for media in entry.get("media_content") or []:
        if media.get("url") and media.get("medium", "image") == "image":
            image_url = media["url"]
            width = _int(media.get("width"))
            height = _int(media.get("height"))
            break
    if image_url is None:
        for thumb in entry.get("media_thumbnail") or []:
            if thumb.get("url"):
                image_url = thumb["url"]
                break
    credit = None
    credits = entry.get("media_credit") or []
    if credits and credits[0].get("content"):
        credit = credits[0]["content"]
    summary = entry.get("summary") or ""
    if not summary and entry.get("content"):
        summary = entry["content"][0].get("value", "")
    return Article(
        guid=entry.get("id") or link,
        url=link,
        title=entry.get("title") or link,
        lede=summary,
        published=published,
        categories=tuple(t.get("term", "") for t in entry.get("tags") or [] if t.get("term")),
        image_url=image_url,
        image_alt=(entry.get("media_title") or entry.get("title") or ""),
        image_credit=credit,
        image_width=width,
        image_height=height,
        author=entry.get("author"),
        source=source,
    )


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
