"""Bounce and complaint reports in, one classified finding per recipient out. Pure: no I/O.

- DSNs (RFC 3464) and the non-standard bounces real servers send: `flufl.bounce` finds the
  failed recipients and whether each failure is permanent; it gives no status codes, so those
  (and the diagnostic) are read here from `message/delivery-status` parts, or from the text
  near the address when the report has no such part.
- Complaints (ARF, RFC 5965): the `message/feedback-report` part, read with Python's `email`.
- Amazon SES notifications (JSON): the same shape arrives through SNS webhooks and as e-mail,
  so both go through `ses_findings`.

Matching a report to what we sent is not done here: `message_ids` lists every Message-ID the
report carries, and `subscribers.reports` keeps only the ones we signed.
"""

from __future__ import annotations

import email
import email.errors
import enum
import json
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from email.message import Message
from email.policy import Compat32
from typing import Any

from subscribers.reasons import GONE, Reason, Side, by_gmail_state, by_words, decide, from_name, side_of

log = logging.getLogger(__name__)
# flufl.bounce logs a full traceback for each of its detectors that trips on odd input; the
# report is still read by the others (and by ours), so that is noise, not news.
logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)

__all__ = [
    "Finding",
    "Kind",
    "Reason",
    "Report",
    "classify",
    "classify_messages",
    "mbox_messages",
    "reason_for",
    "ses_findings",
]


class Kind(enum.StrEnum):
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    DELIVERED = "delivered"  # a success DSN or delivery notification: nothing to do


@dataclass(frozen=True)
class Finding:
    """What one report says about one recipient."""

    address: str
    kind: Kind
    status: str = ""  # RFC 3463 code such as "5.1.1"; "" when the report gives none
    # The address is gone (userunknown, hostunknown, hasmoved; a permanent notaccept): suppress
    # now. A provider's "permanent" counts when the reason is not known to be something else.
    hard: bool = False
    reason: Reason = Reason.UNDEFINED  # a name (str) is taken too, sisimai's included
    diagnostic: str = ""  # the remote server's words, shortened
    reply: str = ""  # the SMTP reply code, such as "550"
    feedback_type: str = ""  # a complaint's ARF Feedback-Type (abuse, fraud, ...)
    how: str = ""  # how it was read: "delivery-status", "text near the address", "ses json", ...

    def __post_init__(self) -> None:
        reason = self.reason if isinstance(self.reason, Reason) else from_name(str(self.reason))
        if self.kind == Kind.COMPLAINT:
            # Callers may pass the feedback type as the reason ("abuse"): keep it as such.
            given = str(self.reason or "")
            feedback = self.feedback_type or (given if given and given != Reason.FEEDBACK else "abuse")
            object.__setattr__(self, "feedback_type", feedback.lower())
            reason = Reason.FEEDBACK
        elif self.kind == Kind.DELIVERED:
            reason = Reason.DELIVERED
        object.__setattr__(self, "reason", reason)
        if self.hard and reason not in GONE and reason not in (Reason.UNDEFINED, Reason.NOTACCEPT):
            object.__setattr__(self, "hard", False)

    @property
    def side(self) -> Side:
        if self.kind != Kind.BOUNCE:
            return Side.NONE
        return side_of(self.reason, permanent=self.hard or self.status.startswith("5"))


@dataclass(frozen=True)
class Report:
    findings: tuple[Finding, ...]
    # Every Message-ID found anywhere in the report (headers of the returned message, quoted
    # text): the original message's is among them when the reporting server kept it.
    message_ids: tuple[str, ...]
    # Why the message could not be read at all ("" when it could): not an e-mail, or a part
    # no decoder could take. Such a message is set aside, never re-read.
    error: str = ""
    # Addresses of the VERP form (`bounces+RUN.SUBSCRIBER.SIGNATURE@domain`) the report was sent
    # to or quotes: where it came back to says whose message it was (checked by `Tokens`).
    return_paths: tuple[str, ...] = ()
    # A report cut off before its findings: its MIME structure ends early and nothing could be
    # read. (Many servers cut the *returned message* short; with findings read, that is normal.)
    truncated: bool = False

    @property
    def kind(self) -> Kind | None:
        kinds = {f.kind for f in self.findings}
        for kind in (Kind.COMPLAINT, Kind.BOUNCE, Kind.DELIVERED):
            if kind in kinds:
                return kind
        return None


