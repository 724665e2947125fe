"""Rendering a digest: content of the HTML and text parts, templates and overrides, variants, size."""

from __future__ import annotations

import re
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path

import pytest
from render_helpers import (
    HEADERS,
    INFO,
    NOW,
    personal,
    renderer,
    sample_digest,
    synthetic_articles,
    synthetic_digest,
    worst_case_digest,
)

from digest.build import cap_digest
from digest.collect import clean_articles
from digest.config import Config, config_from_dict
from digest.errors import ConfigError, TemplateError
from digest.message import MessageTemplate
from digest.models import Digest, Recipient, RenderedVariant, Section, Teaser
from digest.personal import MARKER_RE, MARKERS
from digest.render import Renderer, body_sections, byline, clip_words, compile_mjml, join_whole


@pytest.fixture(scope="module")
def digest() -> Digest:
    return sample_digest()


@pytest.fixture(scope="module")
def variant(digest: Digest) -> RenderedVariant:
    return renderer().render(digest)


class _Elements(HTMLParser):
    """Every start tag with its attributes, and the visible text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def elements(html: str) -> _Elements:
    parser = _Elements()
    parser.feed(html)
    return parser


def visible_text(html: str) -> str:
    """The body's text (not the <title>, which repeats the subject)."""
    return " ".join(" ".join(elements(html[html.index("<body") :]).text).split())


# --- the HTML part -------------------------------------------------------------------------


def test_html_has_every_story_with_photo_credit_link_and_button(
    digest: Digest, variant: RenderedVariant
) -> None:
    text = visible_text(variant.html)
    hrefs = [a["href"] for t, a in elements(variant.html).tags if t == "a"]
    for section in digest.sections:
        assert section.region in text
        for t in section.teasers:
            assert " ".join(t.title.split()) in text
            assert " ".join(t.lede.split()) in text
            assert hrefs.count(t.url) >= 2  # linked title and the Keep reading button
            if t.image_credit:
                assert f"Top photo credit: {' '.join(t.image_credit.split())}" in text
    assert text.count("Keep reading") == digest.article_count


def test_html_header_and_footer(digest: Digest, variant: RenderedVariant) -> None:
    text = visible_text(variant.html)
    assert INFO.name in text
    assert "November 20, 2026" in text
    assert INFO.postal_address in text
    assert f"because you subscribed with {MARKERS['email']}" in text
    hrefs = {a.get("href") for t, a in elements(variant.html).tags if t == "a"}
    assert MARKERS["unsubscribe_url"] in hrefs
    assert MARKERS["preferences_url"] in hrefs
    assert "https://newsletter.example.org/archive/2026-11-20" in hrefs


def test_lead_story_shown_once_on_top(digest: Digest, variant: RenderedVariant) -> None:
    assert digest.lead is not None
    text = visible_text(variant.html)
    assert text.count(digest.lead.title) == 1
    first_other = body_sections(digest)[0].teasers[0].title
    assert text.index("Top story") < text.index(digest.lead.title) < text.rindex(first_other)
    assert all(t.url != digest.lead.url for s in body_sections(digest) for t in s.teasers)


def test_preheader_is_hidden_preview_text_from_lead_titles(digest: Digest, variant: RenderedVariant) -> None:
    assert variant.preheader
    firsts = [s.teasers[0].title for s in body_sections(digest)]
    assert any(title in variant.preheader for title in firsts)
    m = re.search(r'<div style="display:none;[^"]*">([^<]*)</div>', variant.html)
    assert m, "the preheader must sit in a hidden element"
    assert variant.preheader.replace("'", "&#39;")[:40] in m.group(1)


