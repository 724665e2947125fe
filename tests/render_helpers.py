"""Shared test helpers for the render, message and responsive tests: realistic digests."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from shared_data import TESTDATA

from digest.build import build_digest
from digest.collect import collect
from digest.config import DEFAULT_REGION_ORDER, Config
from digest.message import ListHeaders, Personal, make_message_id
from digest.models import Article, Digest
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
