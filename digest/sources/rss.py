"""RSS 0.9x/1.0/2.0 and Atom through feedparser; JSON Feed through `digest.sources.jsonfeed`.

Parsing never raises: problems become warnings that name the feed. XML that declares
entities or an internal DTD subset is refused before feedparser sees it (billion laughs,
external entities reading local files); a bare DOCTYPE naming a public DTD, as RSS 0.91
feeds carry, is accepted because nothing ever loads that DTD.
"""

from __future__ import annotations

import calendar
import io
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import ParseError

import feedparser
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring

from digest.models import Article
from digest.sources import SourceResult
from digest.sources.extract import find_credit, first_image, lede_source, plain_text, safe_url, sanitize_html
from digest.sources.http import Fetcher, FetchError
from digest.sources.jsonfeed import looks_like_json_feed, parse_json_feed

_ENTITY_DECL = re.compile(r"<!ENTITY", re.I)
_INTERNAL_SUBSET = re.compile(r"<!DOCTYPE[^>\[]*\[", re.I)
_ROOT_START = re.compile(r"<[A-Za-z_]")


def unsafe_xml_reason(data: bytes) -> str | None:
    """Why this XML must not be parsed (entity declarations, DTD internal subset), or None."""
    # Declarations live in the prolog, before the root element; looking only there lets an
    # article about XML quote "<!ENTITY" in its text.
    text = _scan_text(data)
    root = _ROOT_START.search(text)
    head = text[: root.start()] if root else text
    if _ENTITY_DECL.search(head):
        return "the XML declares entities (refused: entity expansion)"
    if _INTERNAL_SUBSET.search(head):
        return "the XML has a DTD internal subset (refused)"
    try:
        defused_fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except DefusedXmlException as err:
        return f"the XML was refused by defusedxml ({type(err).__name__})"
    except (ParseError, ValueError, LookupError):
        pass  # ill-formed XML is feedparser's to judge: its loose parser copes
    return None


def _scan_text(data: bytes) -> str:
    """Text to search for declarations, whatever the encoding (UTF-16 feeds exist)."""
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or data[:4] in (b"<\x00?\x00", b"\x00<\x00?"):
        try:
            return data.decode("utf-16", errors="replace")
        except UnicodeError:
            pass
    return data.decode("latin-1")


