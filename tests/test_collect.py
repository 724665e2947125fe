"""collect(): window, dedupe, region mapping, cleaning, broken sources, and `digest collect`."""

from __future__ import annotations

import argparse
import io
import json
from datetime import UTC, datetime, timedelta

import collect_fixtures
import pytest
import seed_facts as seed
from collect_fixtures import NOW, article, make_config, rss, rss_item
from rich.console import Console

from digest.collect import RegionMap, canonical_url, clean_articles, collect, week_window
from digest.commands import collect as collect_command
from digest.errors import ConfigError
from digest.sources.extract import cut_credit

_local_server_module = collect_fixtures._local_server_module
local_server = collect_fixtures.local_server


def test_default_window_is_seven_days_in_newsletter_time_across_dst():
    config = make_config()  # America/New_York
    now = datetime(2025, 11, 7, 14, 0, tzinfo=UTC)  # Fri 09:00 EST; a week ago was 09:00 EDT
    start, end = week_window(config, now)
    assert end == now
    assert start.astimezone(config.tz).strftime("%Y-%m-%d %H:%M") == "2025-10-31 09:00"
    assert now - start == timedelta(days=7, hours=1)


def test_window_boundaries_and_since_last_send():
    config = make_config(collect={"window": "since_last_send"})
    since = NOW - timedelta(days=3)
    arts = [
        article(guid="in", url="https://e.org/in", published=since + timedelta(seconds=1)),
        article(guid="edge", url="https://e.org/edge", published=since),  # sent last time
        article(guid="future", url="https://e.org/f", published=NOW + timedelta(minutes=1)),
    ]
    result = clean_articles(arts, config, NOW, since=since)
    assert [a.guid for a in result.articles] == ["in"]
    assert [why for _, why in result.dropped] == ["outside the week window"] * 2
    # Without a known last send, it falls back to window_days and says so.
    fallback = collect(make_config(collect={"window": "since_last_send"}), NOW)
    assert fallback.warnings[0].startswith("no previous successful send is known")
    assert fallback.window_start == week_window(make_config(), NOW)[0]


def test_dedupe_by_guid_and_canonical_url_merging_what_was_missing():
    arts = [
        article(guid="a", url="https://example.org/x/?utm_source=rss&id=3#top", image_url=None),
        article(guid="b", url="https://EXAMPLE.org/x/?id=3&fbclid=zz", image_url="https://example.org/x.jpg"),
        article(guid="a", url="https://example.org/other/"),
        article(guid="c", url="https://example.org/y/"),
    ]
    result = clean_articles(arts, make_config(), NOW)
    assert [a.guid for a in result.articles] == ["a", "c"]
    assert result.articles[0].url == "https://example.org/x/?id=3"
    assert result.articles[0].image_url == "https://example.org/x.jpg"
    assert [why for _, why in result.dropped] == ["duplicate", "duplicate"]


def test_same_guid_on_two_sites_is_two_articles():
    # Two sites that both number their posts from 1: a GUID is unique only within its own feed.
    arts = [
        article(guid="1", url="https://a.example/story/", source="A"),
        article(
            guid="1", url="https://b.example/other/", source="B", image_url="https://b.example/b.jpg",
            image_credit="B's photographer",
        ),
    ]  # fmt: skip
    result = clean_articles(arts, make_config(), NOW)
    assert [(a.source, a.url) for a in result.articles] == [
        ("A", "https://a.example/story/"),
        ("B", "https://b.example/other/"),
    ]
    assert result.articles[0].image_url is None and result.articles[0].image_credit is None
    assert result.dropped == []


def test_a_repeated_guid_in_one_feed_is_dropped_without_lending_its_image():
    arts = [
        article(guid="7", url="https://a.example/first/", source="A"),
        article(guid="7", url="https://a.example/second/", source="A", image_url="https://a.example/2.jpg"),
        # The same page from another source: merged by canonical URL, filling what was missing.
        article(guid="x", url="https://a.example/first/?utm_source=b", source="B", author="Ann"),
        # ... whose GUID then names it too: B repeating it is a duplicate again.
        article(guid="x", url="https://a.example/moved/", source="B", image_url="https://a.example/m.jpg"),
    ]
    result = clean_articles(arts, make_config(), NOW)
    [kept] = result.articles
    assert (kept.url, kept.image_url, kept.author) == ("https://a.example/first/", None, "Ann")
    assert [why for _, why in result.dropped] == ["duplicate", "duplicate", "duplicate"]