def test_preheader_is_whole_titles_never_a_cut_one() -> None:
    """Inbox lists show the preheader after the subject: "... · Can…" read as a broken title."""
    d = sample_digest()
    v = renderer().render(d)
    titles = [s.teasers[0].title for s in body_sections(d)]
    shown = v.preheader.split(" · ")
    assert shown == [t for t in titles if t not in v.subject][: len(shown)]
    assert not v.preheader.endswith("…") and len(v.preheader) <= 140
    # One title longer than the limit: cut at a word, with an ellipsis and no dangling separator.
    first = body_sections(d)[0]
    long = replace(first.teasers[0], title="Iran weighs its options, " * 10 + "and waits")
    v = renderer().render(replace(d, sections=(replace(first, teasers=(long,)), *d.sections[1:])))
    assert v.preheader.endswith("…") and len(v.preheader) <= 140
    assert v.preheader[:-1] == v.preheader[:-1].rstrip(" ,·") and long.title.startswith(v.preheader[:-1])
    assert long.title[len(v.preheader) - 1] == " ", "cut inside a word"


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short enough", 20, "short enough"),
        ("Can Trump finally break with Biden's failed China policy?", 30, "Can Trump finally break with…"),
        ("One, two, three, four", 12, "One, two…"),  # no comma left before the ellipsis
        ("A · B · Cdefghijklmnop", 8, "A · B…"),
        ("Unbreakablewordwithoutspaces", 10, "Unbreakab…"),  # nothing else fits: the word is cut
    ],
)
def test_clip_words_cuts_at_a_word_and_drops_dangling_separators(
    text: str, limit: int, expected: str
) -> None:
    assert clip_words(text, limit) == expected
    assert len(clip_words(text, limit)) <= limit


def test_join_whole_keeps_leading_whole_items() -> None:
    assert join_whole(["Alpha one", "Beta two", "Gamma three"], 22) == "Alpha one · Beta two"
    assert join_whole(["Alpha one", "Beta two"], 8) == "Alpha…"
    assert join_whole([], 10) == ""


def test_byline_reads_by_name() -> None:
    assert byline("Trita  Parsi") == "By Trita Parsi"
    assert byline("by Jane Doe") == "by Jane Doe"


def _labelled(d: Digest) -> Digest:
    """Every story with a format label and a byline, and an empty alt (a source without one)."""

    def dress(t: Teaser) -> Teaser:
        return replace(t, format_label="Analysis", byline="Sina Azodi", image_alt="")

    return replace(
        d,
        lead=dress(d.lead) if d.lead else None,
        sections=tuple(Section(s.region, tuple(dress(t) for t in s.teasers)) for s in d.sections),
    )


def test_teasers_show_format_label_byline_and_a_linked_photo() -> None:
    d = _labelled(sample_digest())
    v = renderer().render(d)
    text = visible_text(v.html)
    assert d.lead is not None
    assert f"Top story · Analysis | {d.lead.region}" in text
    for s in body_sections(d):
        assert f"Analysis | {s.region} {s.teasers[0].title}" in text  # the label just above the title
    assert text.count("By Sina Azodi") == d.article_count
    tags = elements(v.html).tags
    images = [a for t, a in tags if t == "img"]
    assert images and all(a["alt"] == "" for a in images)  # the headline beside it says it already
    # each photo sits inside a link to its article: the <a> right before every <img>
    for i, (tag, attrs) in enumerate(tags):
        if tag == "img":
            assert tags[i - 1][0] == "a" and tags[i - 1][1]["href"] in {t.url for t in _all(d)}, attrs
    # the text part: label and byline under each title
    for t in (*(t for s in body_sections(d) for t in s.teasers),):
        assert f"{t.title}\nAnalysis | {t.region} · By Sina Azodi\n" in v.text
    assert f"TOP STORY (Analysis | {d.lead.region})\n{d.lead.title}\nBy Sina Azodi\n" in v.text


def _all(d: Digest) -> list[Teaser]:
    return [*(t for s in d.sections for t in s.teasers), *([d.lead] if d.lead else [])]


def test_labelled_parts_carry_the_same_words() -> None:
    v = renderer().render(_labelled(sample_digest()))
    body = re.sub(
        r'<div style="display:none;[^"]*">[^<]*</div>', "", v.html[v.html.index("<body") :], count=1
    )
    html_words = set(re.findall(r"\w+", visible_text(body).lower()))
    assert html_words - set(re.findall(r"\w+", v.text.lower())) == set()


