"""Wire-ready MIME bytes: built once per variant, personalised per recipient by splicing.

Format: multipart/alternative (text/plain, then text/html), UTF-8, quoted-printable bodies
(MJML output has lines far over SMTP's 998-byte limit), CRLF line endings, and the list
headers RFC 2369 / RFC 8058 ask for. Personal values never carry CR or LF into a header.

Building an `EmailMessage` per recipient costs milliseconds; here a variant is encoded once
into chunks, and each recipient costs a join of those chunks with their few encoded values.
"""

from __future__ import annotations

import html
import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.header import Header
from email.quoprimime import body_encode
from email.utils import format_datetime

from digest.models import Recipient, RenderedVariant
from digest.personal import MARKER_RE

_SMTP = policy.SMTP
_CRLF_RE = re.compile(r"[\r\n]+")
# Printable ASCII that needs no quoting inside a quoted-string display name.
_PLAIN_NAME_RE = re.compile(r"[A-Za-z0-9 !#$%&'*+\-/=?^_`{|}~.,]*")


@dataclass(frozen=True)
class ListHeaders:
    """Newsletter-wide header values."""

    sender: str
    list_id: str
    unsubscribe_mailto: str
    domain: str
    reply_to: str = ""


@dataclass(frozen=True)
class Personal:
    """The values that differ per recipient."""

    unsubscribe_url: str
    preferences_url: str
    message_id: str


def clean_header_value(value: str) -> str:
    """Header values from data never carry CR/LF (header injection) or NULs."""
    return _CRLF_RE.sub(" ", value).replace("\x00", "").strip()


def format_address(name: str, email: str) -> str:
    """`"Name" <email>`, RFC 2047-encoded where the name is not plain ASCII."""
    name = clean_header_value(name)
    email = clean_header_value(email)
    if not name:
        return email
    if _PLAIN_NAME_RE.fullmatch(name):
        return f'"{name}" <{email}>'
    encoded = Header(name, "utf-8").encode(linesep="\r\n")
    return f"{encoded} <{email}>"


def make_message_id(run_id: str, subscriber_id: int, domain: str) -> str:
    """Stable per (run, subscriber): a retried hand-over carries the same Message-ID."""
    return f"<{run_id}.{subscriber_id}@{domain}>"


def _qp(text: str) -> str:
    """Quoted-printable (RFC 2045) of UTF-8 text, CRLF line breaks, lines <= 76 chars."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return body_encode(text.encode("utf-8").decode("latin-1"), maxlinelen=76, eol="\r\n")


_QP_SAFE_VALUE = re.compile(r"[!-<>-~]*")  # printable ASCII except '=' and space


def _qp_value(value: str) -> str:
    """A spliced value, on its own soft-broken lines; fast for plain ASCII URLs."""
    if _QP_SAFE_VALUE.fullmatch(value):
        if len(value) <= 75:
            return value
        return "=\r\n".join(value[i : i + 75] for i in range(0, len(value), 75))
    return _qp(value)


class _Body:
    """One part's body, encoded once, with slots where personal values go."""

    __slots__ = ("chunks", "slots", "escape")

    def __init__(self, text: str, *, escape: bool) -> None:
        self.escape = escape
        pieces = MARKER_RE.split(text)  # literal, field, literal, field, ...
        self.chunks: list[str] = []
        self.slots: list[str] = []
        for i, piece in enumerate(pieces):
            if i % 2:
                self.slots.append(piece)
            else:
                encoded = _qp(piece)
                # Soft line breaks around each slot keep every line short wherever a value lands.
                if i > 0:
                    encoded = "=\r\n" + encoded
                if i < len(pieces) - 1:
                    encoded += "=\r\n"
                self.chunks.append(encoded)

    def fill(self, values: dict[str, str]) -> str:
        if not self.slots:
            return self.chunks[0]
        out = [self.chunks[0]]
        esc = self.escape
        for slot, chunk in zip(self.slots, self.chunks[1:], strict=True):
            value = values[slot]
            out.append(_qp_value(html.escape(value) if esc else value))
            out.append(chunk)
        return "".join(out)


class MessageTemplate:
    """The wire form of one rendered variant; `personalise` yields one recipient's bytes."""

    def __init__(self, variant: RenderedVariant, headers: ListHeaders, *, date: datetime) -> None:
        self.variant = variant
        self.headers = headers
        self.boundary = "=_digest_" + secrets.token_hex(12)
        fixed = [
            ("From", headers.sender),
            ("Subject", clean_header_value(variant.subject)),
            ("Date", format_datetime(date)),
            ("MIME-Version", "1.0"),
            ("List-Id", f"<{headers.list_id}>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
            ("Precedence", "bulk"),
        ]
        if headers.reply_to:
            fixed.insert(1, ("Reply-To", headers.reply_to))
        self._fixed_headers = "".join(_SMTP.fold(name, value) for name, value in fixed)
        self._content_type = f'Content-Type: multipart/alternative; boundary="{self.boundary}"\r\n'
        self._text = _Body(variant.text, escape=False)
        self._html = _Body(variant.html, escape=True)
        part = 'Content-Type: text/{}; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
        self._text_head = f"\r\n--{self.boundary}\r\n" + part.format("plain")
        self._html_head = f"\r\n--{self.boundary}\r\n" + part.format("html")
        self._close = f"\r\n--{self.boundary}--\r\n"
        self._mailto = f"mailto:{headers.unsubscribe_mailto}?subject=unsubscribe"

    def personalise(self, recipient: Recipient, personal: Personal) -> bytes:
        values = {
            "email": recipient.email,
            "name": recipient.name,
            "unsubscribe_url": personal.unsubscribe_url,
            "preferences_url": personal.preferences_url,
        }
        to = format_address(recipient.name, recipient.email)
        unsub = clean_header_value(personal.unsubscribe_url)
        head = (
            f"To: {to}\r\n"
            f"{self._fixed_headers}"
            f"Message-ID: {clean_header_value(personal.message_id)}\r\n"
            f"List-Unsubscribe: <{unsub}>,\r\n <{self._mailto}>\r\n"
            f"{self._content_type}"
        )
        body = (
            self._text_head
            + self._text.fill(values)
            + self._html_head
            + self._html.fill(values)
            + self._close
        )
        return (head + body).encode("utf-8")
