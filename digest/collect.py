"""Collect the week's articles: read every source, keep the week, dedupe, map regions, clean text.

The reading happens at the edges (`digest.sources`); `clean_articles` is pure.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

import nh3

from digest.config import Config, SourceConfig
from digest.models import Article
from digest.sources import SourceResult
from digest.sources.rss import parse_feed, read_feed_file
from digest.sources.sample import sample_feed_xml


@dataclass
class CollectResult:
    articles: list[Article] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dropped: list[tuple[Article, str]] = field(default_factory=list)  # (article, why it was left out)


def read_source(source: SourceConfig, config: Config, now: datetime) -> SourceResult:
    name = source.name or source.url or source.path or source.kind
    if source.kind == "sample":
        return parse_feed(sample_feed_xml(now), name=name)
    if source.kind == "rss" and source.path:
        return read_feed_file(config.resolve_path(source.path), name=name)
    return SourceResult(name=name, warnings=[f"{name}: source kind {source.kind!r} is not available yet"])


def collect(config: Config, now: datetime) -> CollectResult:
    """Read every configured source and return this week's cleaned, region-mapped articles."""
    results = [read_source(s, config, now) for s in config.sources]
    raw = [a for r in results for a in r.articles]
    out = clean_articles(raw, config, now)
    out.warnings[:0] = [w for r in results for w in r.warnings]
    return out


def clean_articles(articles: Iterable[Article], config: Config, now: datetime) -> CollectResult:
    start = now - timedelta(days=config.collect.window_days)
    regions = RegionMap(config.regions.order, config.regions.aliases, config.regions.fallback)
    result = CollectResult()
    seen: set[str] = set()
    for article in articles:
        if not (start <= article.published <= now):
            result.dropped.append((article, "outside the week window"))
            continue
        keys = {article.guid, article.url}
        if keys & seen:
            result.dropped.append((article, "duplicate"))
            continue
        seen |= keys
        region = regions.region_for(article.categories)
        if region is None:
            result.dropped.append((article, f"no known region in {list(article.categories)}"))
            continue
        result.articles.append(
            replace(
                article,
                region=region,
                title=plain_text(article.title),
                lede=shorten(plain_text(article.lede), config.collect.lede_length),
                image_credit=plain_text(article.image_credit) if article.image_credit else None,
            )
        )
    return result


class RegionMap:
    """Categories to a configured region, case- and punctuation-insensitive, through aliases."""

    def __init__(self, order: Iterable[str], aliases: dict[str, tuple[str, ...]], fallback: str = "") -> None:
        self.lookup: dict[str, str] = {}
        for region in order:
            self.lookup[_norm(region)] = region
        for region, names in aliases.items():
            for alias in names:
                self.lookup.setdefault(_norm(alias), region)
        self.fallback = fallback or None

    def region_for(self, categories: Iterable[str]) -> str | None:
        for cat in categories:
            region = self.lookup.get(_norm(cat))
            if region:
                return region
        return self.fallback


def _norm(label: str) -> str:
    return re.sub(r"[\W_]+", "", label.casefold())


def plain_text(fragment: str) -> str:
    """Feed HTML to plain text: sanitise first (nh3), then drop every tag and unescape."""
    cleaned = nh3.clean(fragment, tags=set())
    return re.sub(r"\s+", " ", html.unescape(cleaned)).strip()


def shorten(text: str, limit: int) -> str:
    """Cut at a sentence end, else a word boundary, within `limit` characters."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    sentence = max(cut.rfind(". "), cut.rfind("? "), cut.rfind("! "))
    if sentence >= limit // 2:
        return cut[: sentence + 1]
    return cut.rsplit(" ", 1)[0].rstrip(",;:") + "…"
