"""The one interface every transport implements: a batch of outbound messages in, one outcome
per message out.

Providers differ in what they take. SMTP, the outbox, SES and Mailgun take MIME bytes;
SendGrid, Postmark and Resend take JSON built from the parts (subject, HTML, text, headers)
with per-recipient values. An `Outbound` carries both: the variant's shared `Parts` (with
`@@digest:field@@` markers), the recipient's values and personal headers, and the wire bytes,
built lazily. Each transport module uses its provider's batch form and returns an `Outcome`
per message, from the closed set in `Result`; partial batch success is the normal case.

A transport must be safe to call from several threads at once (the send run keeps up to
`concurrency` batches in flight): keep per-call state in locals, or in a pool.

Errors raised out of `send_batch` apply to the whole batch: `TemporaryError` defers every
message (safe to retry), `PermanentError` fails every message, and `UnknownOutcomeError` (or
any other exception) marks every message unknown, since some may have been delivered.
"""

from __future__ import annotations

import enum
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from types import TracebackType

from digest.errors import PermanentError, TemporaryError, TransportError, UnknownOutcomeError
from digest.personal import fill

# A line that starts with a dot (with CRLF-only data, "\n." is exactly that). re's sub scans a
# 30 KB message in about a fifth of the time bytes.replace takes (which counts the matches in a
# first pass, then copies): 15 against 75 microseconds here, per message, holding the GIL.
_LINE_DOT = re.compile(rb"\n\.")


def stuff_dots(data: bytes, *, starts_line: bool = True) -> bytes:
    """SMTP's dot-stuffing (RFC 5321 4.5.2) of CRLF-only bytes: every line that starts with a dot
    gets a second one; the first line too when `data` starts a line."""
    data = _LINE_DOT.sub(b"\n..", data)
    return b"." + data if starts_line and data[:1] == b"." else data


def data_after_354(data: bytes) -> bytes:
    """What follows SMTP's 354 reply for CRLF-only bytes: dot-stuffed, ended by CRLF.CRLF."""
    data = stuff_dots(data)
    return data + (b".\r\n" if data[-2:] == b"\r\n" else b"\r\n.\r\n")


class Result(enum.StrEnum):
    """What a transport knows about one message after a hand-over. A closed set."""

    SENT = "sent"  # accepted by the server or provider
    FAILED = "failed"  # refused for good (5xx, invalid recipient, provider rejected it)
    DEFERRED = "deferred"  # refused for now (4xx, 429, nothing handed over): retry later
    UNKNOWN = "unknown"  # may have been delivered (timeout after the body was sent): never retried blindly


@dataclass(frozen=True)
class Outcome:
    """One message's result. `detail` is the server's reply or the error, for the ledger."""

    key: str  # the Outbound's idempotency key
    result: Result
    detail: str = ""
    provider_id: str = ""  # the provider's or server's id for the message, where it gives one
    retry_after: float | None = None  # seconds, when the server said (Retry-After)
    rate_limited: bool = False  # the refusal was the provider's rate limit (recorded on the run)


@dataclass(frozen=True, eq=False)
class Parts:
    """What every recipient of one variant shares. Compared by identity: one object per variant.

    `html` and `text` carry `@@digest:field@@` markers (see `digest.personal`) where the
    recipient's values go; `headers` are the header fields every copy carries besides From,
    To and Subject (Date, Reply-To, List-Id, List-Unsubscribe-Post, Precedence, ...).
    """

    from_header: str
    subject: str
    html: str | None
    text: str
    headers: tuple[tuple[str, str], ...] = ()
    variant: str = ""  # a name for the variant, for logs and provider tags


