"""RSS / Atom / RDF / JSON Feed parsing, the shared fixture oracles and hostile XML."""

from __future__ import annotations

import io
import json
import re
import tracemalloc
from collections import Counter
from datetime import UTC, datetime

import collect_fixtures
import feedparser
import pytest
import seed_facts as seed
from collect_fixtures import NOW, feeds_dir, local_fetcher, make_config, rss, rss_item

from digest.collect import collect
from digest.sources.extract import lede_source, plain_text, sanitize_html
from digest.sources.jsonfeed import parse_json_feed
from digest.sources.rss import entry_article, entry_byline, fetch_feed, parse_feed, unsafe_xml_reason

_local_server_module = collect_fixtures._local_server_module
local_server = collect_fixtures.local_server

# What must never survive sanitising: scripts, event handlers, script URLs, active embeds.
HOSTILE = re.compile(
    r"<\s*script|<\s*iframe|<\s*object|<\s*embed|<\s*applet|<\s*meta|<\s*style|\son[a-z]+\s*=|"
    r"javascript\s*:|vbscript\s*:|expression\s*\(",
    re.I,
)


def test_rss2_with_media_and_categories():
    item = (
        "<item><title>Iraq &amp; the vote</title><link>https://example.org/iraq/</link>"
        "<guid isPermaLink='false'>p-1</guid><pubDate>Thu, 06 Nov 2025 12:00:00 GMT</pubDate>"
        "<category>Analysis</category><category>Middle East</category>"
        "<description>&lt;p&gt;Iraqis &lt;b&gt;vote&lt;/b&gt; on Tuesday.&lt;/p&gt;</description>"
        '<media:content url="https://example.org/i.jpg" medium="image" width="1200" height="800">'
        "<media:credit>REUTERS/Someone</media:credit></media:content></item>"
    )
    [a] = parse_feed(rss(item), name="t").articles
    assert a.title == "Iraq & the vote"
    assert a.guid == "p-1"
    assert a.lede == "Iraqis vote on Tuesday."
    assert a.categories == ("Analysis", "Middle East")
    assert (a.image_url, a.image_width, a.image_height) == ("https://example.org/i.jpg", 1200, 800)
    assert a.image_credit == "REUTERS/Someone"
    assert a.published == datetime(2025, 11, 6, 12, 0, tzinfo=UTC)


def test_image_from_thumbnail_enclosure_or_first_img():
    thumb = rss_item("a").replace("</item>", '<media:thumbnail url="https://example.org/t.jpg"/></item>')
    enclosure = rss_item("b").replace(
        "</item>", '<enclosure url="https://example.org/e.jpg" type="image/jpeg" length="1"/></item>'
    )
    audio = rss_item("c").replace(
        "</item>", '<enclosure url="https://example.org/e.mp3" type="audio/mpeg" length="1"/></item>'
    )
    img = rss_item(
        "d", body='<p>Long enough first paragraph of the article body, really.</p><img src="/x.png" alt="X">'
    )
    arts = {a.title: a for a in parse_feed(rss(thumb + enclosure + audio + img), name="t").articles}
    assert arts["a"].image_url == "https://example.org/t.jpg"
    assert arts["b"].image_url == "https://example.org/e.jpg"
    assert arts["c"].image_url is None
    assert arts["d"].image_url == "https://example.org/x.png"  # relative src resolved against the link
    assert arts["d"].image_alt == "X"


def test_lede_is_first_real_paragraph_and_credit_line_is_found():
    body = (
        "<p>By Jane Doe</p>"
        "<p>Top photo credit: REUTERS/Thaier Al-Sudani</p>"
        "<p>Iraqis head to the polls on November 11 for parliamentary elections, "
        "with low turnout expected.</p>"
        "<p>Second paragraph.</p>"
    )
    [a] = parse_feed(rss(rss_item("e", body=body)), name="t").articles
    assert a.lede.startswith("Iraqis head to the polls")
    assert "Second" not in a.lede
    assert a.image_credit == "REUTERS/Thaier Al-Sudani"


def test_wordpress_rss_boilerplate_is_not_the_lede():
    desc = (
        "<p>The real summary of the piece.</p><p>The post Iraq appeared first on Responsible Statecraft.</p>"
    )
    [a] = parse_feed(rss(rss_item("f", description=desc)), name="t").articles
    assert a.lede == "The real summary of the piece."


