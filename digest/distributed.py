"""One send run over several machines: Celery carries batches of ledger rows, PostgreSQL keeps
everything the workers share.

The coordinator (`digest send` with `[send] workers = "celery"`) freezes the run as the
in-process send does, renders every variant once and stores it (`run_variants`), writes the
run's shared state (`run_dispatch`: the rate-limit buckets, a provider's hold, the error count)
and enqueues one task per `[celery] task_rows` pending rows (an id range). A worker
(`digest worker`) runs each task through the same engine as the in-process send
(`digest.send.SendLoop`), restricted to the task's id range, with three differences:

* claims lock rows with `SELECT ... FOR UPDATE SKIP LOCKED`, so two workers never take one row,
  and record the worker as the row's `claim_owner`;
* the rate limits, a provider's "wait" and the error threshold live in `run_dispatch`, taken
  under a row lock, so they hold for the whole run whatever the number of workers;
* before each claim the worker reads the run's status: a run paused or abandoned by staff
  stops every worker at a row boundary.

Tasks are acknowledged late (after they return) and rejected when their worker dies, so a
killed worker's task is delivered again, and its unclaimed rows are sent by whoever gets it.

The decision rule for a dead worker's rows (`settle_dead_claims`): a worker beats in
`run_workers.last_seen` every `[celery] worker_lease_seconds / 4` from a thread of its own. A
row left `sending` whose claim owner has not been seen for `worker_lease_seconds` (or whose
process is gone, when it ran on this machine) belonged to a dead worker. Just before each
message's irreversible step its worker commits `handed_over_at` on the row, with the answer the
previous message on that connection got (`handover_answer`; digest.send.LedgerMarks). A dead
worker's row without the mark never left: it goes back to pending and is sent by whoever
settles it. A row with an answer keeps it. A row marked without an answer may have reached the
server, so it becomes `unknown`: never sent again blindly (staff decide, `digest resume
--include unknown`); that is at most one row per transport connection. These rows are not the
relay's doing and do not count toward `[transport] max_errors`.
"""

from __future__ import annotations

import json
import logging
import math
import socket
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Engine,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    delete,
    func,
    select,
    text,
    update,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from digest.db import Base, UTCDateTime, session_factory
from digest.errors import ConfigError, RunBusyError
from digest.models import DeliveryStatus, Recipient, RenderedVariant
from digest.send import (
    DIED,
    HEARTBEAT_SECONDS,
    INTERRUPTED,
    LEASE_SECONDS,
    WORKER_OWNER_PREFIX,
    Clock,
    Courier,
    Delivery,
    Prepared,
    ProgressSink,
    RateLimits,
    RetryPolicy,
    RunReport,
    RunStatus,
    SendLoop,
    SendRun,
    SystemClock,
    acquire,
    closing_status,
    ledger_status,
    owner_id,
    owner_is_dead,
    run_totals,
    sent_since,
    settle_interrupted,
    skip_pending,
    unpark_run,
)
from digest.transports.base import Outbound, Outcome, Result, Transport

log = logging.getLogger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class RunVariantRow(Base):
    """One rendered variant of a run: rendered once by the coordinator, read by every worker."""

    __tablename__ = "run_variants"

    run_id: Mapped[str] = mapped_column(ForeignKey("send_runs.id", ondelete="CASCADE"), primary_key=True)
    variant_key: Mapped[str] = mapped_column(String(1000), primary_key=True)  # JSON list of regions
    subject: Mapped[str] = mapped_column(Text)
    preheader: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)


class RunDispatch(Base):
    """What every worker of a distributed run shares: limits, a provider's hold, the error count.

    Times are the database's clock (epoch seconds), so workers whose clocks differ agree.
    """

    __tablename__ = "run_dispatch"

    run_id: Mapped[str] = mapped_column(ForeignKey("send_runs.id", ondelete="CASCADE"), primary_key=True)
    dispatched_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)  # the messages' Date: header
    # JSON: ledger `regions` value -> variant key (JSON list), or null: nothing for them this week.
    variant_of: Mapped[str] = mapped_column(Text)
    tasks: Mapped[int] = mapped_column(Integer)
    per_second: Mapped[float] = mapped_column(Float)  # 0: no limit
    per_hour: Mapped[int] = mapped_column(Integer)  # 0: no limit
    second_tokens: Mapped[float] = mapped_column(Float)
    hour_tokens: Mapped[float] = mapped_column(Float)
    stamp: Mapped[float] = mapped_column(Float)  # when the buckets were last refilled
    hold_until: Mapped[float] = mapped_column(Float)  # a provider's rate limit asked everyone to wait
    failures: Mapped[int] = mapped_column(Integer)  # failed or unknown in this dispatch, all workers
    max_errors: Mapped[int] = mapped_column(Integer)


class RunWorker(Base):
    """One worker's part in a run: what it sent, and when it was first and last heard from."""

    __tablename__ = "run_workers"

    run_id: Mapped[str] = mapped_column(ForeignKey("send_runs.id", ondelete="CASCADE"), primary_key=True)
    worker: Mapped[str] = mapped_column(String(100), primary_key=True)
    host: Mapped[str] = mapped_column(String(200))
    sent: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    unknown: Mapped[int] = mapped_column(Integer, default=0)
    skipped: Mapped[int] = mapped_column(Integer, default=0)
    deferred: Mapped[int] = mapped_column(Integer, default=0)
    rate_limited: Mapped[int] = mapped_column(Integer, default=0)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)


# --- checks ----------------------------------------------------------------------------------