def test_subject_is_whole_top_titles_within_limit(digest: Digest, variant: RenderedVariant) -> None:
    assert digest.lead is not None
    assert variant.subject.startswith(digest.lead.title)
    assert len(variant.subject) <= 78
    assert "\n" not in variant.subject


def test_subject_shortens_one_long_title() -> None:
    d = synthetic_digest(6)
    assert d.lead is not None
    long_lead = replace(d.lead, title="A very long headline " * 8)
    v = renderer().render(replace(d, lead=long_lead))
    assert len(v.subject) <= 79 and v.subject.endswith("…")


def test_accessible_markup(variant: RenderedVariant) -> None:
    tags = elements(variant.html).tags
    html_tag = next(a for t, a in tags if t == "html")
    assert html_tag.get("lang") == "en"
    tables = [a for t, a in tags if t == "table"]
    assert tables and all(a.get("role") == "presentation" for a in tables)
    images = [a for t, a in tags if t == "img"]
    assert images
    for img in images:
        assert "alt" in img, img  # may be empty: the headline beside the photo already says it
        # A width for Outlook; no height, which would hold an empty box where images are blocked.
        assert img.get("width", "").isdigit() and "height" not in img, img
    assert '<meta name="color-scheme" content="light dark"' in variant.html
    assert "prefers-color-scheme: dark" in variant.html


def test_no_remote_fonts(variant: RenderedVariant) -> None:
    assert "fonts.googleapis" not in variant.html
    assert "@import" not in variant.html
    assert not [a for t, a in elements(variant.html).tags if t == "link"]


def test_images_have_column_widths_and_the_height_helper_follows_the_aspect(
    digest: Digest, variant: RenderedVariant
) -> None:
    images = [a for t, a in elements(variant.html).tags if t == "img"]
    assert {a["width"] for a in images} == {"568", "208"}  # the lead's column, a teaser's photo column
    # img.height stays for staff templates that want one; the sample feed's photos are 1200x800
    env = renderer().context(digest)
    assert digest.lead is not None
    assert (env["img"].height(digest.lead, 568), env["img"].height(digest.lead, 208)) == (379, 139)


def test_feed_text_is_escaped_not_markup() -> None:
    d = synthetic_digest(12)
    s0 = d.sections[0]
    evil = replace(s0.teasers[1], title='<script>alert("x")</script> & co', lede="a <b>bold</b> claim")
    d = replace(d, sections=(replace(s0, teasers=(s0.teasers[0], evil, *s0.teasers[2:])), *d.sections[1:]))
    v = renderer().render(d)
    assert "<script>" not in v.html and "&lt;script&gt;" in v.html
    assert "<b>bold</b>" not in v.html
    assert '<script>alert("x")</script> & co' in v.text  # the text part is plain text, unescaped


def test_feed_text_is_never_compiled_as_a_template() -> None:
    d = synthetic_digest(12)
    s0 = d.sections[0]
    t = replace(s0.teasers[1], title="{{ 7 * 7 }} {% if true %}x{% endif %}")
    d = replace(d, sections=(replace(s0, teasers=(s0.teasers[0], t, *s0.teasers[2:])), *d.sections[1:]))
    v = renderer().render(d)
    assert "{{ 7 * 7 }}" in v.text and "49" not in v.text


# --- the text part -------------------------------------------------------------------------


def test_text_part_carries_the_same_stories(digest: Digest, variant: RenderedVariant) -> None:
    flat = " ".join(variant.text.split())
    for section in digest.sections:
        assert section.region.upper() in variant.text
        for t in section.teasers:
            assert t.title in variant.text
            assert " ".join(t.lede.split()) in flat
            assert f"Keep reading: {t.url}" in variant.text
            if t.image_credit:
                assert f"Top photo credit: {' '.join(t.image_credit.split())}" in flat
    for value in (MARKERS["unsubscribe_url"], MARKERS["preferences_url"], MARKERS["email"]):
        assert value in variant.text
    assert "View in browser: https://newsletter.example.org/archive/2026-11-20" in variant.text
    assert INFO.postal_address in variant.text
    assert digest.lead is not None and variant.text.count(digest.lead.title) == 1


