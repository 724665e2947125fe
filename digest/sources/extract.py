"""Pure helpers every source uses on feed HTML: sanitise, find the lede, the image, the credit.

Feed HTML is hostile input. `sanitize_html` (nh3, an allowlist) runs before anything else
looks at it; everything here works on its output. No I/O.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import nh3

# What survives in feed HTML: text structure, links and images. No scripts, styles, forms,
# frames, event handlers or style attributes; URLs only http(s) and mailto.
ALLOWED_TAGS = {
    "a", "abbr", "b", "blockquote", "br", "caption", "cite", "code", "dd", "del", "div", "dl", "dt",
    "em", "figcaption", "figure", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "img", "ins", "li",
    "ol", "p", "pre", "q", "s", "small", "span", "strong", "sub", "sup", "table", "tbody", "td",
    "tfoot", "th", "thead", "tr", "u", "ul",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {
    "a": {"href", "title"},
    "img": {"src", "alt", "title", "width", "height"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
    "abbr": {"title"},
}
URL_SCHEMES = {"http", "https", "mailto"}

CREDIT_LINE = re.compile(
    r"^\s*(?:top\s+)?(?:photo|image|picture)\s+credit\s*:\s*(?P<credit>.+)$", re.I | re.S
)
# Tails that CMS feeds append to summaries: WordPress's "The post X appeared first on Y.",
# "[…]" / "[...]", "Continue reading", "Read more".
_SUMMARY_TAILS = (
    re.compile(r"\s*The post .{1,300}? appeared first on .{1,200}?\.?\s*$", re.S),
    re.compile(
        r"\s*(?:\[(?:…|\.\.\.|&hellip;)\]|(?:Continue|Keep) reading.{0,40}|Read more.{0,40})\s*$", re.I
    ),
)
MIN_PARAGRAPH = 40  # shorter paragraphs are bylines, datelines, captions: not a lede


def sanitize_html(fragment: str | None, *, base_url: str = "") -> str:
    """Feed HTML through the nh3 allowlist; relative links resolved against base_url."""
    if not fragment:
        return ""
    return nh3.clean(
        fragment,
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes=URL_SCHEMES,
        link_rel="noopener noreferrer nofollow",
        strip_comments=True,
        attribute_filter=_resolve_urls(base_url) if base_url else None,
    )


def _resolve_urls(base_url: str) -> Callable[[str, str, str], str | None]:
    def fix(tag: str, attr: str, value: str) -> str | None:
        if attr == "href" and value.strip().lower().startswith("mailto:"):
            return value.strip()
        if attr in ("href", "src"):
            return safe_url(value, base_url)  # None drops the attribute
        return value

    return fix


def safe_url(url: str | None, base_url: str = "") -> str | None:
    """An absolute http(s) URL, or None (javascript:, data:, relative without base...)."""
    if not url:
        return None
    # Browsers ignore tabs and newlines inside URLs ("java\nscript:"): so do we, before judging.
    url = re.sub(r"[\x00-\x1f\x7f]", "", url).strip().replace(" ", "%20")
    absolute = urljoin(base_url, url) if base_url else url
    parts = urlsplit(absolute)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return absolute


# Markup that is active in a browser. Plain text that still contains it after unescaping came
# from a double-escaped feed: it gets another sanitising round instead of being passed on.
_ACTIVE = re.compile(
    r"<\s*/?\s*(?:script|style|iframe|frame|object|embed|applet|meta|link|base|form|input|button|svg|math|"
    r"img|a|body|html|video|audio|source|xml|import)\b|\son[a-z]+\s*=|(?:java|vb)script\s*:",
    re.I,
)


_BLOCK_TAG = re.compile(
    r"<(/?(?:p|div|br|li|h[1-6]|tr|td|th|blockquote|figcaption|figure|section|article|ul|ol|dd|dt|pre|hr)\b)",
    re.I,
)


def plain_text(fragment: str | None) -> str:
    """HTML to one line of plain text.

    nh3 with no tags allowed removes every element (scripts and styles with their content);
    unescaping then gives the text. Escaped markup that is harmless ("a <b> c", "x < y")
    stays as text; active markup revealed by unescaping (double-escaped feeds) gets more rounds.
    """
    # A space where a block ends, or "<h2>Title</h2><p>Text" would read "TitleText".
    spaced = _BLOCK_TAG.sub(r" <\1", fragment or "")
    text = html.unescape(nh3.clean(spaced, tags=set(), strip_comments=True))
    for _ in range(3):
        if not _ACTIVE.search(text):
            break
        text = html.unescape(nh3.clean(text, tags=set(), strip_comments=True))
    if _ACTIVE.search(text):
        # Still there after three rounds: take out anything tag-shaped and defuse script URLs.
        text = re.sub(r"<[^>]*>?", "", text)
        text = re.sub(r"(?i)\b((?:java|vb)script)\s*:", r"\1 :", text)
        text = re.sub(r"(?i)\s(on[a-z]+)\s*=", r" \1 =", text)
    return re.sub(r"\s+", " ", text).strip()


@dataclass(frozen=True)
class Block:
    """A paragraph-level piece of text from content HTML."""

    tag: str
    text: str


class _Scanner(HTMLParser):
    """Collects paragraph blocks and images from sanitised HTML."""

    BLOCKS = {"p", "div", "li", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "figcaption", "td", "pre"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.blocks: list[Block] = []
        self.images: list[tuple[str, str]] = []  # (src, alt)
        self.captions: dict[int, str] = {}  # index in images -> its <figure>'s <figcaption> text
        self._stack: list[str] = []
        self._text: list[str] = []
        self._figures: list[list[int]] = []  # the images of each open <figure>

    def _flush(self) -> None:
        text = re.sub(r"\s+", " ", "".join(self._text)).strip()
        if text:
            tag = self._stack[-1] if self._stack else ""
            self.blocks.append(Block(tag, text))
            if tag == "figcaption" and self._figures:
                for index in self._figures[-1]:
                    self.captions.setdefault(index, text)
        self._text = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            a = dict(attrs)
            if a.get("src") and not _is_decoration(a):
                if self._figures:
                    self._figures[-1].append(len(self.images))
                self.images.append((a["src"] or "", a.get("alt") or ""))
            return
        if tag == "figure":
            self._figures.append([])
            return
        if tag == "br":
            self._text.append("\n")
            return
        if tag in self.BLOCKS:
            self._flush()
            self._stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "figure" and self._figures:
            self._flush()
            self._figures.pop()
            return
        if tag in self.BLOCKS:
            self._flush()
            if tag in self._stack:
                while self._stack and self._stack.pop() != tag:
                    pass

    def handle_data(self, data: str) -> None:
        self._text.append(data)

    def close(self) -> None:
        super().close()
        self._flush()


# Images in feed content that are not the article's photo: ad and analytics pixels, feed
# buttons, avatars, emoji, tiny blog thumbnails.
_DECORATION_URL = re.compile(
    r"doubleclick\.net|feedburner\.com/~|feeds\.feedburner\.com|/~r/|/~ff/|stats\.wordpress\.com|"
    r"feedsportal\.com|[/._-](?:pixel|spacer|blank|1x1|transparent)[/._-]|gravatar\.com/avatar|"
    r"/emoji/|s\.w\.org/images/core/emoji|/s72-c/|share[-_]?button",
    re.I,
)
MIN_IMAGE_SIDE = 50


def _is_decoration(attrs: dict[str, str | None]) -> bool:
    if _DECORATION_URL.search(attrs.get("src") or ""):
        return True
    for side in ("width", "height"):
        value = (attrs.get(side) or "").strip().removesuffix("px")
        if value.isdigit() and int(value) < MIN_IMAGE_SIDE:
            return True
    return False


def scan(clean_html: str) -> _Scanner:
    scanner = _Scanner()
    scanner.feed(clean_html)
    scanner.close()
    return scanner


def find_credit(clean_html: str) -> str | None:
    """A "Top photo credit: ..." / "Photo credit: ..." line in the content, as plain text."""
    for block in scan(clean_html).blocks:
        for line in block.text.splitlines():
            m = CREDIT_LINE.match(line)
            if m:
                return re.sub(r"\s+", " ", m.group("credit")).strip() or None
    return None


def first_image(clean_html: str, base_url: str = "") -> tuple[str, str] | None:
    """(src, alt) of the first <img> with an http(s) source.

    Without an alt, the caption of its <figure> describes it, unless that caption is only the
    photo credit.
    """
    scanner = scan(clean_html)
    for index, (src, alt) in enumerate(scanner.images):
        url = safe_url(src, base_url)
        if url:
            caption = scanner.captions.get(index, "")
            if not alt.strip() and caption and not CREDIT_LINE.match(caption):
                alt = caption
            return url, alt
    return None


def first_paragraph(clean_html: str) -> str:
    """The first real paragraph of content as plain text: not a byline, dateline or credit."""
    blocks = scan(clean_html).blocks
    for block in blocks:
        text = " ".join(block.text.split())
        if block.tag.startswith("h") or block.tag == "figcaption":
            continue
        if CREDIT_LINE.match(text) or len(text) < MIN_PARAGRAPH:
            continue
        return text
    return " ".join(blocks[0].text.split()) if blocks else ""


def _strip_tails(text: str) -> str:
    text = " ".join(text.split())
    for tail in _SUMMARY_TAILS:
        text = tail.sub("", text).strip()
    return text


def lede_source(summary_html: str, content_html: str) -> str:
    """Plain text to cut the lede from: the summary, else the first real paragraph of content.

    Both arguments are already sanitised. A summary that is only CMS boilerplate counts as none.
    """
    # A summary of several blocks (heading + text, or the whole article): its text blocks
    # joined, without headings, credit lines and CMS boilerplate; `shorten` cuts it later.
    blocks = scan(summary_html).blocks
    if len(blocks) > 1:
        texts = [_strip_tails(b.text) for b in blocks if not b.tag.startswith("h") and b.tag != "figcaption"]
        summary = " ".join(t for t in texts if t and not CREDIT_LINE.match(t))
    else:
        summary = plain_text(summary_html)
    for tail in _SUMMARY_TAILS:
        summary = tail.sub("", summary).strip()
    if summary and not CREDIT_LINE.match(summary):
        m = re.search(r"(?:Top\s+)?(?:Photo|Image)\s+credit\s*:", summary, re.I)
        if m and m.start() > 0:
            summary = summary[: m.start()].strip()  # a credit glued after the summary text
        if summary:
            return summary
    return first_paragraph(content_html) if content_html else ""


def cut_words(text: str, limit: int) -> str:
    """At most `limit` characters, "…" included, cut at a word boundary (mid-word only for one long word)."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    if text[limit - 1] != " " and " " in cut:  # the last word is cut short: leave it out
        cut = cut.rsplit(" ", 1)[0]
    return cut.rstrip().rstrip(",;:-–—") + "…"