def require_postgres(config: Any, engine: Engine | None = None) -> None:
    """Celery mode needs a database every machine reaches and that locks rows: PostgreSQL."""
    from sqlalchemy import make_url

    backend = engine.dialect.name if engine is not None else make_url(config.database.url).get_backend_name()
    if backend != "postgresql":
        raise ConfigError(
            config.path,
            "[database] url",
            f'must be a PostgreSQL URL with [send] workers = "celery" (workers on other machines '
            f"share the ledger and lock its rows); it is {backend}",
        )


def worker_id() -> str:
    return WORKER_OWNER_PREFIX + owner_id()


def _db_epoch(session: Session) -> float:
    return float(session.scalar(text("SELECT extract(epoch FROM clock_timestamp())")))


# --- the coordinator's side --------------------------------------------------------------------


def store_variants(
    session: Session,
    run_id: str,
    *,
    key_for: Callable[[frozenset[str] | None], tuple[str, ...]],
    render: Callable[[tuple[str, ...]], RenderedVariant],
    has_sections: bool,
) -> dict[str, str | None]:
    """Render each variant the run's ledger needs, once, and keep it where workers read it.

    Returns ledger `regions` value -> variant key (JSON), or None (no articles for them).
    """
    distinct = session.scalars(select(Delivery.regions).where(Delivery.run_id == run_id).distinct())
    variant_of: dict[str, str | None] = {}
    keys: dict[str, tuple[str, ...]] = {}
    for regions in distinct:
        chosen = frozenset(regions.split("\n")) if regions else None
        key = key_for(chosen)
        if not key and has_sections:
            variant_of[regions] = None
            continue
        encoded = json.dumps(list(key))
        variant_of[regions] = encoded
        keys[encoded] = key
    session.execute(delete(RunVariantRow).where(RunVariantRow.run_id == run_id))
    for encoded, key in keys.items():
        rendered = render(key)
        session.add(
            RunVariantRow(
                run_id=run_id,
                variant_key=encoded,
                subject=rendered.subject,
                preheader=rendered.preheader,
                html=rendered.html,
                text=rendered.text,
            )
        )
    return variant_of


def write_dispatch(
    session: Session,
    run_id: str,
    *,
    sent_at: datetime,
    variant_of: dict[str, str | None],
    limits: RateLimits,
    transport_per_second: float | None,
    max_errors: int,
) -> None:
    per_second = limits.per_second or 0.0
    if transport_per_second:
        per_second = min(per_second or transport_per_second, transport_per_second)
    now = _db_epoch(session)
    hour_tokens = 0.0
    if limits.per_hour:
        hour_tokens = float(limits.per_hour - sent_since(session, sent_at - timedelta(hours=1)))
    session.execute(delete(RunDispatch).where(RunDispatch.run_id == run_id))
    session.add(
        RunDispatch(
            run_id=run_id,
            dispatched_at=_utcnow(),
            sent_at=sent_at,
            variant_of=json.dumps(variant_of),
            tasks=0,
            per_second=per_second,
            per_hour=limits.per_hour,
            second_tokens=max(per_second, 1.0),
            hour_tokens=hour_tokens,
            stamp=now,
            hold_until=0.0,
            failures=0,
            max_errors=max_errors,
        )
    )


def task_ranges(session: Session, run_id: str, rows_per_task: int) -> list[tuple[int, int]]:
    """The pending due rows, as (first id, last id) ranges of about `rows_per_task` rows each."""
    ids = list(
        session.scalars(
            select(Delivery.id)
            .where(
                Delivery.run_id == run_id,
                Delivery.status == DeliveryStatus.PENDING,
                Delivery.due_at.is_not(None),
            )
            .order_by(Delivery.id)
        )
    )
    return ranges_of(ids, rows_per_task)


@dataclass(frozen=True)
class Settled:
    """What settle_dead_claims did with the rows of dead workers."""

    unknown: int = 0  # handed over with no recorded answer
    returned: tuple[int, ...] = ()  # ids of rows never handed over, pending again


