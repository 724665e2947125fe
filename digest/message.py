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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from email import policy
from email.header import Header
from email.quoprimime import body_encode
from email.utils import format_datetime
from typing import Any

from digest.models import Recipient, RenderedVariant
from digest.personal import MARKER_RE
from digest.transports.base import Outbound, Parts, data_after_354, stuff_dots

_SMTP = policy.SMTP
_CRLF_RE = re.compile(r"[\r\n]+")
_NEEDS_ESCAPE = re.compile(r"[&<>\"']")
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
    reader: str = ""  # the signed reader token of story links, with [analytics] per_reader only
    # The envelope sender (MAIL FROM, Return-Path) for this recipient: a VERP address naming the
    # run and subscriber (`make_return_path`), so a bounce is matched by where it is sent. ""
    # keeps the newsletter's own address.
    return_path: str = ""


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


def make_message_id(run_id: str, subscriber_id: int, domain: str, *, signature: str = "") -> str:
    """Stable per (run, subscriber): a retried hand-over carries the same Message-ID.

    With `signature` (`Tokens.message_signature`) the id proves which run and subscriber it was
    sent for: bounce and complaint reports quote it, and only a signed id can change anything.
    """
    if signature:
        return f"<{run_id}.{subscriber_id}.{signature}@{domain}>"
    return f"<{run_id}.{subscriber_id}@{domain}>"


def make_return_path(
    run_id: str, subscriber_id: int, domain: str, *, signature: str, local: str = "bounces"
) -> str:
    """`bounces+RUN.SUBSCRIBER.SIGNATURE@domain` (VERP): every bounce comes back to an address that
    says, signed, which run and subscriber it is about, whatever the report quotes. The
    signature is the Message-ID's (`Tokens.message_signature`), computed once per recipient."""
    return f"{local}+{run_id}.{subscriber_id}.{signature}@{domain}"


def _qp(text: str) -> str:
    """Quoted-printable (RFC 2045) of UTF-8 text, CRLF line breaks, lines <= 76 chars."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return body_encode(text.encode("utf-8").decode("latin-1"), maxlinelen=76, eol="\r\n")


def encoded_size(text: str) -> int:
    """Bytes of `text` as a body part on the wire: quoted-printable, as `MessageTemplate` encodes it.

    Gmail's clip counts the message as sent, and QP makes MJML's HTML about 7 % larger.
    """
    return len(_qp(text))


def _qp_value(value: str) -> str:
    """A spliced value, on its own soft-broken lines.

    The common case (an ASCII URL, address or name) needs no encoding: QP passes printable
    ASCII but '=' as is, and a space anywhere but at a line's end. Checked with str methods
    rather than a regex: this runs several times per recipient.
    """
    if value.isascii() and value.isprintable() and "=" not in value:
        if len(value) <= 75:
            if not value.endswith(" "):
                return value
        elif " " not in value:
            return "=\r\n".join([value[i : i + 75] for i in range(0, len(value), 75)])
    return _qp(value)


class _Body:
    """One part's body, QP-encoded once into ASCII bytes, with slots where personal values go."""

    __slots__ = ("chunks", "slots", "escape", "fields")

    def __init__(self, text: str, *, escape: bool) -> None:
        self.escape = escape
        pieces = MARKER_RE.split(text)  # literal, field, literal, field, ...
        self.chunks: list[bytes] = []
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
                self.chunks.append(encoded.encode("ascii"))  # QP output is ASCII
        self.fields = frozenset(self.slots)

    def extend(self, out: list[bytes], values: dict[str, bytes]) -> None:
        """Append this body's pieces to `out`, values already QP-encoded for this part."""
        chunks = self.chunks
        out.append(chunks[0])
        for i, slot in enumerate(self.slots, 1):
            out.append(values[slot])
            out.append(chunks[i])

    def layout(self, part: str) -> list[bytes | tuple[str, str]]:
        """Chunks and (part, field) slots in order, as `MessageTemplate._layout` lists them."""
        out: list[bytes | tuple[str, str]] = [self.chunks[0]]
        for i, slot in enumerate(self.slots, 1):
            out += [(part, slot), self.chunks[i]]
        return out

    def fill(self, values: dict[str, str]) -> str:
        """The encoded body as text (tests and tools; `personalise` uses `extend`)."""
        out: list[bytes] = []
        self.extend(out, _encode_values(values, self.fields, escape=self.escape))
        return b"".join(out).decode("ascii")


