"""Property tests for the text cleaning every feed goes through (hypothesis)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

from hypothesis import given, settings
from hypothesis import strategies as st

from digest.collect import canonical_url
from digest.sources.extract import (
    ABBREVIATIONS,
    ALLOWED_ATTRIBUTES,
    ALLOWED_TAGS,
    cut_credit,
    plain_text,
    sanitize_html,
    shorten,
)

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


WORD = st.text("abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=9).filter(lambda w: w not in ABBREVIATIONS)
WORDS = st.lists(WORD, min_size=1, max_size=12).map(" ".join)


@given(WORDS, WORDS)
def test_shorten_keeps_a_sentence_that_ends_exactly_at_the_limit(sentence, rest):
    first = f"The {sentence}."  # lower-case words: none of them is an initial
    text = f"{first} {rest.capitalize()}."
    assert shorten(text, len(first)) == first
    # One character less and that sentence no longer fits: it is cut at a word instead.
    assert shorten(text, len(first) - 1).endswith("…")


@given(
    st.sampled_from(sorted(ABBREVIATIONS) + ["U.S", "U.N", "U.K", "A", "F", "J.R.R"]),
    WORDS,
    WORDS,
    st.integers(min_value=0, max_value=40),
)
def test_shorten_never_ends_at_an_abbreviation_or_initial(abbreviation, before, after, extra):
    word = abbreviation.capitalize() if abbreviation.islower() else abbreviation
    head = f"{before.capitalize()} met {word}."
    text = f"{head} {after.capitalize()} and others in the room at night."
    out = shorten(text, len(head) + extra)
    assert not out.endswith(f"{word}."), (text, out)
    assert out.endswith(("…", "night.")), (text, out)


@given(st.text(alphabet='ab .?!"”', max_size=200), st.integers(min_value=5, max_value=120))
def test_shorten_ends_at_a_stop_a_whole_word_or_an_ellipsis(text, limit):
    text = " ".join(text.split())
    out = shorten(text, limit)
    assert len(out) <= limit + 1
    if out != text and not out.endswith("…"):
        assert len(out) <= limit and out[-1] in '.?!"”' and text[len(out)] == " ", (text, out)


CREDIT_END = st.sampled_from(
    ["REUTERS/Evelyn Hockstein TPX", "AP Photo/Hadi Mizban", "Shutterstock.com", "X"]
)


CREDIT_WORDS = st.lists(st.one_of(WORD, st.sampled_from(["2025.", "U.S.", "Iraq,", "(APEC)"])), max_size=60)


@given(CREDIT_WORDS, CREDIT_END, st.integers(min_value=20, max_value=300))
def test_cut_credit_fits_the_limit_and_keeps_the_photographer(words, end, limit):
    text = " ".join([*words, end])
    out = cut_credit(text, limit)
    assert len(out) <= limit and out == out.strip(), (text, out)
    if out == text:
        return
    assert len(text) > limit
    assert out.endswith(end) or len(end) > limit - 1, (text, out)  # the end, unless it alone is too long
    head, _, tail = out.partition("…")
    assert text.startswith(head) and text.endswith(tail), (text, out)


@given(
    st.sampled_from(["utm_source=x", "fbclid=1", "id=3", "q=a%20b", "gclid=z", "page=2"]).map(str),
    st.integers(0, 3),
)
def test_canonical_url_is_idempotent(param, n):
    url = "https://Example.org/a/?" + "&".join([param] * n) + "#frag"
    once = canonical_url(url)
    assert canonical_url(once) == once
    assert "utm_" not in once and "fbclid" not in once and "#" not in once
