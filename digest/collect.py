"""Collect the week's articles: read every source, keep the week, dedupe, map regions, clean text.

The reading happens at the edges (`digest.sources`, through one `Fetcher`); `clean_articles`
and everything it calls are pure. A source that fails gives a warning naming it; the others
still count.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

from digest import __version__
from digest.config import DEFAULT_FORMATS, Config, SourceConfig
from digest.models import Article
from digest.sources import SourceResult
from digest.sources.enrich import enrich_from_page, needs_enrichment
from digest.sources.extract import byline_names, cut_credit, cut_words, plain_text, shorten, useful_alt
from digest.sources.files import read_folder
from digest.sources.http import Fetcher
from digest.sources.rss import fetch_feed, parse_feed, read_feed_file
from digest.sources.sample import sample_feed_xml
from digest.sources.wordpress import fetch_posts, read_posts_file

__all__ = [
    "CollectResult",
    "LeftOut",
    "RegionMap",
    "canonical_url",
    "clean_articles",
    "collect",
    "plain_text",
    "shorten",
]

log = logging.getLogger(__name__)

# Query parameters that only track the click; two URLs differing only in these are one article.
TRACKING_PARAMS = re.compile(
    r"^(utm_\w+|fbclid|gclid|dclid|gbraid|wbraid|msclkid|mc_cid|mc_eid|_hsenc|_hsmi|mkt_tok|"
    r"oly_anon_id|oly_enc_id|igshid|yclid|twclid|ref|ref_src|cmpid|ncid|sr_share|s_cid|at_medium|at_campaign)$",
    re.I,
)


# Why a copy was dropped (the reasons in CollectResult.dropped).
OUTSIDE_WINDOW = "outside the week window"
DUPLICATE = "duplicate"
IGNORED_SECTION = "in ignored section"  # + " 'QIOSK'"
NO_REGION = "no known region in"  # + " ['Sports']"


class LeftOut(NamedTuple):
    """An article of the week that no region took: what staff must hear of, and the run records."""

    title: str
    url: str
    reason: str  # "no known region in [...]" or "in ignored section '...'"

    @property
    def ignored(self) -> bool:
        """Left out on purpose, by [regions] ignore (else: no region matched)."""
        return self.reason.startswith(IGNORED_SECTION)


@dataclass
class CollectResult:
    articles: list[Article] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Every copy not kept, and why: outside the window, duplicates, and the left-out ones.
    dropped: list[tuple[Article, str]] = field(default_factory=list)
    # Articles inside the week that no region took (once each, duplicates folded in), in feed order.
    left_out: list[LeftOut] = field(default_factory=list)
    window_start: datetime | None = None
    window_end: datetime | None = None

    def should_send(self, config: Config) -> bool:
        """A run with no article at all sends nothing, unless [collect] send_when_empty."""
        return bool(self.articles) or config.collect.send_when_empty


# --- the edge: reading sources ---------------------------------------------------------


def make_fetcher(config: Config) -> Fetcher:
    c = config.collect
    return Fetcher(
        timeout=c.fetch_timeout,
        max_bytes=c.fetch_max_bytes,
        user_agent=c.user_agent or f"digest/{__version__} (+{config.newsletter.base_url})",
        allow=c.fetch_allow,
        cache_dir=config.resolve_path(c.cache_dir) if c.cache_dir else None,
    )


def source_name(source: SourceConfig) -> str:
    return source.name or source.url or source.path or source.kind


def read_source(
    source: SourceConfig,
    config: Config,
    now: datetime,
    fetcher: Fetcher | None = None,
    *,
    since: datetime | None = None,
) -> SourceResult:
    """One source's articles and warnings. Never raises for a bad or unreachable source."""
    name = source_name(source)
    cap = config.collect.fetch_max_bytes  # local files get the cap of HTTP bodies
    try:
        if source.kind == "sample":
            return parse_feed(sample_feed_xml(now), name=name)
        if source.kind == "files":
            return read_folder(config.resolve_path(source.path), name=name, tz=config.tz, max_bytes=cap)
        if source.kind == "rss":
            if source.url:
                return fetch_feed(source.url, fetcher or make_fetcher(config), name=name)
            return read_feed_file(config.resolve_path(source.path), name=name, max_bytes=cap)
        if source.kind == "wordpress":
            if source.url:
                after = since or week_window(config, now)[0]
                return fetch_posts(
                    source.url,
                    fetcher or make_fetcher(config),
                    name=name,
                    after=after,
                    max_pages=source.max_pages,
                )
            return read_posts_file(config.resolve_path(source.path), name=name, max_bytes=cap)
    except Exception as err:  # noqa: BLE001  the promise: one broken source never stops the run
        log.exception("source %s failed", name)
        return SourceResult(
            name=name, warnings=[f"{name}: failed unexpectedly ({type(err).__name__}: {err})"]
        )
    return SourceResult(name=name, warnings=[f"{name}: unknown source kind {source.kind!r}"])