STATUS_RE = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.])")
REPLY_RE = re.compile(r"(?<![\d.-])([245][0-5]\d)(?=[\s-])")
MESSAGE_ID_RE = re.compile(r"<([^<>\s@]{1,200}@[^<>\s@]{1,200})>")
ADDRESS_RE = re.compile(r"[^\s<>()\"';:,\[\]]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
MAX_DIAGNOSTIC = 300


def reason_for(status: str, diagnostic: str, *, action: str = "") -> Reason:
    """The reason for a failure: the server's words, the status code, the Action (see `reasons`)."""
    return decide(status, diagnostic, action=action)


def is_gone(reason: Reason, status: str, reply: str) -> bool:
    """Hard, in sisimai's sense and our policy's: the address no longer exists."""
    return side_of(reason, permanent=status.startswith("5") or reply.startswith("5")) == Side.GONE


# The line that starts each message of an mbox file: "From " + the envelope sender + a date
# ("From MAILER-DAEMON  Thu Apr 29 23:34:45 2015"); a body's own "From " lines are escaped.
_MBOX_FROM_RE = re.compile(rb"^From \S+ +(Mon|Tue|Wed|Thu|Fri|Sat|Sun) [^\r\n]*\d{4}\r?$", re.M)


def mbox_messages(raw: bytes) -> list[bytes]:
    """The messages of a file: one, or each message of an mbox file (a mailbox saved as one
    file) that holds several, in order."""
    if not raw.startswith(b"From "):
        return [raw]
    starts = [
        m.start()
        for m in _MBOX_FROM_RE.finditer(raw)
        if m.start() == 0 or raw[: m.start()].endswith((b"\n\n", b"\r\n\r\n"))
    ]
    if len(starts) < 2:
        return [raw]
    return [raw[a:b] for a, b in zip(starts, [*starts[1:], len(raw)], strict=True)]


def classify_messages(raw: bytes) -> list[Report]:
    """`classify` for each message of a file (see `mbox_messages`)."""
    return [classify(message) for message in mbox_messages(raw)]


def classify(raw: bytes | str | Message) -> Report:
    """Classify a report. A message that is none (an ordinary mail, an auto-reply) has no findings.

    Never raises: a message that cannot be read comes back with `error` saying why.
    """
    try:
        msg = raw if isinstance(raw, Message) else _parse(raw)
        if not msg.keys():
            return Report((), (), error="not an e-mail (no header fields)")
        report = _classify(msg)
        report = replace(report, return_paths=tuple(_return_paths(msg)))
    except Exception as err:  # one unreadable message must never stop a mailbox
        log.debug("cannot classify a message", exc_info=True)
        return Report((), (), error=f"cannot be read ({type(err).__name__}: {err})"[:300])
    if not report.findings and _truncated(msg):
        return replace(report, truncated=True)
    return report


def _truncated(msg: Message) -> bool:
    """A report cut off in transit: its MIME structure ends before its closing boundary."""
    if msg.get_content_maintype() != "multipart":
        return False
    looks_like_report = msg.get_content_type() == "multipart/report" or _BOUNCE_SENDER_RE.search(
        str(msg.get("From") or "")
    )
    if not looks_like_report:
        return False
    return not msg.is_multipart() or any(
        isinstance(d, email.errors.CloseBoundaryNotFoundDefect | email.errors.StartBoundaryNotFoundDefect)
        for part in msg.walk()
        for d in part.defects
    )


def _classify(msg: Message) -> Report:
    ids = tuple(_message_ids(msg))
    complaints = list(_arf_findings(msg))
    if complaints:
        return Report(tuple(complaints), ids)
    ses = _ses_in_body(msg)
    if ses is not None:
        return Report(tuple(ses[0]), ids + tuple(i for i in ses[1] if i not in ids))
    return Report(tuple(_bounce_findings(msg)), ids)


class _TextHeaders(Compat32):
    """compat32, but a header with raw 8-bit bytes comes back as text (decoded as UTF-8, else
    Latin-1), not as a `Header` object that string methods trip over."""

    def header_fetch_parse(self, name: str, value: str) -> str:  # type: ignore[override]
        return _text_of(value) if isinstance(value, str) else str(value)


TEXT_HEADERS = _TextHeaders()


def _parse(raw: bytes | str) -> Message:
    if isinstance(raw, str):
        return email.message_from_string(raw, policy=TEXT_HEADERS)
    return email.message_from_bytes(raw, policy=TEXT_HEADERS)


# --- complaints (RFC 5965) -------------------------------------------------------------------


def _arf_findings(msg: Message) -> Iterator[Finding]:
    for part in msg.walk():
        if part.get_content_type() != "message/feedback-report":
            continue
        fields = _report_fields(part)
        if not fields:
            continue
        feedback_type = (fields[0].get("Feedback-Type") or "abuse").strip().lower()
        addresses: list[str] = []
        for block in fields:
            for name in ("Original-Rcpt-To", "Removal-Recipient"):
                addresses += [_bare(a) for a in block.get_all(name) or []]
        if not addresses:
            # Many feedback loops redact the recipient fields; the returned message's To: remains.
            original = _returned_headers(msg)
            if original is not None:
                addresses = [a for a in ADDRESS_RE.findall(str(original.get("To") or ""))]
        # No address at all (redacted reports): the complaint still names the message, and the
        # Message-ID we signed says whose it was.
        for address in dict.fromkeys(a for a in addresses if a) or [""]:
            yield Finding(address, Kind.COMPLAINT, feedback_type=feedback_type, how="feedback report (ARF)")
        return  # one report per message: a second part would repeat the first
    # Outlook.com's feedback loop (JMRP) predates ARF: the complaint is the returned message,
    # its recipient in X-HmXmrOriginalRecipient.
    for part in msg.walk():
        if part.get_content_type() != "message/rfc822":
            continue
        payload = part.get_payload()
        inner = payload[0] if isinstance(payload, list) and payload else None
        if inner is not None and inner.get("X-HmXmrOriginalRecipient"):
            address = _bare(str(inner["X-HmXmrOriginalRecipient"]))
            yield Finding(
                address, Kind.COMPLAINT, feedback_type="abuse", how="returned message (Outlook JMRP)"
            )
            return


def _report_fields(part: Message) -> list[Message]:
    """The field blocks of a message/feedback-report or message/delivery-status part."""
    payload = part.get_payload()
    if isinstance(payload, list):
        return [p for p in payload if isinstance(p, Message)]
    # A part with a transfer encoding arrives as one string: decode it and read it as headers.
    text = _decoded(part)
    return [
        email.message_from_string(block + "\n", policy=TEXT_HEADERS)
        for block in _BLANK_LINE_RE.split(text)
        if block
    ]


_BLANK_LINE_RE = re.compile(r"\r?\n\s*\r?\n")


def _returned_headers(msg: Message) -> Message | None:
    for part in msg.walk():
        ctype = part.get_content_type()
        if ctype == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload:
                return payload[0]
        elif ctype in ("text/rfc822-headers", "text/rfc822-header"):
            return email.message_from_string(_decoded(part), policy=TEXT_HEADERS)
    return None


# --- bounces ---------------------------------------------------------------------------------


@dataclass
class _Block:
    address: str
    original: str  # Original-Recipient, when given: flufl.bounce may name that one instead
    action: str
    status: str
    diagnostic: str
    reply: str
    code_type: str = ""  # the Diagnostic-Code's type: "smtp", "x-unix" (a local delivery program)
    category: Reason | None = None  # the sending MTA's own classification (PowerMTA's)


# Local delivery agents (the program that writes the mailbox: Dovecot's LDA, mail.local,
# procmail, maildrop, vpopmail's vdelivermail, vmailmgr's vdeliver) print their own verdict in
# the report's text, and it is the mailbox store's: it beats what the SMTP fields say
# (sisimai's `Sisimai::MDA`). Dovecot's words follow its "was automatically rejected:" line.
_DELIVERY_AGENT_RE = re.compile(
    r"(?im)^.*?\b(mail\.local|procmail|maildrop|vdelivermail|vdeliver): (?P<words>.+)$|"
    r"your message to \S+ was automatically rejected:\s*(?P<dovecot>.+)$"
)


def _google_groups_verdict(msg: Message, own_text: str) -> tuple[Reason, str] | None:
    """Google Groups' refusal of a posting, in whatever language ("the group you tried to
    contact may not exist, or you may not have permission to post"), always ends with its help
    address: the group refused our sender (sisimai's Lhost/GoogleGroups: rejected)."""
    if "googlemail.com" not in str(msg.get("From") or "").lower():
        return None
    if "groups.google.com/support" not in own_text:
        return None
    words = " ".join(line.strip() for line in own_text.splitlines() if line.strip())
    return Reason.REJECTED, words[:MAX_DIAGNOSTIC]


def _delivery_agent_verdict(own_text: str) -> tuple[Reason, str] | None:
    """The reason a local delivery agent's own words in the report give, and those words."""
    for m in _DELIVERY_AGENT_RE.finditer(own_text):
        words = (m.group("words") or m.group("dovecot") or "").strip()
        reason = by_words(words)
        if reason is not None:
            return reason, m.group(0).strip()
    return None


def _bounce_findings(msg: Message) -> Iterator[Finding]:
    blocks = _dsn_blocks(msg)
    temporary, permanent = _flufl_failures(msg)
    text = _body_text(msg)
    verdict = _delivery_agent_verdict(_own_text(text)) or _google_groups_verdict(msg, _own_text(text))
    if len(blocks) == 1 and not _plausible(blocks[0].address):
        # "Final-Recipient: @mx.example.org", or the pipe an alias expanded to: the report
        # names the failed address elsewhere.
        blocks[0].address = _named_failure(msg, text) or blocks[0].address
    seen: set[str] = set()
    for block in blocks:
        key = block.address.casefold()
        if key in seen:
            continue
        seen.add(key)
        if block.original:
            seen.add(block.original.casefold())
        action = block.action
        status, reply, diagnostic = block.status, block.reply, block.diagnostic
        if not status or status.endswith((".0.0", ".4.7")):
            # "5.0.0" says only "failed", "4.4.7" only "gave up": the server's own code says more.
            status = _better_status(status, diagnostic, _own_text(text) if len(blocks) == 1 else "")
        if action in ("delivered", "relayed", "expanded", "deliverable"):
            yield Finding(
                block.address, Kind.DELIVERED, status=status, reply=reply, how="delivery-status fields"
            )
            continue
        if not diagnostic:  # the fields say nothing: the report's text about this recipient may
            _s, _r, words = _near(text, block.address, anywhere=False)
            diagnostic = "" if "recipient:" in words.lower() else words  # not the fields again
        if not diagnostic and len(blocks) == 1:  # nor there: the one failure's words, if any
            diagnostic = _failure_words(_own_text(text))
        server = _SERVER_STATUS_RE.search(diagnostic)
        code = server.group(1) if server else ""
        if code[:1] == status[:1] and code != status and not code.endswith((".0.0", ".4.7")):
            status = code  # the remote server's own code beats a relay's summary of it
        yield _bounce(
            block.address,
            status,
            reply,
            diagnostic,
            action=action,
            how="delivery-status fields",
            code_type=block.code_type,
            stage=_smtp_stage(text, block.address, diagnostic),
            verdict=(block.category, diagnostic) if block.category else verdict,
        )
    # Addresses only flufl.bounce found (non-standard reports): codes from the nearby text,
    # in the order the report names them.
    lower = text.casefold()
    found = [(a, True) for a in permanent] + [(a, False) for a in temporary]
    found.sort(key=lambda item: (lower.find(item[0]) % (len(lower) + 1), item[0]))
    # The report's own sender and receiver, or an id, are not failed recipients (Zoho's reports
    # name them beside the real one); unless nobody else is named (a message sent to oneself).
    parties = _report_parties(msg) if found else set()
    if all(address in parties or address in seen for address, _p in found):
        parties = set()
    # Sendmail's "(expanded from: <alias>)" names the address a failed one was reached by: when
    # the fields named the failures, the alias is not one more.
    aliases = {a.casefold() for a in _EXPANDED_FROM_RE.findall(text)} if seen else set()
    for address, _permanent in found:
        if address in seen or not _plausible(address) or address in parties or address in aliases:
            continue
        seen.add(address)
        status, reply, diagnostic = _near(text, address)
        yield _bounce(
            address,
            status,
            reply,
            diagnostic,
            how="report text (flufl.bounce)",
            stage=_smtp_stage(text, address, diagnostic),
            verdict=verdict,
        )
    if not seen - {""}:
        yield from _heuristic_findings(msg, text, seen, verdict)


def _named_failure(msg: Message, text: str) -> str:
    """The one failed address a report names outside its fields: Exim's X-Failed-Recipients
    header, else the first address under the text's "these failed" heading (Sendmail's "had
    permanent fatal errors"), else the returned message's To when it names one address."""
    header = ADDRESS_RE.findall(str(msg.get("X-Failed-Recipients") or ""))
    if len(header) == 1:
        return header[0]
    lines = _own_text(text).splitlines()
    parties = _report_parties(msg)
    for i, line in enumerate(lines):
        if not _FAILED_HEADING_RE.search(line):
            continue
        for following in lines[i + 1 : i + 4]:
            named = [a for a in ADDRESS_RE.findall(following) if a.casefold() not in parties]
            if named:
                return named[0].strip("<>")
    returned = _returned_headers(msg)
    to = ADDRESS_RE.findall(str(returned.get("To") or "")) if returned is not None else []
    return to[0] if len(to) == 1 else ""


def _better_status(status: str, diagnostic: str, report_text: str) -> str:
    """A vague status (none, x.0.0, x.4.7) made precise: the last other code of its class in the
    diagnostic (a relay's "4.4.7 expired <421 4.4.2 timed out>" quotes the server's last), else,
    for a report about one recipient, the first in its text (Sendmail's session transcript)."""
    for where in (diagnostic, report_text):
        codes = [
            m.group(0)
            for m in STATUS_RE.finditer(where)
            if m.group(0) != status and (not status or m.group(1) == status[0])
        ]
        if codes:
            return codes[-1] if where is diagnostic else codes[0]
    return status


def _bounce(
    address: str,
    status: str,
    reply: str,
    diagnostic: str,
    *,
    how: str,
    action: str = "",
    code_type: str = "",
    stage: str = "",
    verdict: tuple[Reason, str] | None = None,
) -> Finding:
    quoted = _QUOTED_REPLY_RE.search(diagnostic)
    if quoted and " " not in quoted.group(1).strip():
        quoted = None  # "550 'reader@example.net' is not ...": an address quoted, not a reply
    # A relay's summary ("5.1.0 - Unknown address error") quoting the server's reply: the
    # server's own words decide.
    words = _CONTINUATION_RE.sub(" ", quoted.group(1) if quoted else diagnostic)
    reason = reason_for(status, words, action=action)
    if reason == Reason.UNDEFINED and reply[:2] in ("50", "40") and reply[2:] in "1234567":
        reason = Reason.SYNTAXERROR  # 501-507: the server did not take our command or its arguments
    state = by_gmail_state(diagnostic)
    if state is not None and (reason == Reason.UNDEFINED or not status or ".0" in status):
        # Google names the SMTP stage it was refused at; only a specific code says more
        # (sisimai's Lhost/Gmail: "554 5.7.0 Header error (state 18)" is a filter at DATA).
        reason = state
    if code_type.startswith("x-unix") and reason != Reason.MAILBOXFULL:
        # A local delivery program failed (procmail, a pipe): the receiving system's error,
        # whatever words it printed ("no such user" from a script does not mean the address).
        reason = Reason.SYSTEMERROR
    elif verdict is not None:
        reason, diagnostic = verdict  # the reporting system's own: a delivery agent's, Google Groups'
    else:
        reason = _by_stage(reason, status, stage, diagnostic)
    return Finding(
        address=address,
        kind=Kind.BOUNCE,
        status=status,
        hard=is_gone(reason, status, reply),
        reason=reason,
        diagnostic=diagnostic[:MAX_DIAGNOSTIC],
        reply=reply,
        how=how,
    )


def _by_stage(reason: Reason, status: str, stage: str, diagnostic: str) -> Reason:
    """The reason, given the SMTP command the refusal answered (sisimai's rules, its
    `Reason::UserUnknown`, `Filtered`, `Rejected` and `Blocked`):
    - "unknown user" words are a verdict on the mailbox only under a code that says so (5.1.0,
      5.1.1, 5.1.3: bad mailbox) or in answer to RCPT TO, where only a mailbox check refuses;
      otherwise (after DATA, or nothing says when) they are a filter's answer: `filtered`;
      unless the words say the address was looked up in a directory (Notes' "not listed in
      public Name & Address Book", Exchange's "RecipientNotFound"): a lookup's verdict;
    - a refusal of MAIL FROM, before any recipient was named, is of our sender: `rejected`;
    - one at the connection or HELO, of our host: `blocked`."""
    on_the_mailbox = stage == "RCPT" or _names_bad_mailbox(status) or _DIRECTORY_LOOKUP_RE.search(diagnostic)
    if reason == Reason.USERUNKNOWN and not on_the_mailbox:
        reason = Reason.FILTERED if stage not in _BEFORE_RCPT else reason
    if stage == "MAIL" and reason in _ABOUT_THE_RECIPIENT:
        return Reason.REJECTED
    if stage in ("CONN", "HELO") and reason in _ABOUT_THE_RECIPIENT:
        return Reason.BLOCKED
    return reason


def _names_bad_mailbox(status: str) -> bool:
    """A code that is itself a verdict on the address, whatever its class: bad mailbox (x.1.0,
    x.1.1, x.1.3), or x.1.10 (a null MX; Microsoft's "RecipientNotFound" uses it too)."""
    return status[:1] in ("4", "5") and status.partition(".")[2] in ("1.0", "1.1", "1.3", "1.10")


_DIRECTORY_LOOKUP_RE = re.compile(
    r"not listed in (the )?(public name|domino directory|directory)|recipientnotfound|"
    r"not found by smtp address lookup|invalid final delivery userid|recipient name is not recognized|"
    # Notes in Japanese: ディレクトリのリストにありません ("not in the directory's list")
    "\u30c7\u30a3\u30ec\u30af\u30c8\u30ea\u306e\u30ea\u30b9\u30c8\u306b\u3042\u308a\u307e\u305b\u3093",
    re.I,
)
_BEFORE_RCPT = frozenset({"MAIL", "HELO", "CONN"})
# Reasons that name the recipient's address or mailbox: none can be the answer to a command
# sent before the recipient was named.
_ABOUT_THE_RECIPIENT = frozenset(
    {Reason.USERUNKNOWN, Reason.HOSTUNKNOWN, Reason.FILTERED, Reason.SUSPEND, Reason.UNDEFINED}
)
# The reply code (and status) that begins each continued line of a multiline reply, inside the
# words: "... at a rate that 550-5.2.1 prevents additional messages" reads as one sentence.
_CONTINUATION_RE = re.compile(r"(?<=\S)\s+[245]\d\d[- ](?:[245]\.\d{1,3}\.\d{1,3}\s+)?(?=[A-Za-z])")
_EXPANDED_FROM_RE = re.compile(r"expanded from:?\s*<?([^<>\s()]+@[^<>\s()]+)", re.I)
_BOUNCE_SENDER_RE = re.compile(
    r"mailer-daemon|postmaster|mail ?deliver|\bmailer\b|\bndr\b|mmsc|no-?reply|\bdaemon\b", re.I
)
# A reply code with an enhanced status code right after it, as the remote server wrote it:
# "550-'5.7.1 ...", "550 5.2.2 ...".
_QUOTED_REPLY_RE = re.compile(r"\b[245]\d\d[- ]'([^']{4,})'")
_SERVER_STATUS_RE = re.compile(r"\b[245]\d\d[- ]'?([245]\.\d{1,3}\.\d{1,3})\b")
_BOUNCE_SUBJECT_RE = re.compile(
    r"undeliver|delivery (status|failure|has failed|failed|notification)|returned mail|failure notice|"
    r"mail (delivery )?error|not delivered|\u30e1\u30fc\u30eb\u30a8\u30e9\u30fc",  # メールエラー (KDDI)
    re.I,
)
# Where a report starts quoting the returned message: addresses after it are not the failures.
# The line a report's list of failed recipients follows.
_FAILED_HEADING_RE = re.compile(
    r"(?i)(address(\(es\))?|recipients?) failed:\s*$|following addresses had .*errors|"
    r"could not be delivered to .*:\s*$|delivery to the following recipients? failed"
)
_QUOTE_START_RE = re.compile(
    r"(?im)^\s*(original message headers|-+ ?original message|-+ ?this is a copy|-+ ?the header|"
    r"-+ ?returned message|original message:|below (this line )?is a copy|-+ ?below this line|"
    r"-+ ?message header follows|the original message (header|follows))"
)
# A line that names the sender of the returned message, not a recipient.
_SENDER_LINE_RE = re.compile(r"(?i)\b(from|sender|return-path|reply-to|mail from)\b\W{0,3}$")
# Words that say the address next to them failed, when no code is given.
_FAILED_WORDS_RE = re.compile(
    r"(?i)could not be delivered|delivery errors|failure reasons|following (list of )?(recipients|addresses)|"
    r"undeliverable|not delivered|delivery (to .{0,40})?failed|permanent(ly)? fail|error"
)


def _heuristic_findings(
    msg: Message, text: str, seen: set[str], verdict: tuple[Reason, str] | None = None
) -> Iterator[Finding]:
    """For a bounce neither the DSN fields nor flufl.bounce could read (OpenSMTPD, Lotus Notes,
    X1, KDDI, Office 365's text...): each address of the report's own text (not the message it
    quotes, not the report's own sender or receiver, not a sender mentioned as such) with a
    code after it, or with words that say it failed. When the report's text names nobody, the
    returned message's To (a carrier's MMS gateway quotes only that)."""
    sender = str(msg.get("From") or "")
    subject = str(msg.get("Subject") or "")
    if not (_BOUNCE_SENDER_RE.search(sender) or _BOUNCE_SUBJECT_RE.search(subject)):
        return
    quote = _QUOTE_START_RE.search(text)
    own_text = text[: quote.start()] if quote else text
    excluded = _report_parties(msg)
    lines = own_text.splitlines()
    found_any = False
    entry_lines: set[int] = set()
    for address in dict.fromkeys(a.casefold() for a in ADDRESS_RE.findall(own_text)):
        if address in seen or address in excluded or _BOUNCE_SENDER_RE.search(address):
            continue
        found_at = _window_for(lines, address)
        if found_at is None or found_at[0] in entry_lines:
            continue  # not a recipient, or named on another's entry line ("a@x <b@y>: malformed")
        line_number, window = found_at
        status = STATUS_RE.search(window)
        reply = REPLY_RE.search(window + " ")
        if not (status or reply or _FAILED_WORDS_RE.search(window) or by_words(window)):
            continue
        seen.add(address)
        entry_lines.add(line_number)
        found_any = True
        how = (
            "report text (code after the address)"
            if status or reply
            else "report text (words after the address)"
        )
        yield _bounce(
            address,
            status.group(0) if status else "",
            reply.group(1) if reply else "",
            window,
            how=how,
            stage=_smtp_stage(text, address, window),
            verdict=verdict,
        )
    if found_any or quote is None:
        return
    # Nobody named in the report's own words: the returned message's To, once, with those words.
    to = re.search(r"(?im)^to:\s*(.*)$", text[quote.start() :])
    addresses = [a for a in ADDRESS_RE.findall(to.group(1))] if to else []
    if len(addresses) == 1 and addresses[0].casefold() not in excluded:
        words = " ".join(line.strip() for line in lines if line.strip())[:MAX_DIAGNOSTIC]
        yield _bounce(
            addresses[0].casefold(),
            "",
            "",
            words,
            how="returned message's To",
            stage=_command_in(words),
            verdict=verdict,
        )


def _window_for(lines: list[str], address: str) -> tuple[int, str] | None:
    """The first line naming `address` as a recipient, and the report's words at and after it."""
    for i, line in enumerate(lines):
        at = line.casefold().find(address)
        if at < 0:
            continue
        if _SENDER_LINE_RE.search(line[:at].rstrip(" <\"'")):
            continue  # "from shironeko@example.jp", "MAIL FROM:<...>": the sender, not a recipient
        block = _block_after(lines, i, address)
        before = lines[i - 1].strip() if i and lines[i - 1].strip() else ""
        return i, " ".join(([before] if before else []) + block)
    return None


def _report_parties(msg: Message) -> set[str]:
    """Addresses that are the report's own: its sender and receivers (the original sender),
    and Message-IDs that look like addresses."""
    values = [
        str(v)
        for name in ("From", "To", "Cc", "Delivered-To", "Return-Path", "Reply-To")
        for v in msg.get_all(name) or []
    ]
    parties = {a.casefold() for a in ADDRESS_RE.findall(" ".join(values))}
    ids = " ".join(str(v) for part in msg.walk() for v in part.get_all("Message-ID") or [])
    ids += " ".join(
        m.group(0) for m in _ID_LINE_RE.finditer(_body_text(msg))
    )  # a header block quoted as text
    return parties | {m.group(1).casefold() for m in MESSAGE_ID_RE.finditer(ids)}


_ID_LINE_RE = re.compile(r"(?im)^message-id:\s*<[^<>\s]+>")


def _plausible(address: str) -> bool:
    return bool(ADDRESS_RE.fullmatch(address))


def _dsn_field_blocks(msg: Message) -> list[Message]:
    blocks: list[Message] = []
    for part in msg.walk():
        if part.get_content_type() in ("message/delivery-status", "message/global-delivery-status"):
            blocks += _report_fields(part)
    if blocks:
        return blocks
    # A broken MIME structure (a boundary that matches nothing) hides the delivery-status part
    # inside one text part: read field blocks wherever they are in the text.
    text = _decoded(msg) if not msg.is_multipart() else "\n".join(_decoded(p) for p in msg.walk())
    if "Final-Recipient:" not in text and "final-recipient:" not in text.lower():
        return []
    for chunk in re.split(r"\r?\n[ \t]*\r?\n", text):
        if re.search(r"(?im)^(final|original)-recipient:", chunk):
            start = re.search(r"(?im)^[A-Za-z-]+:", chunk)
            blocks.append(
                email.message_from_string(chunk[start.start() if start else 0 :] + "\n", policy=TEXT_HEADERS)
            )
    return blocks


def _dsn_blocks(msg: Message) -> list[_Block]:
    out: list[_Block] = []
    for fields in _dsn_field_blocks(msg):
        recipient = fields.get("Final-Recipient") or fields.get("Original-Recipient")
        if not recipient:
            continue  # the per-message block (Reporting-MTA, Arrival-Date)
        address = _bare(str(recipient).split(";", 1)[-1])
        if address:
            status_field = _one_line(fields.get("Status") or "")
            m = STATUS_RE.search(status_field)
            code_field = _one_line(fields.get("Diagnostic-Code") or "")
            code_type = code_field.split(";", 1)[0].strip().lower() if ";" in code_field else ""
            diagnostic = code_field.split(";", 1)[-1].strip()
            reply = REPLY_RE.search(diagnostic + " ")
            out.append(
                _Block(
                    address=address,
                    original=_bare(str(fields.get("Original-Recipient") or "").split(";", 1)[-1]),
                    action=_one_line(fields.get("Action") or "").lower().split(" ")[0],
                    status=m.group(0) if m else "",
                    diagnostic=diagnostic,
                    reply=reply.group(1) if reply else "",
                    code_type=code_type,
                    category=_POWERMTA_CATEGORIES.get(
                        _one_line(fields.get("X-PowerMTA-BounceCategory") or "").lower()
                    ),
                )
            )
    return out


# PowerMTA classifies each failure itself (X-PowerMTA-BounceCategory), from the whole SMTP
# exchange it had: its category decides (sisimai's Lhost/PowerMTA reads it so).
_POWERMTA_CATEGORIES = {
    "bad-domain": Reason.HOSTUNKNOWN,
    "bad-mailbox": Reason.USERUNKNOWN,
    "inactive-mailbox": Reason.SUSPEND,
    "message-expired": Reason.EXPIRED,
    "no-answer-from-host": Reason.NETWORKERROR,
    "policy-related": Reason.POLICYVIOLATION,
    "quota-issues": Reason.MAILBOXFULL,
    "routing-errors": Reason.SYSTEMERROR,
    "spam-related": Reason.SPAMDETECTED,
}


def _flufl_failures(msg: Message) -> tuple[set[str], set[str]]:
    """(temporary, permanent) recipients by flufl.bounce's detectors, lower-cased."""
    from flufl.bounce import all_failures

    try:
        temporary, permanent = all_failures(msg)
    except Exception:  # a detector tripping on odd input must not lose the report
        log.debug("flufl.bounce could not read a report", exc_info=True)
        return set(), set()

    def decoded(values: Iterable[bytes | str]) -> set[str]:
        out = set()
        for v in values:
            text = v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)
            text = _bare(text)
            if text:
                out.add(text.casefold())
        return out

    perm = decoded(permanent)
    return decoded(temporary) - perm, perm


