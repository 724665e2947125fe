from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from digest.build import build_digest
from digest.models import Article

NOW = datetime(2026, 11, 25, 12, tzinfo=UTC)


def article(title: str, region: str | None, hours: int) -> Article:
    return Article(
        guid=title,
        url=f"https://x.example/{hours}",
        title=title,
        lede="l",
        published=NOW - timedelta(hours=hours),
        region=region,
    )


def test_sections_follow_configured_order_and_newest_first() -> None:
    digest = build_digest(
        [
            article("a1", "Africa", 5),
            article("m1", "Middle East", 1),
            article("a2", "Africa", 2),
            article("x", None, 1),
            article("e", "Elsewhere", 1),
        ],
        newsletter="N",
        issue_date=date(2026, 11, 25),
        region_order=["Middle East", "Africa", "Europe"],
    )
    assert digest.regions == ("Middle East", "Africa")
    assert [t.title for t in digest.sections[1].teasers] == ["a2", "a1"]
    assert digest.lead is not None and digest.lead.title == "m1"
    assert digest.article_count == 3


def test_cap_per_region_is_reported() -> None:
    digest = build_digest(
        [article(f"a{i}", "Africa", i) for i in range(5)],
        newsletter="N",
        issue_date=date(2026, 11, 25),
        region_order=["Africa"],
        max_per_region=3,
    )
    assert len(digest.sections[0].teasers) == 3
    assert digest.notes == ("Africa: 5 articles, capped to 3",)


def test_variant_keeps_only_chosen_regions() -> None:
    digest = build_digest(
        [article("a", "Africa", 1), article("m", "Middle East", 2)],
        newsletter="N",
        issue_date=date(2026, 11, 25),
        region_order=["Middle East", "Africa"],
    )
    africa = digest.for_regions({"Africa"})
    assert africa.regions == ("Africa",)
    assert africa.lead is not None and africa.lead.region == "Africa"
    middle_east = digest.for_regions({"Middle East"})
    # The lead is an Africa story: Middle East-only readers get their own newest story as lead.
    assert middle_east.lead is not None and middle_east.lead.title == "m"
    assert digest.for_regions(None) is digest
