"""Enrichment from the article page: OpenGraph and JSON-LD."""

from __future__ import annotations

import json

import collect_fixtures
from collect_fixtures import article, local_fetcher

from digest.sources.enrich import enrich, enrich_from_page, parse_page

_local_server_module = collect_fixtures._local_server_module
local_server = collect_fixtures.local_server

LD = {
    "@context": "https://schema.org",
    "@graph": [
        {"@type": "WebPage", "name": "page"},
        {
            "@type": "NewsArticle",
            "articleSection": ["Middle East", "Analysis"],
            "image": {
                "@type": "ImageObject",
                "url": "/uploads/iraq.jpg",
                "caption": "Voters in Karbala",
                "creditText": "REUTERS/Thaier Al-Sudani",
            },
            "author": [{"@type": "Person", "name": "Jane Doe"}],
            "datePublished": "2025-11-06T09:00:00-05:00",
            "description": "Iraqis head to the polls.",
        },
    ],
}


def page(ld: object = LD, og: str = "") -> str:
    return (
        f"<html><head><title>x</title>{og}"
        f'<script type="application/ld+json">{json.dumps(ld)}</script>'
        "</head><body><p>text</p></body></html>"
    )


def test_json_ld_news_article_in_a_graph():
    meta = parse_page(page(), "https://example.org/iraq/")
    assert meta.image_url == "https://example.org/uploads/iraq.jpg"
    assert meta.image_alt == "Voters in Karbala"
    assert meta.image_credit == "REUTERS/Thaier Al-Sudani"
    assert meta.section == ("Middle East", "Analysis")
    assert meta.author == "Jane Doe"
    assert meta.description == "Iraqis head to the polls."


def test_opengraph_when_there_is_no_json_ld():
    og = (
        '<meta property="og:image" content="https://cdn.example.org/a.jpg">'
        '<meta property="og:image:alt" content="Alt &amp; text">'
        '<meta property="article:section" content="Africa">'
        '<meta property="og:description" content="A &lt;b&gt;summary&lt;/b&gt;.">'
    )
    meta = parse_page(page(ld=[], og=og), "https://example.org/")
    assert (meta.image_url, meta.image_alt, meta.section) == (
        "https://cdn.example.org/a.jpg",
        "Alt & text",
        ("Africa",),
    )
    assert meta.description == "A <b>summary</b>."  # text, never markup


def test_hostile_page_gives_nothing_dangerous():
    ld = {"@type": "NewsArticle", "image": "javascript:alert(1)", "articleSection": 5}
    meta = parse_page(page(ld=ld) + "<script>broken", "https://example.org/")
    assert meta.image_url is None and meta.section == ()
    assert (
        parse_page("<script type='application/ld+json'>{not json</script>", "https://x.org/").image_url
        is None
    )


def test_feed_values_win_and_credit_follows_its_photo():
    meta = parse_page(page(), "https://example.org/iraq/")
    feed_photo = article(image_url="https://example.org/other.jpg", image_credit=None, categories=(), lede="")
    out = enrich(feed_photo, meta)
    assert out.image_url == "https://example.org/other.jpg"
    assert out.image_credit is None  # the page's credit is for another photo
    assert out.categories == ("Middle East", "Analysis")
    assert out.lede == "Iraqis head to the polls."
    bare = enrich(article(image_url=None, categories=("Analysis", "Middle East")), meta)
    assert bare.image_url == "https://example.org/uploads/iraq.jpg"
    assert bare.image_credit == "REUTERS/Thaier Al-Sudani"
    assert bare.categories == ("Analysis", "Middle East")  # the feed's first, no repeats


def test_enrich_from_page_over_http(local_server):
    local_server.expect_request("/iraq/").respond_with_data(page(), content_type="text/html; charset=utf-8")
    url = local_server.url_for("/iraq/")
    with local_fetcher() as fetcher:
        out, warning = enrich_from_page(article(url=url, image_url=None, categories=()), fetcher)
        assert warning is None
        assert out.image_url.endswith("/uploads/iraq.jpg") and out.categories[0] == "Middle East"
        gone, warning = enrich_from_page(
            article(url=local_server.url_for("/missing/"), source="Feed"), fetcher
        )
    assert gone.image_url is None and gone.lede == "A lede."  # unchanged
    assert warning.startswith(
        f"Feed: cannot read {local_server.url_for('/missing/')} for enrichment (HTTP 500"
    )


def test_the_pages_alt_text_only_for_the_same_photo_and_every_author_in_the_byline():
    ld = {**LD["@graph"][1], "author": [{"name": "Trita Parsi"}, {"name": "Jon Hoffman"}]}
    meta = parse_page(page(ld), "https://example.org/iraq/")
    assert meta.author == "Trita Parsi and Jon Hoffman"
    same = article(image_url="https://example.org/uploads/iraq.jpg", image_alt="")
    assert enrich(same, meta).image_alt == "Voters in Karbala"
    other = article(image_url="https://example.org/uploads/other.jpg", image_alt="")
    assert enrich(other, meta).image_alt == ""  # that caption describes another photo
    assert enrich(article(image_alt=""), meta).image_alt == "Voters in Karbala"  # the page's photo is taken