def _near(text: str, address: str, *, anywhere: bool = True) -> tuple[str, str, str]:
    """Status, reply code and diagnostic from the lines at and after where the address appears,
    in the report's own words (not the returned message it quotes), up to the next recipient."""
    own = _own_text(text)
    lines = own.splitlines()
    lower = address.casefold()
    first = ""
    for i, line in enumerate(lines):
        if lower not in line.casefold():
            continue
        window = " ".join(_block_after(lines, i, lower))
        first = first or window
        status = STATUS_RE.search(window)
        reply = REPLY_RE.search(window + " ")
        if status or reply:
            return (status.group(0) if status else "", reply.group(1) if reply else "", window)
    if not anywhere:
        return "", "", ""
    # The address was not next to a code: the first code anywhere in the report's own text, and
    # when the text does not name the address at all (Exim names the alias it expanded, a
    # pipe, "save to" a file), what the report says after its "failed:" line.
    status = STATUS_RE.search(own)
    reply = REPLY_RE.search(own)
    return (status.group(0) if status else "", reply.group(1) if reply else "", first or _failure_words(own))


def _own_text(text: str) -> str:
    """The report's text before it starts quoting the returned message."""
    quote = _QUOTE_START_RE.search(text)
    return text[: quote.start()] if quote else text