@dataclass(frozen=True, eq=False)
class Outbound:
    """One recipient's message, in every form a transport may want it."""

    key: str  # idempotency key, stable per ledger row across retries and resumes
    envelope_sender: str  # the bounce address (MAIL FROM / Return-Path)
    recipient: str  # the address delivered to
    to_header: str  # the To: value, display name included
    parts: Parts
    values: Mapping[str, str]  # the markers' values: email, name, unsubscribe_url, preferences_url
    headers: tuple[tuple[str, str], ...]  # this copy's own headers: Message-ID, List-Unsubscribe
    build_wire: Callable[[], bytes] = field(repr=False)
    # True when the wire bytes are CRLF-only by construction: SMTP may skip re-normalising them.
    wire_is_crlf: bool = False
    # SMTP's DATA payload (the wire bytes dot-stuffed and ended by CRLF.CRLF) and the wire's
    # size, where the message makes them more cheaply than stuffing the whole wire (a template).
    build_smtp_data: Callable[[], tuple[bytes, int]] | None = field(default=None, repr=False)

    def wire(self) -> bytes:
        """The complete message as sent (CRLF, headers and MIME body). Built on first use."""
        cached = self.__dict__.get("_wire")
        if cached is None:
            cached = self.build_wire()
            object.__setattr__(self, "_wire", cached)
        return cached

    @property
    def subject(self) -> str:
        return self.parts.subject

    def html(self) -> str | None:
        """The HTML part with this recipient's values filled in (HTML-escaped)."""
        if self.parts.html is None:
            return None
        import html as _html

        return fill(self.parts.html, {k: _html.escape(v) for k, v in self.values.items()})

    def text(self) -> str:
        return fill(self.parts.text, dict(self.values))

    def all_headers(self) -> tuple[tuple[str, str], ...]:
        """Every header but From, To, Subject and the MIME ones: shared first, then personal."""
        return self.parts.headers + self.headers

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        for key, value in self.all_headers():
            if key.lower() == wanted:
                return value
        return None

    @property
    def message_id(self) -> str:
        return self.header("Message-ID") or ""

    @classmethod
    def from_email_message(
        cls, message: EmailMessage, *, key: str, envelope_sender: str, wire: bytes | None = None
    ) -> Outbound:
        """Wrap a finished `EmailMessage` (the confirmation mail, a test send)."""
        from email import policy

        to = message["To"]
        recipient = to.addresses[0].addr_spec if hasattr(to, "addresses") else str(to)
        body_text = message.get_body(("plain",))
        body_html = message.get_body(("html",))
        skip = {"from", "to", "subject", "mime-version", "content-type", "content-transfer-encoding"}
        headers = tuple((k, str(v)) for k, v in message.items() if k.lower() not in skip)
        parts = Parts(
            from_header=str(message["From"]),
            subject=str(message["Subject"] or ""),
            html=body_html.get_content() if body_html is not None else None,
            text=body_text.get_content() if body_text is not None else "",
            headers=headers,
            variant="single",
        )
        data = wire if wire is not None else message.as_bytes(policy=policy.SMTP)
        return cls(
            key=key,
            envelope_sender=envelope_sender,
            recipient=recipient,
            to_header=str(to),
            parts=parts,
            values={},
            headers=(),
            build_wire=lambda: data,
        )

    @classmethod
    def from_bytes(cls, data: bytes, *, key: str, envelope_sender: str, recipient: str) -> Outbound:
        """Wrap finished wire bytes (tests, tools); the parts are parsed from them."""
        from email import message_from_bytes, policy

        parsed = message_from_bytes(data, policy=policy.SMTP)
        outbound = cls.from_email_message(parsed, key=key, envelope_sender=envelope_sender, wire=data)  # type: ignore[arg-type]
        return cls(
            key=key,
            envelope_sender=envelope_sender,
            recipient=recipient,
            to_header=outbound.to_header,
            parts=outbound.parts,
            values={},
            headers=(),
            build_wire=lambda: data,
        )