def settle_dead_claims(
    session: Session,
    run_id: str,
    lease_seconds: float,
    *,
    first: int | None = None,
    last: int | None = None,
    now: datetime | None = None,
) -> Settled:
    """Settle the rows dead workers left `sending` (see the module's rule): those marked as
    handed over become unknown, the others go back to pending, due now. Whoever calls this
    sees that the returned rows get sent (a worker in its own task, the coordinator by a task).
    `now` is the caller's clock, against which the lease is judged (tests inject it)."""
    scope = [Delivery.run_id == run_id, Delivery.status == DeliveryStatus.SENDING]
    if first is not None and last is not None:
        scope += [Delivery.id >= first, Delivery.id <= last]
    owners = set(session.scalars(select(Delivery.claim_owner).where(*scope).distinct()))
    if not owners:
        session.commit()
        return Settled()
    seen = dict(
        session.execute(
            select(RunWorker.worker, RunWorker.last_seen).where(
                RunWorker.run_id == run_id, RunWorker.worker.in_([o for o in owners if o])
            )
        ).all()
    )
    cutoff = (now or _utcnow()) - timedelta(seconds=lease_seconds)
    dead = []
    for owner in owners:
        if owner is None or not owner.startswith(WORKER_OWNER_PREFIX):
            continue  # an in-process run's claim: its own resume settles it by its journal
        name = owner.removeprefix(WORKER_OWNER_PREFIX)
        last_seen = seen.get(owner)
        if owner_is_dead(name) or last_seen is None or last_seen < cutoff:
            dead.append(owner)
    if not dead:
        session.commit()
        return Settled()
    stamp = now or _utcnow()  # one clock: the rows fall due by the clock that claims them
    theirs = [*scope, Delivery.claim_owner.in_(dead)]
    by_status: dict[DeliveryStatus, list[int]] = {}
    for row_id, handed_over, answer in session.execute(
        select(Delivery.id, Delivery.handed_over_at.is_not(None), Delivery.handover_answer).where(*theirs)
    ):
        by_status.setdefault(ledger_status(handed_over, answer), []).append(row_id)
    # Rows the dead worker got an answer for keep it; a deferred one is pending like the rest.
    for status, word in ((DeliveryStatus.SENT, "accepted"), (DeliveryStatus.FAILED, "refused")):
        if by_status.get(status):
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(by_status[status]))
                .values(
                    status=status, detail=f"{word} (recorded by its worker, which died)", updated_at=stamp
                )
                .execution_options(synchronize_session=False)
            )
    unknown_ids = by_status.get(DeliveryStatus.UNKNOWN, [])
    count = len(unknown_ids)
    if unknown_ids:
        # Not the relay's doing: these do not count toward [transport] max_errors.
        session.execute(
            update(Delivery)
            .where(Delivery.id.in_(unknown_ids))
            .values(status=DeliveryStatus.UNKNOWN, detail=DIED, updated_at=stamp)
            .execution_options(synchronize_session=False)
        )
    returned: tuple[int, ...] = ()
    if by_status.get(DeliveryStatus.PENDING):
        returned = tuple(
            session.scalars(
                update(Delivery)
                .where(Delivery.id.in_(by_status[DeliveryStatus.PENDING]))
                .values(
                    status=DeliveryStatus.PENDING,
                    attempts=Delivery.attempts - 1,
                    due_at=stamp,
                    claim_owner=None,
                    updated_at=stamp,
                )
                .returning(Delivery.id)
                .execution_options(synchronize_session=False)
            )
        )
    session.commit()
    if count or returned:
        log.warning(
            "run %s: dead workers %s: %d rows handed over are now unknown, %d not handed over pending again",
            run_id,
            ", ".join(dead),
            count,
            len(returned),
        )
    return Settled(count, returned)


def ranges_of(ids: Sequence[int], rows_per_task: int) -> list[tuple[int, int]]:
    """Sorted ids as (first, last) ranges of up to `rows_per_task` ids each."""
    ordered = sorted(ids)
    return [
        (ordered[i], ordered[min(i + rows_per_task, len(ordered)) - 1])
        for i in range(0, len(ordered), rows_per_task)
    ]


def close_if_done(session: Session, run_id: str) -> str | None:
    """Finish the run when no row is left to send, pause it when only parked rows are left.

    Whoever notices first (a worker after its task, or the coordinator) closes it, once: the
    UPDATE only matches a run still running. Returns the new status, or None.
    """
    left = session.execute(
        select(Delivery.status, Delivery.due_at.is_(None), func.count())
        .where(
            Delivery.run_id == run_id,
            Delivery.status.in_([DeliveryStatus.PENDING, DeliveryStatus.SENDING]),
        )
        .group_by(Delivery.status, Delivery.due_at.is_(None))
    ).all()
    live = sum(n for status, parked, n in left if status == DeliveryStatus.SENDING or not parked)
    if live:
        session.rollback()
        return None
    parked = sum(n for _s, _p, n in left)
    if parked:
        return pause_run(session, run_id, f"{parked} deliveries still pending", only_running=True)
    return _close(session, run_id, RunStatus.FINISHED, "")


def pause_run(session: Session, run_id: str, reason: str, *, only_running: bool = False) -> str | None:
    """Stop every worker at its next row boundary; the run stays resumable."""
    return _close(session, run_id, RunStatus.PAUSED, reason, only_running=only_running)


def _close(
    session: Session, run_id: str, status: str, reason: str, *, only_running: bool = True
) -> str | None:
    dispatched = session.scalar(select(RunDispatch.dispatched_at).where(RunDispatch.run_id == run_id))
    seconds = (_utcnow() - dispatched).total_seconds() if dispatched else 0.0
    values: dict[str, Any] = {
        "status": status,
        "paused_reason": reason,
        "owner": None,
        "active_seconds": SendRun.active_seconds + seconds,
    }
    if status == RunStatus.FINISHED:
        closed_as, why = closing_status(session, run_id)  # most failed: the run failed
        values.update(status=closed_as, paused_reason=reason or why, open_slot=None, finished_at=_utcnow())
    where = [SendRun.id == run_id, SendRun.open_slot.is_not(None)]
    if only_running:
        where.append(SendRun.status == RunStatus.RUNNING)
    changed = session.execute(
        update(SendRun).where(*where).values(**values).execution_options(synchronize_session=False)
    ).rowcount
    if changed and dispatched:
        # Seconds are counted once per dispatch: a later close adds nothing more.
        session.execute(
            update(RunDispatch)
            .where(RunDispatch.run_id == run_id)
            .values(dispatched_at=_utcnow())
            .execution_options(synchronize_session=False)
        )
    session.commit()
    return values["status"] if changed else None


def worker_records(session: Session, run_id: str) -> list[dict[str, Any]]:
    """Per-worker progress of a run, for `digest runs show` and the staff console."""
    rows = session.scalars(select(RunWorker).where(RunWorker.run_id == run_id).order_by(RunWorker.first_seen))
    out = []
    for w in rows:
        seconds = (w.last_seen - w.first_seen).total_seconds()
        out.append(
            {
                "worker": w.worker.removeprefix(WORKER_OWNER_PREFIX),
                "host": w.host,
                "sent": w.sent,
                "failed": w.failed,
                "unknown": w.unknown,
                "skipped": w.skipped,
                "deferred": w.deferred,
                "rate_limited": w.rate_limited,
                "first_seen": w.first_seen.isoformat(),
                "last_seen": w.last_seen.isoformat(),
                "rate_per_second": round(w.sent / seconds, 1) if seconds > 0 else 0.0,
            }
        )
    return out


