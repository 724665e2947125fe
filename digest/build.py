"""Digest from articles: one section per region in the configured order, a lead story, caps.

Pure: no I/O, no clock (the issue date is passed in).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import date

from digest.models import Article, Digest, Section, Teaser, newest


def build_digest(
    articles: Iterable[Article],
    *,
    newsletter: str,
    issue_date: date,
    region_order: Sequence[str],
    max_per_region: int | None = None,
    with_lead: bool = True,
) -> Digest:
    """Group articles by region (newest first within a region), in `region_order`.

    Articles without a region in `region_order` are left out (collect already mapped them to a
    fallback section when one is configured). The lead story is the newest article overall; it
    stays in its section too, so a subscriber of that region alone still sees it.
    """
    by_region: dict[str, list[Article]] = {r: [] for r in region_order}
    for article in articles:
        if article.region in by_region:
            by_region[article.region].append(article)

    sections: list[Section] = []
    notes: list[str] = []
    for region in region_order:
        items = sorted(by_region[region], key=lambda a: a.published, reverse=True)
        if not items:
            continue
        if max_per_region is not None and len(items) > max_per_region:
            notes.append(f"{region}: {len(items)} articles, capped to {max_per_region}")
            items = items[:max_per_region]
        sections.append(Section(region=region, teasers=tuple(Teaser.from_article(a, region) for a in items)))

    lead = newest(t for s in sections for t in s.teasers) if with_lead else None
    return Digest(
        newsletter=newsletter, issue_date=issue_date, sections=tuple(sections), lead=lead, notes=tuple(notes)
    )


def cap_digest(digest: Digest, max_per_region: int) -> Digest:
    """The digest with at most `max_per_region` teasers per section (newest kept: they come first).

    Used when the rendered HTML would be too large; the lead story is the newest article, so it
    always survives in its section.
    """
    sections = tuple(
        s
        if len(s.teasers) <= max_per_region
        else Section(region=s.region, teasers=s.teasers[:max_per_region])
        for s in digest.sections
    )
    return replace(digest, sections=sections)