def _failure_words(own: str) -> str:
    """The lines after the report's last "these failed" line (Exim's "The following address(es)
    failed:", Sendmail's "had permanent fatal errors"), where one recipient's reason stands."""
    lines = own.splitlines()
    marks = [i for i, line in enumerate(lines) if _FAILED_HEADING_RE.search(line)]
    if not marks:
        return ""
    return " ".join(_block_after(lines, marks[-1] + 1, "", most=5))


def _block_after(lines: list[str], start: int, address: str, *, most: int = 7) -> list[str]:
    """The non-empty lines from `start` on, until the next recipient's own line."""
    out: list[str] = []
    for line in lines[start : start + most + 6]:
        text = line.strip()
        if not text:
            continue
        if out and ADDRESS_RE.match(text.lstrip("<")) and address not in text.casefold():
            break  # the next recipient's entry
        out.append(text)
        if len(out) >= most:
            break
    return out


# The SMTP command a refusal answered, in the words mail systems report it with: Postfix's
# "(in reply to RCPT TO command)", Exim's "SMTP error from remote mail server after MAIL FROM:",
# qmail's "does not like recipient" and "but sender was rejected", a Sendmail transcript's
# ">>> DATA" before the reply. (sisimai reads each mail system's command so: its Lhost modules.)
_STAGE_WORDS: tuple[tuple[str, str], ...] = (
    (
        "RCPT",
        r"in reply to RCPT TO|after (pipelined )?RCPT\b|does not like recipient|did not like our RCPT TO|"
        r"most progress was RCPT TO|>>> RCPT\b|SMTP:RCPT\b|\[RCPT_TO\]|"
        # Office 365 relaying the remote server's answer about the address it names
        r"unknown recipient or mailbox unavailable ->[^\n]*@",
    ),
    (
        "MAIL",
        r"in reply to MAIL FROM|after (pipelined )?MAIL FROM|but sender was rejected|"
        r"did not like our MAIL FROM|>>> MAIL\b|\[MAIL_FROM\]|sender address rejected",
    ),
    (
        "DATA",
        r"in reply to (end of )?DATA|after (end of )?DATA\b|failed on DATA command|"
        r"failed after I sent the message|did not like our DATA|>>> DATA\b",
    ),
    (
        "HELO",
        r"in reply to (HELO|EHLO)|after (HELO|EHLO)\b|but my name was rejected|>>> (HELO|EHLO)\b|"
        r"helo command rejected",
    ),
    ("CONN", r"after initial connection|but greeting failed|refused to talk to me|client host rejected"),
)
# A space in the words stands for any run of spaces or line breaks (reports wrap long lines).
_STAGE_RE = re.compile(
    "|".join(f"(?P<{name}>" + words.replace(" ", r"\s+") + ")" for name, words in _STAGE_WORDS), re.I
)
_TRANSCRIPT_RE = re.compile(r"^\s*(>>>|<<<)")