def test_canonical_url_keeps_the_site_encoding():
    assert canonical_url("HTTPS://Example.org:443/a%20b?q=x%2By&utm_medium=email&mc_cid=1") == (
        "https://example.org/a%20b?q=x%2By"
    )
    assert canonical_url("http://example.org") == "http://example.org/"


def test_regions_aliases_are_case_and_punctuation_insensitive():
    regions = RegionMap(
        ["Middle East", "Asia-Pacific"], {"Asia-Pacific": ("Indo-Pacific",)}, ignore=["QIOSK"]
    )
    assert regions.region_for(["Analysis", "middle-east"]) == "Middle East"
    assert regions.region_for(["MIDDLE EAST!"]) == "Middle East"
    assert regions.region_for(["indo pacific"]) == "Asia-Pacific"
    assert regions.region_for(["asia_pacific"]) == "Asia-Pacific"
    assert regions.region_for(["Sports"]) is None
    assert regions.ignored(["Qiosk"]) == "QIOSK"


def test_fallback_and_ignored_sections():
    arts = [
        article(guid="1", url="https://e.org/1", categories=("Analysis",)),
        article(guid="2", url="https://e.org/2", categories=("QIOSK", "Middle East")),
        article(guid="3", url="https://e.org/3", categories=("mena",)),
    ]
    left_out = clean_articles(arts, make_config(regions={"ignore": ["QIOSK"]}), NOW)
    assert [(a.guid, a.region) for a in left_out.articles] == [("3", "Middle East")]
    assert [why for _, why in left_out.dropped] == [
        "no known region in ['Analysis']",
        "in ignored section 'QIOSK'",
    ]
    fallback = clean_articles(arts, make_config(regions={"fallback": "Global"}), NOW)
    assert [(a.guid, a.region) for a in fallback.articles] == [
        ("1", "Global"),
        ("2", "Middle East"),
        ("3", "Middle East"),
    ]
    mapped = clean_articles(arts, make_config(regions={"aliases": {"Global": ["QIOSK"]}}), NOW)
    assert ("2", "Global") in [(a.guid, a.region) for a in mapped.articles]


def test_lede_cut_at_sentence_or_word_and_text_is_plain():
    long = "First sentence is here. " + "word " * 100
    arts = [
        article(guid="1", url="https://e.org/1", lede=long, title="A &amp; <b>B</b>"),
        article(guid="2", url="https://e.org/2", lede="x" * 10 + " " + "verylongword" * 30),
    ]
    config = make_config(collect={"lede_length": 40})
    one, two = clean_articles(arts, config, NOW).articles
    assert one.lede == "First sentence is here."  # a sentence end in the second half of the limit
    assert one.title == "A & B"
    assert two.lede == "xxxxxxxxxx…"
    words = clean_articles(
        [article(lede="alpha beta gamma delta " * 10)], make_config(collect={"lede_length": 30}), NOW
    )
    assert words.articles[0].lede == "alpha beta gamma delta alpha…"


