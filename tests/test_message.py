"""Wire bytes per recipient: parseable MIME, list headers, personal values spliced in, SMTP-safe lines."""

from __future__ import annotations

import email
import re
from email import policy
from email.message import EmailMessage

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from render_helpers import DATE, HEADERS, personal, renderer, sample_digest

from digest.message import MessageTemplate, Personal, format_address
from digest.models import Recipient, RenderedVariant
from digest.personal import MARKER_RE


@pytest.fixture(scope="module")
def variant() -> RenderedVariant:
    return renderer().render(sample_digest())


@pytest.fixture(scope="module")
def template(variant: RenderedVariant) -> MessageTemplate:
    return MessageTemplate(variant, HEADERS, date=DATE)


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]


def assert_smtp_safe(raw: bytes) -> None:
    assert b"\r\n" in raw
    assert not re.search(rb"(?<!\r)\n", raw), "bare LF"
    assert not re.search(rb"\r(?!\n)", raw), "bare CR"
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_message_structure_and_headers(template: MessageTemplate, variant: RenderedVariant) -> None:
    raw = template.personalise(Recipient(7, "reader@example.org", "Ada Reader"), personal())
    assert_smtp_safe(raw)
    msg = parse(raw)
    assert b'\r\nTo: "Ada Reader" <reader@example.org>\r\n' in b"\r\n" + raw
    assert b"\r\nFrom: " + HEADERS.sender.encode() + b"\r\n" in raw
    assert msg["Subject"] == variant.subject
    assert msg["Date"] == "Fri, 20 Nov 2026 14:00:00 +0000"
    assert msg["Message-ID"] == "<run42.7@example.org>"
    assert msg["List-Id"] == f"<{HEADERS.list_id}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsub = str(msg["List-Unsubscribe"])
    assert "<https://newsletter.example.org/unsubscribe/tok123?a=1&b=2>" in unsub
    assert "<mailto:unsubscribe@example.org?subject=unsubscribe>" in unsub
    assert msg.get_content_type() == "multipart/alternative"
    parts = list(msg.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p["Content-Transfer-Encoding"] == "quoted-printable" for p in parts)
    assert all(p.get_content_charset() == "utf-8" for p in parts)


def test_personal_values_are_spliced_into_both_parts(template: MessageTemplate) -> None:
    msg = parse(template.personalise(Recipient(7, "reader@example.org"), personal()))
    text, html = (p.get_content() for p in msg.iter_parts())
    assert not MARKER_RE.search(text) and not MARKER_RE.search(html)
    assert "Unsubscribe: https://newsletter.example.org/unsubscribe/tok123?a=1&b=2" in text
    assert "subscribed with reader@example.org" in " ".join(text.split())  # the footer is wrapped
    # in HTML the value is escaped: & must be &amp; inside href
    assert 'href="https://newsletter.example.org/unsubscribe/tok123?a=1&amp;b=2"' in html
    assert 'href="https://newsletter.example.org/preferences/tok123"' in html
    assert "subscribed with reader@example.org" in html


def test_each_recipient_gets_their_own_values(template: MessageTemplate) -> None:
    a = parse(template.personalise(Recipient(1, "a@example.org"), personal("AAA", 1)))
    b = parse(template.personalise(Recipient(2, "b@example.org"), personal("BBB", 2)))
    assert "AAA" in a.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "AAA" not in b.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert a["Message-ID"] != b["Message-ID"]


def test_html_part_decodes_to_the_rendered_html(template: MessageTemplate, variant: RenderedVariant) -> None:
    msg = parse(template.personalise(Recipient(7, "reader@example.org"), personal()))
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    # MJML's HTML has lines of tens of thousands of characters; QP carries them intact
    assert max(len(line) for line in variant.html.splitlines()) > 998
    expected = MARKER_RE.sub("", variant.html)
    assert len(html) >= len(expected)
    assert html.replace("\r\n", "\n").startswith(variant.html[:200])


