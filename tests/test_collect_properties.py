"""Property tests for the text cleaning every feed goes through (hypothesis)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from hypothesis import given, settings
from hypothesis import strategies as st

from digest.collect import canonical_url
from digest.sources.extract import ALLOWED_ATTRIBUTES, ALLOWED_TAGS, plain_text, sanitize_html, shorten

# Fragments hostile HTML is made of, so generated input actually exercises the sanitizer.
PIECES = st.sampled_from(
    [
        "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", '<a href="javascript:alert(1)">x</a>',
        "&lt;script&gt;", "&amp;lt;script&amp;gt;", "<p>", "</p>", "<iframe src=//e.org>", "<svg onload=x>",
        "<style>p{}</style>", '<a href="http://e.org/">ok</a>', "text", " ", "&", "<", ">", "\"", "'",
        "<!--", "-->", "<![CDATA[", "]]>", "on", "click=", "java", "script:", "&#106;avascript:", "\x00",
    ]
)  # fmt: skip
HTMLISH = st.lists(st.one_of(PIECES, st.text(max_size=5)), max_size=30).map("".join)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


@settings(max_examples=300, deadline=None)
@given(HTMLISH)
def test_sanitized_html_keeps_only_allowed_tags_attributes_and_urls(fragment):
    parser = _Tags()
    parser.feed(sanitize_html(fragment, base_url="https://example.org/"))
    for tag, attrs in parser.tags:
        assert tag in ALLOWED_TAGS, fragment
        for name, value in attrs.items():
            assert name in ALLOWED_ATTRIBUTES.get(tag, set()) | {"rel"}, fragment
            if name in ("href", "src"):
                assert (value or "").startswith(("http://", "https://", "mailto:")), fragment


@settings(max_examples=300, deadline=None)
@given(HTMLISH)
def test_plain_text_has_no_markup_left_that_a_browser_would_run(fragment):
    text = plain_text(fragment)
    assert not re.search(r"<\s*(script|iframe|svg|style|img)\b", text, re.I), (fragment, text)
    assert "\n" not in text and text == text.strip()


@given(st.text(max_size=400), st.integers(min_value=5, max_value=300))
def test_shorten_respects_the_limit(text, limit):
    text = " ".join(text.split())
    out = shorten(text, limit)
    assert len(out) <= limit + 1  # plus the ellipsis
    assert out == text or text.startswith(out.removesuffix("…"))


@given(
    st.sampled_from(["utm_source=x", "fbclid=1", "id=3", "q=a%20b", "gclid=z", "page=2"]).map(str),
    st.integers(0, 3),
)
def test_canonical_url_is_idempotent(param, n):
    url = "https://Example.org/a/?" + "&".join([param] * n) + "#frag"
    once = canonical_url(url)
    assert canonical_url(once) == once
    assert "utm_" not in once and "fbclid" not in once and "#" not in once