def test_title_credit_and_alt_are_bounded_at_a_word_boundary():
    """They repeat per story in the e-mail: one runaway caption must not cap every region."""
    words = "Delegates arrive for talks at the foreign ministry in the capital, November 2026. " * 10
    long = article(
        title="Breaking " + words, image_url="https://e.org/p.jpg", image_alt=words, image_credit=words
    )
    (a,) = clean_articles([long], make_config(), NOW).articles
    for value, limit in ((a.title, 200), (a.image_alt, 150)):
        assert len(value) <= limit and value.endswith("…"), value
        assert words.startswith(value[:-1].removeprefix("Breaking ")), "cut between words"
    # A credit keeps its end (where agency and photographer are): cut before its last sentence.
    assert a.image_credit is not None and len(a.image_credit) <= 300
    head, tail = a.image_credit.split("… ")
    assert words.startswith(head) and tail == words.split(". ")[-2] + "."
    (b,) = clean_articles([long], make_config(collect={"credit_length": 40, "alt_length": 30}), NOW).articles
    assert b.image_credit == "Delegates arrive for… November 2026."
    assert b.image_alt == "Delegates arrive for talks at…"
    (c,) = clean_articles([article(title="x" * 300)], make_config(), NOW).articles
    assert c.title == "x" * 199 + "…"  # one unbreakable word is cut inside it
    short = article(title="Short", image_url="https://e.org/p.jpg", image_alt="Alt", image_credit="Credit")
    (d,) = clean_articles([short], make_config(), NOW).articles
    assert (d.title, d.image_alt, d.image_credit) == ("Short", "Alt", "Credit")


def test_the_seed_credits_fit_whole_and_a_cut_keeps_agency_and_photographer():
    config = make_config()
    assert len(seed.TRUMP_XI_CREDIT) == 275
    for credit in seed.CREDITS:
        (a,) = clean_articles(
            [article(image_url="https://e.org/p.jpg", image_credit=credit)], config, NOW
        ).articles
        assert a.image_credit == credit  # the default limit fits the real ones whole
    for limit in (250, 200, 120, 60):
        cut = cut_credit(seed.TRUMP_XI_CREDIT, limit)
        assert len(cut) <= limit and cut.endswith("… REUTERS/Evelyn Hockstein TPX"), (limit, cut)
        assert seed.TRUMP_XI_CREDIT.startswith(cut.split("…")[0]), "the description is cut between words"
    assert cut_credit(seed.TRUMP_XI_CREDIT, 250) == (
        "U.S. President Donald Trump and Chinese President Xi Jinping react as they hold a bilateral meeting "
        "at Gimhae International Airport, on the sidelines of the Asia-Pacific Economic Cooperation (APEC) "
        "summit, in Busan… REUTERS/Evelyn Hockstein TPX"
    )
    assert cut_credit(seed.SUDAN_CREDIT, 60) == "The grandmother of Ikram Abdelhameed… REUTERS/Mohammed Jamal"
    assert cut_credit(seed.IRAN_CREDIT, 80).endswith("… Albert_Khachatryan / Shutterstock.com")
    # No room for any description: the end alone.
    assert cut_credit(seed.IRAQ_CREDIT, 30) == "…REUTERS/Thaier Al-Sudani"
    # No sentence end: the last words are kept all the same.
    no_stop = (
        "Supporters attend a ceremony in Karbala Iraq on a Friday afternoon in the rain AP Photo/Hadi Mizban"
    )
    assert cut_credit(no_stop, 60) == "Supporters attend a ceremony in… AP Photo/Hadi Mizban"
    # No sentence end and little room: the agency and photographer stay whole, not the last
    # third of the room ("a a a a… Hockstein TPX", found by the property test in CI).
    assert cut_credit("a a a a REUTERS/Evelyn Hockstein TPX", 34) == "…REUTERS/Evelyn Hockstein TPX"
    assert cut_credit("(APEC) REUTERS/Evelyn Hockstein TPX", 34) == "…REUTERS/Evelyn Hockstein TPX"


def test_file_name_and_headline_alts_become_empty():
    def photo(n: int, alt: str, **kw: str):
        return article(
            guid=str(n), url=f"https://e.org/{n}", image_url=f"https://e.org/{n}.jpg", image_alt=alt, **kw
        )

    arts = [
        photo(1, seed.IRAN_IMAGE_TEXT),  # the CMS's file name
        photo(2, "IMG_2034.JPG"),
        photo(3, seed.IRAQ_TITLE.upper(), title=seed.IRAQ_TITLE),  # the headline again
        photo(4, seed.TRUMP_XI_IMAGE_TEXT),
    ]
    alts = [a.image_alt for a in clean_articles(arts, make_config(), NOW).articles]
    assert alts == ["", "", "", "Trump Xi Jinping"]