@dataclass
class Dispatch:
    """The coordinator of one distributed invocation of a run."""

    sessions: sessionmaker
    run_id: str
    enqueue: Callable[[str, list[tuple[int, int]]], None]
    rows_per_task: int
    lease_seconds: float
    progress: ProgressSink | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    clock: Clock = field(default_factory=SystemClock)
    poll_seconds: float = 1.0
    run_lease_seconds: float = LEASE_SECONDS  # [send] lease_seconds: the coordinator's own lease

    def start(
        self,
        *,
        unpark: bool,
        journal_dir: Any,
        prepare_shared: Callable[[Session], None],
    ) -> tuple[RunReport, Counter[str]]:
        """Take the run, settle what an earlier invocation left, store the shared state, enqueue."""
        report = RunReport(run_id=self.run_id)
        coordinator = "celery:" + owner_id()
        with self.sessions() as session:
            acquire(session, self.run_id, coordinator, self.clock.now(), lease_seconds=self.run_lease_seconds)
            # Rows left `sending` by an earlier invocation whose owners are gone (the lease was
            # free): an in-process owner's by its journal, a worker's always unknown.
            for email in settle_interrupted(session, self.run_id, journal_dir, self.clock.now()):
                report.counts[DeliveryStatus.UNKNOWN.value] += 1
                report.errors.append(f"{email}: {INTERRUPTED}")
            if unpark:
                unpark_run(session, self.run_id, self.clock.now())
            prepare_shared(session)
            ranges = task_ranges(session, self.run_id, self.rows_per_task)
            session.execute(
                update(RunDispatch).where(RunDispatch.run_id == self.run_id).values(tasks=len(ranges))
            )
            session.commit()
            before = run_totals(session, self.run_id)
        if ranges:
            self.enqueue(self.run_id, ranges)
        else:
            with self.sessions() as session:
                close_if_done(session, self.run_id)
        return report, before

    def watch(self, report: RunReport, before: Counter[str]) -> RunReport:
        """Show progress until the run is finished, paused or abandoned; Ctrl-C pauses it."""
        started = self.clock.monotonic()
        last_beat = started
        with self.sessions() as session:
            if self.progress is not None:
                total = sum(before.values())
                self.progress.started(self.run_id, total, total - before["pending"] - before["sending"])
            while True:
                totals = run_totals(session, self.run_id)
                counts = _invocation_counts(before, totals, report.counts)
                elapsed = self.clock.monotonic() - started
                if self.progress is not None:
                    self.progress.advanced(counts, counts["sent"] / elapsed if elapsed > 0 else 0.0)
                run = session.get(SendRun, self.run_id)
                session.refresh(run)
                if run.status != RunStatus.RUNNING:
                    break
                if self.stop.is_set():
                    pause_run(session, self.run_id, "stopped by staff (interrupt or SIGTERM)")
                    report.stopped = True
                    continue
                if self.clock.monotonic() - last_beat > min(HEARTBEAT_SECONDS, self.run_lease_seconds / 4):
                    session.execute(
                        update(SendRun).where(SendRun.id == self.run_id).values(heartbeat_at=self.clock.now())
                    )
                    session.commit()
                    last_beat = self.clock.monotonic()
                returned = settle_dead_claims(
                    session, self.run_id, self.lease_seconds, now=self.clock.now()
                ).returned
                if returned:
                    # Their task may be over already: a new one sends them.
                    self.enqueue(self.run_id, ranges_of(returned, self.rows_per_task))
                if close_if_done(session, self.run_id) is not None:
                    continue
                session.rollback()
                self.clock.sleep(self.poll_seconds)
            report.counts = _invocation_counts(before, run_totals(session, self.run_id), report.counts)
            return self.finish(session, report, started)

    def finish(self, session: Session, report: RunReport, started: float) -> RunReport:
        run = session.get(SendRun, self.run_id)
        session.refresh(run)
        report.seconds = self.clock.monotonic() - started
        report.totals = run_totals(session, self.run_id)
        left = report.totals[DeliveryStatus.PENDING.value] + report.totals[DeliveryStatus.SENDING.value]
        report.paused = run.status == RunStatus.PAUSED or (run.status == RunStatus.RUNNING and left > 0)
        if run.status != RunStatus.FINISHED and not report.reason:
            report.reason = run.paused_reason or f"{left} deliveries still pending"
        problems = session.execute(
            select(Delivery.email, Delivery.detail)
            .where(
                Delivery.run_id == self.run_id,
                Delivery.status.in_([DeliveryStatus.FAILED, DeliveryStatus.UNKNOWN]),
            )
            .order_by(Delivery.id)
            .limit(200)
        ).all()
        report.errors = [f"{email}: {detail}" for email, detail in problems]
        report.rate_limited = int(
            session.scalar(
                select(func.coalesce(func.sum(RunWorker.rate_limited), 0)).where(
                    RunWorker.run_id == self.run_id
                )
            )
            or 0
        )
        return report