def test_text_part_prose_wraps_at_72(digest: Digest, variant: RenderedVariant) -> None:
    titles = {t.title for s in digest.sections for t in s.teasers}
    for line in variant.text.splitlines():
        if line in titles or "http" in line or "@@digest:" in line:
            continue  # a title stays on one line; URLs are never broken
        assert len(line) <= 72, line


@pytest.mark.parametrize("archive", [False, True])
def test_text_footer_has_signature_separator_and_wraps_at_72(digest: Digest, archive: bool) -> None:
    info = replace(INFO, postal_address="Quincy Institute, Suite 400, 1 Example Street NW, " * 2 + "USA")
    text = Renderer(info).render(digest, archive=archive).text
    lines = text.splitlines()
    assert lines.count("-- ") == 1 and "--" not in lines  # dash dash space, its own line
    footer = lines[lines.index("-- ") + 1 :]
    assert footer
    for line in footer:
        if re.fullmatch(r"[\w ]+: \S+", line):
            continue  # "Unsubscribe: <URL>": a URL is never broken
        assert len(line) <= 72, line


def test_html_links_all_appear_in_text_part(variant: RenderedVariant) -> None:
    """SpamAssassin's MPART_ALT_DIFF compares the parts; every HTML link is also in the text."""
    hrefs = {a["href"] for t, a in elements(variant.html).tags if t == "a"}
    assert hrefs
    for href in hrefs:
        assert href in variant.text, href


# --- templates: errors and overrides -------------------------------------------------------


def test_override_folder_replaces_templates_file_by_file(tmp_path: Path, digest: Digest) -> None:
    (tmp_path / "subject.txt.j2").write_text("Weekly: {{ sections | length }} regions\n")
    v = Renderer(INFO, override_dir=tmp_path).render(digest)
    assert v.subject == f"Weekly: {len(body_sections(digest))} regions"
    assert "Keep reading" in v.html  # the bundled digest.mjml.j2 still renders the body


def test_override_can_extend_the_bundled_template(tmp_path: Path, digest: Digest) -> None:
    (tmp_path / "digest.mjml.j2").write_text(
        '{% extends "bundled/digest.mjml.j2" %}\n'
        "{% block footer %}<mj-section><mj-column><mj-text>Staff footer "
        "{{ links.unsubscribe_url }}</mj-text></mj-column></mj-section>{% endblock %}\n"
    )
    v = Renderer(INFO, override_dir=tmp_path).render(digest)
    assert "Staff footer" in v.html and MARKERS["unsubscribe_url"] in v.html
    assert "Keep reading" in v.html


def test_undefined_name_names_template_file_and_line(tmp_path: Path, digest: Digest) -> None:
    (tmp_path / "subject.txt.j2").write_text("line one\n{{ digest.no_such_field }}\n")
    with pytest.raises(TemplateError, match=r"subject\.txt\.j2, line 2: .*no_such_field"):
        Renderer(INFO, override_dir=tmp_path).render(digest)


def test_syntax_error_names_template_file_and_line(tmp_path: Path, digest: Digest) -> None:
    (tmp_path / "digest.txt.j2").write_text("ok\nok\n{% for x in %}\n")
    with pytest.raises(TemplateError, match=r"digest\.txt\.j2, line 3"):
        Renderer(INFO, override_dir=tmp_path).render(digest)


def test_bad_mjml_names_the_template(tmp_path: Path, digest: Digest) -> None:
    (tmp_path / "digest.mjml.j2").write_text("<mjml><mj-body><mj-section><oops></mj-body></mjml>")
    with pytest.raises(TemplateError, match=r"digest\.mjml\.j2: MJML did not compile"):
        Renderer(INFO, override_dir=tmp_path).render(digest)


_FOOTER = '{% extends "bundled/digest.mjml.j2" %}\n{% block footer %}\n<mj-section><mj-column>\n'