# Words whose full stop does not end a sentence: titles before a name, and the like. A cut
# after "Mr." or "St." reads as a broken sentence; missing a real sentence end only costs a
# cut at a word instead.
ABBREVIATIONS = frozenset({
    "mr", "mrs", "ms", "mx", "dr", "st", "mt", "ft", "prof", "rev", "gen", "sen", "rep", "gov", "lt",
    "col", "capt", "maj", "sgt", "adm", "cmdr", "hon", "pres", "vs", "e.g", "i.e", "cf",
    "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec",
})  # fmt: skip
# A sentence end: the stop, maybe a closing quote or bracket, then white space.
_SENTENCE_END = re.compile(r"[.?!][”’\"')\]]?(?=\s)")
# "U.S", "U.N", "e.g", "a.m": letters with a dot between each (the last dot is the match).
_INITIALISM = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]")
_WORD_BEFORE = re.compile(r"[\w.]+$")


def _ends_sentence(text: str, stop: int) -> bool:
    """Whether the "." / "?" / "!" at text[stop] ends a sentence."""
    if text[stop] != ".":
        return True
    word = _WORD_BEFORE.search(text, 0, stop)
    if word is None:
        return True
    token = word.group()
    if token.casefold() in ABBREVIATIONS or _INITIALISM.fullmatch(token):
        return False
    return not (len(token) == 1 and token.isupper())  # an initial: "John F. Kennedy"