def _invocation_counts(before: Counter[str], now: Counter[str], settled: Counter[str]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for status in ("sent", "failed", "unknown", "skipped"):
        counts[status] = max(now[status] - before[status], 0) + settled[status]
    return counts


# --- the worker's side -------------------------------------------------------------------------


class _Beat(threading.Thread):
    """Says this worker is alive (run_workers.last_seen) while it holds a task, from its own thread."""

    def __init__(self, sessions: sessionmaker, run_id: str, worker: str, every: float, clock: Clock) -> None:
        super().__init__(name="digest-worker-beat", daemon=True)
        self.clock = clock
        self.sessions = sessions
        self.run_id = run_id
        self.worker = worker
        self.every = every
        self.done = threading.Event()

    def run(self) -> None:
        with self.sessions() as session:
            while not self.done.wait(self.every):
                try:
                    _touch(session, self.run_id, self.worker, self.clock.now())
                except Exception as err:  # noqa: BLE001  a missed beat is retried; the task goes on
                    session.rollback()
                    log.warning("worker heartbeat failed: %r", err)


def _touch(session: Session, run_id: str, worker: str, now: datetime, **add: int) -> None:
    """`now`: the worker's clock, which settle_dead_claims judges last_seen by."""
    values: dict[str, Any] = {"last_seen": now}
    for name, n in add.items():
        values[name] = getattr(RunWorker, name) + n
    session.execute(
        update(RunWorker)
        .where(RunWorker.run_id == run_id, RunWorker.worker == worker)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    # The run's lease stays alive while any worker works on it (resume waits for it to lapse).
    session.execute(
        update(SendRun)
        .where(SendRun.id == run_id, SendRun.status == RunStatus.RUNNING)
        .values(heartbeat_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def register_worker(session: Session, run_id: str, worker: str, now: datetime | None = None) -> None:
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    now = now or _utcnow()
    session.execute(
        pg_insert(RunWorker)
        .values(
            run_id=run_id,
            worker=worker,
            host=socket.gethostname(),
            sent=0,
            failed=0,
            unknown=0,
            skipped=0,
            deferred=0,
            rate_limited=0,
            first_seen=now,
            last_seen=now,
        )
        .on_conflict_do_update(index_elements=["run_id", "worker"], set_={"last_seen": now})
    )
    session.commit()


COUNTS_EVERY_SECONDS = 1.0  # how often a worker adds its counts to run_workers
DB_ATTEMPTS = 5  # a task the database dropped is tried again this many times in all
DB_RETRY_SECONDS = 2.0  # times the attempt: 2 s, 4 s, 6 s, 8 s
# A worker waiting on the run's limits reads run_dispatch again at least this often, so a pause
# or abandon is seen within a second, not when an hourly limit's next token comes (minutes).
SHARED_POLL_SECONDS = 1.0


class WorkerLoop(SendLoop):
    """The in-process engine, restricted to one task's id range, with the run's shared state."""

    def __init__(
        self,
        courier: Courier,
        session: Session,
        run_id: str,
        worker: str,
        report: RunReport,
        *,
        first: int,
        last: int,
        marks: sessionmaker,
        handover_rows: int,
    ) -> None:
        super().__init__(courier, session, run_id, worker, report, None)
        # Claimed in big statements, handed over in small batches: a dead worker's unknown rows
        # are its batches in the transport's hands (one per connection), the rest go back.
        self.max_batch = max(1, min(self.max_batch, handover_rows))
        self.first = first
        self.last = last
        self.marks = marks  # sessions for the hand-over marks, one per sending thread at a time
        limits = session.execute(
            select(RunDispatch.per_second, RunDispatch.per_hour).where(RunDispatch.run_id == run_id)
        ).one()
        session.commit()
        self.limited = bool(limits.per_second or limits.per_hour)  # fixed for the dispatch
        # The buckets live in run_dispatch (see take_tokens), not in this process.
        self.second_bucket = None
        self.hour_bucket = None
        self.recorded: Counter[str] = Counter()  # counts already in run_workers
        self.shared_failures = 0  # this loop's failures already added to run_dispatch
        self.shared_rate_limited = 0
        self.shared_hold = 0.0  # the hold_until (local monotonic) already pushed
        self.granted = 0
        self.wait_cache: tuple[float, float] = (self.clock.monotonic(), 0.0)  # (read at, wait)
        self.halt = ""  # why the run's shared state says to stop (status, error threshold)
        self.counted_at = self.clock.monotonic()

    def _claim_scope(self) -> list[Any]:
        return [Delivery.id >= self.first, Delivery.id <= self.last]

    def _record_scope(self) -> list[Any]:
        # Only rows still ours: had we been taken for dead, they were settled by another.
        return [Delivery.claim_owner == self.owner, Delivery.status == DeliveryStatus.SENDING]

    def _hand_over(self, batch: list[Outbound]) -> list[Outcome]:
        """Check the rows are still this worker's before the transport has them (had it been
        taken for dead, another settled them); each message's hand-over and answer then go into
        the ledger as it is sent (digest.send.LedgerMarks: the module's rule)."""
        ids = [self.row_of[o.key] for o in batch]
        try:
            with self.marks() as session:
                marked = set(
                    session.scalars(
                        select(Delivery.id).where(
                            Delivery.id.in_(ids),
                            Delivery.status == DeliveryStatus.SENDING,
                            Delivery.claim_owner == self.owner,
                        )
                    )
                )
                session.commit()
        except Exception as err:  # noqa: BLE001  nothing was handed over: every row can go later
            log.warning("could not check %d rows before the hand-over: %r", len(batch), err)
            return [Outcome(o.key, Result.DEFERRED, f"not handed over: {err}") for o in batch]
        ours = [o for o, row_id in zip(batch, ids, strict=True) if row_id in marked]
        outcomes = super()._hand_over(ours) if ours else []
        # Rows settled by another while this worker was taken for dead: not sent by us.
        outcomes += [
            Outcome(o.key, Result.DEFERRED, "given back before the hand-over")
            for o, row_id in zip(batch, ids, strict=True)
            if row_id not in marked
        ]
        return outcomes

    def _next_due(self) -> datetime | None:
        due = self.session.scalar(
            select(func.min(Delivery.due_at)).where(
                Delivery.run_id == self.run_id,
                Delivery.status == DeliveryStatus.PENDING,
                Delivery.due_at.is_not(None),
                *self._claim_scope(),
            )
        )
        # No transaction left open while the loop waits. Committed, not rolled back: the loop's
        # transaction may hold outcomes recorded but not yet committed (see SendLoop._flush).
        self.session.commit()
        return due

    def _heartbeat(self) -> None:
        pass  # the worker's _Beat thread does it, also while a hand-over takes long

    def _note_limits(self) -> None:
        pass  # per worker, in run_workers.rate_limited

    def _rate_wait(self) -> float:
        """What the last grant said to wait (the run's limits, or a provider's hold), counting down."""
        read_at, wait_s = self.wait_cache
        return max(wait_s - (self.clock.monotonic() - read_at), 0.0)

    def _allowance(self) -> int:
        if not self.limited:
            # No limit to take from: the claim's own locked read (below) checks the status, the
            # error count and a provider's hold; one statement and one commit fewer per claim.
            return self.c.batch_size
        # Just before each claim: the run's limits, its status and its error count, in one
        # locked read of run_dispatch shared by every worker.
        grant = take_tokens(self.session, self.run_id, self.c.batch_size)
        self.granted = grant.granted
        self.wait_cache = (self.clock.monotonic(), min(grant.wait, SHARED_POLL_SECONDS))
        return 0 if self._halts(grant.status, grant.failures, grant.max_errors) else grant.granted

    def _halts(self, status: str, failures: int, max_errors: int) -> bool:
        """Whether the run's shared state says stop: not running, or past the error threshold
        over all workers (then this worker pauses the run, for every worker)."""
        if status != RunStatus.RUNNING:
            self.halt = f"the run is {status}"
        elif failures > max_errors:
            self.halt = (
                f"error threshold: {failures} deliveries failed or unknown over all workers "
                f"(more than [transport] max_errors = {max_errors})"
            )
            self.report.reason = self.halt
            # Commit first: it ends the claim's share lock on the run, and two workers both
            # upgrading theirs to pause the run would deadlock (seen: one task failed).
            self.session.commit()
            pause_run(self.session, self.run_id, self.halt, only_running=True)
        return bool(self.halt)

    def _claim_batch(self, limit: int) -> list[Any]:
        if limit > 0:
            # Read under a share lock in the claim's own transaction: a pause or abandon that
            # commits first is seen here, and one that comes later waits for this claim to
            # commit. So no row is claimed after the run stopped (the row boundary).
            d = RunDispatch.__table__.c
            row = self.session.execute(
                select(
                    SendRun.status,
                    d.hold_until,
                    d.failures,
                    d.max_errors,
                    text("extract(epoch FROM clock_timestamp())"),
                )
                .join(RunDispatch.__table__, d.run_id == SendRun.id)
                .where(SendRun.id == self.run_id)
                .with_for_update(read=True, of=SendRun.__table__)
            ).one()
            held = row.hold_until - float(row[-1])
            if self._halts(row.status, row.failures, row.max_errors) or held > 0:
                # Committed, not rolled back: this transaction carries the outcomes recorded
                # since the last commit (a rollback lost them, leaving sent rows `sending`).
                self.session.commit()
                if held > 0:  # a provider said "wait" to some worker: everyone waits
                    self.wait_cache = (self.clock.monotonic(), min(held, SHARED_POLL_SECONDS))
                self._refund(0)
                return []
        taken = super()._claim_batch(limit)
        # super() commits a claim, but leaves the transaction open when no row was due: end it
        # here, or the share lock above would hold back every heartbeat of the run.
        self.session.commit()
        self._refund(len(taken))
        return taken

    def _refund(self, taken: int) -> None:
        """Tokens granted for this claim but not used go back to the run's buckets."""
        if self.granted > taken:
            refund_tokens(self.session, self.run_id, self.granted - taken)
        self.granted = 0

    def _should_stop(self) -> bool:
        if self.c.stop.is_set() or self.halt:
            self.report.stopped = True
            return True
        return False

    def _record_done(self, done: list[Any], in_flight: dict[Any, Any], *, commit: bool = True) -> None:
        super()._record_done(done, in_flight, commit=commit)
        new_failures = self.failures - self.shared_failures
        self.shared_failures = self.failures
        if new_failures:
            self.session.execute(
                update(RunDispatch)
                .where(RunDispatch.run_id == self.run_id)
                .values(failures=RunDispatch.failures + new_failures)
            )
            self.session.commit()
        if self.hold_until > self.shared_hold:
            # A provider said "wait": every worker waits, not only this one.
            hold_for(self.session, self.run_id, self.hold_until - self.clock.monotonic())
            self.shared_hold = self.hold_until
        if self.clock.monotonic() - self.counted_at >= COUNTS_EVERY_SECONDS:
            self.flush_counts()

    def flush_counts(self) -> None:
        """Add what this loop recorded since the last time to its run_workers row."""
        counts = self.report.counts
        delta = {
            k: counts[k] - self.recorded[k] for k in ("sent", "failed", "unknown", "skipped", "deferred")
        }
        self.recorded.update(delta)
        new_limited = self.report.rate_limited - self.shared_rate_limited
        self.shared_rate_limited = self.report.rate_limited
        _touch(self.session, self.run_id, self.owner, self.clock.now(), rate_limited=new_limited, **delta)
        self.counted_at = self.clock.monotonic()


@dataclass(frozen=True)
class Grant:
    granted: int
    wait: float  # seconds until the limits let one more go, when granted is 0
    status: str
    failures: int
    max_errors: int


def take_tokens(session: Session, run_id: str, want: int) -> Grant:
    """Up to `want` messages' worth of the run's limits, taken under the row's lock.

    Read with the database's clock, so workers on machines whose clocks differ share one bucket.
    """
    d = RunDispatch.__table__.c
    row = session.execute(
        select(
            d.per_second,
            d.per_hour,
            d.second_tokens,
            d.hour_tokens,
            d.stamp,
            d.hold_until,
            d.failures,
            d.max_errors,
            SendRun.status,
            text("extract(epoch FROM clock_timestamp())"),
        )
        .join(SendRun, SendRun.id == d.run_id)
        .where(d.run_id == run_id)
        .with_for_update(of=RunDispatch.__table__)
    ).one()
    now = float(row[-1])
    if now < row.hold_until or row.status != RunStatus.RUNNING:
        # Commit, never roll back: the caller's transaction may carry recorded outcomes.
        session.commit()
        return Grant(0, max(row.hold_until - now, 0.0), row.status, row.failures, row.max_errors)
    granted = want
    waits = [0.0]
    elapsed = max(now - row.stamp, 0.0)
    second_tokens, hour_tokens = row.second_tokens, row.hour_tokens
    if row.per_second:
        second_tokens = min(max(row.per_second, 1.0), second_tokens + elapsed * row.per_second)
        granted = min(granted, math.floor(second_tokens + 1e-9))
        waits.append((1 - second_tokens) / row.per_second)
    if row.per_hour:
        rate = row.per_hour / 3600.0
        hour_tokens = min(float(row.per_hour), hour_tokens + elapsed * rate)
        granted = min(granted, math.floor(hour_tokens + 1e-9))
        waits.append((1 - hour_tokens) / rate)
    granted = max(granted, 0)
    if row.per_second or row.per_hour:
        session.execute(
            update(RunDispatch.__table__)
            .where(d.run_id == run_id)
            .values(
                stamp=now,
                second_tokens=second_tokens - (granted if row.per_second else 0),
                hour_tokens=hour_tokens - (granted if row.per_hour else 0),
            )
        )
    session.commit()
    wait = 0.0 if granted else max(max(waits), 1e-3)
    return Grant(granted, wait, row.status, row.failures, row.max_errors)


def refund_tokens(session: Session, run_id: str, n: int) -> None:
    session.execute(
        update(RunDispatch)
        .where(RunDispatch.run_id == run_id)
        .values(
            second_tokens=RunDispatch.second_tokens + n,
            hour_tokens=RunDispatch.hour_tokens + n,
        )
    )
    session.commit()


def hold_for(session: Session, run_id: str, seconds: float) -> None:
    until = _db_epoch(session) + max(seconds, 0.0)
    session.execute(
        update(RunDispatch)
        .where(RunDispatch.run_id == run_id)
        .values(hold_until=func.greatest(RunDispatch.hold_until, until))
    )
    session.commit()


@dataclass
class RunMaterials:
    """What a worker needs to build a run's messages, read once per run per worker process."""

    templates: dict[str, Any]
    variant_of: dict[str, str | None]


class WorkerContext:
    """One worker process: its config, database and transport; tasks run one at a time."""

    def __init__(
        self,
        *,
        engine: Engine,
        make_transport: Callable[[], Transport],
        headers: Any,
        personaliser: Callable[[str], Callable[[Recipient], Any]],
        envelope_sender: str,
        unwanted: Callable[[Session, Sequence[int]], set[int]],
        retry: RetryPolicy,
        claim_rows: int,
        lease_seconds: float,
        handover_rows: int = 20,
        sign: Any = None,
        clock: Clock | None = None,
    ) -> None:
        self.engine = engine
        self.sessions = session_factory(engine)
        self.make_transport = make_transport
        self.headers = headers
        self.personaliser = personaliser
        self.envelope_sender = envelope_sender
        self.unwanted = unwanted
        self.retry = retry
        self.claim_rows = claim_rows
        self.handover_rows = handover_rows
        self.lease_seconds = lease_seconds
        self.sign = sign  # digest.dkim.DkimSigner or None
        self.clock = clock or SystemClock()  # injected by tests; the shared limits use the database's
        self.worker = worker_id()
        self._materials: dict[tuple[str, datetime], RunMaterials] = {}

    def materials(self, session: Session, run_id: str) -> RunMaterials:
        from digest.message import MessageTemplate

        dispatch = session.get(RunDispatch, run_id)
        if dispatch is None:
            raise RunBusyError(run_id, "no dispatch record: the run was not started in celery mode")
        cache_key = (run_id, dispatch.sent_at)
        if cache_key not in self._materials:
            templates = {}
            for row in session.scalars(select(RunVariantRow).where(RunVariantRow.run_id == run_id)):
                variant = RenderedVariant(
                    regions=tuple(json.loads(row.variant_key)),
                    subject=row.subject,
                    preheader=row.preheader,
                    html=row.html,
                    text=row.text,
                )
                templates[row.variant_key] = MessageTemplate(variant, self.headers, date=dispatch.sent_at)
            self._materials = {cache_key: RunMaterials(templates, json.loads(dispatch.variant_of))}
        return self._materials[cache_key]

    def send_rows(self, run_id: str, first: int, last: int) -> dict[str, int]:
        """One task: every due pending row of the run with first <= id <= last.

        If the database drops the worker (a restart, a failover), the task starts again under a
        new worker identity after a pause: the rows the old identity held `sending` are then
        a dead worker's, settled by the module's rule once its lease lapses, and sent or made
        unknown; nothing is lost and nothing is sent twice. After DB_ATTEMPTS it fails.
        """
        for attempt in range(1, DB_ATTEMPTS + 1):
            try:
                return self._send_rows(run_id, first, last)
            except Exception as err:
                cause = self._database_error_in(err)
                if cause is None or attempt == DB_ATTEMPTS:
                    raise
                log.warning(
                    "run %s rows %d-%d: the database failed (%s); again in %.0f s as a new worker",
                    run_id,
                    first,
                    last,
                    cause,
                    DB_RETRY_SECONDS * attempt,
                )
                self.worker = worker_id()
                self.clock.sleep(DB_RETRY_SECONDS * attempt)
        raise AssertionError("unreachable")

    def _database_error_in(self, err: BaseException) -> BaseException | None:
        """The database error behind `err`, if any: the one the loop's clean-up met first is
        often hidden behind the session's refusal to go on (PendingRollbackError, 'prepared'
        state), so the chain of causes is followed."""
        from sqlalchemy.exc import DBAPIError

        driver_error = self.engine.dialect.loaded_dbapi.Error
        seen: BaseException | None = err
        while seen is not None:
            if isinstance(seen, DBAPIError | driver_error):
                return seen
            seen = seen.__cause__ or seen.__context__
        return None

    def _send_rows(self, run_id: str, first: int, last: int) -> dict[str, int]:
        report = RunReport(run_id=run_id)
        with self.sessions() as session:
            run = session.get(SendRun, run_id)
            if run is None or run.status != RunStatus.RUNNING:
                return {"skipped_task": 1}  # paused, abandoned or finished: nothing to do
            # A task delivered again after its worker died: that worker's rows are settled first.
            settle_dead_claims(
                session, run_id, self.lease_seconds, first=first, last=last, now=self.clock.now()
            )
            materials = self.materials(session, run_id)
            register_worker(session, run_id, self.worker, self.clock.now())
            personalise = self.personaliser(run_id)
            envelope_sender = self.envelope_sender
            sign = self.sign

            def prepare(recipient: Recipient, key: str) -> Prepared:
                regions = "\n".join(sorted(recipient.regions)) if recipient.regions is not None else ""
                variant_key = materials.variant_of.get(regions, "missing")
                if variant_key is None:
                    return Prepared(None, "no articles this week in the chosen regions")
                template = materials.templates.get(variant_key)
                if template is None:
                    return Prepared(None, "no variant was rendered for these regions")
                return Prepared(
                    template.outbound(
                        recipient, personalise(recipient), key=key, envelope_sender=envelope_sender, sign=sign
                    )
                )

            beat = _Beat(self.sessions, run_id, self.worker, max(self.lease_seconds / 4, 0.5), self.clock)
            beat.start()
            previous: WorkerLoop | None = None
            try:
                while True:
                    courier = Courier(
                        self.make_transport(),
                        prepare=prepare,
                        unwanted=self.unwanted,
                        retry=self.retry,
                        batch_size=self.claim_rows,
                        clock=self.clock,
                    )
                    loop = WorkerLoop(
                        courier,
                        session,
                        run_id,
                        self.worker,
                        report,
                        first=first,
                        last=last,
                        marks=self.sessions,
                        handover_rows=self.handover_rows,
                    )
                    if previous is not None:
                        # One report for the task: what the last pass put in run_workers counts.
                        loop.recorded = previous.recorded
                        loop.shared_rate_limited = previous.shared_rate_limited
                    previous = loop
                    try:
                        loop.run(unpark=False)
                    finally:
                        session.rollback()
                        loop.flush_counts()
                    if loop.halt or report.stopped:
                        break
                    # Rows of this range a dead worker never handed over are pending again:
                    # this task sends them (another pass), the rest wait for their worker.
                    if not self._await_other_claims(session, run_id, first, last):
                        break
            finally:
                beat.done.set()
                beat.join()
            if session.scalar(select(SendRun.status).where(SendRun.id == run_id)) == RunStatus.ABANDONED:
                # Rows this worker claimed before the abandon and gave back as it stopped.
                skip_pending(session, run_id)
                session.commit()
            close_if_done(session, run_id)
        return dict(report.counts)

    def _await_other_claims(self, session: Session, run_id: str, first: int, last: int) -> bool:
        """Rows of this range another worker claimed: wait until they are recorded or their
        worker is known to be dead (then they are settled), so the run can be closed even with
        no coordinator watching (--detach). Bounded by the worker lease. True when rows were
        given back to pending (for this task to send)."""
        deadline = self.clock.monotonic() + self.lease_seconds * 1.5
        while True:
            left = session.scalar(
                select(func.count())
                .select_from(Delivery)
                .where(
                    Delivery.run_id == run_id,
                    Delivery.status == DeliveryStatus.SENDING,
                    Delivery.id >= first,
                    Delivery.id <= last,
                )
            )
            session.rollback()
            if not left:
                return False
            settled = settle_dead_claims(
                session, run_id, self.lease_seconds, first=first, last=last, now=self.clock.now()
            )
            if settled.returned:
                return True
            if settled.unknown:
                continue
            if self.clock.monotonic() > deadline:
                return False  # a live worker still holds them; it or the coordinator closes the run
            self.clock.sleep(1.0)