def _command_in(text: str) -> str:
    """The last SMTP command `text` says a reply answered ("" when it names none)."""
    found = [m.lastgroup or "" for m in _STAGE_RE.finditer(text)]
    return found[-1] if found else ""


def _smtp_stage(text: str, address: str, diagnostic: str) -> str:
    """The SMTP command this recipient's refusal answered (RCPT, MAIL, DATA, HELO, CONN), from
    the server's words, else from the report's own entry for the address: the lines from the
    one naming it to the next blank line, or a transcript's ">>> COMMAND" just before it."""
    stage = _command_in(diagnostic)
    if stage:
        return stage
    lines = _own_text(text).splitlines()
    lower = address.casefold()
    for i, line in enumerate(lines):
        if lower not in line.casefold():
            continue
        entry = [line.strip()]
        for following in lines[i + 1 : i + 6]:
            if not following.strip() or _TRANSCRIPT_RE.match(following):
                break  # the entry ends; a transcript's next exchange is another command's
            entry.append(following.strip())
        if i and lines[i - 1].lstrip().startswith(">>>") and not line.lstrip().startswith(">>>"):
            entry.insert(0, lines[i - 1].strip())  # ">>> DATA", then this reply
        stage = _command_in(" ".join(entry))
        if stage:
            return stage
    return ""


