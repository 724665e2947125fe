"""RSS 0.9x/1.0/2.0 and Atom through feedparser; JSON Feed through `digest.sources.jsonfeed`.

Parsing never raises: problems become warnings that name the feed. XML that declares
entities or an internal DTD subset is refused before feedparser sees it (billion laughs,
external entities reading local files); a bare DOCTYPE naming a public DTD, as RSS 0.91
feeds carry, is accepted because nothing ever loads that DTD.
"""

from __future__ import annotations

import calendar
import html
import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import ParseError
from xml.sax import SAXException, SAXParseException

import feedparser
from defusedxml import DefusedXmlException
from defusedxml.ElementTree import fromstring as defused_fromstring

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
from digest.sources.http import DEFAULT_MAX_BYTES, Fetcher, FetchError
from digest.sources.jsonfeed import looks_like_json_feed, parse_json_feed
from digest.sources.local import FileTooBig, read_capped, too_big_warning

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
    error = parsed.get("bozo_exception") if parsed.get("bozo") else None
    if isinstance(error, SAXException):
        # feedparser's loose parser read what it could: say so, or a cut-off download passes
        # for a short week.
        where = f"line {error.getLineNumber()}: " if isinstance(error, SAXParseException) else ""
        result.warnings.append(
            f"{name}: the feed is ill-formed or cut short ({where}{error.getMessage()}); "
            f"{len(parsed.entries)} entries read"
        )
    feed_link = safe_url(parsed.feed.get("link"), base_url) if parsed.get("feed") else None
    extras = media_extras(data)
    if extras is not None and len(extras) != len(parsed.entries):
        extras = None  # feedparser saw other items than the XML parser: do not pair them up

    articles: list[Article | None] = []
    for i, entry in enumerate(parsed.entries):
        try:
            extra = extras[i] if extras is not None else ItemExtras()
            articles.append(entry_article(entry, name, base_url=feed_link or base_url, extras=extra))
        except Exception as err:  # noqa: BLE001  one odd entry must not lose the others
            result.warnings.append(f"{name}: an entry could not be read ({type(err).__name__}: {err})")
    result.add(articles, unreadable="entries without an http(s) link or a date")
    return result