class Transport(ABC):
    """Hands batches of messages over. Subclasses set `name`, `max_batch` and `concurrency`."""

    name: str = "transport"
    # Messages per `send_batch` call the provider accepts at most (SendGrid 1000, Postmark 500, ...).
    max_batch: int = 1
    # Batches the run may keep in flight at once (SMTP: connections in the pool).
    concurrency: int = 1
    # Messages per second this provider allows; None where it states no limit.
    max_per_second: float | None = None
    # True when `send_batch` calls `handing_over(outbound)` just before each message's
    # irreversible hand-over (SMTP, outbox); otherwise the run marks a whole batch at once.
    marks_each_handover: bool = False
    # Set by the send run: records that a message is being handed over, so that after a crash
    # the rows of a claimed batch that never reached the server go back to pending, not unknown.
    handover_hook: Callable[[Outbound], None] | None = None
    # Set by the send run: told each message's outcome as soon as it is known, before the batch
    # returns, so that a crash mid-batch loses no answer the server already gave.
    outcome_hook: Callable[[Outbound, Outcome], None] | None = None

    def handing_over(self, outbound: Outbound) -> None:
        """Call right before the step after which the message may have been delivered."""
        hook = self.handover_hook
        if hook is not None:
            hook(outbound)

    def answered(self, outbound: Outbound, outcome: Outcome) -> None:
        """Call as soon as one message's outcome is known."""
        hook = self.outcome_hook
        if hook is not None:
            hook(outbound, outcome)

    def open(self) -> None:  # noqa: B027  optional hook: connect, log in
        """Get ready ahead of the first batch (connect, log in). Optional."""

    def close(self) -> None:  # noqa: B027  optional hook
        """Release connections. Optional."""

    @abstractmethod
    def send_batch(self, batch: Sequence[Outbound]) -> list[Outcome]:
        """Hand over up to `max_batch` messages; one Outcome per message, in any order."""

    def send_one(self, outbound: Outbound) -> Outcome:
        """One message (confirmation mails, test sends): a batch of one, its error raised."""
        (outcome,) = complete([outbound], self.send_batch([outbound]), transport=self.name)
        if outcome.result is Result.SENT:
            return outcome
        cls = {
            Result.FAILED: PermanentError,
            Result.DEFERRED: TemporaryError,
            Result.UNKNOWN: UnknownOutcomeError,
        }[outcome.result]
        raise cls(outcome.detail or "not sent", transport=self.name, recipient=outbound.recipient)

    def __enter__(self) -> Transport:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SingleMessageTransport(Transport):
    """A transport that hands messages over one at a time (SMTP, outbox): implement `deliver`."""

    marks_each_handover = True

    @abstractmethod
    def deliver(self, outbound: Outbound) -> str:
        """Hand over one message; return the server's reply or id. Raise a TransportError."""

    def send_batch(self, batch: Sequence[Outbound]) -> list[Outcome]:
        outcomes = []
        for outbound in batch:
            self.handing_over(outbound)
            outcome = outcome_of(self.deliver, outbound)
            self.answered(outbound, outcome)
            outcomes.append(outcome)
        return outcomes


def outcome_of(deliver: Callable[[Outbound], str], outbound: Outbound) -> Outcome:
    """Run one hand-over and map what it raised onto the closed set of results."""
    try:
        reply = deliver(outbound)
    except TemporaryError as err:
        return Outcome(
            outbound.key,
            Result.DEFERRED,
            str(err),
            retry_after=getattr(err, "retry_after", None),
            rate_limited=getattr(err, "rate_limited", False),
        )
    except PermanentError as err:
        return Outcome(outbound.key, Result.FAILED, str(err))
    except UnknownOutcomeError as err:
        return Outcome(outbound.key, Result.UNKNOWN, str(err))
    except Exception as err:  # noqa: BLE001  a bug mid-hand-over: the message may have gone out
        return Outcome(outbound.key, Result.UNKNOWN, f"unexpected error during the hand-over: {err!r}")
    return Outcome(outbound.key, Result.SENT, reply, provider_id=reply)


def batch_error_outcomes(batch: Sequence[Outbound], err: BaseException) -> list[Outcome]:
    """What an error raised out of `send_batch` means for each message of the batch."""
    if isinstance(err, TemporaryError):
        result = Result.DEFERRED
    elif isinstance(err, PermanentError):
        result = Result.FAILED
    else:  # UnknownOutcomeError, or a bug mid-hand-over: some may have gone out
        result = Result.UNKNOWN
    detail = (
        str(err) if isinstance(err, TransportError) else f"unexpected error during the hand-over: {err!r}"
    )
    return [
        Outcome(
            o.key,
            result,
            detail,
            retry_after=getattr(err, "retry_after", None),
            rate_limited=getattr(err, "rate_limited", False),
        )
        for o in batch
    ]


def complete(batch: Sequence[Outbound], outcomes: Sequence[Outcome], *, transport: str) -> list[Outcome]:
    """One outcome per message, in batch order. A message the transport gave no outcome for
    was handed over without an answer: unknown, never retried blindly."""
    by_key = {o.key: o for o in outcomes}
    return [
        by_key.get(o.key)
        or Outcome(o.key, Result.UNKNOWN, f"{transport} returned no outcome for this message")
        for o in batch
    ]
