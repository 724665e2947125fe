"""Render a digest variant: Jinja2 (autoescape, StrictUndefined) -> MJML -> HTML, plus text and subject.

Templates come from the bundled `templates/` folder, overridden file by file by the folder
named in `[templates] folder`; an override may also extend the bundled file through the
`bundled/` prefix (`{% extends "bundled/digest.mjml.j2" %}`) and replace single blocks.

Personal values render as placeholders (`digest.personal`) so one render serves every
subscriber of the variant; `digest.message` splices the real values in per recipient.
"""

from __future__ import annotations

import re
import sys
import unicodedata
from collections.abc import Hashable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from mjml import mjml2html

from digest.build import cap_digest
from digest.errors import ConfigError, TemplateError
from digest.message import encoded_size
from digest.models import Digest, RenderedVariant, Section, Teaser
from digest.personal import MARKER_RE, MARKERS, Links
from digest.story_links import StoryLinks, VariantTracking

if TYPE_CHECKING:
    from digest.config import Config

# Gmail clips a message whose HTML is over 102 KB as sent ("[Message clipped]"), hiding the
# footer with the unsubscribe link; the limit counts the quoted-printable bytes on the wire.
DEFAULT_MAX_HTML_BYTES = 102_000
# Markers are ~25 bytes; the real values (a signed-token URL, an address), encoded, are longer.
_PERSONAL_VALUE_ALLOWANCE = 200
# Anything that looks like a personal-value marker, in any case or percent-encoded (a marker
# passed through `upper` or `urlencode`): only exact markers are ever filled in per recipient.
_MARKERISH_RE = re.compile(r"(?i)@@digest:|%40%40digest")
# An MJML tag MRML did not know (a typo such as <mj-textt>) is copied into the HTML as is.
_MJ_TAG_RE = re.compile(r"(?i)</?mj-[\w-]*")
# Aspect ratio assumed for a photo whose feed gave no size: the common 3:2 of news photos.
_DEFAULT_ASPECT = 2 / 3


def bundled_templates_dir() -> Path:
    """templates/ beside the package in a checkout (editable install), else the wheel's data copy."""
    checkout = Path(__file__).resolve().parent.parent / "templates"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "digest" / "templates"


@dataclass(frozen=True)
class NewsletterInfo:
    """What templates know about the newsletter itself."""

    name: str
    base_url: str
    postal_address: str
    language: str = "en"

    @property
    def links(self) -> Links:
        return Links(self.base_url)

    @property
    def generic_preferences_url(self) -> str:
        """A page where a reader asks for their preferences link (the archive has no token)."""
        return f"{self.base_url.rstrip('/')}/preferences"

    @classmethod
    def from_config(cls, config: Config) -> NewsletterInfo:
        n = config.newsletter
        return cls(name=n.name, base_url=n.base_url, postal_address=n.postal_address, language=n.language)


class _Images:
    """Template helper: a photo's pixel height at a given width, for staff templates that want one.

    The bundled templates set no image height: where images are blocked (Outlook's default) a
    height holds an empty box of that size.
    """

    @staticmethod
    def height(teaser: Teaser, width: int) -> int:
        if teaser.image_width and teaser.image_height:
            return max(1, round(width * teaser.image_height / teaser.image_width))
        return round(width * _DEFAULT_ASPECT)


def teaser_label(teaser: Teaser) -> str:
    """The label the site shows: "Analysis | Middle East" with a format label, else the region."""
    return f"{teaser.format_label} | {teaser.region}" if teaser.format_label else teaser.region


def byline(text: str) -> str:
    """ "By Jane Doe" for "Jane Doe"; a byline that already starts with "By" is kept as it is."""
    text = " ".join(text.split())
    return text if text[:3].lower() == "by " else f"By {text}"


# What a shortened text must not end with before its "…": separators and dangling punctuation.
_CLIP_TRAILING = " \t·|/,;:-–—(["


def clip_words(text: str, limit: int, end: str = "…") -> str:
    """`text` if it fits in `limit` characters, else its leading whole words and `end`.

    Never cuts inside a word, and drops a separator or comma left dangling before the ellipsis
    ("A · B ·…" reads as a cut). A single word longer than the limit is cut, as nothing else fits.
    """
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    room = max(1, limit - len(end))
    head = text[: room + 1]
    cut = head.rfind(" ")
    head = head[:cut] if cut > 0 else text[:room]
    return head.rstrip(_CLIP_TRAILING) + end


