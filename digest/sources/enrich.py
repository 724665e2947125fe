"""Fill what a feed left out (image, credit, section, lede) from the article page itself.

Reads OpenGraph `<meta property="og:...">` / `article:...` tags and JSON-LD
(`NewsArticle` and its kin: `articleSection`, `image`, `author`, `datePublished`).

Why a small parser on the stdlib `html.parser` and not extruct: extruct reads six syntaxes
and pulls in lxml, rdflib, pyrdfa3, mf2py, w3lib, html-text and jstyleson; we read two,
which are `<meta>` tags and `<script type="application/ld+json">` blocks. This module is a
hundred lines with no dependency, and the page it reads already went through the fetcher's
size cap and timeout.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

from digest.models import Article
from digest.sources.extract import join_names, plain_text, safe_url
from digest.sources.http import Fetcher, FetchError

ARTICLE_TYPES = {"NewsArticle", "Article", "ReportageNewsArticle", "AnalysisNewsArticle",
                 "OpinionNewsArticle", "BlogPosting", "Report", "ScholarlyArticle"}  # fmt: skip
ACCEPT_HTML = "text/html, application/xhtml+xml;q=0.9, */*;q=0.1"


@dataclass(frozen=True)
class PageMeta:
    image_url: str | None = None
    image_alt: str = ""
    image_credit: str | None = None
    section: tuple[str, ...] = ()
    description: str = ""
    author: str | None = None
    title: str = ""  # og:title or the JSON-LD headline (a story staff add by URL needs one)
    published: str = ""  # article:published_time or datePublished, as the page gives it


class _MetaParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.meta: dict[str, str] = {}
        self.sections: list[str] = []
        self.ld_blocks: list[str] = []
        self._in_ld = False
        self._ld: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): v or "" for k, v in attrs}
        if tag == "meta":
            key = (a.get("property") or a.get("name") or "").strip().lower()
            if key == "article:section":
                self.sections.append(a.get("content", ""))
            elif key and key not in self.meta:
                self.meta[key] = a.get("content", "")
        elif tag == "script" and a.get("type", "").strip().lower() == "application/ld+json":
            self._in_ld = True
            self._ld = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "script" and self._in_ld:
            self._in_ld = False
            self.ld_blocks.append("".join(self._ld))

    def handle_data(self, data: str) -> None:
        if self._in_ld:
            self._ld.append(data)


def parse_page(page: str, base_url: str) -> PageMeta:
    """OpenGraph and JSON-LD facts from an HTML page. Never raises for bad input."""
    parser = _MetaParser()
    try:
        parser.feed(page)
        parser.close()
    except Exception:  # noqa: BLE001  html.parser is lenient; anything else means "nothing found"
        return PageMeta()
    ld = _news_article(parser.ld_blocks)
    og = parser.meta
    image, alt, credit = _ld_image(ld.get("image"), base_url)
    image = image or safe_url(og.get("og:image:secure_url") or og.get("og:image"), base_url)
    alt = alt or og.get("og:image:alt", "")
    sections = [s for s in parser.sections if s.strip()] or _as_list(ld.get("articleSection"))
    return PageMeta(
        image_url=image,
        image_alt=plain_text(html.escape(alt)),
        image_credit=plain_text(html.escape(credit)) or None,
        section=tuple(plain_text(html.escape(s)) for s in sections if isinstance(s, str) and s.strip()),
        description=plain_text(
            html.escape(og.get("og:description") or _str(ld.get("description")) or og.get("description", ""))
        ),
        author=plain_text(html.escape(_ld_author(ld.get("author")) or og.get("author", ""))) or None,
        title=plain_text(
            html.escape(og.get("og:title") or _str(ld.get("headline")) or og.get("twitter:title", ""))
        ),
        published=og.get("article:published_time") or _str(ld.get("datePublished")),
    )


def needs_enrichment(article: Article, *, has_region: bool = True) -> bool:
    """Whether the page could add something: an image, credit or lede, or a section when the
    feed's categories name no known region."""
    return not (article.image_url and article.image_credit and article.lede and has_region)


