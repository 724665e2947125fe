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
from urllib.parse import urlsplit, urlunsplit

from digest import __version__
from digest.config import Config, SourceConfig
from digest.models import Article
from digest.sources import SourceResult
from digest.sources.enrich import enrich_from_page, needs_enrichment
from digest.sources.extract import cut_words, plain_text, shorten
from digest.sources.files import read_folder
from digest.sources.http import Fetcher
from digest.sources.rss import fetch_feed, parse_feed, read_feed_file
from digest.sources.sample import sample_feed_xml
from digest.sources.wordpress import fetch_posts, read_posts_file

__all__ = [
    "CollectResult",
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


@dataclass
class CollectResult:
    articles: list[Article] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dropped: list[tuple[Article, str]] = field(default_factory=list)  # (article, why it was left out)
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
    try:
        if source.kind == "sample":
            return parse_feed(sample_feed_xml(now), name=name)
        if source.kind == "files":
            return read_folder(config.resolve_path(source.path), name=name, tz=config.tz)
        if source.kind == "rss":
            if source.url:
                return fetch_feed(source.url, fetcher or make_fetcher(config), name=name)
            return read_feed_file(config.resolve_path(source.path), name=name)
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
            return read_posts_file(config.resolve_path(source.path), name=name)
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
    regions = RegionMap(config.regions.order, config.regions.aliases)
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
    regions = RegionMap(
        config.regions.order, config.regions.aliases, config.regions.fallback, config.regions.ignore
    )
    result = CollectResult(window_start=start, window_end=end)
    kept: dict[str, int] = {}  # dedupe key -> index in result.articles
    for article in articles:
        if not (start < article.published <= end):
            result.dropped.append((article, "outside the week window"))
            continue
        canonical = canonical_url(article.url)
        # A GUID is unique only within its own feed (two sites may both number posts from 1), so
        # its key names the source; across sources only the canonical URL says "same article".
        keys = [f"url:{canonical}"] + ([f"guid:{article.source}:{article.guid}"] if article.guid else [])
        index = next((kept[k] for k in keys if k in kept), None)
        if index is not None:
            first = result.articles[index]
            if first.url == canonical:
                # Same article twice: keep the first, fill what it lacked from the second, whose
                # GUID now names it too (its feed may repeat that GUID).
                result.articles[index] = _merge(first, _clean(article, canonical, config))
                for k in keys:
                    kept.setdefault(k, index)
            # Else one feed repeated a GUID for another URL: the later copy is dropped, but its
            # image and credit belong to another page, so nothing is copied over.
            result.dropped.append((article, "duplicate"))
            continue
        ignored = regions.ignored(article.categories)
        if ignored:
            result.dropped.append((article, f"in ignored section {ignored!r}"))
            continue
        region = regions.region_for(article.categories)
        if region is None:
            result.dropped.append((article, f"no known region in {list(article.categories)}"))
            continue
        for k in keys:
            kept[k] = len(result.articles)
        result.articles.append(replace(_clean(article, canonical, config), region=region))
    return result


def _clean(article: Article, canonical: str, config: Config) -> Article:
    # Titles, credits and alt text are bounded like ledes: they repeat per story in the e-mail,
    # and one feed's 2,000-character caption must not push the issue over Gmail's clip size.
    c = config.collect
    credit = cut_words(plain_text(article.image_credit), c.credit_length) if article.image_credit else ""
    return replace(
        article,
        url=canonical,
        title=cut_words(plain_text(article.title) or canonical, c.title_length),
        lede=shorten(plain_text(article.lede), c.lede_length),
        image_alt=cut_words(plain_text(article.image_alt), c.alt_length),
        image_credit=credit or None,
        author=plain_text(article.author) if article.author else None,
        categories=tuple(plain_text(c) for c in article.categories),
    )


def _merge(first: Article, second: Article) -> Article:
    changes = {}
    for f in fields(Article):
        if f.name in ("region", "guid", "url", "source"):
            continue
        if not getattr(first, f.name) and getattr(second, f.name):
            changes[f.name] = getattr(second, f.name)
    if "image_url" in changes:
        # Size and alt text belong to the image they describe; the credit too, when known.
        for name in ("image_width", "image_height", "image_alt", "image_credit"):
            changes[name] = getattr(second, name)
    return replace(first, **changes) if changes else first


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


class RegionMap:
    """Categories to a configured region, case- and punctuation-insensitive, through aliases."""

    def __init__(
        self,
        order: Iterable[str],
        aliases: dict[str, tuple[str, ...]],
        fallback: str = "",
        ignore: Iterable[str] = (),
    ) -> None:
        self.lookup: dict[str, str] = {}
        for region in order:
            self.lookup[_norm(region)] = region
        for region, names in aliases.items():
            for alias in names:
                self.lookup.setdefault(_norm(alias), region)
        self.fallback = fallback or None
        self.ignore = {_norm(s): s for s in ignore}

    def ignored(self, categories: Iterable[str]) -> str | None:
        """The configured ignored section this article is in, if any."""
        for cat in categories:
            if _norm(cat) in self.ignore:
                return self.ignore[_norm(cat)]
        return None

    def region_for(self, categories: Iterable[str]) -> str | None:
        for cat in categories:
            region = self.lookup.get(_norm(cat))
            if region:
                return region
        return self.fallback


def _norm(label: str) -> str:
    return re.sub(r"[\W_]+", "", label.casefold())
