"""The WordPress REST API source against a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import collect_fixtures
from collect_fixtures import local_fetcher
from seed_facts import TRUMP_XI_CREDIT, TRUMP_XI_IMAGE_TEXT

from digest.sources.wordpress import (
    MAX_IMAGE_WIDTH,
    best_size,
    fetch_posts,
    parse_posts,
    posts_endpoint,
    read_posts_file,
)

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


def _sizes(original: tuple[int, int] = (2560, 1707)) -> dict:
    """media_details.sizes as WordPress 6 makes them for a 2,560 px "-scaled" upload."""
    base = "https://responsiblestatecraft.org/wp-content/uploads/2025/10/trump-xi"
    shapes = {
        "thumbnail": (150, 150),  # cropped square
        "medium": (300, 200),
        "medium_large": (768, 512),
        "large": (1024, 683),
        "post-thumbnail": (1100, 1100),  # a theme's crop: another picture
        "1536x1536": (1536, 1024),
        "2048x2048": (2048, 1365),
        "full": original,
    }
    return {
        name: {"file": f"trump-xi-{w}x{h}.jpg", "width": w, "height": h, "mime_type": "image/jpeg",
               "source_url": f"{base}-{w}x{h}.jpg"}
        for name, (w, h) in shapes.items()
    }  # fmt: skip


def _with_media(**media) -> dict:
    p = post(1)
    p["_embedded"]["wp:featuredmedia"] = [
        {
            "source_url": "https://responsiblestatecraft.org/wp-content/uploads/2025/10/trump-xi-scaled.jpg",
            "alt_text": TRUMP_XI_IMAGE_TEXT,
            "caption": {"rendered": f"<p>{TRUMP_XI_CREDIT}</p>"},
            "media_details": {"width": 2560, "height": 1707, "sizes": _sizes(), "image_meta": {"credit": ""}},
            **media,
        }
    ]
    return p


def test_the_largest_size_at_most_twice_the_column_is_used():
    assert MAX_IMAGE_WIDTH == 2 * 568  # the lead photo's width in templates/digest.mjml.j2
    [a] = parse_posts(json.dumps([_with_media()]).encode(), name="WP").articles
    assert (a.image_url, a.image_width, a.image_height) == (
        "https://responsiblestatecraft.org/wp-content/uploads/2025/10/trump-xi-1024x683.jpg",
        1024,
        683,
    )
    assert a.image_alt == TRUMP_XI_IMAGE_TEXT and a.image_credit == TRUMP_XI_CREDIT
    # A wider template: a wider size, never the 2,560 px upload.
    [wide] = parse_posts(json.dumps([_with_media()]).encode(), name="WP", max_image_width=1600).articles
    assert (wide.image_width, wide.image_height) == (1536, 1024)


def test_size_fallbacks():
    original = ("https://e.org/u.jpg", 2560, 1707)
    # Every copy wider than needed: the narrowest of them.
    only_wide = {k: v for k, v in _sizes().items() if v["width"] > 1200}
    assert best_size(only_wide, original, 1136)[1:] == (1536, 1024)
    # No sizes at all (an SVG, an old export): the original, as given.
    assert best_size(None, original, 1136) == original
    assert best_size({}, (original[0], None, None), 1136) == (original[0], None, None)
    # Unknown original size: every shape may serve, still the largest that fits.
    assert best_size(_sizes(), (original[0], None, None), 1136)[1:] == (1100, 1100)
    # Nonsense in sizes is skipped.
    odd = {"x": {"width": "wide", "source_url": "javascript:alert(1)"}, "y": [], "z": {"width": 500}}
    assert best_size(odd, original, 1136) == original


def test_alt_text_else_the_caption_unless_the_caption_is_the_credit():
    # No alt, a credit field, a caption that describes the photo: the caption is the alt.
    p = _with_media(alt_text="", caption={"rendered": "<p>Trump and Xi meet in Busan</p>"})
    p["_embedded"]["wp:featuredmedia"][0]["media_details"]["image_meta"]["credit"] = (
        "REUTERS/Evelyn Hockstein"
    )
    [a] = parse_posts(json.dumps([p]).encode(), name="WP").articles
    assert (a.image_alt, a.image_credit) == ("Trump and Xi meet in Busan", "REUTERS/Evelyn Hockstein")
    # No alt, and the caption became the credit: no alt at all (not the title).
    [b] = parse_posts(json.dumps([_with_media(alt_text="")]).encode(), name="WP").articles
    assert (b.image_alt, b.image_credit) == ("", TRUMP_XI_CREDIT)


def test_every_embedded_author_is_in_the_byline():
    p = post(1)
    p["_embedded"]["author"] = [
        {"name": "Trita Parsi"},
        {"name": "Jon Hoffman"},
        {"code": "rest_user_invalid_id"},
    ]
    [a] = parse_posts(json.dumps([p]).encode(), name="WP").articles
    assert a.author == "Trita Parsi and Jon Hoffman"


def test_a_saved_api_file_is_capped_like_a_download(tmp_path):
    path = tmp_path / "posts.json"
    path.write_text(json.dumps([post(n) for n in range(40)]), "utf-8")
    result = read_posts_file(path, name="WP", max_bytes=2_000)
    size = path.stat().st_size
    assert result.articles == [] and result.warnings == [
        f"WP: {path} is {size:,} bytes, over the 2,000-byte cap ([collect] fetch_max_bytes); skipped"
    ]
    assert len(read_posts_file(path, name="WP").articles) == 40