def join_whole(items: Iterable[str], limit: int, sep: str = " · ") -> str:
    """The leading items, joined by `sep`, that fit whole in `limit` characters.

    When even the first one does not fit, it is shortened at a word boundary (`clip_words`):
    preview texts and subjects never end in a title cut mid-way.
    """
    out = ""
    for item in items:
        candidate = f"{out}{sep}{item}" if out else item
        if len(candidate) <= limit:
            out = candidate
        elif not out:
            return clip_words(item, limit)
        else:
            break
    return out


def wrap_text(text: str, width: int = 72) -> str:
    """Greedy word wrap for the text part; words (URLs) longer than `width` are never broken.

    Jinja2's `wordwrap` (textwrap) made the text part cost more than the whole MJML compile.
    """
    lines: list[str] = []
    line = ""
    for word in text.split():
        if not line:
            line = word
        elif len(line) + 1 + len(word) <= width:
            line += " " + word
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return "\n".join(lines)


def defuse_markers(digest: Digest) -> Digest:
    """The digest with any personal-value marker in feed text broken up.

    A feed title reading "@@digest:unsubscribe_url@@" would otherwise be spliced with each
    reader's own link. Rare, so checked once over all the text before any rewriting.
    """
    teasers = [t for s in digest.sections for t in s.teasers]
    if digest.lead is not None:
        teasers.append(digest.lead)
    fields = ("title", "lede", "image_alt", "image_credit", "url", "image_url", "format_label", "byline")
    if next(_markerish("\n".join(getattr(t, f) or "" for t in teasers for f in fields)), None) is None:
        return digest

    def clean(t: Teaser) -> Teaser:
        # Anything marker-like, not only exact markers: `render` refuses output with a stray one.
        values = {
            f: _MARKERISH_RE.sub(_defuse_url if f in ("url", "image_url") else _defuse, getattr(t, f) or "")
            for f in fields
        }
        values = {f: v for f, v in values.items() if v != (getattr(t, f) or "")}
        return replace(t, **values) if values else t

    sections = tuple(Section(s.region, tuple(clean(t) for t in s.teasers)) for s in digest.sections)
    lead = clean(digest.lead) if digest.lead is not None else None
    return replace(digest, sections=sections, lead=lead)


def _defuse_url(m: re.Match[str]) -> str:
    """In a URL, one "@" percent-encoded ("@%40", "%40@"): the same address, no marker."""
    text = m.group(0)
    return "@%40" + text[2:] if text.startswith("@@") else "%40@" + text[6:]


def _defuse(m: re.Match[str]) -> str:
    """A zero-width space after the "@@" (percent-encoded after "%40%40"): reads the same, matches nothing."""
    text = m.group(0)
    cut = 2 if text.startswith("@@") else 6
    return text[:cut] + ("\u200b" if cut == 2 else "%E2%80%8B") + text[cut:]


def issue_label(digest: Digest) -> str:
    d = digest.issue_date
    return f"{d:%B} {d.day}, {d.year}"  # no %-d: it is glibc-only


def body_sections(digest: Digest) -> tuple[Section, ...]:
    """Sections as the body shows them: the lead story is shown on top, not again in its section."""
    lead = digest.lead
    if lead is None:
        return digest.sections
    out = []
    for s in digest.sections:
        teasers = tuple(t for t in s.teasers if t.url != lead.url)
        if len(teasers) == len(s.teasers):
            out.append(s)
        elif teasers:
            out.append(Section(region=s.region, teasers=teasers))
    return tuple(out)


