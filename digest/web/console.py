"""What the staff console shows and starts, read from the database and the scheduler; no Flask here.

The schedules come from `digest.schedule.ScheduleService`: inside `digest run` the running one
(`app.extensions["digest.schedule"]`), otherwise one made on first use for the app
(`ConsoleSchedules`). The runs are read with `digest.send.list_runs` and the bounce counts of
`subscribers.reports`. Sends staff start (run now, send again) go to one background thread at a
time (`BackgroundJobs`), so the page answers at once and says what is going on.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections import Counter
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from digest.collect import CollectResult, collect
from digest.config import Config
from digest.errors import ConsoleBusyError
from digest.models import DeliveryStatus
from digest.schedule import ScheduleInfo, ScheduleService
from digest.send import Delivery, SendRun, last_send_window_end, list_runs
from digest.transports.base import Transport
from subscribers.reports import run_bounce_counts
from subscribers.store import Event, RegionPreference, Status, Subscriber, Suppression

log = logging.getLogger(__name__)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
RUNNING_SCHEDULER = "digest.schedule"  # the key `digest run` sets in app.extensions


# --- the schedules ---------------------------------------------------------------------


class ConsoleSchedules:
    """The app's ScheduleService: `digest run`'s running one when there is one, otherwise one
    made on first use and kept for the app (its scheduler is started paused: it fires nothing,
    it only reads and edits the job store)."""

    def __init__(
        self,
        config: Config,
        engine: Engine,
        *,
        clock: Callable[[], datetime],
        transport: Callable[[], Transport | None],
    ) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock
        self.transport = transport
        self.extensions: MutableMapping[str, Any] = {}
        self._own: ScheduleService | None = None
        self._lock = threading.Lock()

    def __call__(self) -> ScheduleService:
        running = self.extensions.get(RUNNING_SCHEDULER)
        if running is not None:
            return running
        with self._lock:
            if self._own is None:
                self._own = ScheduleService(
                    self.config, self.engine, clock=self.clock, transport=self.transport
                )
            return self._own

    def close(self) -> None:
        with self._lock:
            if self._own is not None:
                self._own.close()
                self._own = None


def scheduled_sends(schedules: Callable[[], ScheduleService]) -> tuple[list[ScheduleInfo], str]:
    """The schedules, or ([], why they cannot be read)."""
    try:
        return list(schedules().list()), ""
    except Exception as err:  # noqa: BLE001  a broken scheduler must not take the dashboard down
        log.exception("cannot list the schedules")
        return [], f"cannot read the schedules ({type(err).__name__}: {err})"


# --- the next send ---------------------------------------------------------------------


@dataclass(frozen=True)
class NextSend:
    at: datetime | None  # in the newsletter's time zone
    mode: str  # send | review | "" when unknown
    name: str = ""
    source: str = "config"  # scheduler | config
    note: str = ""  # why there is no scheduled send ("every schedule is paused", ...)
    schedule: ScheduleInfo | None = None


def weekly_after(day: str, hh_mm: str, tz: Any, now: datetime) -> datetime:
    """The first `day` at `hh_mm` local time strictly after `now` ([schedule] day and time)."""
    local = now.astimezone(tz)
    hour, minute = (int(p) for p in hh_mm.split(":"))
    days_ahead = (WEEKDAYS.index(day) - local.weekday()) % 7
    for extra in (0, 7):
        d = local.date() + timedelta(days=days_ahead + extra)
        # Built from the wall-clock date, so it is 09:00 local on either side of a DST change.
        candidate = datetime(d.year, d.month, d.day, hour, minute, tzinfo=tz)
        if candidate > local:
            return candidate
    raise AssertionError("unreachable: a week ahead is always later")


def next_send(config: Config, schedules: Callable[[], ScheduleService], now: datetime) -> NextSend:
    """The next send the scheduler will fire; when none will, [schedule] day and time."""
    entries, note = scheduled_sends(schedules)
    upcoming = [e for e in entries if e.next_fire is not None and not e.paused]
    if upcoming:
        entry = min(upcoming, key=lambda e: e.next_fire or now)
        assert entry.next_fire is not None
        return NextSend(
            at=entry.next_fire.astimezone(config.tz),
            mode=entry.mode,
            name=entry.name,
            source="scheduler",
            schedule=entry,
        )
    if entries and not note:
        note = "every schedule is paused"
    at = weekly_after(config.schedule.day, config.schedule.time, config.tz, now)
    return NextSend(at=at, mode="", source="config", note=note or "no schedule")


def awaiting_approval(entries: list[ScheduleInfo]) -> list[ScheduleInfo]:
    """Review-mode schedules with a next issue: what editors approve (or revoke)."""
    return [e for e in entries if e.mode == "review" and e.next_issue is not None and not e.paused]


# --- runs ------------------------------------------------------------------------------


@dataclass
class RunSummary:
    id: str
    issue: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    reason: str = ""
    counts: Counter[str] = field(default_factory=Counter)
    bounced: int = 0
    complained: int = 0

    def count(self, status: DeliveryStatus) -> int:
        return self.counts.get(status.value, 0)

    @property
    def pending(self) -> int:
        return self.counts.get("pending", 0) + self.counts.get("sending", 0)


def recent_runs(session: Session, limit: int = 10) -> list[RunSummary]:
    """The newest runs with their totals (digest.send.list_runs) and bounce counts."""
    summaries = []
    for run, totals in list_runs(session, limit=limit):
        bounces = run_bounce_counts(session, run.id)
        summaries.append(
            RunSummary(
                id=run.id,
                issue=run.issue,
                status=run.status,
                created_at=run.created_at,
                finished_at=run.finished_at,
                reason=run.paused_reason,
                counts=totals,
                bounced=bounces.get("bounced", 0),
                complained=bounces.get("complained", 0),
            )
        )
    return summaries


# --- sends started from the console --------------------------------------------------------


@dataclass
class Job:
    id: int
    label: str  # what staff asked for, e.g. "run now: schedule weekly"
    by: str
    started_at: datetime
    finished_at: datetime | None = None
    ok: bool | None = None  # None while running
    result: str = ""

    @property
    def running(self) -> bool:
        return self.finished_at is None


class BackgroundJobs:
    """One send at a time on a thread of its own; the newest jobs are kept to show their outcome.

    The send engine's own lock (one unfinished run, one process holding it) is what keeps sends
    apart across processes; this only stops two clicks in one console starting two threads.
    """

    KEEP = 20

    def __init__(self, clock: Callable[[], datetime]) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._jobs: list[Job] = []
        self._threads: list[threading.Thread] = []
        self._ids = itertools.count(1)

    def running(self) -> Job | None:
        with self._lock:
            return next((j for j in self._jobs if j.running), None)

    def recent(self) -> list[Job]:
        with self._lock:
            return list(reversed(self._jobs))

    def start(self, label: str, by: str, work: Callable[[], str]) -> Job:
        """Run `work` (which returns what it did, in a sentence) on a new thread."""
        with self._lock:
            busy = next((j for j in self._jobs if j.running), None)
            if busy is not None:
                raise ConsoleBusyError(
                    f"“{busy.label}” (started by {busy.by}) is still running; wait until it has finished"
                )
            job = Job(next(self._ids), label, by, self.clock())
            self._jobs = [*self._jobs[-(self.KEEP - 1) :], job]
            thread = threading.Thread(target=self._run, args=(job, work), name=f"digest-console-{job.id}")
            self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return job

    def _run(self, job: Job, work: Callable[[], str]) -> None:
        try:
            result, ok = work(), True
        except Exception as err:  # noqa: BLE001  the thread must record what went wrong
            log.exception("console job %r failed", job.label)
            result, ok = f"{type(err).__name__}: {err}", False
        with self._lock:
            job.result, job.ok, job.finished_at = result, ok, self.clock()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the jobs started so far (tests; a clean shutdown)."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)


def deliveries_of(session: Session, subscriber_id: int, limit: int = 50) -> list[Any]:
    """(delivery, run) rows for one subscriber, newest run first."""
    return list(
        session.execute(
            select(Delivery, SendRun)
            .join(SendRun, SendRun.id == Delivery.run_id)
            .where(Delivery.subscriber_id == subscriber_id)
            .order_by(SendRun.created_at.desc())
            .limit(limit)
        ).all()
    )


# --- subscribers -----------------------------------------------------------------------


def _receiving(query: Any) -> Any:
    suppressed = select(Suppression.email_key)
    return query.where(
        Subscriber.status == Status.ACTIVE,
        Subscriber.paused.is_(False),
        Subscriber.email_key.not_in(suppressed),
    )


def subscribers_per_region(session: Session, regions: tuple[str, ...]) -> tuple[dict[str, int], int]:
    """({region: readers who chose it}, readers who get every region), counting active readers."""
    chose = dict.fromkeys(regions, 0)
    rows = session.execute(
        _receiving(
            select(RegionPreference.region, func.count()).join(
                Subscriber, Subscriber.id == RegionPreference.subscriber_id
            )
        ).group_by(RegionPreference.region)
    )
    for region, n in rows:
        if region in chose:
            chose[region] = n
    with_prefs = select(RegionPreference.subscriber_id)
    everything = session.scalar(
        _receiving(select(func.count()).select_from(Subscriber)).where(Subscriber.id.not_in(with_prefs))
    )
    return chose, int(everything or 0)


@dataclass(frozen=True)
class Week:
    start: date  # a Monday
    joined: int
    left: int


JOIN_KINDS = ("confirmed", "subscribed", "imported")
LEAVE_KINDS = (Status.UNSUBSCRIBED.value, Status.BOUNCED.value, Status.COMPLAINED.value)


def weekly_growth(session: Session, today: date, weeks: int = 12) -> list[Week]:
    """Readers who joined and who left, per week (Monday to Sunday, UTC days), oldest first.

    Joined: a confirmation, or an add or import straight to active; left: an unsubscribe,
    bounce or complaint.
    """
    first = today - timedelta(days=today.weekday() + 7 * (weeks - 1))
    since = datetime(first.year, first.month, first.day, tzinfo=UTC)
    day = func.date(Event.at)
    rows = session.execute(
        select(day, Event.kind, Event.detail, func.count())
        .where(Event.at >= since, Event.kind.in_(JOIN_KINDS + LEAVE_KINDS))
        .group_by(day, Event.kind, Event.detail)
    )
    joined = [0] * weeks
    left = [0] * weeks
    for on, kind, detail, n in rows:
        d = on if isinstance(on, date) else date.fromisoformat(str(on))
        index = (d - first).days // 7
        if not 0 <= index < weeks:
            continue
        if kind in LEAVE_KINDS:
            left[index] += n
        elif kind == "confirmed" or detail == Status.ACTIVE.value:
            joined[index] += n
    return [Week(first + timedelta(days=7 * i), joined[i], left[i]) for i in range(weeks)]


# --- the issue being curated -----------------------------------------------------------


@dataclass(frozen=True)
class Collected:
    now: datetime  # the send time the issue is collected for
    result: CollectResult
    at: datetime  # when it was collected


class Workspace:
    """One collect per upcoming issue, kept in memory, so staff's many small changes (and
    previews) do not read every feed again. "Collect again" replaces it; the draft is
    stored apart, so staff's choices survive it."""

    def __init__(
        self,
        config: Config,
        engine: Engine,
        clock: Callable[[], datetime],
        schedules: Callable[[], ScheduleService],
    ) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock
        self.schedules = schedules
        self._lock = threading.Lock()
        self._collected: dict[date, Collected] = {}

    def issue_time(self) -> datetime:
        """The send time of the issue staff curate: the upcoming one of the next schedule (a
        held issue first, as Run now and approve mean it), else [schedule] day and time."""
        upcoming = next_send(self.config, self.schedules, self.clock())
        if upcoming.schedule is not None and upcoming.schedule.held_issue:
            send_time, _held = self.schedules().upcoming(upcoming.schedule.name)
            return send_time.astimezone(self.config.tz)
        return upcoming.at or self.clock()

    def get(self, *, again: bool = False) -> Collected:
        now = self.issue_time()
        key = now.astimezone(self.config.tz).date()
        with self._lock:
            if again or key not in self._collected:
                with Session(self.engine) as session:
                    since = last_send_window_end(session)
                self._collected = {key: Collected(now, collect(self.config, now, since=since), self.clock())}
            return self._collected[key]
