"""Staff curation applied in the pure core: apply_draft, the stored draft, the intro in both parts."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from digest.build import build_digest
from digest.config import config_from_dict
from digest.curate import MAX_INTRO_LENGTH, Draft, apply_draft, clean_intro, story_key
from digest.db import make_engine, migrate, session_factory
from digest.drafts import load_draft, save_draft, stored_draft
from digest.models import Article
from digest.pipeline import prepare_issue
from digest.render import Renderer

NOW = datetime(2026, 11, 20, 14, tzinfo=UTC)
REGIONS = ("Middle East", "Africa", "Europe")
DAY = date(2026, 11, 20)


def article(n: int, region: str, hours_ago: int) -> Article:
    return Article(
        guid=f"g{n}",
        url=f"https://news.example/{n}",
        title=f"Story {n}",
        lede=f"Lede {n}",
        published=NOW - timedelta(hours=hours_ago),
        region=region,
    )


ARTICLES = [
    article(1, "Middle East", 1),
    article(2, "Middle East", 5),
    article(3, "Middle East", 9),
    article(4, "Africa", 2),
    article(5, "Africa", 30),
    article(6, "Europe", 3),
]


def build(draft, articles=ARTICLES, cap=None):
    return apply_draft(
        articles, draft, newsletter="N", issue_date=DAY, region_order=REGIONS, max_per_region=cap
    )


def urls(digest, region):
    (section,) = [s for s in digest.sections if s.region == region]
    return [t.url.rsplit("/", 1)[1] for t in section.teasers]


def test_no_draft_is_build_digest():
    assert build(None, cap=2) == build_digest(
        ARTICLES, newsletter="N", issue_date=DAY, region_order=REGIONS, max_per_region=2
    )


def test_exclude_lead_order_and_intro():
    draft = Draft(
        issue_date=DAY,
        excluded=frozenset({"https://news.example/1"}),
        lead="https://news.example/5",
        order={"Middle East": ("https://news.example/3", "https://news.example/2")},
        intro="Hello readers.",
    )
    digest = build(draft)
    assert urls(digest, "Middle East") == ["3", "2"]
    assert digest.lead is not None and digest.lead.url == "https://news.example/5"
    assert digest.intro == "Hello readers."
    assert digest.article_count == 5


def test_an_excluded_story_frees_its_place_under_the_cap():
    capped = build(None, cap=2)
    assert urls(capped, "Middle East") == ["1", "2"]
    draft = Draft(issue_date=DAY, excluded=frozenset({"https://news.example/2"}))
    assert urls(build(draft, cap=2), "Middle East") == ["1", "3"]
    # Staff's order decides which stories the cap keeps, and the note says it capped.
    ordered = Draft(issue_date=DAY, order={"Middle East": ("https://news.example/3",)})
    digest = build(ordered, cap=2)
    assert urls(digest, "Middle East") == ["3", "1"]
    assert digest.notes == ("Middle East: 3 articles, capped to 2",)


def test_excluded_or_vanished_lead_falls_back_to_the_newest():
    gone = Draft(issue_date=DAY, lead="https://news.example/99")
    assert build(gone).lead.url == "https://news.example/1"
    out = Draft(issue_date=DAY, lead="https://news.example/4", excluded=frozenset({"https://news.example/4"}))
    assert build(out).lead.url == "https://news.example/1"


def test_a_recollect_keeps_choices_for_the_stories_still_there():
    draft = Draft(
        issue_date=DAY,
        excluded=frozenset({"https://news.example/6", "https://news.example/2"}),
        order={"Middle East": ("https://news.example/3", "https://news.example/1")},
        lead="https://news.example/3",
    )
    # Story 2 is gone from the feed, a new story 7 came in.
    recollected = [a for a in ARTICLES if a.url != "https://news.example/2"] + [article(7, "Middle East", 0)]
    digest = build(draft, recollected)
    assert urls(digest, "Middle East") == ["3", "1", "7"]  # the new story after staff's order
    assert "Europe" not in digest.regions  # story 6 is still excluded
    assert digest.lead.url == "https://news.example/3"


def test_clean_intro():
    assert clean_intro("  One\r\nline  \r\n\r\n\r\n\r\nTwo\x07 ") == "One\nline\n\nTwo"
    with pytest.raises(ValueError, match="at most"):
        clean_intro("x" * (MAX_INTRO_LENGTH + 1))
    with pytest.raises(ValueError, match="@@"):
        clean_intro("see @@digest:unsubscribe_url@@")


def test_intro_is_under_the_header_in_html_and_text():
    config = config_from_dict({"newsletter": {"name": "Statecraft Weekly"}})
    digest = replace(build(None), intro="First <paragraph> & more.\n\nSecond paragraph.")
    rendered = Renderer.from_config(config).render(digest)
    html, text = rendered.html, rendered.text
    assert "First &lt;paragraph&gt; &amp; more." in html and "Second paragraph." in html
    assert (
        html.index("Statecraft Weekly</h1>") < html.index("First &lt;paragraph") < html.index(">Story 1</a>")
    )
    lines = text.splitlines()
    assert lines[:6] == [
        "Statecraft Weekly",
        "November 20, 2026",
        "",
        "First <paragraph> & more.",
        "",
        "Second paragraph.",
    ]
    assert "First" not in Renderer.from_config(config).render(build(None)).text


def test_stored_draft_round_trip_and_prepare_issue_applies_it(tmp_path):
    (tmp_path / "digest.toml").write_text('[database]\nurl = "sqlite:///site.db"\n', encoding="utf-8")
    from digest.config import load_config

    config = load_config(tmp_path / "digest.toml")
    assert stored_draft(config, DAY) is None  # no database: none is created for this
    assert not (tmp_path / "site.db").exists()
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    migrate(engine)
    uncurated = prepare_issue(config, NOW)
    first = uncurated.digest.sections[0].teasers[0]
    draft = Draft(issue_date=DAY, excluded=frozenset({story_key(first)}), intro="This week.")
    with session_factory(engine).begin() as s:
        save_draft(s, draft, by="ed@example.org", at=NOW)
    with session_factory(engine)() as s:
        loaded = load_draft(s, DAY)
    assert loaded is not None
    assert (loaded.excluded, loaded.intro, loaded.updated_by) == (
        draft.excluded,
        "This week.",
        "ed@example.org",
    )
    curated = prepare_issue(config, NOW)
    assert curated.digest.intro == "This week."
    assert first.url not in {t.url for s in curated.digest.sections for t in s.teasers}
    assert curated.digest.article_count == uncurated.digest.article_count - 1
    # Another day's issue is not curated by it, and draft=None turns it off.
    assert prepare_issue(config, NOW + timedelta(days=7)).digest.intro == ""
    assert prepare_issue(config, NOW, draft=None).digest == uncurated.digest
    engine.dispose()