class Renderer:
    """Renders variants of a digest; templates are compiled once and cached per instance."""

    def __init__(
        self,
        info: NewsletterInfo,
        *,
        override_dir: Path | None = None,
        max_html_bytes: int = DEFAULT_MAX_HTML_BYTES,
        oversize_max_per_region: int = 0,
    ) -> None:
        self.info = info
        self.max_html_bytes = max_html_bytes
        self.oversize_max_per_region = oversize_max_per_region
        bundled = jinja2.FileSystemLoader(str(bundled_templates_dir()))
        loaders: list[jinja2.BaseLoader] = []
        if override_dir is not None:
            if not Path(override_dir).is_dir():
                raise TemplateError(f"template folder {override_dir} does not exist")
            loaders.append(jinja2.FileSystemLoader(str(override_dir)))
        loaders += [bundled, jinja2.PrefixLoader({"bundled": bundled})]
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            autoescape=jinja2.select_autoescape(
                enabled_extensions=("html", "mjml", "mjml.j2", "html.j2"), default_for_string=False
            ),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters["wrap"] = wrap_text
        self.env.filters["byline"] = byline
        self.env.filters["clip_words"] = clip_words
        self.env.filters["join_whole"] = join_whole
        self.search_path = [str(override_dir)] if override_dir else []
        self.search_path.append(str(bundled_templates_dir()))

    @classmethod
    def from_config(cls, config: Config) -> Renderer:
        folder = config.resolve_path(config.templates.folder) if config.templates.folder else None
        if folder is not None and not folder.is_dir():
            raise ConfigError(config.path, "[templates] folder", f"{folder} is not a folder")
        return cls(
            NewsletterInfo.from_config(config),
            override_dir=folder,
            max_html_bytes=config.render.max_html_bytes,
            oversize_max_per_region=config.render.oversize_max_per_region,
        )

    # --- one render --------------------------------------------------------------------

    def _render(self, name: str, context: dict[str, Any]) -> str:
        try:
            return self.env.get_template(name).render(context)
        except jinja2.TemplateSyntaxError as err:
            raise TemplateError(f"{err.filename or name}, line {err.lineno}: {err.message}") from err
        except jinja2.TemplateNotFound as err:
            raise TemplateError(f"template {err.name} not found in {self.search_path}") from err
        except Exception as err:  # undefined names, bad filters, errors raised inside a template
            raise TemplateError(f"{_template_location(err, name)}: {type(err).__name__}: {err}") from err

    def context(
        self, digest: Digest, *, archive: bool = False, tracking: VariantTracking | None = None
    ) -> dict[str, Any]:
        links = self.info.links
        archive_url = links.archive(digest.issue_date.isoformat())
        if archive:
            link_values = {
                "preferences_url": self.info.generic_preferences_url,
                "unsubscribe_url": self.info.generic_preferences_url,
                "archive_url": archive_url,
                "subscribe_url": links.subscribe(),
            }
        else:
            link_values = {
                "preferences_url": MARKERS["preferences_url"],
                "unsubscribe_url": MARKERS["unsubscribe_url"],
                "archive_url": archive_url,
                "subscribe_url": links.subscribe(),
            }
        return {
            "digest": digest,
            "sections": body_sections(digest),
            "newsletter": self.info,
            "issue_label": issue_label(digest),
            "personal": {**link_values, "email": "", "name": ""} if archive else MARKERS,
            "links": link_values,
            "archive_url": archive_url,
            "archive": archive,
            "img": _Images,
            "label": teaser_label,
            # The hidden scanner link and the open pixel of this variant (digest.story_links);
            # None for the web edition, previews, test copies and with [analytics] off.
            "analytics": tracking,
        }

    def render(
        self,
        digest: Digest,
        *,
        archive: bool = False,
        tracking: VariantTracking | None = None,
        defused: bool = False,
    ) -> RenderedVariant:
        """One variant: subject, preheader, HTML and text, with placeholders for personal values.

        `tracking` (with story links already in the digest, `StoryLinks.for_variant`) adds the
        variant's hidden scanner link and open pixel to the HTML. `defused`: the caller already
        ran `defuse_markers` on the feed's text (before adding story links that carry a marker).
        """
        digest = digest if defused else defuse_markers(digest)
        ctx = self.context(digest, archive=archive, tracking=tracking)
        subject, preheader = self.subject_and_preheader(digest, ctx)
        mjml_source = self._render("digest.mjml.j2", ctx)
        html = compile_mjml(mjml_source, name="digest.mjml.j2")
        text = self._render("digest.txt.j2", ctx)
        self._check_output(html, text, archive=archive)
        return RenderedVariant(
            regions=digest.regions, subject=subject, preheader=preheader, html=html, text=text
        )

    def subject_and_preheader(self, digest: Digest, ctx: dict[str, Any] | None = None) -> tuple[str, str]:
        """The variant's subject and preheader: staff's for the issue when set (`digest.subject`,
        `digest.preheader`), else the templates'. Sets them in `ctx` for the body templates."""
        ctx = ctx if ctx is not None else self.context(defuse_markers(digest))
        ctx["subject"] = digest.subject or " ".join(self._render("subject.txt.j2", ctx).split())
        ctx["preheader"] = digest.preheader or " ".join(self._render("preheader.txt.j2", ctx).split())
        return ctx["subject"], ctx["preheader"]

    def render_archive(self, digest: Digest) -> str:
        """The web edition ("view in browser"): the same templates, no personal links or markers."""
        return self.render(digest, archive=True).html

    def _check_output(self, html: str, text: str, *, archive: bool) -> None:
        """Refuse a render that would send a broken e-mail, naming the template to fix.

        Nothing else notices: MRML copies an unknown tag (`<mj-textt>`) into the HTML without an
        error, and a marker changed by a filter (`| upper`) is never filled in. Every e-mail
        must carry a working unsubscribe link in both parts; the web edition is read by anyone,
        so it must carry no marker at all.
        """
        for name, output in (("digest.mjml.j2", html), ("digest.txt.j2", text)):
            m = _MJ_TAG_RE.search(output) if name == "digest.mjml.j2" else None
            if m:
                raise TemplateError(
                    f"{self._where(name, m.group(0))}: MJML left the tag {m.group(0)}> in the HTML "
                    "(not an MJML component: a typo?); what it wraps would show wrongly or not at all"
                )
            for start in _markerish(output):
                exact = MARKER_RE.match(output, start)
                if archive or exact is None:
                    found = re.match(r"[^\s<>\"']{1,60}", output[start:]).group(0)  # type: ignore[union-attr]
                    why = (
                        "the web edition must have no personal-value marker"
                        if archive and exact
                        else f"not a known placeholder ({', '.join(MARKERS.values())}); "
                        "use links.* and personal.* as they are, without filters"
                    )
                    raise TemplateError(f"{self._where(name)}: {found!r} in the output: {why}")
            if not archive and MARKERS["unsubscribe_url"] not in output:
                raise TemplateError(
                    f"{self._where(name)}: the output has no unsubscribe link; "
                    "every e-mail must show {{ links.unsubscribe_url }}"
                )

    def _where(self, name: str, needle: str = "") -> str:
        """The template file (the override when there is one), and the line holding `needle`."""
        try:
            template = self.env.get_template(name)
        except jinja2.TemplateError:
            return name
        filename = template.filename or name
        if needle:
            try:
                source = Path(filename).read_text(encoding="utf-8")
            except OSError:
                return filename
            at = source.find(needle)
            if at >= 0:
                return f"{filename}, line {source.count(chr(10), 0, at) + 1}"
        return filename

    # --- size ----------------------------------------------------------------------------

    def html_size(self, variant: RenderedVariant) -> int:
        """Bytes of the HTML part on the wire (quoted-printable, as `digest.message` encodes it),
        counting room for the personal values: what Gmail's clip counts, ~7 % over the decoded HTML."""
        markers = len(MARKER_RE.findall(variant.html))
        return encoded_size(variant.html) + markers * _PERSONAL_VALUE_ALLOWANCE

    def fit(self, digest: Digest) -> Digest:
        """The digest capped per region so its largest variant (all regions) fits max_html_bytes
        on the wire (`html_size`: the encoded HTML part).

        With `oversize_max_per_region` set, that cap is applied; with 0, the largest cap that
        fits. Either way `notes` says so, for the run's output.
        """
        size = self.html_size(self.render(digest))
        if size <= self.max_html_bytes:
            return digest
        over = f"HTML would be {size / 1000:.0f} KB as sent (limit {self.max_html_bytes / 1000:.0f} KB)"
        if not digest.article_count:
            # Header and footer alone are over (a tiny limit, a heavy staff template): capping
            # cannot help, and "capped to 1 article per region" would be untrue.
            note = f"{over}: over the limit with nothing to cap; Gmail will clip it"
            return replace(digest, notes=(*digest.notes, note))
        largest = max((len(s.teasers) for s in digest.sections), default=1)
        if self.oversize_max_per_region:
            caps = [self.oversize_max_per_region]
        else:
            caps = list(range(largest - 1, 0, -1)) or [1]  # the largest cap that fits, down to 1
        for cap in caps:
            capped = cap_digest(digest, cap)
            new_size = self.html_size(self.render(capped))
            if new_size <= self.max_html_bytes:
                break
        articles = f"{cap} article{'' if cap == 1 else 's'}"
        note = f"{over}: capped to {articles} per region, now {new_size / 1000:.0f} KB"
        if new_size > self.max_html_bytes:
            note += " - still over the limit; Gmail will clip it"
        return replace(capped, notes=(*capped.notes, note))

    # --- variants ------------------------------------------------------------------------

    def variants(self, digest: Digest, links: StoryLinks | None = None) -> VariantCache:
        return VariantCache(self, digest, links)


