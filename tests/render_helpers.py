"""Shared test helpers for the render, message and responsive tests: realistic digests."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from shared_data import TESTDATA

from digest.build import build_digest
from digest.collect import clean_articles, collect
from digest.config import DEFAULT_REGION_ORDER, Config
from digest.message import ListHeaders, Personal, make_message_id
from digest.models import Article, Digest, Section, Teaser
from digest.render import NewsletterInfo, Renderer
from digest.sources import sample
from digest.sources.sample import SYNTHETIC_CREDIT, SYNTHETIC_LEDE

NOW = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
CHROMIUM = Path("/usr/bin/chromium")
MJML_TESTDATA = TESTDATA / "mjml/mjml_python_testdata/tests/testdata"

INFO = NewsletterInfo(
    name="Responsible Statecraft Weekly",
    base_url="https://newsletter.example.org",
    postal_address="Quincy Institute, 1 Example Street, Washington, DC 20001, USA",
)

LEDE = SYNTHETIC_LEDE
CREDIT = SYNTHETIC_CREDIT


def sample_digest(config: Config | None = None) -> Digest:
    """The bundled sample feed, collected and built as a real run would."""
    config = config or Config()
    result = collect(config, NOW)
    return build_digest(
        result.articles,
        newsletter=config.newsletter.name,
        issue_date=NOW.date(),
        region_order=config.regions.order,
        max_per_region=config.collect.max_articles_per_region,
    )


def synthetic_articles(count: int = 30, regions: tuple[str, ...] = DEFAULT_REGION_ORDER) -> list[Article]:
    """`count` realistic articles spread over `regions`: full-length ledes, long credits, photos."""
    return sample.synthetic_articles(count, regions, NOW)


def synthetic_digest(count: int = 30, *, max_per_region: int | None = None) -> Digest:
    return build_digest(
        synthetic_articles(count),
        newsletter=INFO.name,
        issue_date=date(2026, 11, 20),
        region_order=DEFAULT_REGION_ORDER,
        max_per_region=max_per_region,
    )


def _long(text: str, length: int) -> str:
    """`text` repeated past `length` characters: collect cuts it down to what it lets through."""
    return " ".join([text] * (length // len(text) + 2))


SLUG = "a-long-article-slug-as-sites-write-them-" * 2


def worst_case_digest(config: Config | None = None) -> Digest:
    """The largest issue the default caps allow: every region full ([collect]
    max_articles_per_region), every field as long as collect lets it be (title, lede, credit and
    alt text cut by collect itself), long URLs, a format label and a byline on every story."""
    config = config or Config()
    regions = config.regions.order
    count = len(regions) * config.collect.max_articles_per_region
    c = config.collect
    raw = [
        Article(
            guid=f"worst-{i}",
            url=f"https://responsiblestatecraft.org/2026/11/{i:02d}/{SLUG}{i}/",
            title=_long(
                "Negotiators return to the table as winter closes in on the front line", c.title_length
            ),
            lede=_long(
                "diplomats say the outline of a deal is there but verification remains open and",
                c.lede_length,
            ),
            published=NOW - timedelta(hours=2 + i),
            categories=(regions[i % len(regions)],),
            image_url=f"https://responsiblestatecraft.org/wp-content/uploads/2026/11/photo-of-the-talks-{i:02d}-1024x683.jpg",
            image_alt=_long(
                "Delegates arrive for talks at the foreign ministry in the capital", c.alt_length
            ),
            image_credit=_long(
                "Delegates arrive for talks at the ministry, November 19. REUTERS/Photographer",
                c.credit_length,
            ),
            image_width=1200,
            image_height=800,
        )
        for i in range(count)
    ]
    articles = clean_articles(raw, config, NOW).articles
    assert len(articles) == count, "collect dropped some of the worst-case articles"
    digest = build_digest(
        articles,
        newsletter=config.newsletter.name,
        issue_date=NOW.date(),
        region_order=regions,
        max_per_region=c.max_articles_per_region,
    )

    def dress(t: Teaser) -> Teaser:
        return replace(t, format_label="Analysis", byline="Jane Longname-Example and John Example-Longname")

    return replace(
        digest,
        sections=tuple(Section(s.region, tuple(dress(t) for t in s.teasers)) for s in digest.sections),
        lead=dress(digest.lead) if digest.lead else None,
    )


def renderer(**kwargs: object) -> Renderer:
    return Renderer(INFO, **kwargs)  # type: ignore[arg-type]


# --- messages -----------------------------------------------------------------------------

HEADERS = ListHeaders(
    sender='"Responsible Statecraft" <newsletter@example.org>',
    list_id="responsible-statecraft-weekly.newsletter.example.org",
    unsubscribe_mailto="unsubscribe@example.org",
    domain="example.org",
)
DATE = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)


def personal(token: str = "tok123", sid: int = 7) -> Personal:
    return Personal(
        unsubscribe_url=f"https://newsletter.example.org/unsubscribe/{token}?a=1&b=2",
        preferences_url=f"https://newsletter.example.org/preferences/{token}",
        message_id=make_message_id("run42", sid, "example.org"),
    )
