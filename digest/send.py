"""A send run: a frozen recipient set, a delivery ledger, retries, and nobody sent twice.

The ledger has one row per (run, address), written when the run starts, before any attempt.
A row moves from pending only after the transport answers: to sent, failed, unknown (the
connection died after the message was handed over: never re-sent blindly) or skipped (the
subscriber left, or chose only regions with nothing this week). Resuming a run sends only
rows still pending, so a crash mid-run neither skips nor duplicates anyone.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import (
    Enum,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from digest.db import Base, UTCDateTime
from digest.errors import PermanentError, TemporaryError, TransportError, UnknownOutcomeError
from digest.models import DeliveryStatus, Recipient
from digest.transports.base import Envelope, Transport

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _enum(cls: type) -> Enum:
    return Enum(cls, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])


class SendRun(Base):
    __tablename__ = "send_runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    issue: Mapped[str] = mapped_column(String(40))  # the issue date, ISO
    status: Mapped[str] = mapped_column(String(20), default="running")  # running | paused | finished
    # The `now` the issue was collected at: a resumed run collects the same week window again.
    window_end: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (UniqueConstraint("run_id", "email_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("send_runs.id", ondelete="CASCADE"), index=True)
    subscriber_id: Mapped[int] = mapped_column(Integer)
    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200), default="")
    regions: Mapped[str] = mapped_column(Text, default="")  # "\n"-joined; "" = every region
    status: Mapped[DeliveryStatus] = mapped_column(_enum(DeliveryStatus), default=DeliveryStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    detail: Mapped[str] = mapped_column(Text, default="")  # server reply or error
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow, onupdate=_utcnow)

    def recipient(self) -> Recipient:
        regions = frozenset(self.regions.split("\n")) if self.regions else None
        return Recipient(subscriber_id=self.subscriber_id, email=self.email, name=self.name, regions=regions)


def dedupe(recipients: Iterable[Recipient]) -> list[Recipient]:
    """One recipient per address, compared case-insensitively; the first one wins."""
    seen: set[str] = set()
    out = []
    for r in recipients:
        key = r.email.strip().casefold()
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def start_run(
    session: Session,
    recipients: Iterable[Recipient],
    *,
    issue: str,
    window_end: datetime | None = None,
    run_id: str | None = None,
) -> str:
    """Freeze the recipient set: one pending ledger row per address, committed before any send."""
    run_id = run_id or uuid.uuid4().hex[:16]
    session.add(SendRun(id=run_id, issue=issue, window_end=window_end or _utcnow()))
    session.flush()
    for r in dedupe(recipients):
        session.add(
            Delivery(
                run_id=run_id,
                subscriber_id=r.subscriber_id,
                email=r.email,
                email_key=r.email.strip().casefold(),
                name=r.name,
                regions="\n".join(sorted(r.regions)) if r.regions is not None else "",
            )
        )
    session.commit()
    return run_id


@dataclass(frozen=True)
class Prepared:
    """One recipient's message, or why they get none this week."""

    message: bytes | None
    skip_reason: str = ""


@dataclass
class RunReport:
    run_id: str
    counts: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    paused: bool = False

    @property
    def sent(self) -> int:
        return self.counts[DeliveryStatus.SENT.value]


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3
    backoff: float = 1.0  # seconds before the 2nd attempt; doubles each time, with jitter
    max_errors: int = 50  # pause the run past this many failed deliveries

    def delay(self, attempt: int) -> float:
        base = self.backoff * (2 ** (attempt - 1))
        return base * random.uniform(0.5, 1.5)


def open_run(session: Session) -> SendRun | None:
    """The newest run that has not finished (crashed or paused): it must be resumed, not restarted."""
    return session.scalar(
        select(SendRun).where(SendRun.status != "finished").order_by(SendRun.created_at.desc()).limit(1)
    )


def last_send_window_end(session: Session) -> datetime | None:
    """Up to when the last finished run collected: where a "since_last_send" window starts."""
    return session.scalar(
        select(SendRun.window_end)
        .where(SendRun.status == "finished")
        .order_by(SendRun.window_end.desc())
        .limit(1)
    )


def finished_run_for(session: Session, issue: str) -> SendRun | None:
    return session.scalar(
        select(SendRun).where(SendRun.issue == issue, SendRun.status == "finished").limit(1)
    )


def ledger_size(session: Session, run_id: str) -> int:
    return session.scalar(select(func.count()).select_from(Delivery).where(Delivery.run_id == run_id)) or 0