def test_header_injection_is_neutralised(template: MessageTemplate) -> None:
    evil = Recipient(7, "reader@example.org", "Eve\r\nBcc: victim@example.com")
    raw = template.personalise(evil, personal())
    assert_smtp_safe(raw)
    msg = parse(raw)
    assert msg["Bcc"] is None
    assert "victim@example.com" in str(msg["To"])  # kept as part of the display name, harmless


def test_non_ascii_name_is_encoded() -> None:
    value = format_address("Zoë Ångström", "zoe@example.org")
    assert value.isascii() and "=?utf-8?" in value
    assert str(parse(f"To: {value}\r\n\r\n".encode())["To"]) == "Zoë Ångström <zoe@example.org>"


_printable = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=80)


@settings(max_examples=60, deadline=None)
@given(
    name=_printable,
    local=st.from_regex(r"[a-z0-9._+-]{1,40}", fullmatch=True),
    token=st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=300),
)
def test_any_recipient_gives_smtp_safe_parseable_bytes(name: str, local: str, token: str) -> None:
    template = _TEMPLATE[0]
    p = Personal(
        unsubscribe_url=f"https://n.example.org/unsubscribe/{token}",
        preferences_url=f"https://n.example.org/preferences/{token}",
        message_id="<x.1@example.org>",
    )
    raw = template.personalise(Recipient(1, f"{local}@example.org", name), p)
    assert_smtp_safe(raw)
    msg = parse(raw)
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert f"https://n.example.org/unsubscribe/{token}" in text
    assert not msg.defects


_TEMPLATE: list[MessageTemplate] = []


@pytest.fixture(autouse=True, scope="module")
def _shared_template(template: MessageTemplate) -> None:
    _TEMPLATE[:] = [template]


@settings(max_examples=300, deadline=None)
@given(value=st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=200))
def test_spliced_value_round_trips_through_quoted_printable(value: str) -> None:
    from email.quoprimime import body_decode

    from digest.message import _qp_value

    encoded = _qp_value(value)
    assert encoded.isascii()
    lines = encoded.split("\r\n")
    assert all(len(line) <= 76 for line in lines)
    assert all(not line.endswith((" ", "\t")) for line in lines), "trailing whitespace is eaten in transit"
    decoded = body_decode(encoded.replace("\r\n", "\n")).encode("latin-1").decode("utf-8")
    assert decoded == value


_DOTTY = "Intro\n.starts with a dot\n..two\n@@digest:name@@\n.after a value @@digest:email@@ end\n"


@settings(max_examples=200, deadline=None)
@given(
    name=st.text(st.sampled_from(". \nab=é"), max_size=160),
    local=st.from_regex(r"[a-z0-9.]{1,30}", fullmatch=True),
    token=st.text(st.sampled_from(".a-=\n"), min_size=1, max_size=120),
    text=st.sampled_from([_DOTTY, "." + _DOTTY, "@@digest:name@@" + _DOTTY]),
)
def test_smtp_data_is_the_wire_dot_stuffed(name: str, local: str, token: str, text: str) -> None:
    """The DATA payload made from pieces stuffed once per variant is byte for byte what stuffing
    the whole wire gives, and its size is the wire's: dots at line starts anywhere, in the
    variant's text and in any value (a name starting with '.', values with line breaks)."""
    from digest.transports.smtp import data_payload

    base = _TEMPLATE[0].variant
    variant = RenderedVariant(
        **{**base.__dict__, "text": text, "html": base.html.replace("<body", "<body>\n.x<i")}
    )
    template = MessageTemplate(variant, HEADERS, date=DATE)
    p = Personal(
        unsubscribe_url=f"https://n.example.org/unsubscribe/{token}",
        preferences_url=f"https://n.example.org/preferences/{token}",
        message_id="<x.1@example.org>",
    )
    recipient = Recipient(1, f"{local}@example.org", name)
    wire = template.personalise(recipient, p)
    payload, size = template.smtp_data(recipient, p)
    assert template._data_layout is not None  # values begin lines, pieces after them do not
    assert payload == data_payload(wire, crlf_only=True)
    assert size == len(wire)
    outbound = template.outbound(recipient, p, key="k", envelope_sender="b@example.org")
    assert outbound.build_smtp_data is not None and outbound.build_smtp_data() == (payload, size)