class VariantCache:
    """One render per distinct set of sections, shared by every subscriber who gets that set.

    Keyed by the sections a subscriber actually gets this week, so preference sets that differ
    only in regions with no articles share one render. With `links`, each variant's story
    links are redirect links made for that variant (once per variant, never per recipient).
    """

    def __init__(self, renderer: Renderer, digest: Digest, links: StoryLinks | None = None) -> None:
        self.renderer = renderer
        self.digest = digest
        self.links = links
        self._cache: dict[Hashable, RenderedVariant] = {}

    def key(self, regions: Iterable[str] | None) -> tuple[str, ...]:
        return self.digest.for_regions(regions).regions

    def get(self, regions: Iterable[str] | None) -> RenderedVariant:
        """The rendered variant for a subscriber with these region preferences (None: all)."""
        variant_digest = self.digest.for_regions(regions)
        key = variant_digest.regions
        rendered = self._cache.get(key)
        if rendered is None:
            tracking = None
            # Feed text is defused first: a story link's own reader marker must survive.
            variant_digest = defuse_markers(variant_digest)
            if self.links is not None:
                variant_digest, tracking = self.links.for_variant(variant_digest)
            rendered = self._cache[key] = self.renderer.render(
                variant_digest, tracking=tracking, defused=True
            )
        return rendered

    def __len__(self) -> int:
        return len(self._cache)