def read_feed_file(path: Path, *, name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> SourceResult:
    try:
        data = read_capped(path, max_bytes)
    except FileTooBig as err:
        return SourceResult(name=name, warnings=[too_big_warning(name, err)])
    except OSError as err:
        return SourceResult(name=name, warnings=[f"{name}: cannot read {path} ({err.strerror})"])
    return parse_feed(data, name=name)


def fetch_feed(url: str, fetcher: Fetcher, *, name: str) -> SourceResult:
    try:
        response = fetcher.get(url)
    except FetchError as err:
        return SourceResult(name=name, warnings=[f"{name}: cannot fetch {url} ({err.reason})"])
    result = parse_feed(response.body, name=name, base_url=response.url)
    if not result.articles and _is_html_page(response.content_type, response.body):
        # feedparser's own words ("syntax error", "no Content-type specified") would hide that
        # this URL is a web page: a site's home or article page given instead of its feed.
        result.warnings = [html_page_warning(name, response.url, response.content_type, response.body)]
    return result


_HTML_START = re.compile(
    rb"^(?:\xef\xbb\xbf)?\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html[\s>]|head[\s>])", re.I | re.S
)
_FEED_LINK = re.compile(
    r"<link\b(?=[^>]*\brel=[\"']?alternate)(?=[^>]*\btype=[\"']?application/(?:rss|atom|feed)\+(?:xml|json))"
    r"[^>]*\bhref=[\"']?([^\"'\s>]+)",
    re.I,
)


_FEED_ROOT = re.compile(rb"<(?:[\w-]+:)?(?:rss|feed|RDF)[\s>]")


def _is_html_page(content_type: str, body: bytes) -> bool:
    """A web page, not a (broken) feed that a server labelled text/html."""
    head = body[:2048]
    if _HTML_START.match(head):
        return True
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime in ("text/html", "application/xhtml+xml") and not _FEED_ROOT.search(head)


def html_page_warning(name: str, url: str, content_type: str, body: bytes) -> str:
    """What to say when a feed URL answers a web page: the URL, what it sent, and the feed it names."""
    sent = f"Content-Type {content_type}" if content_type else "no Content-Type"
    warning = f"{name}: {url} returned an HTML page ({sent}), not a feed"
    head = body[:65536].decode("utf-8", errors="replace")
    m = _FEED_LINK.search(head)
    if m:
        feed = safe_url(html.unescape(m.group(1)), url)
        if feed:
            warning += f"; the page names its feed at {feed}"
    return warning


@dataclass(frozen=True)
class ItemExtras:
    """What feedparser loses of one item, read from the XML itself."""

    media_description: str = ""  # media:description of its image: the photo's caption
    description: str = ""  # its own <description> / <summary>, which feedparser may overwrite


MEDIA_NAMESPACES = ("http://search.yahoo.com/mrss/", "http://search.yahoo.com/mrss")
_ITEM_TAGS = {
    "item",
    "{http://purl.org/rss/1.0/}item",
    "{http://www.w3.org/2005/Atom}entry",
    "{http://purl.org/atom/ns#}entry",
}
_OWN_SUMMARY_TAGS = (
    "description",
    "{http://purl.org/rss/1.0/}description",
    "{http://www.w3.org/2005/Atom}summary",
    "{http://purl.org/atom/ns#}summary",
)


def media_extras(data: bytes) -> list[ItemExtras] | None:
    """Per item, in document order, its image's media:description; None when the XML is not well-formed.

    feedparser files media:description under the entry's summary (overwriting the item's own
    description when it comes later) and keeps no caption of the image.
    """
    try:
        root = defused_fromstring(data, forbid_dtd=False, forbid_entities=True, forbid_external=True)
    except (DefusedXmlException, ParseError, ValueError, LookupError):
        return None
    out: list[ItemExtras] = []
    for item in root.iter():
        if item.tag not in _ITEM_TAGS:
            continue
        caption = ""
        for ns in MEDIA_NAMESPACES:
            m = f"{{{ns}}}"
            # On the image (media:content, media:group) first, then on the item itself.
            paths = (f"{m}content/{m}description", f"{m}group/{m}description",
                     f"{m}group/{m}content/{m}description", f"{m}description")  # fmt: skip
            for path in paths:
                found = item.find(path)
                if found is not None and (found.text or "").strip():
                    caption = found.text or ""
                    break
            if caption:
                break
        own = next((e.text or "" for t in _OWN_SUMMARY_TAGS if (e := item.find(t)) is not None), "")
        out.append(ItemExtras(media_description=caption.strip(), description=own))
    return out


def entry_article(
    entry: Any, source: str, *, base_url: str = "", extras: ItemExtras | None = None
) -> Article | None:
    """One feedparser entry as an Article (title and lede plain text, URLs absolute http(s))."""
    extras = extras or ItemExtras()
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
    caption = plain_text(extras.media_description)
    content_parts = entry.get("content") or []
    if caption and extras.description.strip() and plain_text(entry.get("summary")) == caption:
        # feedparser put the photo's media:description where the summary goes, and the item's
        # own description into content: put them back. (With no description of its own, the
        # media's is the only summary there is, and stays one.)
        entry = dict(entry, summary=extras.description)
        own = plain_text(extras.description)
        content_parts = [p for p in content_parts if plain_text(p.get("value")) != own]
    content_html = ""
    for part in content_parts:
        if "html" in (part.get("type") or "html"):
            content_html = sanitize_html(part.get("value"), base_url=link)
            break
        content_html = sanitize_html(part.get("value"), base_url=link)
    summary_html = sanitize_html(entry.get("summary"), base_url=link)
    if summary_html and content_html and plain_text(summary_html) == plain_text(content_html):
        # feedparser fills summary from content for some feeds: then the content rules.
        summary_html = ""
    image_url, width, height = _media_image(entry, link)
    alt = caption if image_url else ""
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
        image_alt=plain_text(alt),  # none in the feed: none in the e-mail (the title is beside it)
        image_credit=credit,
        image_width=width,
        image_height=height,
        author=entry_byline(entry),
        source=source,
    )


def entry_byline(entry: Any) -> str | None:
    """RSS author / dc:creator (each), Atom author (each): their names, joined as a byline."""
    names = [plain_text(a.get("name")) for a in entry.get("authors") or [] if isinstance(a, dict)]
    detail = entry.get("author_detail")
    if not any(names) and isinstance(detail, dict):
        names = [plain_text(detail.get("name"))]
    if not any(names):
        names = [plain_text(entry.get("author"))]
    return join_names(names) or None


def _media_image(entry: Any, base_url: str) -> tuple[str | None, int | None, int | None]:
    """media:content, then media:thumbnail, then an image enclosure: (url, width, height)."""
    for media in entry.get("media_content") or []:
        medium = media.get("medium") or ""
        mime = media.get("type") or ""
        if medium == "image" or mime.startswith("image/") or (not medium and not mime):
            url = safe_url(media.get("url"), base_url)
            if url:
                return url, _int(media.get("width")), _int(media.get("height"))
    for thumb in entry.get("media_thumbnail") or []:
        url = safe_url(thumb.get("url"), base_url)
        if url:
            return url, _int(thumb.get("width")), _int(thumb.get("height"))
    for link in entry.get("links") or []:
        if link.get("rel") == "enclosure" and (link.get("type") or "").startswith("image/"):
            url = safe_url(link.get("href"), base_url)
            if url:
                return url, None, None
    return None, None, None


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