def _encode_values(values: dict[str, str], fields: frozenset[str], *, escape: bool) -> dict[str, bytes]:
    """QP-encoded bytes of the values this part uses (escaped for HTML when `escape`)."""
    if escape:
        return {k: _qp_value(html.escape(values[k])).encode("ascii") for k in fields}
    return {k: _qp_value(values[k]).encode("ascii") for k in fields}


def _dot_stuffed(layout: tuple[bytes | tuple[str, str], ...]) -> tuple[bytes | tuple[str, str], ...] | None:
    """The layout for SMTP's DATA: each constant piece dot-stuffed once; a value's slot stays, to
    be stuffed per message. None when a value would not begin a line or a piece after a value
    would (then stuffing piece by piece would differ from stuffing the whole), and the whole
    message is stuffed instead. The layout follows the head's blank line: it starts a line."""
    out: list[bytes | tuple[str, str]] = []
    line_start = True
    after_value = False
    for item in layout:
        if type(item) is tuple:
            if not line_start:
                return None
            out.append(item)
            line_start, after_value = False, True
            continue
        assert isinstance(item, bytes)
        if after_value and item[:1] != b"=":  # a value's line goes on into this piece
            return None
        out.append(stuff_dots(item, starts_line=line_start))
        line_start, after_value = item.endswith(b"\n"), False
    return tuple(out) if line_start else None  # the final "." must begin a line


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
        self._text_head = f"\r\n--{self.boundary}\r\n{part.format('plain')}".encode("ascii")
        self._html_head = f"\r\n--{self.boundary}\r\n{part.format('html')}".encode("ascii")
        self._close = f"\r\n--{self.boundary}--\r\n".encode("ascii")
        self._fields = self._text.fields | self._html.fields
        # The body in order for a DKIM signer: bytes are the same for every reader, (part, field)
        # pairs are the spliced values. The head's blank line is text_head's leading CRLF.
        self._layout: tuple[bytes | tuple[str, str], ...] = (
            self._text_head[2:],
            *self._text.layout("text"),
            self._html_head,
            *self._html.layout("html"),
            self._close,
        )
        self._body_plan: Any = None  # digest.dkim.BodyPlan of the layout, made on first signing
        self._data_layout = _dot_stuffed(self._layout)
        self._constant_size = sum(len(item) for item in self._layout if type(item) is bytes)
        self._mailto = f"mailto:{clean_header_value(headers.unsubscribe_mailto)}?subject=unsubscribe"
        # The same message as parts, for transports that post JSON instead of MIME bytes.
        self.parts = Parts(
            from_header=headers.sender,
            subject=clean_header_value(variant.subject),
            html=variant.html,
            text=variant.text,
            headers=tuple((name, value) for name, value in fixed if name not in ("From", "Subject")),
            variant=",".join(variant.regions) or "all",
        )

    def outbound(
        self,
        recipient: Recipient,
        personal: Personal,
        *,
        key: str,
        envelope_sender: str,
        sign: Callable[[bytes], bytes] | None = None,
    ) -> Outbound:
        """One recipient's message for any transport; the wire bytes are spliced on first use.

        `sign` (a `digest.dkim.DkimSigner`) turns the spliced bytes into signed ones; it runs
        with the splice, so only transports that ask for the bytes pay for it.
        """
        unsub = clean_header_value(personal.unsubscribe_url)
        spliced = sign is not None and hasattr(sign, "sign_spliced")  # a DkimSigner: hashes per reader

        def build_wire() -> bytes:
            if sign is None:
                return self.personalise(recipient, personal)
            if spliced:
                return self.personalise_signed(recipient, personal, sign)
            return sign(self.personalise(recipient, personal))

        def build_smtp_data() -> tuple[bytes, int]:
            if sign is None:
                return self.smtp_data(recipient, personal)
            data = self.smtp_data_signed(recipient, personal, sign)
            if data is None:  # the pieces cannot be hashed one by one: sign and stuff the whole
                wire = build_wire()
                return data_after_354(wire), len(wire)
            return data

        return Outbound(
            key=key,
            envelope_sender=personal.return_path or envelope_sender,
            recipient=recipient.email,
            to_header=format_address(recipient.name, recipient.email),
            parts=self.parts,
            values={
                "email": recipient.email,
                "name": recipient.name,
                "unsubscribe_url": personal.unsubscribe_url,
                "preferences_url": personal.preferences_url,
                "reader": personal.reader,
            },
            headers=(
                ("Message-ID", clean_header_value(personal.message_id)),
                ("List-Unsubscribe", f"<{unsub}>, <{self._mailto}>"),
            ),
            build_wire=build_wire,
            wire_is_crlf=True,
            # Pre-stuffed DATA where the pieces allow it and a signer, if any, takes them.
            build_smtp_data=build_smtp_data
            if self._data_layout is not None and (sign is None or spliced)
            else None,
        )

    def personalise(self, recipient: Recipient, personal: Personal) -> bytes:
        """One recipient's wire bytes: the prebuilt pieces joined with their encoded values.

        One `join` over bytes prepared per variant; no per-recipient copy of the whole
        message as `str` and no re-encoding of the 100 KB body.
        """
        head, values = self._head_and_values(recipient, personal)
        out = [head, b"\r\n"]
        for item in self._layout:
            out.append(item if type(item) is bytes else values[item])
        return b"".join(out)

    def smtp_data(self, recipient: Recipient, personal: Personal) -> tuple[bytes, int]:
        """What follows SMTP's 354 for `personalise`'s bytes (dot-stuffed, ended by CRLF.CRLF),
        and the size of those bytes (SIZE=), from pieces stuffed once per variant: only the
        recipient's values are looked at per message, not the whole 30 KB."""
        return self._stuffed(*self._head_and_values(recipient, personal))

    def smtp_data_signed(
        self, recipient: Recipient, personal: Personal, signer: Any
    ) -> tuple[bytes, int] | None:
        """`smtp_data` of `personalise_signed`'s bytes, from the same pre-stuffed pieces: the
        signer gets the head and the body's hash (see `personalise_signed`), and the body is
        never joined or stuffed whole. None when the plan cannot hash the body piece by piece."""
        head, values = self._head_and_values(recipient, personal)
        body_hash = self._plan(signer).digest(values)
        if body_hash is None:
            return None
        return self._stuffed(signer.signatures(head, body_hash) + head, values)

    def _stuffed(self, head: bytes, values: dict[tuple[str, str], bytes]) -> tuple[bytes, int]:
        """The DATA payload and the wire's size for this head (fields ending CRLF) and values."""
        size = len(head) + 2 + self._constant_size
        out = [stuff_dots(head), b"\r\n"]
        for item in self._data_layout or ():
            if type(item) is bytes:
                out.append(item)
                continue
            value = values[item]  # type: ignore[index]
            size += len(value)
            out.append(stuff_dots(value))  # each value begins a line
        out.append(b".\r\n")
        return b"".join(out), size

    def personalise_signed(self, recipient: Recipient, personal: Personal, signer: Any) -> bytes:
        """`personalise`, DKIM-signed by `signer` (a `digest.dkim.DkimSigner`) from the pieces.

        The plan for this variant (constant pieces canonicalised, the hash up to the first
        value; relaxed canonicalisation, the only one we sign with) is made once and kept; per
        message only the values are canonicalised.
        """
        head, values = self._head_and_values(recipient, personal)
        pieces = [item if type(item) is bytes else values[item] for item in self._layout]
        return signer.sign_spliced(head + b"\r\n", self._plan(signer), pieces, values)

    def _plan(self, signer: Any) -> Any:
        """The signer's `BodyPlan` for this variant's layout, made on first use and kept."""
        if self._body_plan is None:  # two threads may both make it: the same plan, no harm
            self._body_plan = signer.body_plan(self._layout)
        return self._body_plan

    def _head_and_values(
        self, recipient: Recipient, personal: Personal
    ) -> tuple[bytes, dict[tuple[str, str], bytes]]:
        """The header section (each field ending CRLF, no blank line) and the encoded values."""
        raw = {
            "email": recipient.email,
            "name": recipient.name,
            "unsubscribe_url": personal.unsubscribe_url,
            "preferences_url": personal.preferences_url,
            "reader": personal.reader,
        }
        values: dict[tuple[str, str], bytes] = {}
        for field in self._fields:
            value = raw[field]
            plain = values["text", field] = _qp_value(value).encode("ascii")
            # Most values (URLs with no '&', addresses) need no HTML escaping: reuse the bytes.
            escaped = html.escape(value) if _NEEDS_ESCAPE.search(value) else value
            values["html", field] = plain if escaped is value else _qp_value(escaped).encode("ascii")
        to = format_address(recipient.name, recipient.email)
        unsub = clean_header_value(personal.unsubscribe_url)
        head = (
            f"To: {to}\r\n"
            f"{self._fixed_headers}"
            f"Message-ID: {clean_header_value(personal.message_id)}\r\n"
            f"List-Unsubscribe: <{unsub}>,\r\n <{self._mailto}>\r\n"
            f"{self._content_type}"
        )
        return head.encode("utf-8"), values
