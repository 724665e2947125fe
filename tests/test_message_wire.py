"""Wire format edge cases on synthetic variants: huge lines, escaping per part, any content."""

from __future__ import annotations

import email
from datetime import UTC, datetime
from email import policy

from hypothesis import given, settings
from hypothesis import strategies as st

from digest.message import ListHeaders, MessageTemplate, Personal
from digest.models import Recipient, RenderedVariant
from digest.personal import MARKERS

HEADERS = ListHeaders(
    sender="RS Weekly <news@rs.example>",
    list_id="rs.rs.example",
    unsubscribe_mailto="unsub@rs.example",
    domain="rs.example",
)


def variant(html_body: str = "<p>Hello</p>", text_body: str = "Hello") -> RenderedVariant:
    html = (
        f'<html><body>{html_body}<a href="{MARKERS["unsubscribe_url"]}">Unsubscribe</a>'
        f'<a href="{MARKERS["preferences_url"]}">Prefs</a> {MARKERS["email"]}</body></html>'
    )
    text = f"{text_body}\nUnsubscribe: {MARKERS['unsubscribe_url']}\nYou are {MARKERS['email']}\n"
    return RenderedVariant(regions=("Africa",), subject="Sudan’s war", preheader="", html=html, text=text)


def personal(token: str = "abc.DEF-123_xyz") -> Personal:
    return Personal(
        unsubscribe_url=f"https://rs.example/unsubscribe/{token}",
        preferences_url=f"https://rs.example/preferences/{token}",
        message_id="<run1.7@rs.example>",
    )


def parse(raw: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]


def assert_wire_ok(raw: bytes) -> None:
    assert b"\n" not in raw.replace(b"\r\n", b""), "bare LF or CR on the wire"
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


def test_long_html_lines_are_encoded_short() -> None:
    long_line = "<td>" + "x" * 60_000 + "é" * 100 + "</td>"
    raw = MessageTemplate(variant(long_line), HEADERS, date=datetime.now(UTC)).personalise(
        Recipient(1, "a@example.org"), personal()
    )
    assert_wire_ok(raw)
    assert long_line in parse(raw).get_body(("html",)).get_content()


def test_values_are_html_escaped_in_html_only() -> None:
    raw = MessageTemplate(variant(), HEADERS, date=datetime.now(UTC)).personalise(
        Recipient(1, "o'brien&co@example.org"), personal()
    )
    msg = parse(raw)
    assert "o&#x27;brien&amp;co@example.org" in msg.get_body(("html",)).get_content()
    assert "You are o'brien&co@example.org" in msg.get_body(("plain",)).get_content()


@settings(max_examples=150, deadline=None)
@given(
    body=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=3000),
    name=st.text(max_size=60),
    token=st.text(alphabet="abcdefghijklmnopqrstuvwxyzABC0123456789-_.=", min_size=1, max_size=300),
)
def test_any_content_round_trips(body: str, name: str, token: str) -> None:
    v = RenderedVariant(
        regions=(),
        subject="s",
        preheader="",
        html=f"<p>{body}</p>{MARKERS['unsubscribe_url']}",
        text=f"{body}\n{MARKERS['unsubscribe_url']}",
    )
    raw = MessageTemplate(v, HEADERS, date=datetime.now(UTC)).personalise(
        Recipient(1, "a@example.org", name), personal(token)
    )
    assert_wire_ok(raw)
    msg = parse(raw)
    text = msg.get_body(("plain",)).get_content().replace("\r\n", "\n")
    expected = f"{body}\nhttps://rs.example/unsubscribe/{token}".replace("\r\n", "\n").replace("\r", "\n")
    assert text == expected