@pytest.mark.parametrize("key", ["title_length", "credit_length", "alt_length"])
@pytest.mark.parametrize("value", [0, 19, 1001])
def test_text_bounds_are_validated(key, value):
    with pytest.raises(ConfigError, match=rf"\[collect\] {key}: must be between 20 and 1000"):
        make_config(collect={key: value})


@pytest.mark.parametrize(
    ("lede", "limit", "expected"),
    [
        # The limit lands on the full stop: the sentence fits whole.
        (
            "First sentence is exactly here. Second sentence goes on.",
            31,
            "First sentence is exactly here.",
        ),
        # Abbreviations, initialisms and initials are not sentence ends.
        (
            "The envoy met Mr. Jones in St. Louis on a Monday. Then more.",
            38,
            "The envoy met Mr. Jones in St. Louis…",
        ),
        (
            "Talks at the U.N. and with the U.S. went on for a long while.",
            40,
            "Talks at the U.N. and with the U.S. went…",
        ),
        ("A speech by John F. Kennedy was read out at the summit.", 30, "A speech by John F. Kennedy…"),
        (
            "Prices rose. Officials met Sen. Warren and Gen. Milley today.",
            60,
            "Prices rose. Officials met Sen. Warren and Gen. Milley…",
        ),
        (
            "The ceasefire held through the night. Officials met on Jan. 5 in Doha.",
            62,
            "The ceasefire held through the night.",
        ),
    ],
)
def test_lede_sentence_ends_at_the_limit_and_not_at_abbreviations(lede, limit, expected):
    config = make_config(collect={"lede_length": limit})
    [a] = clean_articles([article(lede=lede)], config, NOW).articles
    assert a.lede == expected


def test_feeds_merge_and_a_broken_feed_is_a_warning(tmp_path, local_server):
    (tmp_path / "a.xml").write_bytes(rss(rss_item("one") + rss_item("two", categories=("Africa",))))
    (tmp_path / "b.xml").write_bytes(rss(rss_item("one") + rss_item("three", categories=("Europe",))))
    local_server.expect_request("/feed").respond_with_data("oops", status=503)
    local_server.expect_request("/html").respond_with_data(
        "<html><body>hi</body></html>", content_type="text/html"
    )
    config = make_config(
        tmp_path,
        sources=[
            {"kind": "rss", "name": "A", "path": "a.xml"},
            {"kind": "rss", "name": "B", "path": "b.xml"},
            {"kind": "rss", "name": "Down", "url": local_server.url_for("/feed")},
            {"kind": "rss", "name": "Not a feed", "url": local_server.url_for("/html")},
            {"kind": "rss", "name": "Missing", "path": "missing.xml"},
            {"kind": "files", "name": "Curated", "path": "curated"},
        ],
        collect={"fetch_allow": ["127.0.0.1"], "cache_dir": ""},
    )
    result = collect(config, NOW)
    assert sorted(a.title for a in result.articles) == ["one", "three", "two"]
    assert {a.region for a in result.articles} == {"Middle East", "Africa", "Europe"}
    assert [w.split(":")[0] for w in result.warnings] == ["Down", "Not a feed", "Missing", "Curated"]
    assert "HTTP 503" in result.warnings[0]
    assert result.should_send(config)


def test_default_fetcher_refuses_loopback_feed(local_server):
    local_server.expect_request("/feed").respond_with_data(rss(rss_item("x")))
    config = make_config(sources=[{"kind": "rss", "name": "Local", "url": local_server.url_for("/feed")}])
    result = collect(config, NOW)
    assert result.articles == [] and "refused" in result.warnings[0]
    assert local_server.log == []