def _markerish(text: str) -> Iterator[int]:
    """Where `_MARKERISH_RE` matches; str.find for the rare "@@" and "%40%40" is ~10x faster on
    a 70 KB e-mail than the case-insensitive regex, which would cost a third of the MJML compile."""
    for lead, word in (("@@", "digest:"), ("%40%40", "digest")):
        at = text.find(lead)
        while at >= 0:
            if text[at + len(lead) : at + len(lead) + len(word)].lower() == word:
                yield at
            at = text.find(lead, at + 1)


# MRML writes some characters inside attribute values as Rust escapes ("\u{a0}" for a no-break
# space, "\u{301}" for a combining accent, "\u{200d}" inside emoji), which readers then see in
# alt text and links. Numeric character references pass through it untouched, so those
# characters go in as references: controls, format and separator characters, marks, spaces
# other than " ", unassigned code points, and the Hangul fillers it also escapes.
_MRML_ESCAPES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Mc", "Me", "Cn", "Co"})
_MRML_ALSO = frozenset({0x115F, 0x1160, 0x3164, 0xFFA0})
_MRML_UNSAFE_RE = re.compile(r"[^\t\n\r -~]")  # anything but printable ASCII: checked one by one


def _char_ref(m: re.Match[str]) -> str:
    char = m.group()
    if unicodedata.category(char) in _MRML_ESCAPES or ord(char) in _MRML_ALSO:
        return f"&#x{ord(char):x};"
    return char


def compile_mjml(source: str, *, name: str = "<mjml>", remote_fonts: bool = False) -> str:
    """MJML -> HTML.

    Our e-mails link no remote web fonts (privacy, speed, and no font is required), so MJML's
    default font list (Google Fonts for Open Sans, Roboto, Ubuntu...) is off unless asked for.
    """
    source = _MRML_UNSAFE_RE.sub(_char_ref, source)
    try:
        return mjml2html(source, fonts=None if remote_fonts else {})
    except Exception as err:  # the binding raises a bare error type for MJML problems
        raise TemplateError(f"{name}: MJML did not compile: {err}") from err


def _template_location(err: BaseException, default: str) -> str:
    """The template file and line of the innermost template frame in a traceback.

    Jinja2 rewrites the traceback of an error raised while rendering so that template code
    shows as frames whose code is named for the template part ("top-level template code",
    'block "teaser"', "macro ...") and whose file and line are the template's own.
    """
    tb = err.__traceback__
    where = default
    while tb is not None:
        code = tb.tb_frame.f_code
        if code.co_name in ("top-level template code", "template") or code.co_name.startswith(
            ("block ", "macro ")
        ):
            where = f"{code.co_filename}, line {tb.tb_lineno}"
        tb = tb.tb_next
    return where