def collect(
    config: Config, now: datetime, *, since: datetime | None = None, fetcher: Fetcher | None = None
) -> CollectResult:
    """Read every configured source and return this week's cleaned, region-mapped articles.

    `now` is timezone-aware. `since` is the time of the last successful send, used when
    [collect] window = "since_last_send" (the caller knows it from the delivery ledger).
    """
    own_fetcher = fetcher is None and any(s.url or s.enrich for s in config.sources)
    if own_fetcher:
        fetcher = make_fetcher(config)
    try:
        warnings: list[str] = []
        start, end = week_window(config, now, since)
        if config.collect.window == "since_last_send" and since is None:
            warnings.append(
                f"no previous successful send is known; collecting the last {config.collect.window_days} days"
            )
        raw: list[Article] = []
        budget = config.collect.enrich_max_pages
        for source in config.sources:
            result = read_source(source, config, now, fetcher, since=start)
            warnings.extend(result.warnings)
            articles = result.articles
            if source.enrich and fetcher is not None:
                articles, more, budget = _enrich(articles, fetcher, start, end, budget, config)
                warnings.extend(f"{source_name(source)}: {w}" for w in more)
            raw.extend(articles)
        out = clean_articles(raw, config, now, since=since)
        out.warnings[:0] = warnings
        return out
    finally:
        if own_fetcher and fetcher is not None:
            fetcher.close()


def _enrich(
    articles: list[Article], fetcher: Fetcher, start: datetime, end: datetime, budget: int, config: Config
) -> tuple[list[Article], list[str], int]:
    # Without fallback, so that "no known region" counts as something the page could fix.
    regions = RegionMap.from_config(config, with_fallback=False)
    out: list[Article] = []
    warnings: list[str] = []
    over_budget = 0
    for article in articles:
        # Only this week's articles are worth a page fetch.
        has_region = regions.region_for(article.categories) is not None
        if start < article.published <= end and needs_enrichment(article, has_region=has_region):
            if budget > 0:
                budget -= 1
                article, warning = enrich_from_page(article, fetcher)
                if warning:
                    warnings.append(warning.removeprefix(f"{article.source}: "))
            else:
                over_budget += 1
        out.append(article)
    if over_budget:
        warnings.append(f"{over_budget} articles not enriched: enrich_max_pages was reached")
    return out, warnings, budget


# --- the pure core ---------------------------------------------------------------------


def week_window(config: Config, now: datetime, since: datetime | None = None) -> tuple[datetime, datetime]:
    """(start, end] of the articles to collect.

    "days": the same wall-clock time `window_days` calendar days before `now` in the
    newsletter's time zone, so a weekly run at 09:00 local covers exactly the time since the
    previous one, across daylight-saving changes too. "since_last_send": from `since`.
    """
    if now.tzinfo is None:
        raise ValueError("collect needs a timezone-aware `now`")
    if config.collect.window == "since_last_send" and since is not None:
        return since, now
    local = now.astimezone(config.tz)
    # Arithmetic on an aware datetime is wall-clock arithmetic in its zone, and zoneinfo gives
    # the result the UTC offset of its own day: 7 days back across a DST change is 167 or 169 h.
    start = local - timedelta(days=config.collect.window_days)
    return start, now