def test_wordpress_source_with_enrichment_through_collect(tmp_path, local_server):
    base = local_server.url_for("/")
    posts = [
        {
            "link": local_server.url_for("/iraq/"),
            "date_gmt": "2025-11-05T12:00:00",
            "title": {"rendered": "Iraq"},
            "excerpt": {"rendered": "<p>Summary.</p>"},
            "_embedded": {},
        }
    ]
    local_server.expect_request("/wp-json/wp/v2/posts").respond_with_json(
        posts, headers={"X-WP-TotalPages": "1"}
    )
    local_server.expect_request("/iraq/").respond_with_data(
        '<meta property="og:image" content="/i.jpg"><meta property="article:section" content="Mideast">',
        content_type="text/html",
    )
    config = make_config(
        tmp_path,
        sources=[{"kind": "wordpress", "name": "WP", "url": base, "enrich": True}],
        collect={"fetch_allow": ["127.0.0.1"]},
    )
    result = collect(config, NOW)
    [a] = result.articles
    assert a.region == "Middle East" and a.image_url == local_server.url_for("/i.jpg")
    after = local_server.log[0][0].args["after"]
    assert after == week_window(config, NOW)[0].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_no_articles_means_no_send_unless_configured(tmp_path):
    (tmp_path / "empty.xml").write_bytes(rss(""))
    sources = [{"kind": "rss", "path": "empty.xml"}]
    assert not collect(make_config(tmp_path, sources=sources), NOW).should_send(make_config())
    config = make_config(tmp_path, sources=sources, collect={"send_when_empty": True})
    assert collect(config, NOW).should_send(config)


def test_config_validation_names_the_key():
    with pytest.raises(ConfigError, match=r"\[collect\] window: must be one of days, since_last_send"):
        make_config(collect={"window": "weekly"})
    with pytest.raises(ConfigError, match="fetch_allow"):
        make_config(collect={"fetch_allow": ["10.0.0.0/8; rm -rf"]})
    with pytest.raises(ConfigError, match="max_pages"):
        make_config(sources=[{"kind": "wordpress", "url": "https://e.org", "max_pages": 0}])


def _run_command(tmp_path, *argv: str, toml: str = "") -> str:
    (tmp_path / "digest.toml").write_text(f'{toml}\n[[sources]]\nkind = "sample"\nname = "Sample"\n', "utf-8")
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    collect_command.register(parser.add_subparsers())
    args = parser.parse_args(["--config", str(tmp_path / "digest.toml"), "collect", *argv])
    out = io.StringIO()
    assert collect_command.run(args, Console(file=out, width=200)) == 0
    return out.getvalue()


def test_collect_command_table(tmp_path):
    text = _run_command(tmp_path, "--now", "2025-11-07T09:00:00-05:00", "--dropped")
    assert "Iraq faces first quiet election" in text
    assert "Middle East" in text and "Africa" in text
    assert text.index("Middle East") < text.index("Africa") < text.index("Asia-Pacific")
    assert "QIOSK briefs" in text and "no known region" in text  # --dropped
    assert "Thu 06 Nov" in text  # dates in newsletter time


def test_collect_command_json(tmp_path):
    data = json.loads(_run_command(tmp_path, "--json", "--now", "2025-11-07T09:00:00-05:00"))
    assert data["article_count"] == 7 and data["would_send"] is True
    regions = [r["region"] for r in data["regions"]]
    assert regions == ["Middle East", "Africa", "Asia-Pacific", "Europe", "Americas"]
    first = data["regions"][0]["articles"][0]
    assert first["title"].startswith("Iraq faces") and first["image_url"] and first["image_credit"]
    assert data["window"]["start"].startswith("2025-10-31T09:00:00-04:00")