def _body_text(msg: Message) -> str:
    """The report's own text parts (not the returned message), decoded."""
    texts = []
    for part in msg.walk():
        if part.get_content_type() == "message/rfc822":
            break  # what follows is the returned message, whose codes are not the bounce's
        if part.get_content_maintype() == "text" and part.get_content_type() != "text/rfc822-headers":
            texts.append(_decoded(part))
        elif part.get_content_maintype() == "multipart" and not part.is_multipart():
            # A multipart whose boundary never appears (old Sendmail reports): all one text.
            texts.append(_decoded(part))
    return "\n".join(texts)


# --- Amazon SES notifications ----------------------------------------------------------------


# SES's bounceSubType, when the server's words and code say nothing more.
_SES_SUBTYPES = {
    "NoEmail": Reason.USERUNKNOWN,
    "Suppressed": Reason.USERUNKNOWN,  # on SES's list because it hard-bounced before
    "OnAccountSuppressionList": Reason.USERUNKNOWN,
    "MailboxFull": Reason.MAILBOXFULL,
    "MessageTooLarge": Reason.MESGTOOLARGE,
    "ContentRejected": Reason.POLICYVIOLATION,
    "AttachmentRejected": Reason.POLICYVIOLATION,
}


def ses_findings(notification: dict[str, Any]) -> tuple[list[Finding], list[str]]:
    """Findings and Message-IDs of one SES notification (a Bounce, Complaint or Delivery object).

    Takes both the notification form (`notificationType`) and the event-publishing form
    (`eventType`). The Message-IDs are the original message's header, for matching.
    """
    kind = str(notification.get("notificationType") or notification.get("eventType") or "")
    mail = notification.get("mail") or {}
    ids: list[str] = []
    common = mail.get("commonHeaders") or {}
    if isinstance(common, dict) and common.get("messageId"):
        ids.append(_strip_brackets(str(common["messageId"])))
    for header in mail.get("headers") or []:
        if isinstance(header, dict) and str(header.get("name", "")).lower() == "message-id":
            ids.append(_strip_brackets(str(header.get("value", ""))))
    findings: list[Finding] = []
    if kind == "Bounce":
        bounce = notification.get("bounce") or {}
        permanent = bounce.get("bounceType") == "Permanent"
        sub_type = str(bounce.get("bounceSubType") or "")
        for r in bounce.get("bouncedRecipients") or []:
            diagnostic = str(r.get("diagnosticCode") or "")
            status = str(r.get("status") or "")
            m = STATUS_RE.search(status) or STATUS_RE.search(diagnostic)
            status = m.group(0) if m else ""
            reply = REPLY_RE.search(diagnostic.split(";", 1)[-1] + " ")
            reason = reason_for(status, diagnostic)
            if reason == Reason.UNDEFINED:
                reason = _SES_SUBTYPES.get(sub_type, Reason.UNDEFINED)
            reply_code = reply.group(1) if reply else ""
            findings.append(
                Finding(
                    address=_bare(str(r.get("emailAddress") or "")),
                    kind=Kind.BOUNCE,
                    status=status,
                    # SES's Permanent counts when nothing says the address is not gone.
                    hard=is_gone(reason, status, reply_code) or (permanent and reason == Reason.UNDEFINED),
                    reason=reason,
                    diagnostic=diagnostic[:MAX_DIAGNOSTIC],
                    reply=reply_code,
                    how="SES notification (JSON)",
                )
            )
    elif kind == "Complaint":
        complaint = notification.get("complaint") or {}
        feedback = str(complaint.get("complaintFeedbackType") or "abuse")
        for r in complaint.get("complainedRecipients") or []:
            address = _bare(str(r.get("emailAddress") or ""))
            findings.append(
                Finding(address, Kind.COMPLAINT, feedback_type=feedback, how="SES notification (JSON)")
            )
    elif kind == "Delivery":
        delivery = notification.get("delivery") or {}
        m = STATUS_RE.search(str(delivery.get("smtpResponse") or ""))
        for address in delivery.get("recipients") or []:
            status = m.group(0) if m else ""
            findings.append(
                Finding(_bare(str(address)), Kind.DELIVERED, status=status, how="SES notification (JSON)")
            )
    return [f for f in findings if f.address], ids


