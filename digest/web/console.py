"""What the staff console shows, read from the database and the scheduler; no Flask here.

The scheduler (`digest.schedule`) and the send engine's run records are written on other
branches: the scheduler is imported only if it is there, and the runs are read from the
ledger tables (`digest.send.SendRun`, `Delivery`) with one GROUP BY.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from digest.collect import CollectResult, collect
from digest.config import Config
from digest.models import DeliveryStatus
from digest.send import Delivery, SendRun, last_send_window_end
from subscribers.store import Event, RegionPreference, Status, Subscriber, Suppression

log = logging.getLogger(__name__)

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# --- the next send ---------------------------------------------------------------------


@dataclass(frozen=True)
class NextSend:
    at: datetime | None  # in the newsletter's time zone
    mode: str  # send | review | "" when unknown
    name: str = ""
    source: str = "config"  # scheduler | config
    note: str = ""  # e.g. "no scheduler" when digest.schedule is not installed


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


def scheduled_sends(config: Config, engine: Engine, now: datetime | None = None) -> tuple[list[Any], str]:
    """The scheduler's schedules, or ([], why not), next fire times computed from `now`."""
    from digest.schedule import ScheduleService

    clock = (lambda: now) if now is not None else None
    try:
        with ScheduleService(config, engine, clock=clock) as service:
            return list(service.list()), ""
    except Exception as err:  # noqa: BLE001  a broken scheduler must not take the dashboard down
        log.exception("cannot list the schedules")
        return [], f"cannot read the schedules ({type(err).__name__}: {err})"


def _field(entry: Any, *names: str) -> Any:
    for name in names:
        value = entry.get(name) if isinstance(entry, dict) else getattr(entry, name, None)
        if value is not None:
            return value
    return None


def next_send(config: Config, engine: Engine, now: datetime) -> NextSend:
    """The next send the scheduler will fire; without a scheduler, [schedule] day and time."""
    entries, note = scheduled_sends(config, engine, now)
    upcoming = []
    for entry in entries:
        at = _field(entry, "next_fire_time", "next_run_time", "next_fire", "next_run")
        if isinstance(at, datetime) and not _field(entry, "paused"):
            upcoming.append((at, entry))
    if upcoming:
        at, entry = min(upcoming, key=lambda pair: pair[0])
        return NextSend(
            at=at.astimezone(config.tz),
            mode=str(_field(entry, "mode") or "send"),
            name=str(_field(entry, "name", "id") or ""),
            source="scheduler",
        )
    if entries and not note:
        note = "every schedule is paused"
    at = weekly_after(config.schedule.day, config.schedule.time, config.tz, now)
    return NextSend(at=at, mode="", source="config", note=note or "no schedule")


# --- runs ------------------------------------------------------------------------------


@dataclass
class RunSummary:
    id: str
    issue: str
    status: str
    created_at: datetime
    finished_at: datetime | None
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, status: DeliveryStatus) -> int:
        return self.counts.get(status.value, 0)


def recent_runs(session: Session, limit: int = 10) -> list[RunSummary]:
    runs = list(session.scalars(select(SendRun).order_by(SendRun.created_at.desc()).limit(limit)))
    if not runs:
        return []
    summaries = {r.id: RunSummary(r.id, r.issue, r.status, r.created_at, r.finished_at) for r in runs}
    rows = session.execute(
        select(Delivery.run_id, Delivery.status, func.count())
        .where(Delivery.run_id.in_(summaries))
        .group_by(Delivery.run_id, Delivery.status)
    )
    for run_id, status, n in rows:
        summaries[run_id].counts[DeliveryStatus(status).value] = n
    return [summaries[r.id] for r in runs]


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

    def __init__(self, config: Config, engine: Engine, clock: Callable[[], datetime]) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock
        self._lock = threading.Lock()
        self._collected: dict[date, Collected] = {}

    def issue_time(self) -> datetime:
        return next_send(self.config, self.engine, self.clock()).at or self.clock()

    def get(self, *, again: bool = False) -> Collected:
        now = self.issue_time()
        key = now.astimezone(self.config.tz).date()
        with self._lock:
            if again or key not in self._collected:
                with Session(self.engine) as session:
                    since = last_send_window_end(session)
                self._collected = {key: Collected(now, collect(self.config, now, since=since), self.clock())}
            return self._collected[key]
