"""A send run: a frozen recipient set, a delivery ledger, retries, and nobody sent twice.

The ledger has one row per (run, address), written when the run starts, before any attempt.
A row moves from pending only after the transport answers: to sent, failed, unknown (the
connection died after the message was handed over: never re-sent blindly) or skipped (the
subscriber left, or chose only regions with nothing this week). Resuming a run sends only
rows still pending, so a crash mid-run neither skips nor duplicates anyone.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import (
    Enum,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from digest.db import Base, UTCDateTime
from digest.errors import PermanentError, RunBusyError, TemporaryError, TransportError, UnknownOutcomeError
from digest.models import DeliveryStatus, Recipient
from digest.transports.base import Outbound, Transport
from subscribers.validate import email_key

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _enum(cls: type) -> Enum:
    return Enum(cls, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])


# A process holding a run renews its lease at least this often; a lease older than LEASE_SECONDS
# belonged to a process that died, and another may take the run over.
HEARTBEAT_SECONDS = 10.0
LEASE_SECONDS = 300.0


class SendRun(Base):
    __tablename__ = "send_runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    issue: Mapped[str] = mapped_column(String(40))  # the issue date, ISO
    # running | paused | finished | abandoned
    status: Mapped[str] = mapped_column(String(20), default="running")
    # 1 while the run is unfinished, NULL after: the unique constraint lets the database itself
    # refuse a second unfinished run, even when two processes start at the same moment.
    open_slot: Mapped[int | None] = mapped_column(Integer, unique=True, nullable=True, default=1)
    # The process sending it now, and when it last said so (see HEARTBEAT_SECONDS).
    owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
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
    """One recipient per address, compared by `email_key` (case-insensitive, ß kept); the first wins."""
    seen: set[str] = set()
    out = []
    for r in recipients:
        key = email_key(r.email)
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
    """Freeze the recipient set: one pending ledger row per address, committed before any send.

    Raises RunBusyError when another run is still unfinished (the database refuses a second one).
    """
    run_id = run_id or uuid.uuid4().hex[:16]
    session.add(SendRun(id=run_id, issue=issue, window_end=window_end or _utcnow()))
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        other = open_run(session)
        raise RunBusyError(other.id if other else "?", "another run is unfinished; resume it first") from None
    for r in dedupe(recipients):
        session.add(
            Delivery(
                run_id=run_id,
                subscriber_id=r.subscriber_id,
                email=r.email,
                email_key=email_key(r.email),
                name=r.name,
                regions="\n".join(sorted(r.regions)) if r.regions is not None else "",
            )
        )
    session.commit()
    return run_id


@dataclass(frozen=True)
class Prepared:
    """One recipient's message, or why they get none this week."""

    message: Outbound | None
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
    """The run that has not finished (crashed or paused), if any: it is resumed, not restarted."""
    return session.scalar(select(SendRun).where(SendRun.open_slot.is_not(None)))