_SES_JSON_RE = re.compile(r'\{\s*"(notificationType|eventType|Type)"')


def _ses_in_body(msg: Message) -> tuple[list[Finding], list[str]] | None:
    """SES notifications mailed by SNS: a JSON object in a text/plain body."""
    if msg.is_multipart() or msg.get_content_type() != "text/plain":
        return None
    text = _decoded(msg)
    start = _SES_JSON_RE.search(text)
    if start is None:
        return None
    body = text[start.start() :]
    # SNS's mail folds long lines ("!" + line break + space); unfold when the JSON needs it.
    for attempt in (body, re.sub(r"!?\r?\n ", "", body)):
        try:
            notification, _ = json.JSONDecoder().raw_decode(attempt)
            break
        except ValueError:
            continue
    else:
        return None
    if not isinstance(notification, dict):
        return None
    if notification.get("Type") == "Notification" and isinstance(notification.get("Message"), str):
        # SNS's own envelope (an "email-json" subscription): the SES notification is its Message.
        try:
            notification = json.loads(notification["Message"])
        except ValueError:
            return None
        if not isinstance(notification, dict):
            return None
    if not (notification.get("notificationType") or notification.get("eventType")):
        return None
    return ses_findings(notification)


# --- helpers ---------------------------------------------------------------------------------