def parse_feed(data: bytes | str, *, name: str, base_url: str = "") -> SourceResult:
    """Articles from feed bytes (RSS, Atom, RDF or JSON Feed). Never raises for bad input."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    if looks_like_json_feed(data):
        return parse_json_feed(data, name=name, base_url=base_url)
    result = SourceResult(name=name)
    reason = unsafe_xml_reason(data)
    if reason:
        result.warnings.append(f"{name}: {reason}")
        return result
    try:
        # A file object, never bytes or str: given a string, feedparser would open it as a
        # URL or a local file name.
        headers = {"content-location": base_url} if base_url else None
        parsed = feedparser.parse(io.BytesIO(data), response_headers=headers)
    except Exception as err:  # noqa: BLE001  feedparser promises not to raise; a feed must not stop the run
        result.warnings.append(f"{name}: could not parse the feed ({type(err).__name__}: {err})")
        return result
    if parsed.get("bozo") and not parsed.entries:
        reason = parsed.get("bozo_exception") or "not a feed"
        result.warnings.append(f"{name}: could not parse the feed ({reason})")
        return result
    if not parsed.get("version") and not parsed.entries:
        result.warnings.append(f"{name}: not a feed (no RSS, Atom or JSON Feed found)")
        return result
    feed_link = safe_url(parsed.feed.get("link"), base_url) if parsed.get("feed") else None

    articles: list[Article | None] = []
    for entry in parsed.entries:
        try:
            articles.append(entry_article(entry, name, base_url=feed_link or base_url))
        except Exception as err:  # noqa: BLE001  one odd entry must not lose the others
            result.warnings.append(f"{name}: an entry could not be read ({type(err).__name__}: {err})")
    result.add(articles, unreadable="entries without an http(s) link or a date")
    return result


def read_feed_file(path: Path, *, name: str) -> SourceResult:
    try:
        data = path.read_bytes()
    except OSError as err:
        return SourceResult(name=name, warnings=[f"{name}: cannot read {path} ({err.strerror})"])
    return parse_feed(data, name=name)


def fetch_feed(url: str, fetcher: Fetcher, *, name: str) -> SourceResult:
    try:
        response = fetcher.get(url)
    except FetchError as err:
        return SourceResult(name=name, warnings=[f"{name}: cannot fetch {url} ({err.reason})"])
    return parse_feed(response.body, name=name, base_url=response.url)


def entry_article(entry: Any, source: str, *, base_url: str = "") -> Article | None:
    """One feedparser entry as an Article (title and lede plain text, URLs absolute http(s))."""
    link = safe_url(entry.get("link"), base_url)
    if not link:
        for alt in entry.get("links") or []:
            if alt.get("rel", "alternate") == "alternate":
                link = safe_url(alt.get("href"), base_url)
                if link:
                    break
    stamp = entry.get("published_parsed") or entry.get("updated_parsed")
    if not link or not stamp:
        return None
    published = datetime.fromtimestamp(calendar.timegm(stamp), tz=UTC)
    content_html = ""
    for part in entry.get("content") or []:
        if "html" in (part.get("type") or "html"):
            content_html = sanitize_html(part.get("value"), base_url=link)
            break
        content_html = sanitize_html(part.get("value"), base_url=link)
    summary_html = sanitize_html(entry.get("summary"), base_url=link)
    if summary_html and content_html and plain_text(summary_html) == plain_text(content_html):
        # feedparser fills summary from content for some feeds: then the content rules.
        summary_html = ""
    image_url, alt, width, height = _media_image(entry, link)
    if image_url is None:
        found = first_image(content_html or summary_html, link)
        if found:
            image_url, alt = found
    credit = None
    for c in entry.get("media_credit") or []:
        credit = plain_text(c.get("content")) or None
        if credit:
            break
    if credit is None:
        credit = find_credit(content_html) or find_credit(summary_html)
    title = plain_text(entry.get("title")) or link
    return Article(
        guid=str(entry.get("id") or link),
        url=link,
        title=title,
        lede=lede_source(summary_html, content_html),
        published=published,
        categories=_categories(entry),
        image_url=image_url,
        image_alt=plain_text(alt or entry.get("media_title") or "") or title,
        image_credit=credit,
        image_width=width,
        image_height=height,
        author=plain_text(entry.get("author")) or None,
        source=source,
    )


def _media_image(entry: Any, base_url: str) -> tuple[str | None, str, int | None, int | None]:
    """media:content, then media:thumbnail, then an image enclosure."""
    for media in entry.get("media_content") or []:
        medium = media.get("medium") or ""
        mime = media.get("type") or ""
        if medium == "image" or mime.startswith("image/") or (not medium and not mime):
            url = safe_url(media.get("url"), base_url)
            if url:
                return url, "", _int(media.get("width")), _int(media.get("height"))
    for thumb in entry.get("media_thumbnail") or []:
        url = safe_url(thumb.get("url"), base_url)
        if url:
            return url, "", _int(thumb.get("width")), _int(thumb.get("height"))
    for link in entry.get("links") or []:
        if link.get("rel") == "enclosure" and (link.get("type") or "").startswith("image/"):
            url = safe_url(link.get("href"), base_url)
            if url:
                return url, "", None, None
    return None, "", None, None


def _categories(entry: Any) -> tuple[str, ...]:
    out: list[str] = []
    for tag in entry.get("tags") or []:
        for value in (tag.get("term"), tag.get("label")):
            text = plain_text(value) if value else ""
            if text and text not in out:
                out.append(text)
    return tuple(out)


def _int(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if 0 < number < 100_000 else None
