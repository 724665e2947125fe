"""Bounce and complaint reports applied to the list: matching, policy, and the run's record.

Matching goes through what we set, never through an address alone: a report counts only if it
carries a Message-ID we signed (`Tokens.message_signature`: run id and subscriber id under an
HMAC of DIGEST_SECRET_KEY) and the ledger has that subscriber in that run. A forged or stray
report, or one about mail we never sent, changes nothing.

Policy (`[bounces]`), from the finding's reason (`subscribers.reasons`): an address that is gone
(userunknown, hostunknown, hasmoved) suppresses at once; a reader-side problem that may pass
(mailbox full, suspended, expired, ...) is soft, and soft bounces suppress once `soft_limit`
distinct runs bounced softly within `soft_window_days`; a complaint suppresses and unsubscribes
(status `complained`). A refusal of *our* sending (blocked, authfailure, spamdetected, ...) never
touches the reader: it is recorded as `refused` and the run raises an alarm for staff
(`run_alarms`).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Boolean, Integer, String, UniqueConstraint, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from digest.db import Base, UTCDateTime
from subscribers import store
from subscribers.bounces import Finding, Kind, Report
from subscribers.reasons import Reason, Side
from subscribers.store import Status
from subscribers.tokens import Tokens

__all__ = [
    "Applied",
    "BounceEvent",
    "Policy",
    "WebhookNonce",
    "Alarm",
    "apply_report",
    "run_alarms",
    "is_seen_in",
    "record_seen",
    "remember_nonce",
    "run_bounce_counts",
]


class BounceEvent(Base):
    """One bounce or complaint about one subscriber's message of one run (the run's record).

    One row per (run, subscriber, kind): a provider's retried webhook or a second copy of a
    report does not count twice; a hard bounce after a soft one for the same message upgrades it.
    """

    __tablename__ = "bounce_events"
    __table_args__ = (UniqueConstraint("run_id", "subscriber_id", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(String(40), index=True)
    # No foreign key: the run's record outlives an erased subscriber.
    subscriber_id: Mapped[int] = mapped_column(Integer, index=True)
    kind: Mapped[str] = mapped_column(String(20))  # bounce | complaint | refused (our sending's fault)
    hard: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(20), default="")
    reason: Mapped[str] = mapped_column(String(50), default="")
    source: Mapped[str] = mapped_column(String(30), default="")  # mailbox | sendgrid | mailgun | ...
    detail: Mapped[str] = mapped_column(String(500), default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class MailboxSeen(Base):
    """A message `digest bounces fetch` set aside in a mailbox that cannot move it (POP3): by
    UIDL or content digest, so it is not read again, and why it was set aside."""

    __tablename__ = "mailbox_seen"
    __table_args__ = (UniqueConstraint("mailbox", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox: Mapped[str] = mapped_column(String(300))
    key: Mapped[str] = mapped_column(String(200))
    why: Mapped[str] = mapped_column(String(300), default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime)


def is_seen_in(session: Session, mailbox: str, key: str) -> bool:
    return (
        session.scalar(select(MailboxSeen.id).where(MailboxSeen.mailbox == mailbox, MailboxSeen.key == key))
        is not None
    )


def record_seen(session: Session, mailbox: str, key: str, why: str, *, now: datetime | None = None) -> None:
    if not is_seen_in(session, mailbox, key):
        session.add(
            MailboxSeen(mailbox=mailbox[:300], key=key[:200], why=why[:300], at=now or datetime.now(UTC))
        )


class WebhookNonce(Base):
    """A signed webhook token already used (Mailgun's `token`): a replay is refused."""

    __tablename__ = "webhook_nonces"
    __table_args__ = (UniqueConstraint("provider", "nonce"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str] = mapped_column(String(20))
    nonce: Mapped[str] = mapped_column(String(200))
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


@dataclass(frozen=True)
class Policy:
    soft_limit: int = 3
    soft_window: timedelta = timedelta(days=30)


class Effect(enum.StrEnum):
    UNMATCHED = "unmatched"  # no Message-ID we signed, or nobody we sent it to
    NOTHING = "nothing"  # a delivery notification, or a report that names no failure
    SOFT = "soft"  # recorded, under the soft limit
    SUPPRESSED = "suppressed"  # hard bounce, or the soft limit reached
    COMPLAINED = "complained"  # suppressed and unsubscribed
    DUPLICATE = "duplicate"  # this run's message was already recorded so
    REFUSED = "refused"  # our sending was refused (blocked, authfailure, spam...): an alarm, not the reader's


@dataclass(frozen=True)
class Applied:
    effect: Effect
    run_id: str = ""
    subscriber_id: int = 0
    finding: Finding | None = None
    matched_by: str = ""  # "verp" or "message-id"


def match(
    session: Session, tokens: Tokens, message_ids: Iterable[str], return_paths: Iterable[str] = ()
) -> tuple[str, int, str] | None:
    """(run, subscriber, how) for the first signed reference whose delivery the ledger has: the
    VERP address the report came back to first ("verp"), then a quoted Message-ID ("message-id")."""
    from digest.send import Delivery

    refs = [(tokens.read_return_path(a), "verp") for a in return_paths]
    refs += [(tokens.read_message_id(m), "message-id") for m in message_ids]
    for ref, how in refs:
        if ref is None:
            continue
        run_id, subscriber_id = ref
        sent = session.scalar(
            select(Delivery.id).where(Delivery.run_id == run_id, Delivery.subscriber_id == subscriber_id)
        )
        if sent is not None:
            return run_id, subscriber_id, how
    return None


def _chosen(findings: Iterable[Finding], address: str) -> Finding | None:
    """The finding that decides: a complaint first, then a hard bounce, then a soft one (a
    refusal of our sending is a soft one here: it never outranks the reader's own failure).

    Each of our messages has one recipient, so a report about it concerns that subscriber even
    when it names another address (a forward); findings for the subscriber's address come first.
    """
    relevant = [f for f in findings if f.kind in (Kind.BOUNCE, Kind.COMPLAINT)]
    if not relevant:
        return None
    key = store.email_key(address) if address else ""

    def rank(f: Finding) -> tuple[int, int, int]:
        own = 0 if (f.address and key and f.address.casefold() == key.casefold()) else 1
        return (0 if f.kind == Kind.COMPLAINT else 1, 0 if f.hard else 1, own)

    return sorted(relevant, key=rank)[0]


def apply_report(
    session: Session,
    tokens: Tokens,
    report: Report,
    *,
    source: str,
    policy: Policy,
    now: datetime | None = None,
) -> Applied:
    """Match a report to what we sent and apply the policy. The caller commits."""
    now = now or datetime.now(UTC)
    ref = match(session, tokens, report.message_ids, report.return_paths)
    if ref is None:
        return Applied(Effect.UNMATCHED)
    run_id, subscriber_id, how = ref
    sub = store.get(session, subscriber_id)
    finding = _chosen(report.findings, sub.email if sub else "")
    if finding is None or (finding.side == Side.NONE and finding.kind == Kind.BOUNCE):
        return Applied(
            Effect.NOTHING, run_id, subscriber_id, finding, how
        )  # nothing failed, or an auto-reply
    if finding.kind == Kind.COMPLAINT:
        kind = "complaint"
    else:
        kind = "refused" if finding.side == Side.SENDER else "bounce"
    detail = _detail(finding, run_id)
    existing = session.scalar(
        select(BounceEvent).where(
            BounceEvent.run_id == run_id, BounceEvent.subscriber_id == subscriber_id, BounceEvent.kind == kind
        )
    )
    if existing is not None:
        if not (kind == "bounce" and finding.hard and not existing.hard):
            effect = Effect.REFUSED if kind == "refused" else Effect.DUPLICATE
            return Applied(effect, run_id, subscriber_id, finding, how)
        existing.hard, existing.status, existing.reason = True, finding.status, finding.reason
        existing.detail, existing.at, existing.source = detail, now, source
    else:
        session.add(
            BounceEvent(
                run_id=run_id,
                subscriber_id=subscriber_id,
                kind=kind,
                hard=finding.hard,
                status=finding.status,
                reason=finding.reason,
                source=source,
                detail=detail,
                at=now,
            )
        )
    session.flush()
    if kind == "refused":  # about us, not the reader: the run's alarm counts it, the reader is untouched
        return Applied(Effect.REFUSED, run_id, subscriber_id, finding, how)
    if sub is None:  # erased since: the address is suppressed already; the run's record keeps it
        return Applied(Effect.SUPPRESSED, run_id, subscriber_id, finding, how)
    if kind == "complaint":
        store.set_status(session, sub, Status.COMPLAINED, source=source, detail=detail)
        return Applied(Effect.COMPLAINED, run_id, subscriber_id, finding, how)
    if finding.hard:
        if sub.status != Status.COMPLAINED:
            store.set_status(session, sub, Status.BOUNCED, source=source, detail=f"hard bounce: {detail}")
        return Applied(Effect.SUPPRESSED, run_id, subscriber_id, finding, how)
    store.log(session, sub, "soft_bounce", source=source, detail=detail)
    soft = soft_bounces(session, subscriber_id, since=_soft_since(session, sub, now - policy.soft_window))
    if soft >= policy.soft_limit and sub.status not in (Status.BOUNCED, Status.COMPLAINED):
        days = policy.soft_window.days
        store.set_status(
            session,
            sub,
            Status.BOUNCED,
            source=source,
            detail=f"{soft} soft bounces within {days} days; last: {detail}",
        )
        return Applied(Effect.SUPPRESSED, run_id, subscriber_id, finding, how)
    return Applied(Effect.SOFT, run_id, subscriber_id, finding, how)


def _soft_since(session: Session, sub: store.Subscriber, window_start: datetime) -> datetime:
    """Soft bounces count from the window's start, or from staff's last lifting, if later."""
    lifted = session.scalar(
        select(func.max(store.Event.at)).where(
            store.Event.subscriber_id == sub.id, store.Event.kind == "unsuppressed"
        )
    )
    return max(window_start, store.as_utc(lifted)) if lifted else window_start


def soft_bounces(session: Session, subscriber_id: int, *, since: datetime) -> int:
    """Distinct runs whose message to this subscriber bounced softly since `since`."""
    return (
        session.scalar(
            select(func.count(func.distinct(BounceEvent.run_id))).where(
                BounceEvent.subscriber_id == subscriber_id,
                BounceEvent.kind == "bounce",
                BounceEvent.hard.is_(False),
                BounceEvent.at >= since,
            )
        )
        or 0
    )


def _detail(finding: Finding, run_id: str) -> str:
    what = " ".join(p for p in (finding.status, finding.reason.value) if p) or finding.kind.value
    words = f": {finding.diagnostic}" if finding.diagnostic else ""
    return f"{what} (run {run_id}){words}"[:500]


def run_bounce_counts(session: Session, run_id: str) -> dict[str, int]:
    """{"bounced": subscribers whose message bounced (hard or soft), "complained": ...} for a run."""
    rows = session.execute(
        select(BounceEvent.kind, func.count(func.distinct(BounceEvent.subscriber_id)))
        .where(BounceEvent.run_id == run_id)
        .group_by(BounceEvent.kind)
    )
    counts = {"bounced": 0, "complained": 0, "refused": 0}
    names = {"complaint": "complained", "bounce": "bounced", "refused": "refused"}
    for kind, n in rows:
        counts[names.get(kind, "bounced")] += n
    return counts


# What staff can do about each refusal of our sending; shown with the run's alarm.
ADVICE = {
    Reason.BLOCKED: "our sending IP or host is refused (blocklist, reputation or reverse DNS): check the "
    "IP on blocklists and the receiver's postmaster pages",
    Reason.AUTHFAILURE: "SPF, DKIM or DMARC failed: check the sender domain's DNS records and DKIM signing",
    Reason.SPAMDETECTED: "the content was judged spam: check the issue's content and links",
    Reason.POLICYVIOLATION: "the message broke the receiver's policy (headers, attachments, RFC 5322)",
    Reason.VIRUSDETECTED: "a virus scanner refused the message: check links and attachments",
    Reason.MESGTOOLARGE: "the message is too large for the receiver",
    Reason.REJECTED: "our envelope sender (Return-Path) was refused: check its domain and DNS",
    Reason.NORELAYING: "the server would not relay for us: check the transport's host",
    Reason.SECURITYERROR: "TLS or authentication was required: check the transport's settings",
    Reason.SYNTAXERROR: "the server did not understand our SMTP: check the transport",
    Reason.TOOMANYCONN: "too many connections: lower [transport.smtp] connections",
    Reason.RATELIMITED: "sending too fast for the receiver: lower the send rate",
}


@dataclass(frozen=True)
class Alarm:
    """Refusals of our sending in one run, by reason and receiving domain."""

    reason: str
    domain: str
    count: int
    example: str  # one refusal's status and words

    @property
    def text(self) -> str:
        advice = ADVICE.get(self.reason, "")  # type: ignore[call-overload]
        plural = "message" if self.count == 1 else "messages"
        return f"{self.reason} by {self.domain}: {self.count} {plural} refused" + (
            f"; {advice}" if advice else ""
        )


def run_alarms(session: Session, run_id: str) -> list[Alarm]:
    """A run's refusals of our sending (never the readers' fault), biggest first."""
    from digest.send import Delivery

    rows = session.execute(
        select(BounceEvent.reason, Delivery.email, BounceEvent.detail)
        .join(
            Delivery,
            (Delivery.run_id == BounceEvent.run_id) & (Delivery.subscriber_id == BounceEvent.subscriber_id),
            isouter=True,
        )
        .where(BounceEvent.run_id == run_id, BounceEvent.kind == "refused")
    )
    groups: dict[tuple[str, str], list[str]] = {}
    for reason, address, detail in rows:
        domain = (address or "").rpartition("@")[2].lower() or "?"
        groups.setdefault((reason, domain), []).append(detail)
    alarms = [Alarm(reason, domain, len(details), details[0]) for (reason, domain), details in groups.items()]
    return sorted(alarms, key=lambda a: (-a.count, a.reason, a.domain))


def last_event(session: Session, subscriber_id: int) -> BounceEvent | None:
    return session.scalar(
        select(BounceEvent).where(BounceEvent.subscriber_id == subscriber_id).order_by(BounceEvent.id.desc())
    )


def remember_nonce(session: Session, provider: str, nonce: str, *, now: datetime, keep: timedelta) -> bool:
    """Record a webhook token; False if it was seen already (a replay). Forgets tokens past `keep`."""
    session.execute(delete(WebhookNonce).where(WebhookNonce.seen_at < now - keep))
    if session.scalar(
        select(WebhookNonce.id).where(WebhookNonce.provider == provider, WebhookNonce.nonce == nonce)
    ):
        return False
    try:
        with session.begin_nested():
            session.add(WebhookNonce(provider=provider, nonce=nonce[:200], seen_at=now))
    except IntegrityError:  # the same token in a concurrent request
        return False
    return True


def unsuppress(session: Session, sub: store.Subscriber, *, reason: str, source: str) -> None:
    """Staff lift a suppression, with a recorded reason. Bounced or complained becomes active;
    someone who unsubscribed stays so (they can sign up again themselves)."""
    if sub.status == Status.UNSUBSCRIBED:
        raise ValueError(f"{sub.email} unsubscribed themselves; only a new sign-up can bring them back")
    store.lift_suppression(session, sub.email)
    store.log(session, sub, "unsuppressed", source=source, detail=reason)
    if sub.status in (Status.BOUNCED, Status.COMPLAINED):
        store.set_status(session, sub, Status.ACTIVE, source=source, detail=f"unsuppressed: {reason}")