def test_unknown_mjml_tag_left_in_the_html_is_an_error(tmp_path: Path, digest: Digest) -> None:
    """MRML compiles a typo tag without complaint and copies it into the HTML."""
    (tmp_path / "digest.mjml.j2").write_text(
        _FOOTER + '<mj-textt><a href="{{ links.unsubscribe_url }}">Unsubscribe</a></mj-textt>\n'
        "</mj-column></mj-section>\n{% endblock %}\n"
    )
    with pytest.raises(TemplateError, match=r"digest\.mjml\.j2, line 4: MJML left the tag <mj-textt>"):
        Renderer(INFO, override_dir=tmp_path).render(digest)


@pytest.mark.parametrize(
    ("expression", "found"),
    [
        ("links.unsubscribe_url | upper", "@@DIGEST:UNSUBSCRIBE_URL@@"),
        ("personal.email | urlencode", "%40%40digest"),
    ],
)
def test_marker_changed_by_a_filter_is_an_error(
    tmp_path: Path, digest: Digest, expression: str, found: str
) -> None:
    (tmp_path / "digest.mjml.j2").write_text(
        _FOOTER + '<mj-text><a href="{{ links.unsubscribe_url }}">Unsubscribe</a> {{ ' + expression + " }}"
        "</mj-text>\n</mj-column></mj-section>\n{% endblock %}\n"
    )
    with pytest.raises(
        TemplateError, match=r"digest\.mjml\.j2: '" + re.escape(found) + ".*not a known placeholder"
    ):
        Renderer(INFO, override_dir=tmp_path).render(digest)


def test_html_without_unsubscribe_link_is_an_error(tmp_path: Path, digest: Digest) -> None:
    (tmp_path / "digest.mjml.j2").write_text(
        _FOOTER + "<mj-text>Thanks for reading</mj-text>\n</mj-column></mj-section>\n{% endblock %}\n"
    )
    with pytest.raises(TemplateError, match=r"digest\.mjml\.j2: the output has no unsubscribe link"):
        Renderer(INFO, override_dir=tmp_path).render(digest)
    # the web edition has no unsubscribe link by design: it still renders
    assert "Thanks for reading" in Renderer(INFO, override_dir=tmp_path).render_archive(digest)


def test_text_part_without_unsubscribe_link_is_an_error(tmp_path: Path, digest: Digest) -> None:
    (tmp_path / "digest.txt.j2").write_text("{{ newsletter.name }}\nTo unsubscribe, see the web site.\n")
    with pytest.raises(TemplateError, match=r"digest\.txt\.j2: the output has no unsubscribe link"):
        Renderer(INFO, override_dir=tmp_path).render(digest)


def test_web_edition_with_a_marker_is_an_error(tmp_path: Path, digest: Digest) -> None:
    (tmp_path / "digest.txt.j2").write_text("Unsubscribe: {{ links.unsubscribe_url }} @@digest:email@@\n")
    Renderer(INFO, override_dir=tmp_path).render(digest)  # fine in the e-mail: filled per recipient
    with pytest.raises(TemplateError, match=r"digest\.txt\.j2: '@@digest:email@@'.*web edition must have no"):
        Renderer(INFO, override_dir=tmp_path).render(digest, archive=True)


def test_bundled_templates_pass_the_output_checks(digest: Digest) -> None:
    for d in (digest, synthetic_digest(30), replace(digest, sections=(), lead=None)):
        renderer().render(d)
        renderer().render(d, archive=True)


def test_missing_override_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match="does not exist"):
        Renderer(INFO, override_dir=tmp_path / "nope")


def test_missing_template_folder_in_config_names_the_key(tmp_path: Path) -> None:
    config = config_from_dict({"templates": {"folder": "nope"}}, file=str(tmp_path / "digest.toml"))
    with pytest.raises(ConfigError, match=r"\[templates\] folder: .*nope is not a folder"):
        Renderer.from_config(config)


def test_archive_renders_templates_written_for_the_e_mail(tmp_path: Path, digest: Digest) -> None:
    """A staff template using personal.* links still renders as the web edition."""
    (tmp_path / "digest.txt.j2").write_text("{{ personal.unsubscribe_url }} {{ personal.email }}\n")
    v = Renderer(INFO, override_dir=tmp_path).render(digest, archive=True)
    assert v.text.strip() == "https://newsletter.example.org/preferences"