def shorten(text: str, limit: int) -> str:
    """Cut at a sentence end, else a word boundary, within `limit` characters (plus "…")."""
    if len(text) <= limit:
        return text
    # The character just past the limit counts too: a stop at text[limit - 1] followed by a
    # space ends a sentence that fits whole.
    ends = [
        m.end()
        for m in _SENTENCE_END.finditer(text, 0, limit + 1)
        if m.end() <= limit and m.start() >= limit // 2 and _ends_sentence(text, m.start())
    ]
    if ends:
        return text[: ends[-1]]
    cut = text[: limit + 1]  # a space right after the limit makes the last word a whole one
    if " " not in cut[:limit]:
        return text[:limit].rstrip() + "…"
    return cut.rsplit(" ", 1)[0].rstrip(",;:-–—") + "…"


# The least of a credit's description worth keeping before "…" and the agency: less than this,
# and the credit keeps its end alone.
MIN_CREDIT_HEAD = 20


def cut_credit(text: str, limit: int) -> str:
    """A photo credit in at most `limit` characters, keeping its end: the agency and photographer.

    Credits put who took the photo last ("... October 30, 2025. REUTERS/Evelyn Hockstein"), so a
    long one loses words from its description, before the last sentence:
    "U.S. President Donald Trump and … REUTERS/Evelyn Hockstein TPX".
    """
    if len(text) <= limit:
        return text
    start, sentence = _credit_tail_start(text, limit)
    tail = text[start:].strip()
    if not tail:  # one long word: nothing to keep apart
        return cut_words(text, limit)
    head = text[: len(text) - len(tail)].rstrip()
    room = limit - len(tail) - 1  # the space between "…" and the tail
    if head and room >= MIN_CREDIT_HEAD:
        return cut_words(head, room) + " " + tail
    # Nothing to shorten before the end, or no room for it: keep the end, the last sentence
    # alone when it fits, else as many whole words as fit.
    if sentence and len(tail) <= limit - 1:
        return "…" + tail
    words = text.split(" ")
    kept: list[str] = []
    while words and len(" ".join([words[-1], *kept])) <= limit - 1:
        kept.insert(0, words.pop())
    return "…" + (" ".join(kept) if kept else text[-(limit - 1) :])