def clean_articles(
    articles: Iterable[Article], config: Config, now: datetime, *, since: datetime | None = None
) -> CollectResult:
    start, end = week_window(config, now, since)
    regions = RegionMap.from_config(config)
    result = CollectResult(window_start=start, window_end=end)
    # Dedupe first, regions after: an article left out (no region, an ignored section) still
    # owns its URL and GUID, so a poorer copy of it elsewhere can never take its place.
    seen: list[Article] = []  # one per article, its copies merged into it
    index_of: dict[str, int] = {}  # dedupe key -> index in seen
    for article in articles:
        if not (start < article.published <= end):
            result.dropped.append((article, OUTSIDE_WINDOW))
            continue
        canonical = canonical_url(article.url)
        # A GUID is unique only within its own feed (two sites may both number posts from 1), so
        # its key names the source; across sources only the canonical URL says "same article".
        keys = [f"url:{canonical}"] + ([f"guid:{article.source}:{article.guid}"] if article.guid else [])
        index = next((index_of[k] for k in keys if k in index_of), None)
        if index is not None:
            first = seen[index]
            if first.url == canonical:
                # Same article twice: keep the first, fill what it lacked from the second, whose
                # GUID now names it too (its feed may repeat that GUID).
                seen[index] = _merge(first, _clean(article, canonical, config))
                for k in keys:
                    index_of.setdefault(k, index)
            # Else one feed repeated a GUID for another URL: the later copy is dropped, but its
            # image and credit belong to another page, so nothing is copied over.
            result.dropped.append((article, DUPLICATE))
            continue
        for k in keys:
            index_of[k] = len(seen)
        seen.append(_clean(article, canonical, config))
    for article in seen:
        ignored = regions.ignored(article.categories)
        if ignored:
            _leave_out(result, article, f"{IGNORED_SECTION} {ignored!r}")
            continue
        region = regions.region_for(article.categories)
        if region is None:
            _leave_out(result, article, f"{NO_REGION} {list(article.categories)}")
            continue
        label = article.format_label or regions.format_for(article.categories)
        result.articles.append(replace(article, region=region, format_label=label))
    return result


def _leave_out(result: CollectResult, article: Article, why: str) -> None:
    result.dropped.append((article, why))
    result.left_out.append(LeftOut(article.title, article.url, why))


def _clean(article: Article, canonical: str, config: Config) -> Article:
    # Titles, credits and alt text are bounded like ledes: they repeat per story in the e-mail,
    # and one feed's 2,000-character caption must not push the issue over Gmail's clip size.
    c = config.collect
    credit = cut_credit(plain_text(article.image_credit), c.credit_length) if article.image_credit else ""
    title = cut_words(plain_text(article.title) or canonical, c.title_length)
    return replace(
        article,
        url=canonical,
        title=title,
        lede=shorten(plain_text(article.lede), c.lede_length),
        image_alt=cut_words(useful_alt(plain_text(article.image_alt), title=title), c.alt_length),
        image_credit=credit or None,
        author=byline_names(plain_text(article.author)) if article.author else None,
        categories=tuple(plain_text(c) for c in article.categories),
        format_label=plain_text(article.format_label),
    )


# The image fields describe one photo: they move together, never one without the others.
_IMAGE_FIELDS = ("image_url", "image_width", "image_height", "image_alt", "image_credit")


def _merge(first: Article, second: Article) -> Article:
    changes: dict[str, object] = {}
    for f in fields(Article):
        if f.name in ("region", "guid", "url", "source", "categories", *_IMAGE_FIELDS):
            continue
        if not getattr(first, f.name) and getattr(second, f.name):
            changes[f.name] = getattr(second, f.name)
    if not first.image_url and second.image_url:
        changes.update((name, getattr(second, name)) for name in _IMAGE_FIELDS)
    elif first.image_url:
        same_photo = second.image_url == first.image_url
        for name in _IMAGE_FIELDS[1:]:
            # A credit may come from any copy (the same article's photo, often another size of
            # it); size and alt text only from a copy of the very same image.
            if not getattr(first, name) and getattr(second, name) and (same_photo or name == "image_credit"):
                changes[name] = getattr(second, name)
    # Both copies describe the same page: a section either names counts (so an ignored one too).
    more = tuple(c for c in second.categories if c not in first.categories)
    if more:
        changes["categories"] = first.categories + more
    return replace(first, **changes) if changes else first  # type: ignore[arg-type]