def test_renderer_from_config_resolves_folder_against_the_file(tmp_path: Path, digest: Digest) -> None:
    (tmp_path / "staff").mkdir()
    (tmp_path / "staff" / "subject.txt.j2").write_text("From staff\n")
    config = config_from_dict({"templates": {"folder": "staff"}}, file=str(tmp_path / "digest.toml"))
    assert Renderer.from_config(config).render(digest).subject == "From staff"


# --- variants, archive, size ---------------------------------------------------------------


def test_one_render_per_distinct_set_of_sections(digest: Digest, monkeypatch: pytest.MonkeyPatch) -> None:
    r = renderer()
    calls: list[tuple[str, ...]] = []
    real = r.render
    monkeypatch.setattr(r, "render", lambda d, **kw: calls.append(d.regions) or real(d, **kw))
    cache = r.variants(digest)
    prefs = [None, None, {"Africa"}, {"Africa"}, {"Africa", "Global"}, {"Europe", "Africa"}, None]
    got = [cache.get(p) for p in prefs]
    # {"Africa", "Global"} gets the same sections as {"Africa"}: the sample has no Global story
    assert len(calls) == len(cache) == 3
    assert got[0] is got[1] is got[6] and got[2] is got[3] is got[4]
    assert got[5].regions == ("Africa", "Europe")
    assert "Sudan" in got[2].html and "Iraq" not in got[2].html


def test_archive_has_no_personal_links(digest: Digest) -> None:
    html = renderer().render_archive(digest)
    assert not MARKER_RE.search(html)
    hrefs = {a.get("href") for t, a in elements(html).tags if t == "a"}
    assert "https://newsletter.example.org/subscribe" in hrefs
    assert "https://newsletter.example.org/preferences" in hrefs
    assert not any("/unsubscribe" in (h or "") for h in hrefs)
    assert "web edition" in visible_text(html)
    for s in digest.sections:
        for t in s.teasers:
            assert t.url in hrefs


def test_thirty_articles_fit_under_the_size_limit_with_room() -> None:
    r = renderer()
    d = synthetic_digest(30)
    assert d.article_count == 30
    v = r.render(d)
    assert r.html_size(v) <= 80_000  # as sent: room under the 102 KB clip for a heavier staff template
    assert r.fit(d) is d  # nothing capped, nothing noted


def test_html_size_is_the_encoded_part_as_sent() -> None:
    """Gmail clips on the message as sent: quoted-printable is ~7 % over the decoded HTML."""
    r = renderer()
    v = r.render(synthetic_digest(30))
    template = MessageTemplate(v, HEADERS, date=NOW)
    p = personal("t" * 120)  # a token as long as real signed ones
    wire = template.outbound(
        Recipient(7, "reader.with.a.long.name@example.org"), p, key="k", envelope_sender="bounce@example.org"
    ).wire()
    part = wire.split(b'Content-Type: text/html; charset="utf-8"', 1)[1].split(b"\r\n\r\n", 1)[1]
    part = part.split(b"\r\n--" + template.boundary.encode(), 1)[0]
    decoded = len(v.html.encode("utf-8"))
    assert len(part) > decoded * 1.05, "QP makes the part larger than the HTML"
    # html_size counts the encoded part, with room for each recipient's values: never under it
    assert len(part) <= r.html_size(v) <= len(part) + 1_000