def _credit_tail_start(text: str, limit: int) -> tuple[int, bool]:
    """Where the credit's end to keep begins, and whether that is its last sentence.

    The last sentence holds the agency and photographer ("... 2025. REUTERS/Evelyn Hockstein"),
    if it is short enough; else the last words, a third of the room.
    """
    ends = _SENTENCE_END.finditer(text)
    starts = [m.end() for m in ends if _ends_sentence(text, m.start()) and m.end() < len(text)]
    for start in reversed(starts):
        if text[start:].strip() and len(text) - start <= limit // 2:
            return start, True
    agency = _credit_agency_start(text)
    if agency is not None and len(text) - agency <= limit - 1:
        # "... REUTERS/Evelyn Hockstein TPX" with no sentence before it: the credit is kept
        # whole (a third of the room cut "REUTERS/Evelyn" off its photographer's name).
        return agency, True
    cut = text.rfind(" ", 0, len(text) - limit // 3)
    return (cut + 1 if cut >= 0 else len(text)), False


# "REUTERS/Evelyn", "AP Photo/Hadi", "Getty Images/AFP": the agency/photographer word of a credit.
_AGENCY_WORD = re.compile(r"\S+/\S+")
_PHOTO_WORD = re.compile(r"(?:photo|foto|image|picture)s?/", re.I)  # "AP Photo/...": keep "AP"


def _credit_agency_start(text: str) -> int | None:
    """Where the last "AGENCY/Photographer" part of a credit begins (at a word), if it has one."""
    found = list(_AGENCY_WORD.finditer(text))
    if not found:
        return None
    start = found[-1].start()
    if start and _PHOTO_WORD.match(found[-1].group()):
        before = text.rfind(" ", 0, start - 1)
        start = before + 1
    return start


_FILE_NAME = re.compile(r"[\w.~-]+")
_FILE_NAME_SIGNS = re.compile(
    r"\d{4,}|_|\.(?:jpe?g|png|gif|webp|avif|tiff?|heic)$|-(?:scaled|\d+x\d+)$", re.I
)


def useful_alt(alt: str, *, title: str = "") -> str:
    """The alt text, or "" when it says nothing a reader needs.

    CMSes fill alt with the upload's file name ("Shutterstock_1133241797-scaled") or the
    headline, which sits right beside the photo: screen readers would read it twice.
    """
    alt = " ".join(alt.split())
    if _FILE_NAME.fullmatch(alt) and _FILE_NAME_SIGNS.search(alt):
        return ""
    if title and _same_words(alt, title):
        return ""
    return alt


def _same_words(a: str, b: str) -> bool:
    return re.sub(r"[\W_]+", "", a.casefold()) == re.sub(r"[\W_]+", "", b.casefold())


_BY = re.compile(r"^\s*by\s+", re.I)
_EMAIL_ONLY = re.compile(r"^\S+@\S+$")


def join_names(names: list[str]) -> str:
    """Authors as a byline reads: "A", "A and B", "A, B and C". Duplicates and bare addresses go."""
    kept: list[str] = []
    for name in names:
        name = byline_names(name)
        if name and not _EMAIL_ONLY.match(name) and name not in kept:
            kept.append(name)
    if len(kept) <= 2:
        return " and ".join(kept)
    return ", ".join(kept[:-1]) + " and " + kept[-1]


def byline_names(text: str) -> str:
    """A byline's names without a leading "By"."""
    return _BY.sub("", " ".join(text.split()))
