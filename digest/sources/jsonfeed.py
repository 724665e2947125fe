"""JSON Feed 1.0 and 1.1 (https://jsonfeed.org/version/1.1), which feedparser does not read.

Never raises for bad input: a broken feed or item becomes a warning naming the feed.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from digest.models import Article
from digest.sources import SourceResult
from digest.sources.extract import (
    find_credit,
    first_image,
    join_names,
    lede_source,
    plain_text,
    safe_url,
    sanitize_html,
)

VERSION_PREFIX = "https://jsonfeed.org/version/1"


def looks_like_json_feed(data: bytes) -> bool:
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"{")


def parse_json_feed(data: bytes, *, name: str, base_url: str = "") -> SourceResult:
    result = SourceResult(name=name)
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as err:
        result.warnings.append(f"{name}: not valid JSON ({err})")
        return result
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list):
        result.warnings.append(f"{name}: not a JSON Feed (no items list)")
        return result
    version = str(doc.get("version") or "")
    if not version.startswith(VERSION_PREFIX) and version not in ("1", "1.0", "1.1"):
        result.warnings.append(f"{name}: unknown JSON Feed version {version[:80]!r}; reading it anyway")
    base = safe_url(doc.get("home_page_url")) or base_url
    feed_author = _author(doc)
    result.add(
        (_item(item, name, base, feed_author) if isinstance(item, dict) else None for item in doc["items"]),
        unreadable="items without an http(s) url or a date",
    )
    return result


def _item(item: dict[str, Any], source: str, base: str, feed_author: str | None) -> Article | None:
    url = safe_url(_str(item.get("url")), base) or safe_url(_str(item.get("external_url")), base)
    published = parse_date(item.get("date_published")) or parse_date(item.get("date_modified"))
    if not url or published is None:
        return None
    content_html = sanitize_html(_str(item.get("content_html")), base_url=url)
    if not content_html and item.get("content_text"):
        content_html = "".join(
            f"<p>{_escape(p)}</p>" for p in _str(item.get("content_text")).split("\n\n") if p.strip()
        )
    summary_html = _escape(_str(item.get("summary")))
    image_url = safe_url(_str(item.get("image")), url) or safe_url(_str(item.get("banner_image")), url)
    alt = ""
    if image_url is None:
        found = first_image(content_html, url)
        if found:
            image_url, alt = found
    tags = item.get("tags") if isinstance(item.get("tags"), list) else []
    title = plain_text(_escape(_str(item.get("title")))) or url
    return Article(
        guid=_str(item.get("id")) or url,
        url=url,
        title=title,
        lede=lede_source(summary_html, content_html),
        published=published,
        categories=tuple(plain_text(_escape(t)) for t in tags if isinstance(t, str) and t.strip()),
        image_url=image_url,
        image_alt=plain_text(alt),  # JSON Feed has no field for it: only an <img alt> in the content
        image_credit=find_credit(content_html),
        author=_author(item) or feed_author,
        source=source,
    )


def parse_date(value: Any) -> datetime | None:
    """RFC 3339 as JSON Feed requires; a date without zone is taken as UTC."""
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip().replace("Z", "+00:00").replace("z", "+00:00")
    try:
        stamp = datetime.fromisoformat(text)
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _author(obj: dict[str, Any]) -> str | None:
    """1.1's `authors` (every name, as one byline), else 1.0's `author`."""
    authors = obj.get("authors")
    if isinstance(authors, list):
        names = [plain_text(_escape(_str(a.get("name")))) for a in authors if isinstance(a, dict)]
        if join_names(names):
            return join_names(names)
    author = obj.get("author")  # JSON Feed 1.0
    if isinstance(author, dict):
        return plain_text(_escape(_str(author.get("name")))) or None
    return None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _escape(text: str) -> str:
    # JSON Feed's text fields are plain text: escape so that plain_text gives them back as is.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