def test_atom_feed():
    atom = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>A</title><link href="https://example.org/"/>
<entry><title type="html">Sudan &amp;lt;war&amp;gt;</title><id>tag:example.org,2025:1</id>
<link rel="alternate" href="https://example.org/sudan/"/><updated>2025-11-05T10:00:00Z</updated>
<category term="africa" label="Africa"/>
<summary type="html">&lt;p onclick="x()"&gt;A summary.&lt;/p&gt;</summary></entry></feed>"""
    [a] = parse_feed(atom, name="atom").articles
    assert a.title == "Sudan <war>"  # escaped in the HTML: it is text, kept as text
    assert a.url == "https://example.org/sudan/"
    assert "Africa" in a.categories
    assert a.lede == "A summary."


def test_rdf_rss1():
    rdf = b"""<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"
 xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel rdf:about="https://example.org/"><title>R</title><link>https://example.org/</link></channel>
<item rdf:about="https://example.org/r/"><title>R1</title><link>https://example.org/r/</link>
<dc:date>2025-11-05T10:00:00Z</dc:date><dc:subject>Europe</dc:subject>
<description>Plain words.</description></item></rdf:RDF>"""
    [a] = parse_feed(rdf, name="rdf").articles
    assert (a.title, a.categories, a.lede) == ("R1", ("Europe",), "Plain words.")


def test_json_feed_1_1_and_1_0():
    root = feeds_dir() / "gofeed_testdata/testdata/parser/universal"
    for name in ("json10_feed.json", "json11_feed.json"):
        result = parse_feed((root / name).read_bytes(), name=name)
        assert not [w for w in result.warnings if "skipped" in w], result.warnings
        [a] = result.articles
        assert a.url == "https://sample-json-feed.com/id"
        assert a.title == "title"
        assert a.lede == "summary"
        assert a.image_url == "https://sample-json-feed.com/image.png"
        assert a.categories == ("tag1", "tag2")
        assert a.author == "author_name"
        assert a.published.tzinfo is not None


def test_json_feed_text_is_plain_text_and_bad_items_are_warnings():
    data = (
        b'{"version":"https://jsonfeed.org/version/1.1","title":"J","items":['
        b'{"id":"1","url":"https://example.org/1","title":"A <b>bold</b> & plain title",'
        b'"content_text":"First paragraph long enough to be the lede of this item.\\n\\nSecond.",'
        b'"date_published":"2025-11-05T10:00:00+01:00"},'
        b'{"id":"2","url":"javascript:alert(1)","date_published":"2025-11-05T10:00:00Z"},'
        b'{"id":"3","url":"https://example.org/3"}, 42]}'
    )
    result = parse_json_feed(data, name="j")
    [a] = result.articles
    assert a.title == "A <b>bold</b> & plain title"  # JSON Feed titles are plain text, kept as written
    assert a.lede == "First paragraph long enough to be the lede of this item."
    assert result.warnings == ["j: 3 items without an http(s) url or a date were skipped"]
    assert parse_json_feed(b"{nope", name="j").warnings[0].startswith("j: not valid JSON")


def test_html_title_markup_is_dropped_but_escaped_text_kept():
    item = rss_item("x").replace(
        "<title>x</title>", "<title>Iran &lt;b&gt;now&lt;/b&gt; &amp;amp; x &amp;lt; y</title>"
    )
    [a] = parse_feed(rss(item), name="t").articles
    assert a.title == "Iran now & x < y"


def test_double_escaped_script_does_not_survive():
    desc = "&lt;script&gt;alert(1)&lt;/script&gt;&lt;p onclick=x()&gt;Hello there.&lt;/p&gt;"
    assert plain_text(desc) == "Hello there."


def test_broken_input_is_a_warning_naming_the_feed():
    for data in (
        b"",
        b"<html><body>Not a feed</body></html>",
        b"\x00\xff\xfe garbage",
        b"<rss><channel><item>",
    ):
        result = parse_feed(data, name="Broken feed")
        assert result.articles == []
        assert result.warnings and all(w.startswith("Broken feed: ") for w in result.warnings)


def test_billion_laughs_is_refused():
    laughs = b"""<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY a "lol"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;">]>