def _message_ids(msg: Message) -> Iterator[str]:
    """Message-IDs in the report: headers of every part, then the decoded text of every part."""
    seen: set[str] = set()
    own = _strip_brackets(str(msg.get("Message-ID") or ""))
    seen.add(own)  # the report's own id is never the original's
    sources: list[str] = []
    for part in msg.walk():
        for name in (
            "Message-ID",
            "In-Reply-To",
            "References",
            "Original-Message-ID",
            "X-Original-Message-ID",
        ):
            for value in part.get_all(name) or []:
                sources.append(str(value))
        if not part.is_multipart() and part.get_content_maintype() in ("text", "message"):
            sources.append(_decoded(part))
    for source in sources:
        for m in MESSAGE_ID_RE.finditer(source):
            value = m.group(1)
            if value not in seen:
                seen.add(value)
                yield value


VERP_RE = re.compile(
    r"[A-Za-z0-9._%=-]{1,64}\+[A-Za-z0-9_-]{1,40}\.\d{1,18}\.[A-Za-z2-7]{20}@[A-Za-z0-9.-]{1,253}"
)
# Where a report carries the address it was sent to (the envelope recipient, as the receiving
# mail system records it), and where a returned message keeps its Return-Path.
_ENVELOPE_HEADERS = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To", "Return-Path")


def _return_paths(msg: Message) -> Iterator[str]:
    """VERP addresses: the report's own envelope headers first, then the returned message's
    headers and the text of every part (a forwarder may have rewritten the envelope)."""
    sources = [str(v) for name in _ENVELOPE_HEADERS for v in msg.get_all(name) or []]
    for part in msg.walk():
        if part is not msg:
            sources += [str(v) for name in _ENVELOPE_HEADERS for v in part.get_all(name) or []]
        if not part.is_multipart() and part.get_content_maintype() in ("text", "message"):
            sources.append(_decoded(part))
    seen: set[str] = set()
    for source in sources:
        for m in VERP_RE.finditer(source):
            value = m.group(0).lower()
            if value not in seen:
                seen.add(value)
                yield m.group(0)


def _decoded(part: Message) -> str:
    """A part's text, whatever its charset label or transfer encoding claims: never raises."""
    raw = part.get_payload()
    if isinstance(raw, list):  # message/* parts: their headers and text
        return "\n".join(_message_text(p) if isinstance(p, Message) else str(p) for p in raw)
    try:
        payload = part.get_payload(decode=True)
    except (LookupError, UnicodeError, ValueError):
        payload = None
    if not isinstance(payload, bytes):
        return _text_of(str(raw or ""))
    return _decode_bytes(payload, part.get_content_charset() or "")


def _decode_bytes(data: bytes, charset: str) -> str:
    """Bytes to text: the declared charset, else UTF-8, else Latin-1 (which takes any byte)."""
    for name in (charset, "utf-8"):
        if not name:
            continue
        try:
            return data.decode(name)
        except (LookupError, UnicodeError):
            continue
    if charset:
        try:
            return data.decode(charset, "replace")
        except (LookupError, UnicodeError):
            pass
    return data.decode("latin-1")


def _text_of(value: str) -> str:
    """A str that Python's parser left with surrogate-escaped raw bytes, as readable text."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return _decode_bytes(value.encode("utf-8", "surrogateescape"), "")


def _message_text(msg: Message) -> str:
    """A returned message (or header block) as text, for reading ids and addresses in it."""
    try:
        return _decode_bytes(msg.as_bytes(), "")
    except Exception:  # a part Python's generator cannot write back: its headers and text
        head = "\n".join(f"{k}: {_text_of(str(v))}" for k, v in msg.items())
        body = msg.get_payload()
        return head + "\n\n" + (_text_of(body) if isinstance(body, str) else "")


def _bare(value: str) -> str:
    """An address from a field value such as "rfc822; <a@b>" or "Name <a@b>"."""
    value = _one_line(value).strip()
    m = _BRACKETED_ADDRESS_RE.search(value)
    if m:
        value = m.group(1)
    value = value.split(";", 1)[-1].strip().strip("<>\"' ").rstrip(".")
    return value if "@" in value else ""


def _strip_brackets(value: str) -> str:
    return value.strip().strip("<>").strip()


def _one_line(value: object) -> str:
    return _LINE_BREAKS_RE.sub(" ", str(value)).strip()


_BRACKETED_ADDRESS_RE = re.compile(r"<([^<>]+@[^<>]+)>")
_LINE_BREAKS_RE = re.compile(r"\s*[\r\n]+\s*")