def test_worst_case_of_the_default_caps_is_capped_to_fit_as_sent() -> None:
    """Every region full (6 x 8 = 48 stories), every field as long as collect lets it be: the
    README quotes these figures."""
    r = renderer()
    d = worst_case_digest()
    config = Config()
    assert d.article_count == len(config.regions.order) * config.collect.max_articles_per_region == 48
    v = r.render(d)
    decoded, as_sent = len(v.html.encode("utf-8")), r.html_size(v)
    fitted = r.fit(d)
    fitted_size = r.html_size(r.render(fitted))
    per_region = max(len(s.teasers) for s in fitted.sections)
    print(
        f"worst case: {decoded / 1000:.1f} KB decoded, {as_sent / 1000:.1f} KB as sent; "
        f"capped to {per_region} per region ({fitted.article_count} stories), "
        f"{fitted_size / 1000:.1f} KB as sent"
    )
    assert as_sent > r.max_html_bytes  # over the clip: the cap must act, and counts what is sent
    assert fitted_size <= r.max_html_bytes
    assert r.html_size(r.render(cap_digest(d, per_region + 1))) > r.max_html_bytes  # the largest that fits
    assert any("as sent" in n and f"capped to {per_region} articles per region" in n for n in fitted.notes)


def test_synthetic_articles_are_the_worst_case_collect_lets_through() -> None:
    """The size test above is only as good as its data: as long as collect allows, as real feeds give."""
    config = Config()
    articles = synthetic_articles(30)
    cleaned = clean_articles(articles, config, NOW).articles
    assert [(a.title, a.image_credit, a.image_alt) for a in cleaned] == [
        (a.title, a.image_credit, a.image_alt) for a in articles
    ], "collect would change them: not what a real run renders"
    for a in cleaned:
        assert a.image_credit is not None
        assert config.collect.credit_length - 10 <= len(a.image_credit) <= config.collect.credit_length
        assert len(a.lede) >= config.collect.lede_length - 10
    teaser = synthetic_digest(30).sections[0].teasers[0]
    assert teaser.image_alt == ""  # no alt in the feed, as in most: none (the title is right beside it)


def test_oversize_digest_is_capped_per_region_and_noted() -> None:
    r = renderer()
    d = synthetic_digest(60)
    fitted = r.fit(d)
    assert fitted.article_count < 60
    assert r.html_size(r.render(fitted)) <= r.max_html_bytes
    assert any("capped to" in n and "articles per region" in n for n in fitted.notes)
    per_region = max(len(s.teasers) for s in fitted.sections)
    assert r.html_size(r.render(cap_digest(d, per_region + 1))) > r.max_html_bytes  # the largest that fits


def test_configured_oversize_cap_is_used() -> None:
    r = renderer(oversize_max_per_region=2)
    fitted = r.fit(synthetic_digest(60))
    assert max(len(s.teasers) for s in fitted.sections) == 2
    assert any("capped to 2 articles per region" in n for n in fitted.notes)


@pytest.mark.parametrize("count", [12, 6])  # 2 stories per region, and 1
def test_tiny_limit_still_caps_and_says_it_is_over(count: int) -> None:
    r = renderer(max_html_bytes=20_000)
    fitted = r.fit(synthetic_digest(count))
    assert max(len(s.teasers) for s in fitted.sections) == 1
    assert "capped to 1 article per region" in fitted.notes[-1]
    assert "still over the limit" in fitted.notes[-1]


def test_over_limit_with_no_articles_says_there_is_nothing_to_cap() -> None:
    empty = replace(synthetic_digest(6), sections=(), lead=None)
    fitted = renderer(max_html_bytes=2_000).fit(empty)
    assert fitted.sections == () and fitted.lead is None
    assert fitted.notes[-1].endswith("over the limit with nothing to cap; Gmail will clip it")
    assert "capped to" not in fitted.notes[-1]


def test_cap_digest_keeps_newest_and_order() -> None:
    d = synthetic_digest(30)
    capped = cap_digest(d, 2)
    assert capped.regions == d.regions
    for before, after in zip(d.sections, capped.sections, strict=True):
        assert after.teasers == before.teasers[:2]


def test_render_config_keys_load_and_validate() -> None:
    assert Config().render.max_html_bytes == 102_000
    assert Config().render.oversize_max_per_region == 0
    c = config_from_dict({"render": {"max_html_bytes": 90_000, "oversize_max_per_region": 3}})
    assert (c.render.max_html_bytes, c.render.oversize_max_per_region) == (90_000, 3)
    with pytest.raises(ConfigError, match=r"\[render\] max_html_bytes"):
        config_from_dict({"render": {"max_html_bytes": 0}})
    with pytest.raises(ConfigError, match=r"\[render\] oversize_max_per_region"):
        config_from_dict({"render": {"oversize_max_per_region": -1}})