<rss version="2.0"><channel><title>&c;</title><item><title>&c;</title><link>https://example.org/x</link>
<pubDate>Thu, 06 Nov 2025 12:00:00 GMT</pubDate></item></channel></rss>"""
    result = parse_feed(laughs, name="laughs")
    assert result.articles == []
    assert "entit" in result.warnings[0]


def test_external_entity_is_refused_without_reading_the_file(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET")
    xxe = f"""<?xml version="1.0"?>
<!DOCTYPE rss [<!ENTITY x SYSTEM "file://{secret}">]>
<rss version="2.0"><channel><title>t</title><item><title>&x;</title><link>https://example.org/x</link>
<pubDate>Thu, 06 Nov 2025 12:00:00 GMT</pubDate><description>&x;</description></item>
</channel></rss>""".encode()
    result = parse_feed(xxe, name="xxe")
    assert result.articles == []
    assert "TOP-SECRET" not in repr(result)


def test_utf16_entity_declaration_is_still_seen():
    doc = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY a "b">]><rss/>'.encode("utf-16")
    assert unsafe_xml_reason(doc)


def test_public_doctype_of_rss091_is_accepted():
    doc = (
        b'<?xml version="1.0"?>\n<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" '
        b'"http://my.netscape.com/publish/formats/rss-0.91.dtd">\n'
        b'<rss version="0.91"><channel><title>t</title>'
        b"<link>https://example.org/</link><description>d</description><item><title>Old style</title>"
        b"<link>https://example.org/old/</link><description>Text.</description></item></channel></rss>"
    )
    assert unsafe_xml_reason(doc) is None
    result = parse_feed(doc, name="091")
    # RSS 0.91 items have no date: skipped with a warning, not an exception.
    assert result.articles == [] and "skipped" in result.warnings[0]


def test_a_string_is_never_opened_as_a_file_or_url(tmp_path):
    secret = tmp_path / "feed.xml"
    secret.write_bytes(rss(rss_item("local-file")))
    result = parse_feed(str(secret), name="path")  # feedparser.parse(str) would open the file
    assert result.articles == []


def test_every_fixture_goes_through_without_an_exception():
    """Every feedparser, gofeed and rss2email fixture: articles or warnings, never an exception."""
    root = feeds_dir()
    files = [
        p for p in root.rglob("*") if p.is_file() and p.suffix in {".xml", ".json", ".rss", ".rdf", ".atom"}
    ]
    assert len(files) > 1500
    articles = warned = 0
    for path in files:
        name = str(path.relative_to(root))
        result = parse_feed(path.read_bytes(), name=name)  # an exception fails the test, naming nothing:
        articles += len(result.articles)  # so the assertion below names the file when it matters
        warned += bool(result.warnings)
        for a in result.articles:
            assert a.published.tzinfo is not None, name
            assert a.url.startswith(("http://", "https://")), name
            assert not HOSTILE.search(a.title + " " + a.lede), name
            assert a.image_url is None or a.image_url.startswith(("http://", "https://")), name
    assert articles > 50 and warned > 100


def test_every_fixture_goes_through_collect_dedupe_and_region_mapping():
    """The same fixtures as sources of one collect() run: dedupe and regions run on all of them."""
    root = feeds_dir()
    files = sorted(
        p for p in root.rglob("*") if p.is_file() and p.suffix in {".xml", ".json", ".rss", ".rdf", ".atom"}
    )
    sources = [{"kind": "rss", "name": str(p.relative_to(root)), "path": str(p)} for p in files]
    # A window over all their dates (2002 to 2021), so that every dated item reaches dedupe.
    since, now = datetime(1990, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
    regions = {
        "order": ["Tech", "Comics", "Global"],
        "aliases": {"Tech": ["Nokia", "Программы"], "Comics": ["comics", "LOL"]},
        "ignore": ["announce"],
    }
    totals = []
    for fallback in ("", "Global"):  # items with no known region left out, then kept
        config = make_config(
            sources=sources,
            regions={**regions, "fallback": fallback},
            collect={"window": "since_last_send", "lede_length": 120},
        )
        result = collect(config, now, since=since)
        assert not [w for w in result.warnings if "failed unexpectedly" in w]
        assert len(result.warnings) > 100
        urls = [a.url for a in result.articles]
        assert len(urls) == len(set(urls)), "a canonical URL kept twice: dedupe missed it"
        for a in result.articles:
            assert a.region in {"Tech", "Comics", "Global"}, (a.source, a.region)
            assert a.url.startswith(("http://", "https://")) and len(a.lede) <= 121, a.source
            assert not HOSTILE.search(a.title + " " + a.lede + " " + (a.image_credit or "")), a.source
        reasons = Counter(why.split(" in ")[0] for _, why in result.dropped)
        assert set(reasons) <= {"duplicate", "no known region", "in ignored section 'announce'"}, reasons
        assert reasons["in ignored section 'announce'"] > 0
        assert {"Tech", "Comics"} <= {a.region for a in result.articles}
        totals.append(len(result.articles) + len(result.dropped))
    # With the fallback every item is kept once: the fixtures' repeated items (the same URL or
    # GUID in several files) are found as duplicates.
    assert reasons["duplicate"] > 0 and result.articles
    # Every article is either kept or dropped with a reason, whatever the region settings.
    assert totals[0] == totals[1] > 50


def test_sanitize_fixtures_leave_nothing_hostile():
    """feedparser's sanitize cases, parsed with feedparser's own sanitizer off, through ours."""
    root = feeds_dir() / "feedparser_tests/tests/wellformed/sanitize"
    hostile_inputs = checked = 0
    for path in sorted(root.glob("*.xml")):
        parsed = feedparser.parse(io.BytesIO(path.read_bytes()), sanitize_html=False)
        for entry in parsed.entries:
            raws = [entry.get("title", ""), entry.get("summary", "")]
            raws += [c.get("value", "") for c in entry.get("content", [])]
            for raw in filter(None, raws):
                hostile_inputs += bool(HOSTILE.search(raw))
                clean = sanitize_html(raw, base_url="https://example.org/")
                for out in (clean, plain_text(raw), lede_source(clean, clean)):
                    checked += 1
                    assert not HOSTILE.search(out), f"{path.name}: {out[:200]!r}"
        # And the whole pipeline, as collect runs it.
        for a in parse_feed(path.read_bytes(), name=path.name).articles:
            assert not HOSTILE.search(a.title + a.lede + (a.image_credit or "")), path.name
    assert hostile_inputs > 100, "the fixtures should contain hostile HTML"
    assert checked > 1000


def test_heading_and_paragraph_do_not_run_together_and_pixels_are_not_photos():
    desc = (
        "<h2>Security releases available</h2><p>Updates are now available for all active release lines.</p>"
        '<p><img src="https://feedads.g.doubleclick.net/~a/x/0/di"><img src="https://e.org/p.gif" width="1" '
        'height="1"><img src="https://e.org/photo.jpg" width="800"></p>'
    )
    [a] = parse_feed(rss(rss_item("h", description=desc)), name="t").articles
    assert a.lede == "Updates are now available for all active release lines."
    assert a.image_url == "https://e.org/photo.jpg"
    assert plain_text("<h2>Title</h2><p>Text</p>") == "Title Text"


def test_an_article_quoting_entity_syntax_is_not_refused():
    # After the root element "<!ENTITY" is text in CDATA, not a declaration: no reason to refuse.
    item = rss_item("xml").replace(
        "</item>",
        '<description><![CDATA[<p>Attacks begin with <!ENTITY a "lol"> near the top.</p>]]>'
        "</description></item>",
    )
    data = rss(item)
    assert b'<!ENTITY a "lol">' in data
    assert unsafe_xml_reason(data) is None
    [a] = parse_feed(data, name="t").articles
    assert a.lede.startswith("Attacks begin with")


def test_urls_in_content_are_absolute_http_or_dropped():
    html_in = (
        '<a href="mailto:a@b.org">m</a><a href="/rel">r</a>'
        '<a href="java&#x0A;script:x">j</a><img src="data:x">'
    )
    out = sanitize_html(html_in, base_url="https://example.org/post/")
    assert 'href="mailto:a@b.org"' in out and 'href="https://example.org/rel"' in out
    assert "script" not in out and "data:" not in out


@pytest.mark.parametrize(
    ("fixture", "byline"),
    [
        ("rss/item_author.xml", "Example editor"),
        ("rss/item_dc_creator.xml", "Example editor"),
        ("rss/item_author_map_author_detail_name.xml", "Example editor"),  # "Example editor (me@...)"
        ("rss/item_multiple_dc_creator.xml", "First Author and Second Author"),
        ("atom10/entry_authors_name.xml", "one and two"),
        ("atom10/entry_author_name.xml", "Example author"),
    ],
)
def test_byline_from_the_feedparser_author_fixtures(fixture, byline):
    path = feeds_dir() / "feedparser_tests/tests/wellformed" / fixture
    [entry] = feedparser.parse(io.BytesIO(path.read_bytes())).entries
    assert entry_byline(entry) == byline


def test_a_bare_address_is_no_byline_and_bylines_reach_the_article():
    [entry] = feedparser.parse(
        io.BytesIO(
            b'<rss version="2.0"><channel><item><author>me@example.com</author></item></channel></rss>'
        )
    ).entries
    assert entry_byline(entry) is None
    item = rss_item("b").replace(
        "</item>", "<dc:creator>Trita Parsi</dc:creator><dc:creator>Jon Hoffman</dc:creator></item>"
    )
    [a] = parse_feed(rss(item, 'xmlns:dc="http://purl.org/dc/elements/1.1/"'), name="t").articles
    assert a.author == "Trita Parsi and Jon Hoffman"


def _media_item(media: str, description: str = "Iraqis head to the polls on November 11.") -> str:
    return rss_item("iraq", description=description).replace("</item>", media + "</item>")


def test_alt_text_is_the_photos_media_description_and_the_summary_stays_the_summary():
    media = (
        '<media:content url="https://example.org/iraq.jpg" medium="image">'
        f"<media:description>Supporters attend a ceremony in Karbala</media:description>"
        f"<media:credit>{seed.IRAQ_CREDIT}</media:credit></media:content>"
    )
    for item in (_media_item(media), rss_item("iraq").replace("<pubDate>", media + "<description>Iraqis head "
                 "to the polls on November 11.</description><pubDate>")):  # fmt: skip
        [a] = parse_feed(rss(item), name="t").articles
        assert a.image_alt == "Supporters attend a ceremony in Karbala"
        assert a.lede == "Iraqis head to the polls on November 11."  # feedparser had swapped them
        assert a.image_credit == seed.IRAQ_CREDIT
    # media:group, as YouTube and others write it.
    grouped = (
        '<media:group><media:content url="https://example.org/g.jpg" medium="image"/>'
        "<media:description>Voters queue in Najaf</media:description></media:group>"
    )
    [a] = parse_feed(rss(_media_item(grouped)), name="t").articles
    assert (a.image_url, a.image_alt) == ("https://example.org/g.jpg", "Voters queue in Najaf")


def test_no_alt_in_the_feed_is_an_empty_alt_not_the_title():
    path = (
        feeds_dir() / "gofeed_testdata/testdata/extensions/media/feed_item_image_-_rss_channel_item_media.xml"
    )
    [entry] = feedparser.parse(io.BytesIO(path.read_bytes())).entries
    a = entry_article(
        {**entry, "link": "https://example.com/post", "published_parsed": (2025, 11, 6, 12, 0, 0, 3, 310, 0)},
        "t",
    )
    assert a is not None and a.image_url == "https://example.com/blog-open.png"
    assert a.image_alt == ""  # media:title "blog-open" names the file, not the photo; never the headline
    body = '<p>A paragraph long enough to be the lede of this article.</p><figure><img src="/p.jpg">' \
        "<figcaption>Talks in Doha</figcaption></figure>"  # fmt: skip
    [b] = parse_feed(rss(rss_item("fig", body=body)), name="t").articles
    assert (b.image_url, b.image_alt) == ("https://example.org/p.jpg", "Talks in Doha")
    credit_only = body.replace("Talks in Doha", "Photo credit: AP")
    [c] = parse_feed(rss(rss_item("fig", body=credit_only)), name="t").articles
    assert (c.image_alt, c.image_credit) == ("", "AP")


def test_a_feed_url_that_answers_a_web_page_says_so(local_server):
    page = (
        b"<!DOCTYPE html><html><head><title>Responsible Statecraft</title>"
        b'<link rel="alternate" type="application/rss+xml" title="RS" href="/feeds/feed.rss">'
        b"</head><body><p>Analysis | Middle East</p></body></html>"
    )
    local_server.expect_request("/").respond_with_data(page, content_type="text/html; charset=utf-8")
    local_server.expect_request("/bare").respond_with_data(page[15:], content_type="")
    with local_fetcher() as fetcher:
        result = fetch_feed(local_server.url_for("/"), fetcher, name="RS")
        bare = fetch_feed(local_server.url_for("/bare"), fetcher, name="RS")
    assert result.articles == []
    assert result.warnings == [
        f"RS: {local_server.url_for('/')} returned an HTML page (Content-Type text/html; charset=utf-8), "
        f"not a feed; the page names its feed at {local_server.url_for('/feeds/feed.rss')}"
    ]
    assert bare.warnings[0].startswith(f"RS: {local_server.url_for('/bare')} returned an HTML page (")
    assert "not a feed" in bare.warnings[0] and "no Content-type specified" not in bare.warnings[0]


def test_a_truncated_feed_says_how_many_entries_it_read():
    path = feeds_dir() / "rss2email_testdata/test/data/tails/feed.rss"
    data = path.read_bytes()
    whole = parse_feed(data, name="Tails")
    assert whole.warnings == [] and len(whole.articles) == 10
    cut = data[: data.index(b"<item>", len(data) // 2) + 200]  # the download stopped inside an item
    result = parse_feed(cut, name="Tails")
    [warning] = [w for w in result.warnings if "cut short" in w]
    read = int(re.search(r"; (\d+) entries read", warning).group(1))
    assert warning.startswith("Tails: the feed is ill-formed or cut short (")
    assert 0 < len(result.articles) <= read < 10
    assert [a.url for a in result.articles] == [a.url for a in whole.articles][: len(result.articles)]


def test_a_local_feed_file_is_capped_like_a_download(tmp_path):
    big = tmp_path / "huge.xml"
    with big.open("wb") as f:
        f.write(rss(rss_item("first")))
        f.truncate(42_000_000)  # 42 MB on paper (sparse): nothing past the cap may be read
    config = make_config(tmp_path, sources=[{"kind": "rss", "name": "Export", "path": "huge.xml"}])
    tracemalloc.start()
    try:
        result = collect(config, NOW)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.articles == []
    assert result.warnings == [
        f"Export: {big} is 42,000,000 bytes, over the 5,000,000-byte cap ([collect] fetch_max_bytes); skipped"
    ]
    assert peak < 5_000_000
    small = make_config(tmp_path, sources=[{"kind": "rss", "name": "Export", "path": "huge.xml"}],
                        collect={"fetch_max_bytes": 50_000_000})  # fmt: skip
    assert "over the" not in " ".join(collect(small, NOW).warnings)


def test_json_feed_authors_make_one_byline_and_no_alt_is_an_empty_alt():
    when = "2025-11-05T10:00:00Z"
    authors = [{"name": "Ann"}, {"name": "Bo"}, {"name": "Cy"}]
    items = [
        {"id": "1", "url": "https://e.org/1", "title": seed.SUDAN_TITLE, "date_published": when,
         "image": "https://e.org/1.jpg", "authors": authors},
        {"id": "2", "url": "https://e.org/2", "title": "The feed's author", "date_published": when},
    ]  # fmt: skip
    data = json.dumps(
        {
            "version": "https://jsonfeed.org/version/1.1",
            "authors": [{"name": "Responsible Statecraft"}],
            "items": items,
        }
    ).encode()
    one, two = parse_json_feed(data, name="j").articles
    assert (one.author, one.image_alt) == ("Ann, Bo and Cy", "")
    assert two.author == "Responsible Statecraft"


def test_a_broken_feed_sent_as_text_html_is_still_called_a_feed(local_server):
    local_server.expect_request("/feed").respond_with_data(
        b'<?xml version="1.0"?><rss version="2.0"><channel><item><title>x', content_type="text/html"
    )
    with local_fetcher() as fetcher:
        result = fetch_feed(local_server.url_for("/feed"), fetcher, name="RS")
    assert result.warnings and "HTML page" not in result.warnings[0]