def enrich(article: Article, meta: PageMeta) -> Article:
    """Only what the feed lacked; what the feed said wins."""
    if article.image_url is None:
        image_url, alt = meta.image_url, meta.image_alt or article.image_alt
        credit = article.image_credit or meta.image_credit
    else:
        # A credit and an alt text belong to one photo: the page's only if it shows the same one.
        same_photo = meta.image_url == article.image_url
        image_url = article.image_url
        alt = article.image_alt or (meta.image_alt if same_photo else "")
        credit = article.image_credit or (meta.image_credit if same_photo else None)
    return replace(
        article,
        image_url=image_url,
        image_alt=alt,
        image_credit=credit,
        # The page's sections after the feed's: region mapping takes the first that matches.
        categories=article.categories + tuple(s for s in meta.section if s not in article.categories),
        lede=article.lede or meta.description,
        author=article.author or meta.author,
    )


def enrich_from_page(article: Article, fetcher: Fetcher) -> tuple[Article, str | None]:
    """The article with the page's facts added, and a warning if the page could not be read."""
    try:
        response = fetcher.get(article.url, accept=ACCEPT_HTML, conditional=False)
    except FetchError as err:
        return article, f"{article.source}: cannot read {article.url} for enrichment ({err.reason})"
    page = response.body.decode(_charset(response.content_type), errors="replace")
    return enrich(article, parse_page(page, response.url)), None


def _charset(content_type: str) -> str:
    for part in content_type.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            name = value.strip().strip('"')
            try:
                "".encode(name)
                return name
            except LookupError:
                break
    return "utf-8"


def _news_article(blocks: list[str]) -> dict[str, Any]:
    for block in blocks:
        try:
            data = json.loads(block)
        except ValueError:
            continue
        for node in _nodes(data):
            types = node.get("@type")
            types = types if isinstance(types, list) else [types]
            if any(t in ARTICLE_TYPES for t in types if isinstance(t, str)):
                return node
    return {}


def _nodes(data: Any) -> list[dict[str, Any]]:
    """Top-level objects, lists of objects and @graph members (how Yoast and others nest)."""
    out: list[dict[str, Any]] = []
    for item in data if isinstance(data, list) else [data]:
        if isinstance(item, dict):
            out.append(item)
            graph = item.get("@graph")
            if isinstance(graph, list):
                out.extend(g for g in graph if isinstance(g, dict))
    return out


def _ld_image(value: Any, base: str) -> tuple[str | None, str, str]:
    if isinstance(value, list):
        value = value[0] if value else None
    if isinstance(value, str):
        return safe_url(value, base), "", ""
    if isinstance(value, dict):
        credit = _str(value.get("creditText")) or _ld_author(value.get("copyrightHolder")) or ""
        alt = _str(value.get("caption")) or _str(value.get("name"))
        return safe_url(_str(value.get("url") or value.get("contentUrl")), base), alt, credit
    return None, "", ""


def _ld_author(value: Any) -> str:
    if isinstance(value, list):
        return join_names([_ld_author(v) for v in value])
    if isinstance(value, dict):
        return _str(value.get("name"))
    return _str(value)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value] if value else []


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def story_from_page(url: str, region: str, fetcher: Fetcher, *, now: datetime, source: str) -> Article:
    """A story staff add by URL (the console's curation page): its page read as enrichment reads
    it, title and date included. FetchError (naming the URL) when the page cannot be read."""
    response = fetcher.get(url, accept=ACCEPT_HTML, conditional=False)
    meta = parse_page(response.body.decode(_charset(response.content_type), errors="replace"), response.url)
    story = Article(
        guid=url,
        url=url,
        title=meta.title or url,
        lede="",
        published=_when(meta.published) or now,
        region=region,
        source=source,
    )
    return enrich(story, meta)


def _when(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
