"""The WordPress REST API source against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import collect_fixtures
from collect_fixtures import local_fetcher

from digest.sources.wordpress import fetch_posts, parse_posts, posts_endpoint

_local_server_module = collect_fixtures._local_server_module
local_server = collect_fixtures.local_server

AFTER = datetime(2025, 10, 31, 14, 0, tzinfo=UTC)


def post(n: int, **over):
    data = {
        "id": n,
        "date": "2025-11-05T07:00:00",
        "date_gmt": "2025-11-05T12:00:00",
        "guid": {"rendered": f"https://example.org/?p={n}"},
        "link": f"https://example.org/post-{n}/",
        "title": {"rendered": f"Post {n} &#8211; Iran&#8217;s &lt;choice&gt;"},
        "excerpt": {"rendered": f"<p>Excerpt {n} [&hellip;]</p>\n"},
        "content": {"rendered": "<p>Body <script>alert(1)</script></p>"},
        "_embedded": {
            "author": [{"name": "Jane Doe"}],
            "wp:featuredmedia": [
                {
                    "source_url": f"https://example.org/wp-content/uploads/{n}.jpg",
                    "alt_text": "A photo",
                    "caption": {"rendered": "<p>Protesters in Tehran. REUTERS/Someone</p>"},
                    "media_details": {"width": 1200, "height": 800, "image_meta": {"credit": ""}},
                }
            ],
            "wp:term": [
                [
                    {"taxonomy": "category", "name": "Middle East"},
                    {"taxonomy": "category", "name": "Analysis"},
                ],
                [{"taxonomy": "post_tag", "name": "Africa"}],
            ],
        },
    }
    data.update(over)
    return data


def test_endpoint_from_site_url():
    assert posts_endpoint("https://example.org") == "https://example.org/wp-json/wp/v2/posts"
    assert posts_endpoint("https://example.org/blog/") == "https://example.org/blog/wp-json/wp/v2/posts"
    assert (
        posts_endpoint("https://example.org/wp-json/wp/v2/posts?x=1")
        == "https://example.org/wp-json/wp/v2/posts"
    )


def test_paginated_posts_with_embedded_media_and_categories(local_server):
    for page, posts in ((1, [post(1), post(2)]), (2, [post(3, _embedded={})])):
        local_server.expect_request(
            "/wp-json/wp/v2/posts",
            query_string={
                "after": "2025-10-31T14:00:00",
                "_embed": "1",
                "per_page": "50",
                "page": str(page),
                "orderby": "date",
                "order": "desc",
            },
        ).respond_with_json(posts, headers={"X-WP-Total": "3", "X-WP-TotalPages": "2"})
    with local_fetcher() as fetcher:
        result = fetch_posts(local_server.url_for("/"), fetcher, name="WP", after=AFTER, max_pages=10)
    assert result.warnings == []
    assert [a.url for a in result.articles] == [f"https://example.org/post-{n}/" for n in (1, 2, 3)]
    a = result.articles[0]
    assert a.title == "Post 1 – Iran’s <choice>"
    assert a.guid == "https://example.org/?p=1"
    assert a.lede == "Excerpt 1"
    assert a.published == datetime(2025, 11, 5, 12, 0, tzinfo=UTC)
    assert a.categories == ("Middle East", "Analysis")  # tags are not sections
    assert (a.image_url, a.image_width, a.image_alt) == (
        "https://example.org/wp-content/uploads/1.jpg",
        1200,
        "A photo",
    )
    assert a.image_credit == "Protesters in Tehran. REUTERS/Someone"
    assert a.author == "Jane Doe"
    assert result.articles[2].image_url is None and result.articles[2].categories == ()


def test_credit_field_wins_over_caption():
    p = post(1)
    p["_embedded"]["wp:featuredmedia"][0]["media_details"]["image_meta"]["credit"] = "AP Photo"
    [a] = parse_posts(json.dumps([p]).encode(), name="WP").articles
    assert a.image_credit == "AP Photo"


def test_max_pages_caps_the_walk(local_server):
    local_server.expect_request("/wp-json/wp/v2/posts").respond_with_json(
        [post(1)], headers={"X-WP-TotalPages": "40"}
    )
    with local_fetcher() as fetcher:
        result = fetch_posts(local_server.url_for("/"), fetcher, name="WP", after=AFTER, max_pages=2)
    assert len(local_server.log) == 2
    assert "reading only the first 2" in result.warnings[0]


def test_api_error_and_broken_json_are_warnings(local_server):
    local_server.expect_request("/wp-json/wp/v2/posts").respond_with_json(
        {"code": "rest_forbidden", "message": "no"}, status=401
    )
    with local_fetcher() as fetcher:
        result = fetch_posts(local_server.url_for("/"), fetcher, name="WP", after=AFTER, max_pages=2)
    assert (
        result.articles == []
        and "WP: cannot fetch page 1" in result.warnings[0]
        and "HTTP 401" in result.warnings[0]
    )
    assert (
        parse_posts(b"<html>", name="WP").warnings[0].startswith("WP: the WordPress API did not answer JSON")
    )
    assert parse_posts(b'{"code": "rest_no_route"}', name="WP").warnings == [
        "WP: the WordPress API answered an error (rest_no_route)"
    ]
    odd = parse_posts(
        json.dumps([{"link": "javascript:alert(1)", "date_gmt": "2025-11-05T12:00:00"}, 3]).encode(),
        name="WP",
    )
    assert odd.articles == [] and "2 posts" in odd.warnings[0]
