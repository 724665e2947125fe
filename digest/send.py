"""A send run: a frozen recipient set, a delivery ledger, retries, and nobody sent twice.

The ledger has one row per (run, address), written when the run starts, before any attempt.
Rows are claimed in batches (pending -> sending, one committed UPDATE per batch) just before
they are handed over, and move on only when the transport answers: to sent, failed, unknown
(handed over with no answer: never re-sent blindly) or skipped (the subscriber left, or chose
only regions with nothing this week). A temporary refusal puts the row back to pending with a
due time (exponential backoff with jitter, or the server's Retry-After), and the other rows
keep flowing meanwhile: no sleep in the sending loop holds anyone up.

Up to `transport.concurrency` batches are in flight at once, each handed to the transport on a
worker thread; only the loop's own thread touches the database, recording outcomes in group
commits. Resuming a run sends only rows still pending, so a crash mid-run neither skips nor
duplicates anyone.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import random
import socket
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import (
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from digest.db import Base, UTCDateTime, insert_rows, update_rows
from digest.errors import RunBusyError
from digest.models import DeliveryStatus, Recipient
from digest.transports.base import Outbound, Outcome, Result, Transport, batch_error_outcomes, complete
from subscribers.validate import email_key

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _enum(cls: type) -> Enum:
    return Enum(cls, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])


# A process holding a run renews its lease at least this often; a lease older than LEASE_SECONDS
# belonged to a process that died, and another may take the run over.
HEARTBEAT_SECONDS = 10.0
LEASE_SECONDS = 60.0  # the default of [send] lease_seconds
# Claim owners of Celery workers start with this (digest.distributed.worker_id).
WORKER_OWNER_PREFIX = "worker:"


class RunStatus:
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    # Closed like a finished run, but most deliveries failed: not "sent". It does not count as
    # the last sent issue, so run-now and "send again to failed" stay open (see closing_status).
    FAILED = "failed"
    ABANDONED = "abandoned"


class SendRun(Base):
    __tablename__ = "send_runs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    issue: Mapped[str] = mapped_column(String(40))  # the issue date, ISO
    status: Mapped[str] = mapped_column(String(20), default=RunStatus.RUNNING)  # see RunStatus
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
    # Why the run stopped short of finishing (error threshold, rate limit, stopped by staff...).
    paused_reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    transport: Mapped[str] = mapped_column(String(40), default="", server_default="")
    # Seconds spent sending, over every invocation: the run's rate is sent / active_seconds.
    active_seconds: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    # JSON: what staff should see in the run's record (articles left out, rate-limit hits, ...).
    notes: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")
    # Who asked to pause a run sent in one process (the console's Pause, `digest runs pause`): the
    # sending loop reads it at each batch and stops there. Cleared when the loop lets the run go.
    pause_requested: Mapped[str | None] = mapped_column(Text, nullable=True)

    def notes_dict(self) -> dict[str, Any]:
        try:
            value = json.loads(self.notes or "{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


class Delivery(Base):
    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("run_id", "email_key"),
        Index("ix_deliveries_run_status_id", "run_id", "status", "id"),
    )

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
    # When a pending row may be tried next; NULL parks it until the next invocation of the run.
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    message_id: Mapped[str] = mapped_column(String(300), default="", server_default="")
    provider_id: Mapped[str] = mapped_column(String(300), default="", server_default="")
    # Who claimed the row (pending -> sending) and when: a Celery worker's rows are settled by
    # whether that worker is still alive (digest.distributed), not by a journal on its machine.
    claim_owner: Mapped[str | None] = mapped_column(String(100), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Set by a Celery worker (committed) just before it hands the claimed row to the transport;
    # a dead worker's row without it never reached the server and goes back to pending.
    handed_over_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # On PostgreSQL, the answer to a hand-over, committed before the next message on the same
    # connection goes (LedgerMarks): s sent, f failed, d deferred, u unknown. With
    # handed_over_at, what another machine needs to settle a dead process's rows.
    handover_answer: Mapped[str | None] = mapped_column(String(1), nullable=True)

    def recipient(self) -> Recipient:
        return _recipient(self.subscriber_id, self.email, self.name, self.regions)


def _recipient(subscriber_id: int, email: str, name: str, regions: str) -> Recipient:
    return Recipient(
        subscriber_id=subscriber_id,
        email=email,
        name=name,
        regions=frozenset(regions.split("\n")) if regions else None,
    )


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


FREEZE_CHUNK = 5000


def start_run(
    session: Session,
    recipients: Iterable[Recipient],
    *,
    issue: str,
    window_end: datetime | None = None,
    run_id: str | None = None,
    notes: dict[str, Any] | None = None,
    transport: str = "",
    now: datetime | None = None,
) -> str:
    """Freeze the recipient set: one pending ledger row per address, committed before any send.

    `now` is the sending clock's time (Clock.now): the rows fall due at it, and the engine
    compares due times with that same clock.

    `recipients` may be a generator: rows go in by chunks, so a million-address list is never
    held in memory. Duplicate addresses (compared case-insensitively) are left out by the
    database's unique constraint, the first one winning. Raises RunBusyError when another run
    is still unfinished (the database refuses a second one).
    """
    run_id = run_id or uuid.uuid4().hex[:16]
    now = now or _utcnow()
    session.add(
        SendRun(
            id=run_id,
            issue=issue,
            created_at=now,
            window_end=window_end or now,
            notes=json.dumps(notes or {}),
            transport=transport,
        )
    )
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        other = open_run(session)
        raise RunBusyError(other.id if other else "?", "another run is unfinished; resume it first") from None
    table = Delivery.__table__
    chunk: list[dict[str, Any]] = []
    for r in recipients:
        chunk.append(
            {
                "run_id": run_id,
                "subscriber_id": r.subscriber_id,
                "email": r.email,
                "email_key": email_key(r.email),
                "name": r.name,
                "regions": "\n".join(sorted(r.regions)) if r.regions is not None else "",
                "status": DeliveryStatus.PENDING,
                "attempts": 0,
                "detail": "",
                "updated_at": now,
                "due_at": now,
                "message_id": "",
                "provider_id": "",
            }
        )
        if len(chunk) >= FREEZE_CHUNK:
            # The driver's executemany with the shared values converted once: SQLAlchemy's own
            # per-row conversions took most of a 10,000-reader freeze.
            insert_rows(session, table, chunk, skip_duplicates_of=("run_id", "email_key"))
            chunk = []
    insert_rows(session, table, chunk, skip_duplicates_of=("run_id", "email_key"))
    session.commit()
    return run_id


# --- runs: leases, states, queries ------------------------------------------------------


def open_run(session: Session) -> SendRun | None:
    """The run that has not finished (crashed or paused), if any: it is resumed, not restarted."""
    return session.scalar(select(SendRun).where(SendRun.open_slot.is_not(None)))


def owner_id() -> str:
    """Who holds a run: host, process and a random part (a pid can come back after a reboot)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire(
    session: Session,
    run_id: str,
    owner: str,
    now: datetime | None = None,
    *,
    lease_seconds: float = LEASE_SECONDS,
) -> None:
    """Take the run's lease, atomically; RunBusyError if a live process holds it. `now`: the
    sending clock's time, which the lease is judged by and the heartbeat is stamped with."""
    now = now or _utcnow()
    taken = session.execute(
        update(SendRun)
        .where(
            SendRun.id == run_id,
            SendRun.open_slot.is_not(None),
            or_(
                SendRun.owner.is_(None),
                SendRun.owner == owner,
                SendRun.heartbeat_at < now - timedelta(seconds=lease_seconds),
            ),
        )
        .values(owner=owner, heartbeat_at=now, status=RunStatus.RUNNING, paused_reason="")
        .execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    if taken != 1:
        run = session.get(SendRun, run_id)
        if run is None or run.open_slot is None:
            raise RunBusyError(run_id, "the run is already finished")
        session.refresh(run)
        if run.owner and owner_is_dead(run.owner):
            # A process on this machine that no longer exists: no need to wait out its lease.
            session.execute(
                update(SendRun)
                .where(SendRun.id == run_id, SendRun.owner == run.owner)
                .values(owner=None)
                .execution_options(synchronize_session=False)
            )
            session.commit()
            return acquire(session, run_id, owner, now, lease_seconds=lease_seconds)
        raise RunBusyError(
            run_id,
            f"another process ({run.owner}) is sending it, last heard from at {run.heartbeat_at:%c} UTC",
        )


def owner_is_dead(owner: str) -> bool:
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


def closing_status(session: Session, run_id: str) -> tuple[str, str]:
    """(status, reason) of a run with nothing left to send: finished, or failed when most of
    the deliveries that were tried failed (a relay refusing everything is not a sent issue)."""
    totals = run_totals(session, run_id)
    failed = totals[DeliveryStatus.FAILED.value]
    tried = failed + totals[DeliveryStatus.SENT.value] + totals[DeliveryStatus.UNKNOWN.value]
    if tried and failed * 2 > tried:
        return RunStatus.FAILED, f"{failed} of {tried} deliveries failed"
    return RunStatus.FINISHED, ""


def release(
    session: Session,
    run_id: str,
    owner: str,
    *,
    finished: bool,
    reason: str = "",
    seconds: float = 0.0,
    now: datetime | None = None,
) -> None:
    values: dict[str, object] = {
        "owner": None,
        "active_seconds": SendRun.active_seconds + seconds,
        "pause_requested": None,  # asked of this invocation, which has now stopped
    }
    if finished:
        status, why = closing_status(session, run_id)
        at = now or _utcnow()
        values.update(status=status, finished_at=at, open_slot=None, paused_reason=reason or why)
    else:
        values.update(status=RunStatus.PAUSED, paused_reason=reason)
    session.execute(
        update(SendRun)
        .where(SendRun.id == run_id, SendRun.owner == owner)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def request_pause(session: Session, run_id: str, by: str) -> bool:
    """Ask the process sending a run to pause it at its next batch (see SendRun.pause_requested).
    False if the run is not running, or a pause is asked already. Committed."""
    asked = session.execute(
        update(SendRun)
        .where(SendRun.id == run_id, SendRun.status == RunStatus.RUNNING, SendRun.pause_requested.is_(None))
        .values(pause_requested=by)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    return bool(asked)


def abandon(session: Session, run_id: str) -> int:
    """Close an unfinished run for good: its pending rows become skipped. Returns how many."""
    skipped = skip_pending(session, run_id)
    session.execute(
        update(SendRun)
        .where(SendRun.id == run_id)
        .values(
            status=RunStatus.ABANDONED,
            open_slot=None,
            owner=None,
            finished_at=_utcnow(),
            paused_reason="abandoned by staff",
        )
    )
    session.commit()
    return skipped


def skip_pending(session: Session, run_id: str) -> int:
    """An abandoned run's pending rows become skipped (also those a worker gave back after the
    abandon: they were claimed then, and unclaimed as it stopped). Not committed."""
    return session.execute(
        update(Delivery)
        .where(Delivery.run_id == run_id, Delivery.status == DeliveryStatus.PENDING)
        .values(status=DeliveryStatus.SKIPPED, detail="run abandoned by staff", updated_at=_utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount


def add_note(session: Session, run_id: str, key: str, value: Any) -> None:
    """Keep something staff should see on the run's record (committed by the caller)."""
    run = session.get(SendRun, run_id)
    if run is None:
        return
    notes = run.notes_dict()
    notes[key] = value
    run.notes = json.dumps(notes)


def reopen(
    session: Session,
    run_id: str,
    *,
    include: Sequence[DeliveryStatus],
    only: Sequence[str] = (),
    now: datetime | None = None,
) -> int:
    """Make chosen rows of a run pending again, and the run unfinished; the rest stay as they are.

    `include` names the outcomes to send again (failed, unknown); `only` narrows it to these
    addresses (an address not in the run is an error naming it). Pending rows that were not
    chosen are parked, so `Courier.run(..., unpark=False)` sends exactly the chosen rows.
    Returns how many rows were chosen. RunBusyError when another run is unfinished. `now`: the
    sending clock's time, at which the chosen rows fall due.
    """
    run = session.get(SendRun, run_id)
    if run is None:
        raise RunBusyError(run_id, "no such run")
    keys = [email_key(a) for a in only]
    if keys:
        known = set(
            session.scalars(
                select(Delivery.email_key).where(Delivery.run_id == run_id, Delivery.email_key.in_(keys))
            )
        )
        missing = [a for a, k in zip(only, keys, strict=True) if k not in known]
        if missing:
            raise RunBusyError(run_id, f"not in this run: {', '.join(missing)}")
    if run.open_slot is None:
        other = open_run(session)
        if other is not None and other.id != run_id:
            raise RunBusyError(other.id, "another run is unfinished; finish or abandon it first")
        run.open_slot = 1
        run.status = RunStatus.PAUSED
        run.finished_at = None
        try:
            session.flush()
        except IntegrityError:
            session.rollback()
            raise RunBusyError(run_id, "another run became unfinished meanwhile") from None
    now = now or _utcnow()
    chosen = [Delivery.run_id == run_id]
    statuses = list(include) or [DeliveryStatus.PENDING]
    chosen.append(Delivery.status.in_(statuses))
    if keys:
        chosen.append(Delivery.email_key.in_(keys))
    # Park the pending rows nobody chose: they wait for a plain resume of the run.
    session.execute(
        update(Delivery)
        .where(Delivery.run_id == run_id, Delivery.status == DeliveryStatus.PENDING)
        .values(due_at=None)
        .execution_options(synchronize_session=False)
    )
    count = session.execute(
        update(Delivery)
        .where(*chosen)
        .values(status=DeliveryStatus.PENDING, due_at=now, detail="sent again by staff", updated_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    return count


def last_send_window_end(session: Session) -> datetime | None:
    """Up to when the last finished run collected: where a "since_last_send" window starts."""
    return session.scalar(
        select(SendRun.window_end)
        .where(SendRun.status == RunStatus.FINISHED)
        .order_by(SendRun.window_end.desc())
        .limit(1)
    )


def finished_run_for(session: Session, issue: str) -> SendRun | None:
    return session.scalar(
        select(SendRun).where(SendRun.issue == issue, SendRun.status == RunStatus.FINISHED).limit(1)
    )


def failed_run_for(session: Session, issue: str) -> SendRun | None:
    """The newest closed run of `issue` where most deliveries failed, if any."""
    return session.scalar(
        select(SendRun)
        .where(SendRun.issue == issue, SendRun.status == RunStatus.FAILED)
        .order_by(SendRun.created_at.desc())
        .limit(1)
    )


def ledger_size(session: Session, run_id: str) -> int:
    return session.scalar(select(func.count()).select_from(Delivery).where(Delivery.run_id == run_id)) or 0


def run_totals(session: Session, run_id: str) -> Counter[str]:
    """Rows per status over the whole run, every invocation included."""
    counts: Counter[str] = Counter()
    rows = session.execute(
        select(Delivery.status, func.count()).where(Delivery.run_id == run_id).group_by(Delivery.status)
    )
    for status, n in rows:
        counts[DeliveryStatus(status).value] = n
    return counts


def list_runs(session: Session, limit: int = 50) -> list[tuple[SendRun, Counter[str]]]:
    """The newest runs with their totals (one GROUP BY for all of them)."""
    runs = list(session.scalars(select(SendRun).order_by(SendRun.created_at.desc()).limit(limit)))
    totals: dict[str, Counter[str]] = {r.id: Counter() for r in runs}
    if runs:
        rows = session.execute(
            select(Delivery.run_id, Delivery.status, func.count())
            .where(Delivery.run_id.in_(list(totals)))
            .group_by(Delivery.run_id, Delivery.status)
        )
        for run_id, status, n in rows:
            totals[run_id][DeliveryStatus(status).value] = n
    return [(r, totals[r.id]) for r in runs]


def rows_with_status(
    session: Session, run_id: str, statuses: Sequence[DeliveryStatus], limit: int | None = None
) -> list[Delivery]:
    query = (
        select(Delivery)
        .where(Delivery.run_id == run_id, Delivery.status.in_(list(statuses)))
        .order_by(Delivery.id)
    )
    if limit is not None:
        query = query.limit(limit)
    return list(session.scalars(query))


def pending(session: Session, run_id: str) -> list[Delivery]:
    return rows_with_status(session, run_id, [DeliveryStatus.PENDING])


def sent_since(session: Session, since: datetime) -> int:
    """Messages accepted since `since`, over every run (for the per-hour limit across invocations)."""
    return (
        session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.status == DeliveryStatus.SENT, Delivery.updated_at >= since)
        )
        or 0
    )


# --- the engine -----------------------------------------------------------------------------


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    def now(self) -> datetime:
        return _utcnow()

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class ClockFrom(SystemClock):
    """The system clock's pace from an injected instant: a flow handed its time as one `now` (a
    scheduled firing) stamps its run with that clock, not the wall clock, as it sends."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.base = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self.base)


@dataclass(frozen=True)
class Prepared:
    """One recipient's message, or why they get none this week."""

    message: Outbound | None
    skip_reason: str = ""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 3  # tries per row in one invocation before it is parked for the next one
    backoff: float = 1.0  # seconds before the 2nd attempt; doubles each time, with jitter
    max_errors: int = 50  # pause the run past this many failed or unknown deliveries
    max_backoff: float = 300.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        base = self.backoff * (2 ** (attempt - 1))
        jittered = min(base * random.uniform(0.5, 1.5), self.max_backoff)
        return max(jittered, retry_after or 0.0)


@dataclass(frozen=True)
class RateLimits:
    """Messages per second and per hour for the whole run (0: no limit)."""

    per_second: float = 0.0
    per_hour: int = 0


class TokenBucket:
    """`rate` tokens a second, at most `capacity` saved up."""

    def __init__(self, rate: float, capacity: float, *, tokens: float | None = None, now: float) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity if tokens is None else tokens
        self.stamp = now

    def _refill(self, now: float) -> None:
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def available(self, now: float) -> int:
        self._refill(now)
        return int(self.tokens + 1e-9)  # 0.9999999 tokens after a float refill is one token

    def take(self, n: int, now: float) -> None:
        self._refill(now)
        self.tokens -= n

    def wait_for_one(self, now: float) -> float:
        self._refill(now)
        return 0.0 if self.tokens + 1e-9 >= 1 else max((1 - self.tokens) / self.rate, 1e-3)


class ProgressSink(Protocol):
    def started(self, run_id: str, total: int, done: int) -> None: ...

    def advanced(self, counts: Counter[str], rate: float) -> None: ...

    def note(self, text: str) -> None: ...


@dataclass
class RunReport:
    run_id: str
    counts: Counter[str] = field(default_factory=Counter)  # this invocation's outcomes
    totals: Counter[str] = field(default_factory=Counter)  # the whole run's rows per status
    errors: list[str] = field(default_factory=list)
    paused: bool = False
    reason: str = ""  # why it paused
    stopped: bool = False  # stopped by staff (Ctrl-C, SIGTERM)
    seconds: float = 0.0
    rate_limited: int = 0  # refusals that were a provider's rate limit
    detached: bool = False  # celery mode with --detach: enqueued, the workers carry on

    @property
    def sent(self) -> int:
        return self.counts[DeliveryStatus.SENT.value]

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


INTERRUPTED = "the run was interrupted while handing this message over: it may have been delivered"
NOT_STARTED = "not handed over: the run was stopping"  # a batch given back, as if never claimed


def boot_id() -> str:
    """Changes at every boot: a journal written under another boot id may have lost writes."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""  # no way to tell: journals are then never trusted


class HandoverJournal:
    """Which claimed rows actually reached the transport, for the crash of this process.

    A batch is claimed (pending -> sending) in one durable commit, then its messages go out one
    by one. Before each hand-over the row id is appended to this file, without an fsync: a
    killed process loses nothing the kernel already has, so after `kill -9` the next run knows
    which `sending` rows never left and sends them, instead of calling them unknown. A power cut
    can lose the file's tail, so a journal written under another boot is not trusted, and every
    `sending` row then becomes unknown, as without a journal: never two copies.

    The server's answer to a message is written with the next hand-over on the same thread (or
    at the end of its batch, `flush`), as `LedgerMarks` does on PostgreSQL: one write per
    message, not two. A crash between an answer and that write leaves that one row unknown: at
    most one per connection, never a second copy.

    The file is written through a shared memory map, not `os.write`: a store into the page
    cache, which outlives a killed process just as a written buffer does, without a system call
    that gives up the GIL (taking it back from the other sending threads cost more than the
    write itself). The map is zero-filled ahead of the writes; a reader stops at the first zero
    byte and keeps only whole lines, and one lock orders the writes, so a line cut short by a
    kill is the last one and is ignored.
    """

    _GROW = 1 << 20  # bytes the file and its map grow by when full

    def __init__(self, folder: Path, run_id: str, owner: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        safe_owner = "".join(ch if ch.isalnum() else "_" for ch in owner)
        self.path = folder / f"{run_id}.{safe_owner}.handover"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._end = _journal_end(os.pread(self._fd, os.fstat(self._fd).st_size, 0))
        self._size = self._end + self._GROW
        # Blocks allocated, not only a size set: a full disk is an error here, not a SIGBUS when
        # a store into the map finds no block.
        os.posix_fallocate(self._fd, 0, self._size)
        self._map = mmap.mmap(self._fd, self._size)
        self._lock = threading.Lock()
        self._local = threading.local()  # .answers: this thread's answers not written yet
        self._write(f"boot {boot_id()}\n".encode())

    def _write(self, data: bytes) -> None:
        with self._lock:
            end = self._end + len(data)
            if end > self._size:
                size = end + self._GROW
                os.posix_fallocate(self._fd, 0, size)
                self._map.resize(size)
                self._size = size
            self._map[self._end : end] = data
            self._end = end

    def _take_answers(self) -> bytes:
        answers: bytes = getattr(self._local, "answers", b"")
        self._local.answers = b""
        return answers

    def mark(self, row_id: int) -> None:
        """Before a hand-over: the answers this thread has not written yet, then the mark."""
        self._write(self._take_answers() + b"h %d\n" % row_id)

    def mark_many(self, row_ids: Iterable[int]) -> None:
        data = self._take_answers() + b"".join(b"h %d\n" % i for i in row_ids)
        if data:
            self._write(data)

    def answer(self, row_id: int, result: Result) -> None:
        """The server's answer, written with this thread's next mark or `flush`."""
        line = b"%s %d\n" % (_RESULT_LETTER[result], row_id)
        self._local.answers = getattr(self._local, "answers", b"") + line

    def flush(self) -> None:
        """Write this thread's answers not written yet (a batch ends)."""
        answers = self._take_answers()
        if answers:
            self._write(answers)

    def close(self, *, remove: bool) -> None:
        self.flush()
        self._map.close()
        if remove:
            os.close(self._fd)
            self.path.unlink(missing_ok=True)
            return
        os.ftruncate(self._fd, self._end)  # kept for the next run: no zeros after the lines
        os.close(self._fd)

    @staticmethod
    def read(folder: Path | None, run_id: str) -> tuple[dict[int, Result | None] | None, list[Path]]:
        """What earlier owners of the run handed over: row id -> the answer they got (None: no
        answer yet). None when that can't be known (no journal, or one from before a reboot)."""
        if folder is None or not folder.is_dir():
            return None, []
        files = sorted(folder.glob(f"{run_id}.*.handover"))
        if not files:
            return None, []
        current = boot_id()
        seen: dict[int, Result | None] = {}
        for path in files:
            try:
                data = path.read_bytes()
            except OSError:
                return None, files
            lines = data[: _journal_end(data)].split(b"\n")[:-1]  # whole lines only
            if not current or not lines or lines[0] != f"boot {current}".encode():
                return None, files  # written before a reboot (or unreadable): trust none
            for line in lines[1:]:
                kind, _, number = line.partition(b" ")
                if not number.isdigit():
                    continue  # not a line we write
                if kind == b"h":
                    seen.setdefault(int(number), None)
                elif kind in _LETTER_RESULT:
                    seen[int(number)] = _LETTER_RESULT[kind]
        return seen, files

    @staticmethod
    def handed_over(folder: Path | None, run_id: str) -> set[int] | None:
        seen, _files = HandoverJournal.read(folder, run_id)
        return None if seen is None else set(seen)


def _journal_end(data: bytes) -> int:
    """Where a journal's lines end: after the last whole line before the zeros the map is
    filled with (a line cut short by a kill has no newline yet, or zeros in it)."""
    zero = data.find(b"\0")
    written = data if zero == -1 else data[:zero]
    return written.rfind(b"\n") + 1


_RESULT_LETTER = {Result.SENT: b"s", Result.FAILED: b"f", Result.DEFERRED: b"d", Result.UNKNOWN: b"u"}
_LETTER_RESULT = {v: k for k, v in _RESULT_LETTER.items()}


class LedgerMarks:
    """Which hand-overs are in flight, kept in the ledger itself, where every machine reads it.

    The journal above lives on the sending machine: when that machine dies, another one cannot
    read it. On PostgreSQL the sending threads instead write each message's hand-over into its
    row: just before the irreversible step, one committed UPDATE sets the row's
    `handed_over_at` and, in the same statement, the answer the previous message on that
    connection got (`handover_answer`); the batch's last answer is written when it returns.
    So a process or machine that dies leaves, per open connection, at most one row handed
    over without a recorded answer: that one becomes unknown, the answered ones get their
    answer, and the rest of its claimed rows go back to pending (`settle_by_ledger`).

    Each sending thread uses a connection of its own in autocommit mode, so the loop's own
    transaction is never touched; the statements touch rows of batches in flight, which the
    loop does not write until the batch has returned.
    """

    _MARK = (
        "UPDATE deliveries SET "
        "handed_over_at = CASE WHEN id = %(row)s THEN now() ELSE handed_over_at END, "
        "handover_answer = CASE WHEN id = %(prev)s THEN %(answer)s ELSE handover_answer END "
        "WHERE id IN (%(row)s, %(prev)s)"
    )
    _ANSWER = "UPDATE deliveries SET handover_answer = %(answer)s WHERE id = %(prev)s"
    _MARK_MANY = "UPDATE deliveries SET handed_over_at = now() WHERE id = ANY(%(rows)s)"

    def __init__(self, engine: Any, row_of: dict[str, int]) -> None:
        self.engine = engine
        self.row_of = row_of
        self.local = threading.local()

    def begin(self) -> None:
        """On a sending thread, before a batch: its connection, nothing answered yet."""
        self.local.conn = self.engine.raw_connection()
        self.local.conn.driver_connection.autocommit = True
        self.local.previous = None

    def mark(self, outbound: Outbound) -> None:
        previous = self.local.previous
        params = {"row": self.row_of[outbound.key], "prev": -1, "answer": None}
        if previous is not None:
            params["prev"], params["answer"] = previous
        self._run(self._MARK, params)
        self.local.previous = None

    def mark_many(self, row_ids: Sequence[int]) -> None:
        self._run(self._MARK_MANY, {"rows": list(row_ids)})

    def answer(self, outbound: Outbound, outcome: Outcome) -> None:
        self.local.previous = (self.row_of[outbound.key], _RESULT_LETTER[outcome.result].decode())

    def end(self) -> None:
        """After the batch: the last answer written, the connection given back."""
        try:
            if self.local.previous is not None:
                prev, answer = self.local.previous
                self._run(self._ANSWER, {"prev": prev, "answer": answer})
        finally:
            self.local.previous = None
            self.local.conn.driver_connection.autocommit = False  # as the pool lends it to others
            self.local.conn.close()

    def _run(self, statement: str, params: dict[str, Any]) -> None:
        with self.local.conn.driver_connection.cursor() as cursor:
            cursor.execute(statement, params)


_ANSWER_STATUS = {
    "s": DeliveryStatus.SENT,
    "f": DeliveryStatus.FAILED,
    "d": DeliveryStatus.PENDING,
    "u": DeliveryStatus.UNKNOWN,
}


MAX_ERRORS_KEPT = 200


@dataclass
class _Claimed:
    row_id: int
    email: str
    attempts: int
    message_id: str


Unwanted = Callable[[Session, Sequence[int]], set[int]]


@dataclass
class Courier:
    """Carries the pending ledger rows of a run through the transport.

    `prepare(recipient, key)` builds a recipient's message (or says why there is none);
    `unwanted(session, subscriber_ids)` names those no longer to be mailed, checked for each
    batch just before it is claimed, so an unsubscribe is honoured within one batch.
    """

    transport: Transport
    prepare: Callable[[Recipient, str], Prepared]
    unwanted: Unwanted
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    limits: RateLimits = field(default_factory=RateLimits)
    clock: Clock = field(default_factory=SystemClock)
    batch_size: int = 200
    stop: threading.Event = field(default_factory=threading.Event)
    progress: ProgressSink | None = None
    # Where hand-over journals go (see HandoverJournal); None: a crash makes a claimed batch unknown.
    # On PostgreSQL the hand-overs are kept in the ledger instead (LedgerMarks).
    journal_dir: Path | None = None
    lease_seconds: float = LEASE_SECONDS  # [send] lease_seconds

    def run(self, sessions: sessionmaker, run_id: str, *, unpark: bool = True) -> RunReport:
        """Send every due pending row; outcomes are committed as batches come back."""
        report = RunReport(run_id=run_id)
        owner = owner_id()
        with sessions() as session:
            acquire(session, run_id, owner, self.clock.now(), lease_seconds=self.lease_seconds)
            started = self.clock.monotonic()
            journal: HandoverJournal | None = None
            in_ledger = uses_ledger_marks(session)
            journal_dir = None if in_ledger else self.journal_dir
            try:
                # Settled before our own journal exists: what is left `sending` is a dead owner's.
                for email in settle_interrupted(session, run_id, journal_dir, self.clock.now()):
                    report.counts[DeliveryStatus.UNKNOWN.value] += 1
                    report.errors.append(f"{email}: {INTERRUPTED}")
                if journal_dir is not None:
                    journal = HandoverJournal(journal_dir, run_id, owner)
                SendLoop(self, session, run_id, owner, report, journal).run(unpark=unpark)
            finally:
                # Released even on a crash of this function, so no one waits out the lease.
                session.rollback()
                self.transport.handover_hook = self.transport.outcome_hook = None
                if journal is not None:
                    # Kept if rows are still `sending` (a thread died mid-hand-over).
                    journal.close(remove=not _has_sending(session, run_id))
                report.seconds = self.clock.monotonic() - started
                report.totals = run_totals(session, run_id)
                left = (
                    report.totals[DeliveryStatus.PENDING.value] + report.totals[DeliveryStatus.SENDING.value]
                )
                report.paused = left > 0
                if report.paused and not report.reason:
                    report.reason = f"{left} deliveries still pending"
                release(
                    session,
                    run_id,
                    owner,
                    finished=not report.paused,
                    reason=report.reason if report.paused else "",
                    seconds=report.seconds,
                    now=self.clock.now(),
                )
        return report


class SendLoop:
    """One invocation of a run: claim, hand over on worker threads, record, repeat."""

    def __init__(
        self,
        courier: Courier,
        session: Session,
        run_id: str,
        owner: str,
        report: RunReport,
        journal: HandoverJournal | None,
    ) -> None:
        self.c = courier
        self.journal = journal
        self.session = session
        self.ledger_marks: LedgerMarks | None = None
        self.run_id = run_id
        self.owner = owner
        self.report = report
        self.clock = courier.clock
        self.transport = courier.transport
        self.max_batch = max(1, courier.transport.max_batch)
        self.tries: dict[int, int] = {}  # row id -> attempts in this invocation
        self.row_of: dict[str, int] = {}  # idempotency key -> row id, for the rows in flight
        self.dirty = False  # outcomes written but not committed (see _flush)
        self.failures = 0
        self.paused_by: str | None = None  # who asked to pause this run, once read (see _pause_requested)
        self.hold_until = 0.0  # monotonic; a provider's rate limit asked us to wait
        self.beat = self.clock.monotonic()
        self.started = self.beat
        now = self.clock.monotonic()
        limits = courier.limits
        per_second = limits.per_second or 0.0
        if courier.transport.max_per_second:
            per_second = min(per_second or courier.transport.max_per_second, courier.transport.max_per_second)
        self.second_bucket = TokenBucket(per_second, max(per_second, 1.0), now=now) if per_second else None
        self.hour_bucket: TokenBucket | None = None
        if limits.per_hour:
            used = sent_since(session, self.clock.now() - timedelta(hours=1))
            self.hour_bucket = TokenBucket(
                limits.per_hour / 3600.0, limits.per_hour, tokens=limits.per_hour - used, now=now
            )
        self.limit_notes: Counter[str] = Counter()
        self.heartbeat_every = min(HEARTBEAT_SECONDS, courier.lease_seconds / 4)
        if uses_ledger_marks(session):
            self.ledger_marks = LedgerMarks(session.get_bind(), self.row_of)

    # -- the loop ----------------------------------------------------------------------------

    def run(self, *, unpark: bool) -> None:
        session = self.session
        if unpark:
            unpark_run(session, self.run_id, self.clock.now())
        if self.c.progress is not None:
            totals = run_totals(session, self.run_id)
            self.c.progress.started(
                self.run_id, sum(totals.values()), sum(totals.values()) - totals["pending"]
            )
        concurrency = max(1, self.transport.concurrency)
        journal = self.journal
        marks = self.ledger_marks
        if marks is not None and self.transport.marks_each_handover:
            self.transport.handover_hook = marks.mark
            self.transport.outcome_hook = marks.answer
        elif journal is not None and self.transport.marks_each_handover:
            row_of = self.row_of
            self.transport.handover_hook = lambda outbound: journal.mark(row_of[outbound.key])
            self.transport.outcome_hook = lambda outbound, outcome: journal.answer(
                row_of[outbound.key], outcome.result
            )
        in_flight: dict[Future[list[Outcome]], list[tuple[_Claimed, Outbound]]] = {}
        # Claimed in one commit, not yet handed to a worker: a stop gives these back at once.
        queued: deque[list[tuple[_Claimed, Outbound]]] = deque()
        with self.transport, ThreadPoolExecutor(concurrency, thread_name_prefix="digest-send") as pool:
            try:
                while True:
                    done = [f for f in in_flight if f.done()]
                    if done:
                        # Committed with the next claim (or before the next wait): one fsync
                        # for both instead of two.
                        self._record_done(done, in_flight, commit=False)
                        continue
                    self._heartbeat()
                    if self._should_stop():
                        # Batches no worker has started are given back; the rest finish.
                        for future in [f for f in in_flight if f.cancel()]:
                            queued.append(in_flight.pop(future))
                        self._unclaim(queued)
                        self._flush()
                        if not in_flight:
                            break
                        wait(list(in_flight), timeout=self.heartbeat_every, return_when=FIRST_COMPLETED)
                        continue
                    # Two batches per worker: one being sent, one ready to go the moment it's free.
                    if queued and len(in_flight) < concurrency * 2:
                        chunk = queued.popleft()
                        in_flight[pool.submit(self._hand_over, [o for _c, o in chunk])] = chunk
                        continue
                    wait_s = self._rate_wait()
                    if not queued and len(in_flight) < concurrency * 2 and wait_s == 0.0:
                        if self._pause_requested():
                            continue  # _should_stop stops the loop now
                        batch = self._claim_batch(self._allowance())
                        if batch:
                            for i in range(0, len(batch), self.max_batch):
                                queued.append(batch[i : i + self.max_batch])
                            continue
                    self._flush()
                    if in_flight:
                        wait(list(in_flight), timeout=self.heartbeat_every, return_when=FIRST_COMPLETED)
                        continue
                    if wait_s > 0:
                        self.clock.sleep(min(wait_s, self.heartbeat_every))
                        continue
                    next_due = self._next_due()
                    if next_due is None:
                        break  # nothing left to try in this invocation
                    delay = (next_due - self.clock.now()).total_seconds()
                    if delay > 0:
                        self.clock.sleep(min(delay, self.heartbeat_every))
            finally:
                # Whatever stops the loop, what was handed over gets recorded; a batch whose
                # thread died leaves its rows `sending`, which the next invocation settles by
                # the journal.
                wait(list(in_flight))
                for future in list(in_flight):
                    if future.exception() is None:
                        self._record_done([future], in_flight, commit=False)
                self._flush()
        self._note_limits()

    def _hand_over(self, batch: list[Outbound]) -> list[Outcome]:
        """On a worker thread: the transport's answer, one outcome per message, never raising."""
        if self.c.stop.is_set():
            # Stopped while this batch waited for a free connection: it goes back untouched
            # (the loop may not have been able to cancel it in time).
            return [Outcome(o.key, Result.DEFERRED, NOT_STARTED) for o in batch]
        if self.journal is not None and not self.transport.marks_each_handover:
            self.journal.mark_many(self.row_of[o.key] for o in batch)
        marks = self.ledger_marks
        try:
            if marks is not None:
                marks.begin()
                if not self.transport.marks_each_handover:
                    marks.mark_many([self.row_of[o.key] for o in batch])
            try:
                outcomes = self.transport.send_batch(batch)
            finally:
                if marks is not None:
                    marks.end()
                if self.journal is not None:
                    self.journal.flush()  # this batch's last answer
        except Exception as err:  # noqa: BLE001  every message gets its outcome, bugs included
            log.warning("batch of %d failed as a whole: %r", len(batch), err)
            return batch_error_outcomes(batch, err)
        return complete(batch, outcomes, transport=self.transport.name)

    # -- claiming ----------------------------------------------------------------------------

    def _allowance(self) -> int:
        n = self.c.batch_size
        now = self.clock.monotonic()
        for bucket in (self.second_bucket, self.hour_bucket):
            if bucket is not None:
                n = min(n, max(bucket.available(now), 0))
        return n

    def _rate_wait(self) -> float:
        """Seconds until the rate limits let one more message go (0: now)."""
        now = self.clock.monotonic()
        waits = [max(self.hold_until - now, 0.0)]
        for name, bucket in (("per second", self.second_bucket), ("per hour", self.hour_bucket)):
            if bucket is not None:
                w = bucket.wait_for_one(now)
                if w > 0 and name == "per hour":
                    if not self.limit_notes["hour_waits"]:
                        self._say(f"hourly limit reached; waiting {w:.0f} s")
                    self.limit_notes["hour_waits"] += 1
                waits.append(w)
        return max(waits)

    def _claim_batch(self, limit: int) -> list[tuple[_Claimed, Outbound]]:
        """Up to `limit` due rows: the unwanted skipped, the rest claimed in one committed UPDATE."""
        if limit <= 0:
            return []
        session = self.session
        now = self.clock.now()
        query = (
            select(
                Delivery.id,
                Delivery.subscriber_id,
                Delivery.email,
                Delivery.name,
                Delivery.regions,
                Delivery.attempts,
            )
            .where(
                Delivery.run_id == self.run_id,
                Delivery.status == DeliveryStatus.PENDING,
                Delivery.due_at.is_not(None),
                Delivery.due_at <= now,
                *self._claim_scope(),
            )
            # In id order along the (run, status, id) index: the first `limit` due rows are
            # found at once. Ordering by due_at instead sorted every pending row per batch (they
            # all share the freeze time): quadratic over a 100,000-row run.
            .order_by(Delivery.id)
            .limit(limit)
        )
        if session.get_bind().dialect.name == "postgresql":
            # Rows another process is claiming right now are passed over, not waited for, and
            # stay locked until our UPDATE below commits: two claimers never take one row.
            query = query.with_for_update(skip_locked=True)
        rows = session.execute(query).all()
        if not rows:
            return []
        unwanted = self.c.unwanted(session, [r.subscriber_id for r in rows])
        skips: list[tuple[int, str]] = []
        ready: list[tuple[Any, Outbound]] = []
        for r in rows:
            if r.subscriber_id in unwanted:
                skips.append((r.id, "no longer subscribed"))
                continue
            prepared = self.c.prepare(
                _recipient(r.subscriber_id, r.email, r.name, r.regions), f"{self.run_id}-{r.id}"
            )
            if prepared.message is None:
                skips.append((r.id, prepared.skip_reason))
            else:
                ready.append((r, prepared.message))
        if skips:
            t = _deliveries()
            session.execute(
                update(t)
                .where(t.c.id == bindparam("row_id"), t.c.status == DeliveryStatus.PENDING)
                .values(status=DeliveryStatus.SKIPPED, detail=bindparam("why"), updated_at=now),
                [{"row_id": i, "why": why} for i, why in skips],
            )
            self.report.counts[DeliveryStatus.SKIPPED.value] += len(skips)
        claimed_ids: set[int] = set()
        if ready:
            # Committed before the hand-over: if the process dies now, the next run knows these
            # messages may have gone out and does not send them blindly again.
            claimed_ids = set(
                session.scalars(
                    update(Delivery)
                    .where(
                        Delivery.id.in_([r.id for r, _o in ready]),
                        Delivery.status == DeliveryStatus.PENDING,
                    )
                    .values(
                        status=DeliveryStatus.SENDING,
                        attempts=Delivery.attempts + 1,
                        updated_at=now,
                        claim_owner=self.owner,
                        claimed_at=now,
                        # A row deferred earlier was handed over then, not now.
                        handed_over_at=None,
                        handover_answer=None,
                        **self._claim_values(),
                    )
                    .returning(Delivery.id)
                    .execution_options(synchronize_session=False)
                )
            )
        session.commit()  # the claim, and the outcomes recorded since the last commit
        self.dirty = False
        if skips and self.c.progress is not None:
            self.c.progress.advanced(self.report.counts, self._rate())
        taken = [
            (_Claimed(r.id, r.email, r.attempts + 1, o.message_id), o)
            for r, o in ready
            if r.id in claimed_ids
        ]
        for claimed, outbound in taken:
            self.row_of[outbound.key] = claimed.row_id
        now_mono = self.clock.monotonic()
        for bucket in (self.second_bucket, self.hour_bucket):
            if bucket is not None:
                bucket.take(len(taken), now_mono)
        return taken

    def _claim_scope(self) -> list[Any]:
        """Extra conditions on the rows this loop may claim (a Celery task: its id range)."""
        return []

    def _claim_values(self) -> dict[str, Any]:
        """Extra columns a claim sets (a Celery worker: clears the hand-over mark)."""
        return {}

    def _record_scope(self) -> list[Any]:
        """Extra conditions on the rows an outcome is written to (a Celery worker: still its own)."""
        return []

    def _next_due(self) -> datetime | None:
        return _next_due(self.session, self.run_id)

    def _unclaim(self, queued: deque[list[tuple[_Claimed, Outbound]]]) -> None:
        """Claimed rows that never reached a worker go back to pending, due now."""
        ids = [claimed.row_id for chunk in queued for claimed, _o in chunk]
        queued.clear()
        if not ids:
            return
        now = self.clock.now()
        self.session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids), Delivery.status == DeliveryStatus.SENDING)
            .values(status=DeliveryStatus.PENDING, attempts=Delivery.attempts - 1, due_at=now)
            .execution_options(synchronize_session=False)
        )
        self.session.commit()

    # -- recording ---------------------------------------------------------------------------

    def _record_done(
        self,
        done: list[Future[list[Outcome]]],
        in_flight: dict[Future[list[Outcome]], list[tuple[_Claimed, Outbound]]],
        *,
        commit: bool = True,
    ) -> None:
        """Write the outcomes of the finished batches (committed now, or by `_flush`)."""
        now = self.clock.now()
        updates: list[dict[str, Any]] = []
        for future in done:
            chunk = in_flight.pop(future)
            outcomes = future.result()  # _hand_over never raises
            by_key = {o.key: o for o in outcomes}
            for claimed, outbound in chunk:
                self.row_of.pop(outbound.key, None)
                outcome = by_key.get(outbound.key) or Outcome(outbound.key, Result.UNKNOWN, "no outcome")
                updates.append(self._row_update(claimed, outcome, now))
        if updates:
            t = _deliveries()
            scope = self._record_scope()
            if scope:
                self.session.execute(
                    update(t)
                    .where(t.c.id == bindparam("row_id"), *scope)
                    .values(
                        status=bindparam("new_status"),
                        detail=bindparam("new_detail"),
                        due_at=bindparam("new_due"),
                        message_id=bindparam("new_message_id"),
                        provider_id=bindparam("new_provider_id"),
                        updated_at=now,
                    ),
                    updates,
                )
            else:
                # Through the driver: SQLAlchemy's per-row parameter handling cost the loop, which
                # shares one GIL with the sending threads, about 15 microseconds a message.
                rows = [{c: u[k] for c, k in _OUTCOME_COLUMNS} | {"updated_at": now} for u in updates]
                update_rows(self.session, t, rows)
            self.dirty = True
            if commit:
                self._flush()
        if self.c.progress is not None:
            self.c.progress.advanced(self.report.counts, self._rate())

    def _flush(self) -> None:
        """Commit outcomes recorded but not yet committed."""
        if self.dirty:
            self.session.commit()
            self.dirty = False

    def _row_update(self, claimed: _Claimed, outcome: Outcome, now: datetime) -> dict[str, Any]:
        if outcome.result is Result.DEFERRED and outcome.detail == NOT_STARTED:
            return {
                "row_id": claimed.row_id,
                "new_status": DeliveryStatus.PENDING,
                "new_detail": "",
                "new_due": now,
                "new_message_id": claimed.message_id[:300],
                "new_provider_id": "",
            }
        status = {
            Result.SENT: DeliveryStatus.SENT,
            Result.FAILED: DeliveryStatus.FAILED,
            Result.UNKNOWN: DeliveryStatus.UNKNOWN,
            Result.DEFERRED: DeliveryStatus.PENDING,
        }[outcome.result]
        due: datetime | None = None
        detail = outcome.detail
        if status is DeliveryStatus.PENDING:
            if outcome.rate_limited:
                # The provider's limit, not the message: everyone waits, and no attempt is used up.
                self.report.rate_limited += 1
                wait_s = outcome.retry_after or self.c.retry.delay(1)
                self.hold_until = max(self.hold_until, self.clock.monotonic() + wait_s)
                due = now + timedelta(seconds=wait_s)
                if self.report.rate_limited == 1:
                    self._say(f"{self.transport.name} rate limit hit; waiting {wait_s:.1f} s")
            else:
                tries = self.tries.get(claimed.row_id, 0) + 1
                self.tries[claimed.row_id] = tries
                if tries < self.c.retry.attempts:
                    due = now + timedelta(seconds=self.c.retry.delay(tries, outcome.retry_after))
                else:
                    self.failures += 1  # parked for the next invocation (due_at NULL)
                    self._error(f"{claimed.email}: {detail} (still failing after {tries} tries)")
                log.info("temporary failure for %s (try %d): %s", claimed.email, tries, detail)
            self.report.counts["deferred"] += 1
        else:
            self.report.counts[status.value] += 1
            if status in (DeliveryStatus.FAILED, DeliveryStatus.UNKNOWN):
                self.failures += 1
                self._error(f"{claimed.email}: {detail}")
        return {
            "row_id": claimed.row_id,
            "new_status": status,
            "new_detail": detail[:2000],
            "new_due": due,
            "new_message_id": claimed.message_id[:300],
            "new_provider_id": outcome.provider_id[:300],
        }

    # -- housekeeping ------------------------------------------------------------------------

    def _pause_requested(self) -> bool:
        """Staff asked to pause this run (`digest runs pause`, the console's Pause): read once
        before each batch is claimed, so the run stops at a batch boundary."""
        if self.paused_by is None:
            self.paused_by = self.session.scalar(
                select(SendRun.pause_requested).where(SendRun.id == self.run_id)
            )
        return bool(self.paused_by)

    def _should_stop(self) -> bool:
        if self.paused_by:
            self.report.reason = f"paused by {self.paused_by}"
            return True
        if self.c.stop.is_set():
            if not self.report.stopped:
                self.report.stopped = True
                self.report.reason = "stopped by staff (interrupt or SIGTERM)"
            return True
        if self.failures > self.c.retry.max_errors:
            if not self.report.reason:
                self.report.reason = (
                    f"error threshold: {self.failures} deliveries failed or unknown "
                    f"(more than [transport] max_errors = {self.c.retry.max_errors})"
                )
            return True
        return False

    def _heartbeat(self) -> None:
        if self.clock.monotonic() - self.beat > self.heartbeat_every:
            _heartbeat(self.session, self.run_id, self.owner, self.clock.now())
            self.beat = self.clock.monotonic()

    def _rate(self) -> float:
        elapsed = self.clock.monotonic() - self.started
        return self.report.counts[DeliveryStatus.SENT.value] / elapsed if elapsed > 0 else 0.0

    def _error(self, text: str) -> None:
        if len(self.report.errors) < MAX_ERRORS_KEPT:
            self.report.errors.append(text)

    def _say(self, text: str) -> None:
        log.warning("run %s: %s", self.run_id, text)
        if self.c.progress is not None:
            self.c.progress.note(text)

    def _note_limits(self) -> None:
        if not (self.report.rate_limited or self.limit_notes):
            return
        run = self.session.get(SendRun, self.run_id)
        if run is None:
            return
        notes = run.notes_dict()
        limits = notes.setdefault("rate_limits", {})
        limits["provider_refusals"] = limits.get("provider_refusals", 0) + self.report.rate_limited
        limits["hourly_waits"] = limits.get("hourly_waits", 0) + self.limit_notes["hour_waits"]
        run.notes = json.dumps(notes)
        self.session.commit()


# The ledger's columns an outcome sets, and the keys `SendLoop._row_update` gives them under.
_OUTCOME_COLUMNS = (
    ("id", "row_id"),
    ("status", "new_status"),
    ("detail", "new_detail"),
    ("due_at", "new_due"),
    ("message_id", "new_message_id"),
    ("provider_id", "new_provider_id"),
)


def _deliveries() -> Any:
    """The ledger's Core table: executemany UPDATEs by id, without the ORM's bulk machinery."""
    return Delivery.__table__


def _heartbeat(session: Session, run_id: str, owner: str, now: datetime) -> None:
    session.execute(
        update(SendRun)
        .where(SendRun.id == run_id, SendRun.owner == owner)
        .values(heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def uses_ledger_marks(session: Session) -> bool:
    """Hand-overs are kept in the ledger on PostgreSQL (any machine reads them), in a local
    journal on SQLite (one machine: the file is there)."""
    return session.get_bind().dialect.name == "postgresql"


DIED = (
    "handed over by a process or worker that died before recording the answer: it may have been "
    "delivered. Send it again only if you choose: digest resume RUN --include unknown --only ADDR"
)


def ledger_status(handed_over: bool, answer: str | None) -> DeliveryStatus:
    """Where a dead owner's `sending` row goes, by what the ledger says of its hand-over."""
    if answer in _ANSWER_STATUS:
        return _ANSWER_STATUS[answer]
    return DeliveryStatus.UNKNOWN if handed_over else DeliveryStatus.PENDING


def settle_interrupted(
    session: Session, run_id: str, journal_dir: Path | None, now: datetime | None = None
) -> list[str]:
    """Settle the rows a process that died left `sending`, by the ledger's hand-over marks
    (PostgreSQL, Celery workers) or its hand-over journal (SQLite).

    Handed over with an answer: that answer (sent, failed; deferred goes back to pending).
    Handed over with no answer: `unknown`, never re-sent blindly. Never handed over: pending
    again. With neither marks nor a trusted journal, every such row is unknown. Returns the
    addresses that became unknown.
    """
    rows = session.execute(
        select(
            Delivery.id,
            Delivery.email,
            Delivery.claim_owner,
            Delivery.handed_over_at,
            Delivery.handover_answer,
        ).where(Delivery.run_id == run_id, Delivery.status == DeliveryStatus.SENDING)
    ).all()
    in_ledger = uses_ledger_marks(session)
    seen, files = (None, []) if in_ledger else HandoverJournal.read(journal_dir, run_id)
    now = now or _utcnow()  # the caller's clock: the rows fall due by it
    settled: dict[DeliveryStatus, list[int]] = {}
    answered: dict[DeliveryStatus, list[int]] = {}
    unknown: list[str] = []
    for row in rows:
        if in_ledger or (row.claim_owner or "").startswith(WORKER_OWNER_PREFIX):
            status = ledger_status(row.handed_over_at is not None, row.handover_answer)
            if row.handover_answer in ("s", "f"):
                answered.setdefault(status, []).append(row.id)
                continue
        elif seen is None or (row.id in seen and seen[row.id] in (None, Result.UNKNOWN)):
            status = DeliveryStatus.UNKNOWN
        elif row.id not in seen or seen[row.id] is Result.DEFERRED:
            status = DeliveryStatus.PENDING  # the server has not got it: it can go now
        else:
            status = DeliveryStatus.SENT if seen[row.id] is Result.SENT else DeliveryStatus.FAILED
        if status is DeliveryStatus.UNKNOWN:
            unknown.append(row.email)
        settled.setdefault(status, []).append(row.id)
    details = {
        DeliveryStatus.UNKNOWN: DIED if in_ledger else INTERRUPTED,
        DeliveryStatus.PENDING: "",
        DeliveryStatus.SENT: "accepted (recorded from the hand-over journal after a crash)",
        DeliveryStatus.FAILED: "refused (recorded from the hand-over journal after a crash)",
    }
    for status, ids in settled.items():
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(status=status, detail=details[status], due_at=now, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    for status, ids in answered.items():
        word = "accepted" if status is DeliveryStatus.SENT else "refused"
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(ids))
            .values(
                status=status, detail=f"{word} (recorded from the ledger's hand-over marks)", updated_at=now
            )
            .execution_options(synchronize_session=False)
        )
    session.commit()
    for path in files:
        path.unlink(missing_ok=True)  # settled in the database: the journals have served
    return unknown


def _has_sending(session: Session, run_id: str) -> bool:
    return (
        session.scalar(
            select(Delivery.id)
            .where(Delivery.run_id == run_id, Delivery.status == DeliveryStatus.SENDING)
            .limit(1)
        )
        is not None
    )


def unpark_run(session: Session, run_id: str, now: datetime) -> None:
    """Rows an earlier invocation gave up on for the time being are due again now."""
    session.execute(
        update(Delivery)
        .where(
            Delivery.run_id == run_id,
            Delivery.status == DeliveryStatus.PENDING,
            Delivery.due_at.is_(None),
        )
        .values(due_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def _next_due(session: Session, run_id: str) -> datetime | None:
    return session.scalar(
        select(func.min(Delivery.due_at)).where(
            Delivery.run_id == run_id,
            Delivery.status == DeliveryStatus.PENDING,
            Delivery.due_at.is_not(None),
        )
    )