def owner_id() -> str:
    """Who holds a run: host, process and a random part (a pid can come back after a reboot)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire(session: Session, run_id: str, owner: str) -> None:
    """Take the run's lease, atomically; RunBusyError if a live process holds it."""
    now = _utcnow()
    taken = session.execute(
        update(SendRun)
        .where(
            SendRun.id == run_id,
            SendRun.open_slot.is_not(None),
            or_(
                SendRun.owner.is_(None),
                SendRun.owner == owner,
                SendRun.heartbeat_at < now - timedelta(seconds=LEASE_SECONDS),
            ),
        )
        .values(owner=owner, heartbeat_at=now, status="running")
        .execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    if taken != 1:
        run = session.get(SendRun, run_id)
        if run is None or run.open_slot is None:
            raise RunBusyError(run_id, "the run is already finished")
        session.refresh(run)
        if run.owner and _owner_is_dead(run.owner):
            # A process on this machine that no longer exists: no need to wait out its lease.
            session.execute(
                update(SendRun)
                .where(SendRun.id == run_id, SendRun.owner == run.owner)
                .values(owner=None)
                .execution_options(synchronize_session=False)
            )
            session.commit()
            return acquire(session, run_id, owner)
        raise RunBusyError(
            run_id,
            f"another process ({run.owner}) is sending it, last heard from at {run.heartbeat_at:%c} UTC",
        )


def _owner_is_dead(owner: str) -> bool:
    """True only when the owner ran on this host and its process is gone."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another machine: only its lease expiring says it is gone
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, someone else's
    return False


def release(session: Session, run_id: str, owner: str, *, finished: bool) -> None:
    values: dict[str, object] = {"owner": None}
    if finished:
        values.update(status="finished", finished_at=_utcnow(), open_slot=None)
    else:
        values["status"] = "paused"
    session.execute(
        update(SendRun)
        .where(SendRun.id == run_id, SendRun.owner == owner)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def abandon(session: Session, run_id: str) -> int:
    """Close an unfinished run for good: its pending rows become skipped. Returns how many."""
    skipped = session.execute(
        update(Delivery)
        .where(Delivery.run_id == run_id, Delivery.status == DeliveryStatus.PENDING)
        .values(status=DeliveryStatus.SKIPPED, detail="run abandoned by staff", updated_at=_utcnow())
    ).rowcount
    session.execute(
        update(SendRun)
        .where(SendRun.id == run_id)
        .values(status="abandoned", open_slot=None, owner=None, finished_at=_utcnow())
    )
    session.commit()
    return skipped


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
    prepare: Callable[[Recipient, str], Prepared]
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
        owner = owner_id()
        with sessions() as session:
            acquire(session, run_id, owner)
            try:
                self._run_rows(session, run_id, owner, report, progress)
            finally:
                # Released even on a crash of this function, so no one waits out the lease.
                session.rollback()
                report.paused = bool(pending(session, run_id))
                release(session, run_id, owner, finished=not report.paused)
        return report

    def _run_rows(
        self,
        session: Session,
        run_id: str,
        owner: str,
        report: RunReport,
        progress: Callable[[Iterable[Delivery], int], Iterator[Delivery]] | None,
    ) -> None:
        # Holding the lease, any row still `sending` belonged to a process that died mid-hand-over.
        for email in _settle_interrupted(session, run_id):
            report.counts[DeliveryStatus.UNKNOWN.value] += 1
            report.errors.append(f"{email}: {INTERRUPTED}")
        rows = pending(session, run_id)
        failures = 0
        beat = time.monotonic()
        with self.transport:
            for row in progress(rows, len(rows)) if progress else rows:
                status, detail = self._deliver_one(session, row)
                if status is None:
                    continue  # another process has the row (cannot happen under the lease; belt and braces)
                _record(session, row, status, detail)
                report.counts[status.value] += 1
                if status in (DeliveryStatus.FAILED, DeliveryStatus.UNKNOWN, DeliveryStatus.PENDING):
                    failures += 1
                    report.errors.append(f"{row.email}: {detail}")
                    if failures > self.retry.max_errors:
                        break
                if time.monotonic() - beat > HEARTBEAT_SECONDS:
                    _heartbeat(session, run_id, owner)
                    beat = time.monotonic()

    def _deliver_one(self, session: Session, row: Delivery) -> tuple[DeliveryStatus | None, str]:
        """The row's outcome and what to record with it (None: the row was not ours to send)."""
        recipient = row.recipient()
        # Re-checked just before sending: someone who unsubscribed after the run froze gets nothing.
        if not self.still_wanted(session, recipient):
            return DeliveryStatus.SKIPPED, "no longer subscribed"
        prepared = self.prepare(recipient, f"{row.run_id}-{row.id}")
        if prepared.message is None:
            return DeliveryStatus.SKIPPED, prepared.skip_reason
        last: TransportError | None = None
        for attempt in range(1, self.retry.attempts + 1):
            # Claimed and committed before the hand-over: if the process dies now, the next run
            # knows this message may have gone out and does not send it blindly again.
            if not _claim(session, row):
                return None, ""
            try:
                return DeliveryStatus.SENT, self.transport.send_one(prepared.message).detail
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
            except Exception as err:  # noqa: BLE001  a bug mid-hand-over: it may have gone out
                log.exception("unexpected error sending to %s", row.email)
                return DeliveryStatus.UNKNOWN, f"unexpected error during the hand-over: {err!r}"
        # Still pending: a resumed run tries again later.
        return DeliveryStatus.PENDING, str(last)


INTERRUPTED = "the run was interrupted while handing this message over: it may have been delivered"


def _record(session: Session, row: Delivery, status: DeliveryStatus, detail: str) -> None:
    """Write one row's outcome and commit. A core UPDATE: the ORM unit of work costs more than a send."""
    session.execute(
        update(Delivery)
        .where(Delivery.id == row.id)
        .values(status=status, detail=detail[:2000], updated_at=_utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()


def _claim(session: Session, row: Delivery) -> bool:
    """pending -> sending for this row only if it is still pending; committed at once."""
    row.attempts += 1
    claimed = session.execute(
        update(Delivery)
        .where(Delivery.id == row.id, Delivery.status == DeliveryStatus.PENDING)
        .values(status=DeliveryStatus.SENDING, attempts=row.attempts, detail="", updated_at=_utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    return claimed == 1


def _heartbeat(session: Session, run_id: str, owner: str) -> None:
    session.execute(
        update(SendRun)
        .where(SendRun.id == run_id, SendRun.owner == owner)
        .values(heartbeat_at=_utcnow())
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