def test_digest_without_photos_or_lead_renders() -> None:
    d = synthetic_digest(6)
    s = tuple(
        replace(sec, teasers=tuple(replace(t, image_url=None) for t in sec.teasers)) for sec in d.sections
    )
    v = renderer().render(replace(d, sections=s, lead=None))
    assert "<img" not in v.html and "Top photo credit" not in v.text
    assert v.text.count("Keep reading:") == 6


def test_text_part_has_every_word_of_the_html_body(variant: RenderedVariant) -> None:
    """The parts carry the same words (SpamAssassin's MPART_ALT_DIFF compares them)."""
    body = variant.html[variant.html.index("<body") :]
    body = re.sub(r'<div style="display:none;[^"]*">[^<]*</div>', "", body, count=1)  # the preheader
    html_words = set(re.findall(r"\w+", visible_text(body).lower()))
    text_words = set(re.findall(r"\w+", variant.text.lower()))
    assert html_words - text_words == set()


def test_empty_week_renders_header_and_footer() -> None:
    v = renderer().render(replace(synthetic_digest(6), sections=(), lead=None))
    assert v.subject == INFO.name
    assert v.preheader == f"{INFO.name}, November 20, 2026"
    assert INFO.postal_address in v.text and MARKERS["unsubscribe_url"] in v.html


def test_marker_in_feed_text_is_not_spliced_per_recipient() -> None:
    d = synthetic_digest(12)
    s0 = d.sections[0]
    t = replace(s0.teasers[1], title="Leak @@digest:unsubscribe_url@@ here", lede="mail @@digest:email@@")
    d = replace(d, sections=(replace(s0, teasers=(s0.teasers[0], t, *s0.teasers[2:])), *d.sections[1:]))
    v = renderer().render(d)
    # only the footer's own markers remain: one each for email, unsubscribe, preferences per part
    assert len(MARKER_RE.findall(v.text)) == 3
    assert len(MARKER_RE.findall(v.html)) == 3
    assert "Leak @@\u200bdigest:unsubscribe_url@@ here" in v.text


def test_marker_lookalike_in_feed_text_is_defused_not_refused() -> None:
    d = synthetic_digest(24)
    s0 = d.sections[0]
    t = replace(s0.teasers[1], title="Shout @@DIGEST:EMAIL@@", url="https://example.org/a?u=%40%40digest%3Ax")
    u = replace(s0.teasers[2], url="https://example.org/b?to=@@digest:email@@")
    teasers = (s0.teasers[0], t, u, *s0.teasers[3:])
    d = replace(d, sections=(replace(s0, teasers=teasers), *d.sections[1:]))
    v = renderer().render(d)
    assert "Shout @@\u200bDIGEST:EMAIL@@" in v.text
    # In links one "@" is percent-encoded instead: the server gets the very same URL.
    assert "https://example.org/a?u=%40@digest%3Ax" in v.text
    assert 'href="https://example.org/b?to=@%40digest:email@@"' in v.html
    assert all("\u200b" not in href for href in re.findall(r'href="([^"]*)"', v.html))


def test_no_character_reaches_the_html_as_a_rust_escape() -> None:
    """MRML writes e.g. a no-break space in an attribute as the text "\\u{a0}"; nothing may."""
    import html as html_lib

    chars = "".join(
        chr(cp)
        for cp in [*range(0xA0, 0x3000), 0x200B, 0x200D, 0xFEFF, 0x1F469, 0xFE0F]
        if not 0xD800 <= cp <= 0xDFFF
    )
    source = (
        f'<mjml><mj-body><mj-section><mj-column><mj-image src="https://x.example/a.jpg" alt="{chars}" />'
        f"<mj-text>{chars}</mj-text></mj-column></mj-section></mj-body></mjml>"
    )
    out = compile_mjml(source)
    assert "\\u{" not in out
    alt = re.search(r'alt="([^"]*)"', out).group(1)
    assert html_lib.unescape(alt) == chars