def test_collect_command_starts_where_send_would_since_the_last_send(tmp_path):
    from digest.db import make_engine, migrate, session_factory
    from digest.send import SendRun, start_run

    toml = '[collect]\nwindow = "since_last_send"\n[database]\nurl = "sqlite:///data/ledger.db"\n'
    now = "2025-11-07T09:00:00-05:00"
    # No send yet: the days window, with the warning, and no database is created to learn that.
    data = json.loads(_run_command(tmp_path, "--json", "--now", now, toml=toml))
    assert data["window"]["start"].startswith("2025-10-31T09:00:00-04:00")
    assert data["warnings"][0].startswith("no previous successful send is known")
    assert not (tmp_path / "data").exists()

    last_end = datetime(2025, 11, 5, 14, 0, tzinfo=UTC)  # Wednesday 09:00 in New York
    engine = make_engine("sqlite:///data/ledger.db", base_dir=tmp_path)
    migrate(engine)
    with session_factory(engine)() as session:
        for issue, end in (
            ("2025-10-29", datetime(2025, 10, 29, 13, 0, tzinfo=UTC)),
            ("2025-11-05", last_end),
        ):
            run = session.get(SendRun, start_run(session, [], issue=issue, window_end=end))
            run.status, run.open_slot = "finished", None  # one unfinished run at a time
            session.commit()
        start_run(session, [], issue="2025-11-06", window_end=NOW - timedelta(hours=2))  # still running
    engine.dispose()
    data = json.loads(_run_command(tmp_path, "--json", "--now", now, toml=toml))
    assert datetime.fromisoformat(data["window"]["start"]) == last_end
    assert not any("no previous successful send" in w for w in data["warnings"])
    # Only what was published after the last send's window: not the 7 articles of the week.
    published = [datetime.fromisoformat(a["published"]) for r in data["regions"] for a in r["articles"]]
    assert len(published) == 2 and all(p > last_end for p in published)
    # --since still wins over the ledger.
    data = json.loads(
        _run_command(tmp_path, "--json", "--now", now, "--since", "2025-11-01T00:00:00Z", toml=toml)
    )
    assert data["window"]["start"].startswith("2025-11-01T00:00:00")
    # A ledger that cannot be read: the days window, and a warning that says why.
    (tmp_path / "data" / "ledger.db").write_bytes(b"not a database" * 100)
    data = json.loads(_run_command(tmp_path, "--json", "--now", now, toml=toml))
    assert data["warnings"][0].startswith("cannot read the last send from [database] url: ")
    assert data["window"]["start"].startswith("2025-10-31T09:00:00-04:00")


def test_enrichment_stops_at_its_page_budget(tmp_path, local_server):
    items = "".join(rss_item(f"p{n}", categories=()) for n in range(3))
    (tmp_path / "feed.xml").write_bytes(rss(items))
    local_server.expect_request("/p").respond_with_data("<html></html>", content_type="text/html")
    config = make_config(
        tmp_path,
        sources=[{"kind": "rss", "name": "F", "path": "feed.xml", "enrich": True}],
        collect={"enrich_max_pages": 2, "fetch_allow": ["127.0.0.1"]},
        regions={"fallback": "Global"},
    )
    # The items link to example.org: a fetcher that maps every page to the local server.
    fetcher = collect_fixtures.local_fetcher()
    real_get = fetcher.get
    fetcher.get = lambda url, **kw: real_get(local_server.url_for("/p"), **kw)
    result = collect(config, NOW, fetcher=fetcher)
    assert len(local_server.log) == 2
    assert result.warnings == ["F: 1 articles not enriched: enrich_max_pages was reached"]
    assert len(result.articles) == 3


def test_enrichment_finds_the_region_a_feed_did_not_name(tmp_path, local_server):
    item = rss_item("sahel", categories=("Analysis",), description="A complete summary.").replace(
        "</item>",
        '<media:content url="https://example.org/s.jpg" medium="image"><media:credit>AP</media:credit>'
        "</media:content></item>",
    )
    (tmp_path / "feed.xml").write_bytes(rss(item))
    local_server.expect_request("/p").respond_with_data(
        '<meta property="article:section" content="Africa">', content_type="text/html"
    )
    config = make_config(tmp_path, sources=[{"kind": "rss", "name": "F", "path": "feed.xml", "enrich": True}])
    fetcher = collect_fixtures.local_fetcher()
    real_get = fetcher.get
    fetcher.get = lambda url, **kw: real_get(local_server.url_for("/p"), **kw)
    [a] = collect(config, NOW, fetcher=fetcher).articles
    assert a.region == "Africa" and a.categories == ("Analysis", "Africa")
    assert (a.image_url, a.image_credit, a.lede) == ("https://example.org/s.jpg", "AP", "A complete summary.")