def canonical_url(url: str) -> str:
    """The URL without tracking parameters or fragment; scheme and host lower-case."""
    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    port = parts.port if parts.port and parts.port not in (80, 443) else None
    netloc = f"{host}:{port}" if port else host
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    # Filter the raw pairs rather than re-encode them, so the URL readers get stays as the site wrote it.
    query = "&".join(p for p in parts.query.split("&") if p and not TRACKING_PARAMS.match(p.split("=", 1)[0]))
    return urlunsplit((parts.scheme.lower(), netloc, parts.path or "/", query, ""))


# Where sites split a label into a format and a section: "Analysis | Middle East",
# "Opinion / Africa", "Reporting - Europe", "News > Middle East > Iran". A slash or a dash
# splits only with spaces around it, so "Asia-Pacific" and "Israel/Palestine" stay whole.
_PATH_SEPARATOR = re.compile(r"\s*[>»›]\s*")
_LABEL_SEPARATOR = re.compile(r"\s*\|\s*|\s+[/–—-]\s+")


@dataclass(frozen=True)
class Label:
    """One category as the site wrote it, split into its parts."""

    text: str
    parts: tuple[str, ...]  # (text,) when it has no separator
    format: str  # the configured spelling of the known format among the parts, or ""
    sections: tuple[str, ...]  # the other parts, the most specific first (the end of a "a > b" path)


class RegionMap:
    """Categories to a configured region, case- and punctuation-insensitive, through aliases.

    A category may be a whole label, "<format> <sep> <section>" in either order (see `label`):
    the whole label is looked up first, then each section part; a known format is never a
    region. `ignore` applies to every spelling: the whole label, and each of its parts.
    """

    def __init__(
        self,
        order: Iterable[str],
        aliases: dict[str, tuple[str, ...]],
        fallback: str = "",
        ignore: Iterable[str] = (),
        formats: Iterable[str] = DEFAULT_FORMATS,
    ) -> None:
        self.lookup: dict[str, str] = {}
        for region in order:
            self.lookup[_norm(region)] = region
        for region, names in aliases.items():
            for alias in names:
                self.lookup.setdefault(_norm(alias), region)
        self.fallback = fallback or None
        self.ignore = {_norm(s): s for s in ignore}
        self.formats = {_norm(f): f for f in formats}

    @classmethod
    def from_config(cls, config: Config, *, with_fallback: bool = True) -> RegionMap:
        r = config.regions
        return cls(r.order, r.aliases, r.fallback if with_fallback else "", r.ignore, r.formats)

    def label(self, category: str) -> Label:
        path = [p for p in _PATH_SEPARATOR.split(category) if p.strip()]
        if len(path) > 1:
            # A breadcrumb goes from the general to the particular: the deepest level first.
            parts = [p.strip() for p in path]
            candidates = list(reversed(parts))
        else:
            parts = [p.strip() for p in _LABEL_SEPARATOR.split(category) if p.strip()] or [category]
            candidates = parts
        known = [self.formats[_norm(p)] for p in parts if _norm(p) in self.formats]
        sections = tuple(p for p in candidates if _norm(p) not in self.formats)
        return Label(category, tuple(parts), known[0] if known else "", sections)

    def ignored(self, categories: Iterable[str]) -> str | None:
        """The configured ignored section this article is in, by any spelling, if any."""
        for cat in categories:
            for spelling in (cat, *self.label(cat).parts):
                if _norm(spelling) in self.ignore:
                    return self.ignore[_norm(spelling)]
        return None

    def region_for(self, categories: Iterable[str]) -> str | None:
        for cat in categories:
            label = self.label(cat)
            for spelling in (cat, *label.sections):
                region = self.lookup.get(_norm(spelling))
                if region:
                    return region
        return self.fallback

    def format_for(self, categories: Iterable[str]) -> str:
        """The first known format among the categories ("Analysis"), or ""."""
        for cat in categories:
            found = self.label(cat).format
            if found:
                return found
        return ""


def _norm(label: str) -> str:
    return re.sub(r"[\W_]+", "", label.casefold())