def pending(session: Session, run_id: str) -> list[Delivery]:
    return list(
        session.scalars(
            select(Delivery)
            .where(Delivery.run_id == run_id, Delivery.status == DeliveryStatus.PENDING)
            .order_by(Delivery.id)
        )
    )


@dataclass
class Courier:
    """Carries each pending ledger row of a run through the transport, with retries."""

    transport: Transport
    prepare: Callable[[Recipient], Prepared]
    still_wanted: Callable[[Session, Recipient], bool]
    envelope_sender: str
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sleep: Callable[[float], None] = time.sleep

    def run(
        self,
        sessions: sessionmaker,
        run_id: str,
        progress: Callable[[Iterable[Delivery], int], Iterator[Delivery]] | None = None,
    ) -> RunReport:
        """Send every pending row; each row is committed as soon as its outcome is known."""
        report = RunReport(run_id=run_id)
        with sessions() as session:
            interrupted = _settle_interrupted(session, run_id)
            for email in interrupted:
                report.counts[DeliveryStatus.UNKNOWN.value] += 1
                report.errors.append(f"{email}: {INTERRUPTED}")
            rows = pending(session, run_id)
            failures = 0
            with self.transport:
                for row in progress(rows, len(rows)) if progress else rows:
                    status, detail = self._deliver_one(session, row)
                    _record(session, row, status, detail)
                    report.counts[status.value] += 1
                    if status in (DeliveryStatus.FAILED, DeliveryStatus.UNKNOWN, DeliveryStatus.PENDING):
                        failures += 1
                        report.errors.append(f"{row.email}: {detail}")
                        if failures > self.retry.max_errors:
                            break
            run = session.get(SendRun, run_id)
            assert run is not None
            if pending(session, run_id):
                run.status = "paused"
                report.paused = True
            else:
                run.status = "finished"
                run.finished_at = _utcnow()
            session.commit()
        return report

    def _deliver_one(self, session: Session, row: Delivery) -> tuple[DeliveryStatus, str]:
        """The row's outcome and what to record with it."""
        recipient = row.recipient()
        # Re-checked just before sending: someone who unsubscribed after the run froze gets nothing.
        if not self.still_wanted(session, recipient):
            return DeliveryStatus.SKIPPED, "no longer subscribed"
        prepared = self.prepare(recipient)
        if prepared.message is None:
            return DeliveryStatus.SKIPPED, prepared.skip_reason
        envelope = Envelope(
            sender=self.envelope_sender, recipient=row.email, idempotency_key=f"{row.run_id}-{row.id}"
        )
        last: TransportError | None = None
        for attempt in range(1, self.retry.attempts + 1):
            # Committed before the hand-over: if the process dies now, the next run knows this
            # message may have gone out and does not send it blindly again.
            _record(session, row, DeliveryStatus.SENDING, "")
            try:
                return DeliveryStatus.SENT, self.transport.send(envelope, prepared.message)
            except UnknownOutcomeError as err:
                return DeliveryStatus.UNKNOWN, str(err)
            except PermanentError as err:
                return DeliveryStatus.FAILED, str(err)
            except TemporaryError as err:
                last = err
                _record(session, row, DeliveryStatus.PENDING, str(err))
                log.warning("temporary failure for %s (attempt %d): %s", row.email, attempt, err)
                if attempt < self.retry.attempts:
                    self.sleep(self.retry.delay(attempt))
        # Still pending: a resumed run tries again later.
        return DeliveryStatus.PENDING, str(last)


INTERRUPTED = "the run was interrupted while handing this message over: it may have been delivered"


def _record(session: Session, row: Delivery, status: DeliveryStatus, detail: str) -> None:
    """Write one row's state and commit. A core UPDATE: the ORM unit of work costs more than a send."""
    values: dict[str, object] = {"status": status, "detail": detail[:2000], "updated_at": _utcnow()}
    if status == DeliveryStatus.SENDING:
        row.attempts += 1
        values["attempts"] = row.attempts
    session.execute(
        update(Delivery)
        .where(Delivery.id == row.id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def _settle_interrupted(session: Session, run_id: str) -> list[str]:
    """Rows left `sending` by a process that died mid-hand-over become `unknown`, never re-sent."""
    emails = list(
        session.scalars(
            select(Delivery.email).where(Delivery.run_id == run_id, Delivery.status == DeliveryStatus.SENDING)
        )
    )
    if emails:
        session.execute(
            update(Delivery)
            .where(Delivery.run_id == run_id, Delivery.status == DeliveryStatus.SENDING)
            .values(status=DeliveryStatus.UNKNOWN, detail=INTERRUPTED, updated_at=_utcnow())
        )
        session.commit()
    return emails
