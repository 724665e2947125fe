"""When the issue goes out: schedules kept in the project's database, fired by APScheduler 3.

A schedule is a name, a trigger (weekly `"fri 09:00"` or a crontab expression, always in
`[newsletter] timezone`) and a mode:

- `send`: at the fire time the issue is collected, built, rendered and sent (one send run);
- `review`: `[schedule] review_hours_before` ahead, the issue is prepared and staff get an
  e-mail with a link to `<base_url>/staff/issue`; at the fire time it goes out only if that
  issue date was approved (`ScheduleService.approve`), otherwise it is held and recorded.

Storage (one database, `[database] url`): APScheduler's own table `apscheduler_jobs` (its
`SQLAlchemyJobStore`: trigger and next fire time), and ours: `schedules` (name, trigger text,
mode, paused), `schedule_firings` (what each firing did: sent, skipped and why, missed, held,
...) and `issue_approvals` (which issue date, who, when).

API (the staff console and `digest schedule` use this; nothing else touches the tables):

    service = ScheduleService(config, engine, clock=None, transport=None)
    #   clock: () -> aware datetime (default: the system clock, UTC)
    #   transport: () -> Transport | None, for firings (default: [transport] in digest.toml)
    service.add(name, weekly="fri 09:00" | cron="0 9 * * 5", mode="send" | "review") -> ScheduleInfo
    service.list() -> list[ScheduleInfo]         # name, trigger, mode, paused, next fire
    service.get(name) -> ScheduleInfo            #   (zone and UTC), approval, last firing
    service.pause(name) / resume(name) -> ScheduleInfo
    service.skip_next(name, by="") -> ScheduleInfo   # records the skipped time as a firing
    service.edit(name, weekly=... | cron=..., mode=...) -> ScheduleInfo   # keeps history, paused
    service.remove(name) -> None
    service.run_now(name, by="") -> FiringInfo   # sends the upcoming issue now, as curated, in
                                                 #   this thread (also for a paused, missed or
                                                 #   held schedule; in review mode if approved)
    service.upcoming(name) -> (send time, held)  # the upcoming issue: a held one first, else next
    service.approve(name_or_issue_date, by, issue=None) -> ApprovalInfo   # a name approves its
                                                 #   upcoming issue, bound to its curation now
    service.revoke_approval(issue_date) -> bool
    service.approval_for(issue_date) -> ApprovalInfo | None
    service.firings(name=None, limit=50) -> list[FiringInfo]  # newest first
    service.close()                              # or use it as a context manager

Every method raises `ScheduleError` (a `ValueError`) naming the bad input. A service edits the
job store through its own APScheduler scheduler, started paused, so it fires nothing: the CLI
and a console outside `digest run` use it that way, and a running `digest run` sees the change
within `TICK_SECONDS`. `digest run` calls `service.start()`, which resumes an unfinished send
run and then lets the scheduler fire; inside `digest run` the Flask app carries that running
service as `app.extensions["digest.schedule"]`. `run_now` sends in the caller's thread: a web
request should hand it to a background thread.

Module functions, for callers that drive time themselves (the tests do):
`fire(config, engine, schedule_name, now, scheduled_for=None, kind=None, by="", transport=None)`,
`due_reviews(config, engine, now)`, `prepare_review(config, engine, name, send_time, now)`,
`resume_interrupted(config, engine, now)`, `take_over(config, engine, now)` (what `digest run`
does every few seconds: finish a run whose owner died).

Outcomes are facts: a run where most deliveries failed is `failed`, not `sent`; a held, missed,
failed or paused issue and a takeover are told to staff (digest.alerts: mail, console banner,
WARNING).

The first time schedules are read and none was ever defined, `[schedule] day`, `time` and
`mode` seed one named "weekly" (paused when `enabled = false`). Later edits of those keys do not
change it: the database holds the schedules from then on.

Firing rules (`fire`): a firing first claims its row, unique per (schedule, fire time, kind),
so two processes sharing the job store send once. An unfinished send run is resumed rather
than a new one started (one older than `[transport] resume_max_age_hours` is held for staff);
with nothing newer than the last finished run's window end it skips, and so it does when that
issue date was already sent. A firing later than `[schedule] misfire_grace_minutes` is
recorded as missed and sends nothing; `run_now` sends it if staff want it late.
"""

from __future__ import annotations

import concurrent.futures
import enum
import logging
import os
import re
import socket
import sys
import threading
import traceback
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from typing import Any

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MISSED,
    JobExecutionEvent,
)
from apscheduler.executors.pool import BasePoolExecutor
from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.memory import MemoryJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_RUNNING, STATE_STOPPED, BaseScheduler
from apscheduler.triggers.cron import CronTrigger
from rich.console import Console
from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Float,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    Unicode,
    UniqueConstraint,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from digest.alerts import alert_staff, mail_staff
from digest.alerts import review_recipients as review_recipients  # where callers found it
from digest.config import Config
from digest.db import Base, UTCDateTime, session_factory
from digest.errors import RunBusyError, ScheduleError
from digest.send import ClockFrom, RunStatus
from digest.transports.base import Transport

log = logging.getLogger(__name__)

APSCHEDULER_TABLE = "apscheduler_jobs"
# The running scheduler looks at the job store at least this often, so a schedule added or
# moved earlier by another process (the CLI) is seen in time, and review mails go out.
TICK_SECONDS = 30.0
JOB_PREFIX = "schedule:"
SEED_NAME = "weekly"
MODES = ("send", "review")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _utcnow() -> datetime:
    return datetime.now(UTC)


# APScheduler's table, declared here with the exact columns its SQLAlchemyJobStore uses, so that
# our migration creates it and the migration test sees it as part of the schema.
apscheduler_jobs = Table(
    APSCHEDULER_TABLE,
    Base.metadata,
    Column("id", Unicode(191), primary_key=True),
    Column("next_run_time", Float(25), index=True),
    Column("job_state", LargeBinary, nullable=False),
)


class Schedule(Base):
    __tablename__ = "schedules"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    trigger_kind: Mapped[str] = mapped_column(String(10))  # weekly | cron
    trigger_expr: Mapped[str] = mapped_column(String(200))
    mode: Mapped[str] = mapped_column(String(10), default="send")  # send | review
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow, onupdate=_utcnow)
    # Kept (not deleted) so its firings keep a name and the "weekly" seed is not planted again.
    removed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Outcome(enum.StrEnum):
    RUNNING = "running"  # claimed, still working (or its process died: see INTERRUPTED)
    SENT = "sent"  # the send run finished
    PAUSED = "paused"  # the run paused with deliveries pending (errors); the next firing resumes it
    SKIPPED = "skipped"  # nothing new, nothing collected, already sent, or skipped by staff
    MISSED = "missed"  # later than the grace time: not sent late
    HELD = "held"  # review mode without approval, or a stale unfinished run: staff decide
    BUSY = "busy"  # another process holds the send run
    FAILED = "failed"  # an error; the detail says which
    PREPARED = "prepared"  # review mode: issue prepared, staff mailed
    INTERRUPTED = "interrupted"  # its process stopped mid-firing; the run is resumed at start-up


class Firing(Base):
    """One firing of a schedule and what it did; its unique key is the claim that stops doubles."""

    __tablename__ = "schedule_firings"
    __table_args__ = (UniqueConstraint("schedule_name", "fire_time", "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    schedule_name: Mapped[str] = mapped_column(String(64), index=True)
    fire_time: Mapped[datetime] = mapped_column(UTCDateTime)  # the scheduled instant (run-now: when asked)
    # send | review | manual (run-now) | resume (start-up) | refire (a send interrupted early)
    # | takeover (a run whose owner died, finished by a running `digest run`)
    kind: Mapped[str] = mapped_column(String(10))
    outcome: Mapped[str] = mapped_column(String(20), default=Outcome.RUNNING.value)
    detail: Mapped[str] = mapped_column(Text, default="")
    issue: Mapped[str | None] = mapped_column(String(40), nullable=True)  # ISO issue date
    run_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    by: Mapped[str] = mapped_column(String(200), default="")  # staff, for run-now and skip
    owner: Mapped[str] = mapped_column(String(100), default="")  # host:pid that ran it
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Approval(Base):
    """Staff approved the issue of this date (review mode): it goes out at its fire time."""

    __tablename__ = "issue_approvals"

    issue: Mapped[str] = mapped_column(String(40), primary_key=True)  # ISO issue date
    schedule_name: Mapped[str] = mapped_column(String(64), default="")
    approved_by: Mapped[str] = mapped_column(String(200))
    approved_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)
    # The version of the curation approved (digest.curate.curation_stamp; "" = no draft): an
    # edit of the draft afterwards changes the stamp, and the approval no longer holds.
    curation: Mapped[str] = mapped_column(String(64), default="", server_default="")


# --- triggers ------------------------------------------------------------------------------


class LocalCronTrigger(CronTrigger):
    """A cron trigger that fires once per wall-clock time, also on the night clocks go back.

    APScheduler's CronTrigger fires twice for a time inside the repeated hour (01:30 EDT, then
    01:30 EST). A time that does not exist (02:30 when clocks go forward) fires at the instant
    it would have been, i.e. 03:30 local: that part is APScheduler's own behaviour.
    """

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime | None:
        following = super().get_next_fire_time(previous_fire_time, now)
        while following is not None and previous_fire_time is not None:
            if self._wall(following) != self._wall(previous_fire_time):
                break
            following = super().get_next_fire_time(following, following)
        return following

    def _wall(self, moment: datetime) -> datetime:
        return moment.astimezone(self.timezone).replace(tzinfo=None, fold=0)


def parse_weekly(text: str) -> tuple[tuple[str, ...], int, int]:
    """`"fri 09:00"`, `"mon,thu 7:30"`, `"Friday 09:00"` -> (days, hour, minute)."""
    m = re.fullmatch(r"\s*([A-Za-z,\s]+?)\s+(\d{1,2}):(\d{2})\s*", text)
    if not m:
        raise ScheduleError(f'weekly {text!r}: write it as "DAY HH:MM", e.g. "fri 09:00"')
    days = []
    for word in re.split(r"[,\s]+", m.group(1).strip().lower()):
        day = word[:3]
        if len(word) < 3 or not any(full.startswith(word) for full in _FULL_DAYS):
            raise ScheduleError(f"weekly {text!r}: {word!r} is not a day (mon, tue, ... sun)")
        days.append(day)
    hour, minute = int(m.group(2)), int(m.group(3))
    if hour > 23 or minute > 59:
        raise ScheduleError(f"weekly {text!r}: {m.group(2)}:{m.group(3)} is not a time of day")
    return tuple(dict.fromkeys(days)), hour, minute


_CRONTAB_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def crontab_weekdays(field: str) -> str:
    """A crontab day-of-week field with APScheduler's meaning: numbers become day names.

    In crontab 0 (and 7) is Sunday; APScheduler 3 reads 0 as Monday (its issue 286). So
    "1-5" becomes "mon,tue,wed,thu,fri" and "5" becomes "fri", as anyone who writes crontabs means.
    """
    out: list[str] = []
    for part in field.split(","):
        m = re.fullmatch(r"(\*|\d+)(?:-(\d+))?(?:/(\d+))?", part)
        if part == "*" or not m:
            out.append(part)  # "*" and day names (mon-fri) mean the same to both
            continue
        start, end, step = m.groups()
        low = 0 if start == "*" else int(start)
        high = int(end) if end else (6 if start == "*" or step else low)
        if not (0 <= low <= 7 and 0 <= high <= 7 and low <= high) or (step and int(step) == 0):
            raise ScheduleError(f"cron day of week {field!r}: {part!r} is not a day range (0-7)")
        out.extend(_CRONTAB_DAYS[day % 7] for day in range(low, high + 1, int(step or 1)))
    return ",".join(dict.fromkeys(out))


def make_trigger(kind: str, expr: str, tz: tzinfo) -> LocalCronTrigger:
    """The trigger of a weekly or cron schedule, in the newsletter's zone."""
    if kind == "weekly":
        days, hour, minute = parse_weekly(expr)
        return LocalCronTrigger(day_of_week=",".join(days), hour=hour, minute=minute, timezone=tz)
    if kind == "cron":
        fields = expr.split()
        if len(fields) != 5:
            raise ScheduleError(f"cron {expr!r}: needs 5 fields (minute hour day month day-of-week)")
        minute, hour, day, month, weekday = fields
        try:
            return LocalCronTrigger(
                minute=minute,
                hour=hour,
                day=day,
                month=month,
                day_of_week=crontab_weekdays(weekday),
                timezone=tz,
            )
        except ValueError as err:
            raise ScheduleError(f"cron {expr!r}: {err}") from None
    raise ScheduleError(f"trigger kind {kind!r}: must be weekly or cron")


def trigger_text(kind: str, expr: str) -> str:
    return f"{kind} {expr}"


def _canonical_trigger(weekly: str | None, cron: str | None) -> tuple[str, str]:
    """(kind, text) in one spelling: "Friday 9:00" is kept as "fri 09:00"."""
    if weekly is not None:
        days, hour, minute = parse_weekly(weekly)
        return "weekly", f"{','.join(days)} {hour:02d}:{minute:02d}"
    assert cron is not None
    return "cron", " ".join(cron.split())


# --- records as the console sees them -----------------------------------------------------


@dataclass(frozen=True)
class FiringInfo:
    id: int
    schedule: str
    fire_time: datetime  # in the newsletter's zone
    kind: str
    outcome: str
    detail: str
    issue: str | None
    run_id: str | None
    by: str
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class ApprovalInfo:
    issue: str
    schedule: str
    approved_by: str
    approved_at: datetime
    curation: str = ""  # the stamp of the curation approved ("" = no draft)
    # "" while the approval holds; else why it was withdrawn (the curation was edited after it).
    withdrawn: str = ""

    @property
    def holds(self) -> bool:
        return not self.withdrawn


@dataclass(frozen=True)
class ScheduleInfo:
    name: str
    trigger: str  # "weekly fri 09:00" or "cron 0 9 * * 5"
    mode: str
    paused: bool
    next_fire: datetime | None  # in the newsletter's zone; None while paused
    next_fire_utc: datetime | None
    next_issue: str | None  # ISO date of the issue the next firing sends
    approval: ApprovalInfo | None  # of the upcoming issue: held_issue, else next_issue (review mode)
    last: FiringInfo | None  # the newest firing record
    # A scheduled issue that was held, missed or failed and has not gone out since: it is what
    # approve and run-now mean for this schedule until it is sent.
    held_issue: str | None = None

    @property
    def upcoming_issue(self) -> str | None:
        return self.held_issue or self.next_issue


def _firing_info(row: Firing, tz: tzinfo) -> FiringInfo:
    return FiringInfo(
        id=row.id,
        schedule=row.schedule_name,
        fire_time=row.fire_time.astimezone(tz),
        kind=row.kind,
        outcome=row.outcome,
        detail=row.detail,
        issue=row.issue,
        run_id=row.run_id,
        by=row.by,
        started_at=row.started_at,
        finished_at=row.finished_at,
    )


def _approval_info(row: Approval, session: Session | None = None) -> ApprovalInfo:
    """The approval as staff see it; with a session, checked against the curation as it is now."""
    withdrawn = ""
    if session is not None:
        from digest.curate import curation_stamp
        from digest.drafts import load_draft

        draft = load_draft(session, date.fromisoformat(row.issue))
        if curation_stamp(draft) != (row.curation or ""):
            who = f" by {draft.updated_by}" if draft is not None and draft.updated_by else ""
            at = (
                f" at {draft.updated_at:%Y-%m-%d %H:%M} UTC"
                if draft is not None and draft.updated_at is not None
                else ""
            )
            withdrawn = f"the curation was edited{who}{at}, after the approval: approve it again"
    return ApprovalInfo(
        row.issue, row.schedule_name, row.approved_by, row.approved_at, row.curation or "", withdrawn
    )


def issue_date_of(moment: datetime, config: Config) -> date:
    """The issue a firing at `moment` sends: its date in the newsletter's zone (as prepare_issue)."""
    return moment.astimezone(config.tz).date()


# --- firing --------------------------------------------------------------------------------


def process_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _process_gone(owner: str) -> bool:
    """True only for an owner on this host whose process no longer exists."""
    host, _, pid = owner.partition(":")
    pid = pid.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _claim(
    sessions: sessionmaker, name: str, fire_time: datetime, kind: str, *, by: str, now: datetime
) -> int | None:
    """Insert the firing's row; None when another process (or a skip) already has this one."""
    with sessions() as session:
        row = Firing(
            schedule_name=name,
            fire_time=fire_time,
            kind=kind,
            by=by,
            owner=process_owner(),
            started_at=now,
        )
        session.add(row)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return None
        return row.id


def _finish(
    sessions: sessionmaker,
    firing_id: int,
    outcome: Outcome,
    detail: str,
    *,
    now: datetime,
    issue: str | None = None,
    run_id: str | None = None,
) -> None:
    with sessions() as session:
        row = session.get(Firing, firing_id)
        if row is None:
            return
        row.outcome, row.detail, row.finished_at = outcome.value, detail, now
        if issue is not None:
            row.issue = issue
        if run_id is not None:
            row.run_id = run_id
        session.commit()


@dataclass
class _Result:
    outcome: Outcome
    detail: str
    issue: str | None = None
    run_id: str | None = None


def _quiet_console() -> Console:
    return Console(quiet=True)


def fire(
    config: Config,
    engine: Engine,
    schedule_name: str,
    now: datetime,
    *,
    scheduled_for: datetime | None = None,
    kind: str | None = None,
    by: str = "",
    transport: Transport | None = None,
    issue_time: datetime | None = None,
) -> FiringInfo | None:
    """One firing of a schedule: claim it, then collect, build, render and send (or say why not).

    `scheduled_for` is the trigger's fire time (APScheduler's run time); without it the firing
    is a run-now at `now`. The issue is collected as of the fire time, so a firing a minute late
    covers the same week; `issue_time` names another issue (run-now sends the upcoming one, as
    staff curated it). Returns the firing's record, or None when this (schedule, fire time)
    was already claimed by another process or skipped by staff.
    """
    kind = kind or ("send" if scheduled_for is not None else "manual")
    fire_time = scheduled_for if scheduled_for is not None else now
    sessions = session_factory(engine)
    clock = ClockFrom(now)  # the firing's clock: injected `now`, going on at the system's pace
    firing_id = _claim(sessions, schedule_name, fire_time, kind, by=by, now=now)
    if firing_id is None:
        log.info("firing %s at %s (%s) is already claimed: not run again", schedule_name, fire_time, kind)
        return None
    log.info("schedule %s (%s at %s): firing", schedule_name, kind, fire_time)
    try:
        result = _fire_claimed(
            config, engine, sessions, schedule_name, fire_time, now, kind, transport, issue_time or fire_time
        )
    except Exception as err:  # noqa: BLE001  recorded for staff; the scheduler logs it too
        log.exception("firing %s at %s failed", schedule_name, fire_time)
        result = _Result(Outcome.FAILED, f"{type(err).__name__}: {err}")
    _finish(
        sessions,
        firing_id,
        result.outcome,
        result.detail,
        now=clock.now(),  # when it ended, on the firing's clock
        issue=result.issue,
        run_id=result.run_id,
    )
    level = logging.WARNING if result.outcome in _NEEDS_STAFF else logging.INFO
    log.log(
        level, "schedule %s (%s at %s): %s: %s", schedule_name, kind, fire_time, result.outcome, result.detail
    )
    if result.outcome in _ALERTS:
        _tell_staff(config, engine, schedule_name, result, now, transport)
    with sessions() as session:
        row = session.get(Firing, firing_id)
        assert row is not None
        return _firing_info(row, config.tz)


# Kinds of firing that only finish an unfinished run: at start-up, or taken over from a dead owner.
_RESUMING = ("resume", "takeover")
_NEEDS_STAFF = (Outcome.MISSED, Outcome.HELD, Outcome.FAILED, Outcome.BUSY, Outcome.PAUSED)
# Outcomes that mail staff and raise a banner (digest.alerts); busy only means another process
# is at it.
_ALERTS = (Outcome.MISSED, Outcome.HELD, Outcome.FAILED, Outcome.PAUSED)


def _tell_staff(
    config: Config, engine: Engine, name: str, result: _Result, now: datetime, transport: Transport | None
) -> None:
    issue = f"the issue of {result.issue}" if result.issue else "an issue"
    subject = f"{issue} {_SAID[result.outcome]} (schedule {name})"
    alert_staff(
        config,
        engine,
        result.outcome.value,
        subject[0].upper() + subject[1:],
        result.detail,
        now=now,
        issue=result.issue,
        run_id=result.run_id,
        transport=transport,
    )


_SAID = {
    Outcome.MISSED: "was missed",
    Outcome.HELD: "is held",
    Outcome.FAILED: "failed",
    Outcome.PAUSED: "is paused",
}
# A scheduled firing with one of these outcomes did not get its issue out: it stays the
# upcoming issue (run-now, approve) until it is sent.
_NOT_OUT = (Outcome.HELD.value, Outcome.MISSED.value, Outcome.FAILED.value, Outcome.INTERRUPTED.value)


def _fire_claimed(
    config: Config,
    engine: Engine,
    sessions: sessionmaker,
    name: str,
    fire_time: datetime,
    now: datetime,
    kind: str,
    transport: Transport | None,
    issue_time: datetime,
) -> _Result:
    from digest.models import DeliveryStatus
    from digest.pipeline import prepare_issue  # the pipeline imports the world; only firings need it
    from digest.send import failed_run_for, finished_run_for, last_send_window_end, open_run, reopen

    grace = timedelta(minutes=config.schedule.misfire_grace_minutes)
    with sessions() as session:
        schedule = session.get(Schedule, name)
        unfinished = open_run(session)
        since = last_send_window_end(session)
    if (schedule is None or schedule.removed_at is not None) and kind not in _RESUMING:
        return _Result(Outcome.SKIPPED, f"schedule {name!r} does not exist (removed?)")
    late = now - fire_time
    scheduled = kind in ("send", "refire")
    issue_date = issue_date_of(issue_time, config).isoformat()
    if scheduled and late > grace:
        return _Result(Outcome.MISSED, _missed_text(name, late, config), issue=issue_date)
    notes: list[str] = []

    if unfinished is not None:
        age = now - unfinished.created_at
        if age > timedelta(hours=config.transport.resume_max_age_hours):
            return _Result(
                Outcome.HELD,
                f"run {unfinished.id} (issue {unfinished.issue}) is unfinished and "
                f"{age.total_seconds() / 3600:.0f} hours old, so nothing new can start: finish it with "
                "`digest send --resume-stale` or close it with `digest send --abandon`",
                issue=unfinished.issue,
                run_id=unfinished.id,
            )
        # Finish what was in flight first: same week window, same frozen list.
        issue = prepare_issue(config, unfinished.window_end.astimezone(config.tz), since=since)
        resumed = _send(config, engine, issue, transport, now, resume_run=unfinished.id)
        resumed.detail = f"resumed run {unfinished.id} (issue {unfinished.issue}): {resumed.detail}"
        if kind in _RESUMING or resumed.outcome is not Outcome.SENT or unfinished.issue == issue_date:
            resumed.issue = unfinished.issue
            return resumed
        notes.append(resumed.detail)  # an older issue finished; this firing's own issue goes on
        with sessions() as session:
            since = last_send_window_end(session)
    elif kind in _RESUMING:
        return _Result(Outcome.SKIPPED, "no unfinished send run to resume")

    def result(outcome: Outcome, detail: str, run_id: str | None = None) -> _Result:
        return _Result(outcome, "; ".join([*notes, detail]), issue=issue_date, run_id=run_id)

    assert schedule is not None
    if schedule.mode == "review" and kind in ("send", "refire", "manual"):
        # Run-now too: in review mode what goes out is what staff approved, nothing else.
        with sessions() as session:
            row = session.get(Approval, issue_date)
            approval = _approval_info(row, session) if row is not None else None
        if approval is None or not approval.holds:
            why = (
                "was not approved" if approval is None else f"is not approved any more: {approval.withdrawn}"
            )
            return result(
                Outcome.HELD,
                f"the issue of {issue_date} {why}, so it is held: "
                f"`digest schedule approve {name} --issue {issue_date}`, then "
                f"`digest schedule run-now {name}` sends it",
            )
        notes.append(f"approved by {approval.approved_by} at {approval.approved_at:%Y-%m-%d %H:%M} UTC")

    issue = prepare_issue(config, issue_time.astimezone(config.tz), since=since)
    nothing_new = since is not None and not any(a.published > since for a in issue.collected.articles)
    if nothing_new and not config.collect.send_when_empty:
        assert since is not None
        return result(
            Outcome.SKIPPED,
            f"nothing new since the last sent issue (no article after {since.astimezone(config.tz):%c})",
        )
    if not issue.should_send(config):
        return result(Outcome.SKIPPED, "no articles in the week window: nothing to send")
    with sessions() as session:
        done = finished_run_for(session, issue_date)
        failed = failed_run_for(session, issue_date)
        again = reopen(session, failed.id, include=[DeliveryStatus.FAILED]) if failed and not done else 0
    if done is not None:
        return result(Outcome.SKIPPED, f"the issue of {issue_date} was already sent (run {done.id})")
    if failed is not None:
        # Its readers who got it keep their one copy: only the failed rows go again, with the
        # run's own week window collected again.
        issue = prepare_issue(config, failed.window_end.astimezone(config.tz), since=since)
        sent = _send(config, engine, issue, transport, now, resume_run=failed.id, unpark=False)
        notes.append(f"sent again to the {again} failed deliveries of run {failed.id}")
        return result(sent.outcome, sent.detail, sent.run_id)
    sent = _send(config, engine, issue, transport, now)
    return result(sent.outcome, sent.detail, sent.run_id)


# Set by `digest run` when it shuts down (SIGTERM): a send in progress stops at a batch
# boundary, the batches in flight are recorded, and the run is left paused for the next start.
SEND_STOP = threading.Event()


def _send(
    config: Config, engine: Engine, issue: Any, transport: Transport | None, now: datetime, **kwargs: Any
) -> _Result:
    """Send on the firing's clock (from its `now`), so the run's times compare with later firings'."""
    from digest.pipeline import send_issue
    from digest.transports import make_transport

    try:
        outcome = send_issue(
            config,
            engine,
            transport or make_transport(config),
            issue=issue,
            console=_quiet_console(),
            stop=SEND_STOP,
            clock=ClockFrom(now),
            **kwargs,
        )
    except RunBusyError as err:
        return _Result(Outcome.BUSY, str(err), run_id=err.run_id)
    report = outcome.report
    totals = report.totals or report.counts
    counts = ", ".join(f"{n} {status}" for status, n in sorted(totals.items())) or "nothing to do"
    detail = f"run {report.run_id}: {outcome.recipients} recipients; {counts}"
    if report.paused:
        return _Result(Outcome.PAUSED, f"{detail}; paused: {report.reason}", run_id=report.run_id)
    if _run_status(engine, report.run_id) == RunStatus.FAILED:
        # What the ledger says, not the absence of an exception: most readers did not get it.
        return _Result(
            Outcome.FAILED,
            f"{detail}; most deliveries failed, so the issue was not sent: fix the relay, then "
            f"`digest resume {report.run_id} --include failed` (or run-now) sends it to them",
            run_id=report.run_id,
        )
    return _Result(Outcome.SENT, detail, run_id=report.run_id)


def _run_status(engine: Engine, run_id: str) -> str | None:
    from digest.send import SendRun

    with session_factory(engine)() as session:
        return session.scalar(select(SendRun.status).where(SendRun.id == run_id))


def _missed_text(name: str, late: timedelta, config: Config) -> str:
    hours = late.total_seconds() / 3600
    if hours >= 48:
        when = f"{hours / 24:.1f} days"
    else:
        when = f"{hours:.1f} hours" if hours >= 1 else f"{late.total_seconds() / 60:.0f} minutes"
    return (
        f"missed by {when} (grace {config.schedule.misfire_grace_minutes} minutes), so not sent late: "
        f"`digest schedule run-now {name}` sends it"
    )


def record_missed(config: Config, engine: Engine, name: str, fire_time: datetime, now: datetime) -> None:
    """APScheduler's EVENT_JOB_MISSED, kept as a firing record (unless one exists for that time)."""
    sessions = session_factory(engine)
    firing_id = _claim(sessions, name, fire_time, "send", by="", now=now)
    if firing_id is not None:
        detail = _missed_text(name, now - fire_time, config)
        issue = issue_date_of(fire_time, config).isoformat()
        _finish(sessions, firing_id, Outcome.MISSED, detail, now=now, issue=issue)
        _tell_staff(config, engine, name, _Result(Outcome.MISSED, detail, issue=issue), now, None)
    log.warning("schedule %s: the firing of %s was missed and not sent late", name, fire_time)


def resume_interrupted(
    config: Config, engine: Engine, now: datetime, *, transport: Transport | None = None
) -> FiringInfo | None:
    """At start-up: mark firings whose process died, and resume an unfinished send run.

    A run that another live process holds (its lease is fresh) is left to it; one older than
    `[transport] resume_max_age_hours` is recorded as held for staff. With no unfinished run, a
    scheduled firing that died before its run started is fired again within the grace time.
    Returns the record of what it did, or None.
    """
    from digest.send import open_run

    sessions = session_factory(engine)
    interrupted: list[Firing] = []
    with sessions() as session:
        for row in session.scalars(select(Firing).where(Firing.outcome == Outcome.RUNNING.value)):
            if _process_gone(row.owner):
                row.outcome, row.finished_at = Outcome.INTERRUPTED.value, now
                row.detail = f"process {row.owner} stopped during this firing"
                interrupted.append(row)
        session.commit()
        run = open_run(session)
    if run is None:
        return _refire(config, engine, interrupted, now, transport)
    lease = timedelta(seconds=config.send.lease_seconds)
    lease_fresh = run.heartbeat_at is not None and now - run.heartbeat_at < lease
    if run.owner and lease_fresh and not _process_gone(run.owner):
        log.info("run %s is being sent by %s: not resumed here", run.id, run.owner)
        return None
    if run.owner is None and run.status == "running" and now - run.created_at < lease:
        # Frozen moments ago and not yet taken: another process is about to send it.
        log.info("run %s was just started by another process: not resumed here", run.id)
        return None
    name = interrupted[-1].schedule_name if interrupted else _last_schedule_name(sessions) or SEED_NAME
    return fire(config, engine, name, now, kind="resume", by="start-up", transport=transport)


def take_over(
    config: Config, engine: Engine, now: datetime, *, transport: Transport | None = None
) -> FiringInfo | None:
    """In a running `digest run`, every few seconds: finish a send run whose owner died.

    A run still `running` whose owner was not heard from for `[send] lease_seconds` (or, on
    this machine, whose process is gone) belongs to a dead process or machine. Its firings are
    marked interrupted, and this process resumes the run (a firing of kind `takeover`, claimed
    on the dead owner's last heartbeat, so of several survivors one does it); the rows the dead
    owner left `sending` are settled by the ledger's hand-over marks. Staff are told.
    """
    from digest.send import RunStatus as Status
    from digest.send import open_run

    sessions = session_factory(engine)
    with sessions() as session:
        run = open_run(session)
        if run is None or run.status != Status.RUNNING:
            return None
        # No owner yet: its process froze the list and died before it took the lease.
        dead_owner, last_heard = run.owner or "nobody", run.heartbeat_at or run.created_at
        process = ":".join(dead_owner.removeprefix("celery:").split(":")[:2])
        lapsed = now - last_heard >= timedelta(seconds=config.send.lease_seconds)
        # A Celery coordinator may be gone on purpose (--detach): its workers keep the lease.
        gone = not dead_owner.startswith("celery:") and _process_gone(process)
        if not (lapsed or gone) or process == process_owner():
            return None
        run_id, issue = run.id, run.issue
        for row in session.scalars(
            select(Firing).where(Firing.outcome == Outcome.RUNNING.value, Firing.owner == process)
        ):
            row.outcome, row.finished_at = Outcome.INTERRUPTED.value, now
            row.detail = f"process {process} stopped during this firing; its run {run_id} was taken over"
        session.commit()
    name = _last_schedule_name(sessions) or SEED_NAME
    log.warning(
        "run %s: its owner %s was last heard from at %s: taking it over", run_id, dead_owner, last_heard
    )
    record = fire(
        config,
        engine,
        name,
        now,
        scheduled_for=last_heard,
        kind="takeover",
        by=process_owner(),
        transport=transport,
    )
    if record is not None and record.outcome != Outcome.BUSY.value:
        alert_staff(
            config,
            engine,
            "takeover",
            f"Run {run_id} (issue {issue}) was taken over from {dead_owner}, which stopped",
            f"{process_owner()} finished it: {record.outcome}: {record.detail}. Rows the dead process was "
            f"handing over are unknown: `digest runs show {run_id}` lists them.",
            now=now,
            issue=issue,
            run_id=run_id,
            transport=transport,
        )
    return record


def _refire(
    config: Config, engine: Engine, interrupted: list[Firing], now: datetime, transport: Transport | None
) -> FiringInfo | None:
    """A scheduled firing that died before its send run started (while collecting, say) is fired
    again, if it is still within the grace time: nothing of it reached anyone yet."""
    grace = timedelta(minutes=config.schedule.misfire_grace_minutes)
    record = None
    for row in interrupted:
        if row.kind == "send" and row.run_id is None and now - row.fire_time > grace:
            if _sent_anyway(config, engine, row):
                continue
            # Too late to send unasked: it is a missed issue, and staff are told how to send it.
            detail = f"process {row.owner} stopped before its run started; " + _missed_text(
                row.schedule_name, now - row.fire_time, config
            )
            _finish(
                session_factory(engine),
                row.id,
                Outcome.MISSED,
                detail,
                now=now,
                issue=issue_date_of(row.fire_time, config).isoformat(),
            )
            log.warning("schedule %s: the firing of %s: %s", row.schedule_name, row.fire_time, detail)
            issue = issue_date_of(row.fire_time, config).isoformat()
            _tell_staff(
                config, engine, row.schedule_name, _Result(Outcome.MISSED, detail, issue), now, transport
            )
            continue
        if row.kind == "send" and row.run_id is None:
            record = (
                fire(
                    config,
                    engine,
                    row.schedule_name,
                    now,
                    scheduled_for=row.fire_time,
                    kind="refire",
                    by="start-up",
                )
                or record
            )
    return record


def _sent_anyway(config: Config, engine: Engine, row: Firing) -> bool:
    """The process died after its run finished but before the firing said so: record it as sent."""
    from digest.send import finished_run_for

    issue = issue_date_of(row.fire_time, config).isoformat()
    sessions = session_factory(engine)
    with sessions() as session:
        done = finished_run_for(session, issue)
    if done is None:
        return False
    detail = f"process {row.owner} stopped after run {done.id} finished the issue of {issue}"
    at = done.finished_at or row.started_at
    _finish(sessions, row.id, Outcome.SENT, detail, now=at, issue=issue, run_id=done.id)
    return True


def _last_schedule_name(sessions: sessionmaker) -> str | None:
    with sessions() as session:
        return session.scalar(select(Firing.schedule_name).order_by(Firing.id.desc()).limit(1))


# --- review mode ---------------------------------------------------------------------------


def prepare_review(
    config: Config,
    engine: Engine,
    schedule_name: str,
    send_time: datetime,
    now: datetime,
    *,
    transport: Transport | None = None,
) -> FiringInfo | None:
    """Prepare the issue that goes out at `send_time` and mail staff a link to approve it (once)."""
    sessions = session_factory(engine)
    firing_id = _claim(sessions, schedule_name, send_time, "review", by="", now=now)
    if firing_id is None:
        return None
    issue_date = issue_date_of(send_time, config).isoformat()
    try:
        detail = _prepare_and_mail(config, engine, schedule_name, send_time, transport)
        outcome = Outcome.PREPARED
    except Exception as err:  # noqa: BLE001  recorded; staff see it in the list
        log.exception("review of %s for %s failed", schedule_name, send_time)
        outcome, detail = Outcome.FAILED, f"{type(err).__name__}: {err}"
    _finish(sessions, firing_id, outcome, detail, now=now, issue=issue_date)
    with sessions() as session:
        row = session.get(Firing, firing_id)
        assert row is not None
        return _firing_info(row, config.tz)


def _prepare_and_mail(
    config: Config, engine: Engine, name: str, send_time: datetime, transport: Transport | None
) -> str:
    from digest.pipeline import prepare_issue
    from digest.send import last_send_window_end

    with session_factory(engine)() as session:
        since = last_send_window_end(session)
    issue = prepare_issue(config, send_time.astimezone(config.tz), since=since)
    rendered = issue.renderer.render(issue.digest)
    local = send_time.astimezone(config.tz)
    issue_date = issue.digest.issue_date.isoformat()
    lines = [
        f"The issue of {issue_date} of {config.newsletter.name} (schedule {name!r}) goes out at",
        f"{local:%A %d %B %Y %H:%M %Z} ({send_time.astimezone(UTC):%H:%M} UTC) only if it is approved.",
        "",
        f"Subject: {rendered.subject}",
        f"Stories: {issue.digest.article_count}",
    ]
    if issue.digest.lead is not None:
        lines.append(f"Lead story: {issue.digest.lead.title}")
    for section in issue.digest.sections:
        lines.append(f"  {section.region}: {len(section.teasers)}")
        lines.extend(f"    - {teaser.title}" for teaser in section.teasers)
    if not issue.should_send(config):
        lines += ["", "No articles were collected: as it stands, nothing will be sent."]
    elif since is not None and not any(a.published > since for a in issue.collected.articles):
        lines += ["", "Nothing is new since the last sent issue: as it stands, it will be skipped."]
    lines += [
        "",
        "Review, change and approve it here:",
        f"{config.newsletter.base_url.rstrip('/')}/staff/issue",
        "",
        f"or approve it from the command line: digest schedule approve {name}",
        "Stories published before the send time are added to the issue when it goes out.",
    ]
    text = "\n".join(lines) + "\n"
    subject = f"[Review] {config.newsletter.name} of {issue_date}: approve before {local:%a %H:%M %Z}"
    key = f"review-{name}-{send_time.astimezone(UTC):%Y%m%dT%H%M}"
    recipients = mail_staff(config, engine, subject, text, key, transport)
    stories = issue.digest.article_count
    return f"issue of {issue_date} prepared ({stories} stories); review mail to {', '.join(recipients)}"


# --- APScheduler glue ----------------------------------------------------------------------


@dataclass(frozen=True)
class FiringContext:
    """What a job needs and cannot keep in the job store: passed to every job by our executor."""

    config: Config
    engine: Engine
    clock: Callable[[], datetime]
    transport: Callable[[], Transport | None] = lambda: None


def scheduled_send(
    name: str, *, context: FiringContext | None = None, scheduled_for: datetime | None = None
) -> FiringInfo | None:
    """The job of every schedule (its reference is what the job store keeps)."""
    context, scheduled_for = _given(context, scheduled_for)
    return fire(
        context.config,
        context.engine,
        name,
        context.clock(),
        scheduled_for=scheduled_for,
        transport=context.transport(),
    )


def tick(*, context: FiringContext | None = None, scheduled_for: datetime | None = None) -> None:
    """Every TICK_SECONDS in `digest run`: review mails that are due. (Running at all makes the
    scheduler look at the job store again, which is how it sees schedules other processes add.)"""
    context, _ = _given(context, scheduled_for)
    due_reviews(context.config, context.engine, context.clock(), transport=context.transport())


def takeover_tick(*, context: FiringContext | None = None, scheduled_for: datetime | None = None) -> None:
    """Every few seconds in `digest run`: a send run whose owner died is finished here (take_over)."""
    context, _ = _given(context, scheduled_for)
    take_over(context.config, context.engine, context.clock(), transport=context.transport())


def _given(context: FiringContext | None, scheduled_for: datetime | None) -> tuple[FiringContext, datetime]:
    # The defaults only satisfy APScheduler's signature check when the job is added.
    if context is None or scheduled_for is None:
        raise TypeError("schedule jobs run through FiringExecutor, which passes context and scheduled_for")
    return context, scheduled_for


def due_reviews(
    config: Config, engine: Engine, now: datetime, *, transport: Transport | None = None
) -> list[FiringInfo]:
    """Prepare every review-mode issue whose send time is within `[schedule] review_hours_before`."""
    lead = timedelta(hours=config.schedule.review_hours_before)
    done: list[FiringInfo] = []
    with session_factory(engine)() as session:
        names = list(
            session.scalars(
                select(Schedule.name).where(
                    Schedule.mode == "review", Schedule.paused.is_(False), Schedule.removed_at.is_(None)
                )
            )
        )
        for name in names:
            next_run = session.scalar(
                select(apscheduler_jobs.c.next_run_time).where(apscheduler_jobs.c.id == JOB_PREFIX + name)
            )
            if next_run is None:
                continue
            send_time = datetime.fromtimestamp(next_run, UTC)
            if now < send_time <= now + lead:
                record = prepare_review(config, engine, name, send_time, now, transport=transport)
                if record is not None:
                    done.append(record)
    return done


class FiringExecutor(BasePoolExecutor):
    """APScheduler's thread-pool executor, but each job gets its fire time and our context.

    APScheduler 3 calls a job as `func(*args)`, without the time it was scheduled for, and
    judges misfires by the system clock. A firing needs that time (the claim is keyed on it,
    and the issue is collected as of it), and the tests inject the clock, so run_times go to
    the job as `scheduled_for` and the grace check uses `context.clock`.
    """

    def __init__(self, context: FiringContext, max_workers: int = 1) -> None:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers, thread_name_prefix="digest-schedule")
        super().__init__(pool)
        self.context = context

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        def done(future: concurrent.futures.Future) -> None:
            error = future.exception()
            if error is not None:
                self._run_job_error(job.id, error, error.__traceback__)
            else:
                self._run_job_success(job.id, future.result())

        self._pool.submit(_run_job, job, job._jobstore_alias, run_times, self.context).add_done_callback(done)


def _run_job(job: Job, alias: str, run_times: list[datetime], context: FiringContext) -> list:
    events = []
    for run_time in run_times:
        if job.misfire_grace_time is not None:
            late = context.clock() - run_time
            if late > timedelta(seconds=job.misfire_grace_time):
                events.append(JobExecutionEvent(EVENT_JOB_MISSED, job.id, alias, run_time))
                continue
        try:
            value = job.func(*job.args, context=context, scheduled_for=run_time, **job.kwargs)
        except Exception:
            error = sys.exc_info()[1]
            log.exception("job %s failed", job.id)
            trace = "".join(traceback.format_tb(error.__traceback__)) if error else ""
            events.append(
                JobExecutionEvent(EVENT_JOB_ERROR, job.id, alias, run_time, exception=error, traceback=trace)
            )
        else:
            events.append(JobExecutionEvent(EVENT_JOB_EXECUTED, job.id, alias, run_time, retval=value))
    return events


class _Scheduler(BackgroundScheduler):
    """BackgroundScheduler that looks for due jobs only while running.

    APScheduler 3's loop runs one more round when it is shut down, also when it was only ever
    paused: the editing scheduler of `digest schedule list` would then "fire" a due job into a
    closed executor and store its next fire time, so the running `digest run` never sees that
    firing. Stopped or paused, we do nothing.
    """

    def _process_jobs(self) -> float | None:
        if self.state != STATE_RUNNING:
            return None
        return super()._process_jobs()


def build_scheduler(context: FiringContext) -> BackgroundScheduler:
    """Schedules in the database ("default" store), our own ticks in memory ("internal")."""
    config = context.config
    scheduler = _Scheduler(
        jobstores={
            "default": SQLAlchemyJobStore(engine=context.engine, tablename=APSCHEDULER_TABLE),
            "internal": MemoryJobStore(),
        },
        # One firing at a time: a second schedule due meanwhile waits, then checks what was sent.
        executors={
            "default": FiringExecutor(context, 1),
            "internal": FiringExecutor(context, 1),
            # Its own thread: a takeover that sends for minutes holds up no review mail.
            "takeover": FiringExecutor(context, 1),
        },
        job_defaults={
            "coalesce": True,
            "max_instances": 1,
            "misfire_grace_time": config.schedule.misfire_grace_minutes * 60,
        },
        timezone=config.tz,
    )

    def on_missed(event: JobExecutionEvent) -> None:
        if event.job_id.startswith(JOB_PREFIX):
            name = event.job_id.removeprefix(JOB_PREFIX)
            record_missed(config, context.engine, name, event.scheduled_run_time, context.clock())

    scheduler.add_listener(on_missed, EVENT_JOB_MISSED)
    logging.getLogger("apscheduler.scheduler").addFilter(_quiet_takeover_skips)
    return scheduler


def _quiet_takeover_skips(record: logging.LogRecord) -> bool:
    """While a takeover sends, its next looks are skipped by design: not a warning for staff."""
    message = record.getMessage()
    return not ("takeover_tick" in message and "maximum number of running instances" in message)


# --- the service ---------------------------------------------------------------------------


def takeover_poll_seconds(config: Config) -> float:
    """How often `digest run` looks for a run whose owner died: a takeover starts within
    [send] lease_seconds plus this."""
    return max(0.5, min(5.0, config.send.lease_seconds / 4))


class ScheduleService:
    """Schedules for the CLI, the staff console and `digest run` (see the module docstring)."""

    def __init__(
        self,
        config: Config,
        engine: Engine,
        *,
        clock: Callable[[], datetime] | None = None,
        transport: Callable[[], Transport | None] | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock or (lambda: datetime.now(UTC))
        self.context = FiringContext(config, engine, self.clock, transport or (lambda: None))
        self.sessions = session_factory(engine)
        self.scheduler: BaseScheduler = build_scheduler(self.context)
        self._ready = False
        self._lock = threading.RLock()
        self._starter: threading.Thread | None = None

    # -- life cycle

    def start(self) -> None:
        """Run the scheduler for real (`digest run`): schedules fire, review mails go out.

        First, on a thread of its own, an unfinished send run left by a stopped process is
        resumed (`resume_interrupted`); the schedules start firing once that is done, so a
        firing due at start-up never races the resume in this process.
        """
        self._ensure()
        # Our own job runs on the system clock: it only decides when to look, not what to send.
        self.scheduler.add_job(
            tick,
            "interval",
            seconds=TICK_SECONDS,
            next_run_time=datetime.now(UTC),
            id="digest:tick",
            jobstore="internal",
            executor="internal",
            misfire_grace_time=None,
            replace_existing=True,
        )
        self.scheduler.add_job(
            takeover_tick,
            "interval",
            seconds=takeover_poll_seconds(self.config),
            id="digest:takeover",
            jobstore="internal",
            executor="takeover",
            misfire_grace_time=None,
            coalesce=True,
            replace_existing=True,
        )
        self._starter = threading.Thread(target=self._resume_then_fire, name="digest-schedule-start")
        self._starter.start()

    def _resume_then_fire(self) -> None:
        try:
            resume_interrupted(self.config, self.engine, self.clock(), transport=self.context.transport())
        except Exception:
            log.exception("resuming the unfinished send run at start-up failed")
        finally:
            with self._lock:
                if self.scheduler.state != STATE_STOPPED:
                    self.scheduler.resume()

    def close(self, *, wait: bool = True) -> None:
        """Stop the scheduler; with `wait`, a firing in progress is let finish first (`digest run`
        sets SEND_STOP first, so a send in progress stops at a batch boundary)."""
        if self._starter is not None and wait:
            self._starter.join()
        if self.scheduler.state != STATE_STOPPED:
            self.scheduler.shutdown(wait=wait)

    def __enter__(self) -> ScheduleService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _ensure(self) -> None:
        with self._lock:  # the console calls from several request threads
            if self.scheduler.state == STATE_STOPPED:
                self.scheduler.start(paused=True)  # reads and writes the job store; fires nothing
            if not self._ready:
                self._seed()
                self._sync_jobs()
                self._ready = True

    def _seed(self) -> None:
        """`[schedule] day/time/mode/enabled` become the "weekly" schedule, once, in a new database."""
        with self.sessions() as session:
            if session.scalar(select(Schedule.name).limit(1)) is not None:
                return
        s = self.config.schedule
        with suppress(ScheduleError):  # another process seeded it at the same moment
            self._add(SEED_NAME, "weekly", f"{s.day} {s.time}", s.mode, paused=not s.enabled)

    def _sync_jobs(self) -> None:
        """Make the job store match the schedules table (a crash between the two writes; the
        misfire grace or the newsletter's time zone changed in digest.toml)."""
        grace = self.config.schedule.misfire_grace_minutes * 60
        with self.sessions() as session:
            schedules = {row.name: row for row in session.scalars(select(Schedule))}
        jobs = {job.id: job for job in self.scheduler.get_jobs(jobstore="default")}
        for name, row in schedules.items():
            job = jobs.pop(JOB_PREFIX + name, None)
            if row.removed_at is not None:
                if job is not None:
                    job.remove()
                continue
            if job is None or str(getattr(job.trigger, "timezone", "")) != self.config.newsletter.timezone:
                self._add_job(row, paused=row.paused)  # new, or [newsletter] timezone changed
            elif job.misfire_grace_time != grace:
                job.modify(misfire_grace_time=grace)
        for job in jobs.values():
            if job.id.startswith(JOB_PREFIX):
                job.remove()  # a job whose schedule row is gone

    # -- edits

    def add(
        self, name: str, *, weekly: str | None = None, cron: str | None = None, mode: str = "send"
    ) -> ScheduleInfo:
        """A new schedule: exactly one of `weekly` ("fri 09:00") or `cron` ("0 9 * * 5")."""
        if (weekly is None) == (cron is None):
            raise ScheduleError(f"schedule {name!r}: give either weekly or cron")
        self._ensure()
        kind, expr = _canonical_trigger(weekly, cron)
        self._add(name, kind, expr, mode, paused=False)
        return self.get(name)

    def _add(self, name: str, kind: str, expr: str, mode: str, *, paused: bool) -> None:
        if not _NAME.fullmatch(name):
            raise ScheduleError(
                f"schedule name {name!r}: use 1-64 of a-z, 0-9, - and _, starting with a letter or digit"
            )
        if mode not in MODES:
            raise ScheduleError(f"mode {mode!r}: must be send or review")
        make_trigger(kind, expr, self.config.tz)  # refuse bad text before anything is written
        with self.sessions() as session:
            row = session.get(Schedule, name)
            if row is not None and row.removed_at is None:
                raise ScheduleError(
                    f"schedule {name!r} exists already: remove it first, or pick another name"
                )
            if row is None:
                row = Schedule(name=name, created_at=self.clock())
                session.add(row)
            row.trigger_kind, row.trigger_expr, row.mode, row.paused = kind, expr, mode, paused
            row.removed_at, row.updated_at = None, self.clock()
            try:
                session.commit()
            except IntegrityError:
                raise ScheduleError(f"schedule {name!r} exists already") from None
            self._add_job(row, paused=paused)

    def edit(
        self, name: str, *, weekly: str | None = None, cron: str | None = None, mode: str = "send"
    ) -> ScheduleInfo:
        """A new trigger and mode for an existing schedule, which keeps its name, history and
        paused state; the next fire time is counted afresh from now. Bad text changes nothing."""
        if (weekly is None) == (cron is None):
            raise ScheduleError(f"schedule {name!r}: give either weekly or cron")
        if mode not in MODES:
            raise ScheduleError(f"mode {mode!r}: must be send or review")
        row = self._row(name)
        kind, expr = _canonical_trigger(weekly, cron)
        make_trigger(kind, expr, self.config.tz)  # refuse bad text before anything is written
        with self.sessions() as session:
            session.execute(
                update(Schedule)
                .where(Schedule.name == row.name)
                .values(trigger_kind=kind, trigger_expr=expr, mode=mode, updated_at=self.clock())
            )
            session.commit()
        row.trigger_kind, row.trigger_expr, row.mode = kind, expr, mode
        self._add_job(row, paused=row.paused)
        return self.get(name)

    def _add_job(self, row: Schedule, *, paused: bool) -> None:
        trigger = make_trigger(row.trigger_kind, row.trigger_expr, self.config.tz)
        self.scheduler.add_job(
            scheduled_send,
            trigger=trigger,
            args=(row.name,),
            id=JOB_PREFIX + row.name,
            name=row.name,
            jobstore="default",
            executor="default",
            replace_existing=True,
            # Computed with our clock (APScheduler would use the system's); None = paused.
            next_run_time=None if paused else trigger.get_next_fire_time(None, self.clock()),
        )

    def pause(self, name: str) -> ScheduleInfo:
        row = self._row(name)
        self._set_paused(row, True)
        self.scheduler.modify_job(JOB_PREFIX + name, jobstore="default", next_run_time=None)
        return self.get(name)

    def resume(self, name: str) -> ScheduleInfo:
        """Fires next at the trigger's next time from now: firings missed while paused stay missed."""
        row = self._row(name)
        self._set_paused(row, False)
        trigger = make_trigger(row.trigger_kind, row.trigger_expr, self.config.tz)
        self.scheduler.modify_job(
            JOB_PREFIX + name,
            jobstore="default",
            next_run_time=trigger.get_next_fire_time(None, self.clock()),
        )
        return self.get(name)

    def skip_next(self, name: str, *, by: str = "") -> ScheduleInfo:
        """Skip the next firing only: it is recorded as skipped (its claim is taken, so no other
        process can fire it either) and the one after becomes next."""
        row = self._row(name)
        job = self.scheduler.get_job(JOB_PREFIX + name, jobstore="default")
        if job is None or job.next_run_time is None:
            raise ScheduleError(f"schedule {name!r} is paused: there is no next firing to skip")
        skipped = job.next_run_time
        firing_id = _claim(self.sessions, name, skipped, "send", by=by, now=self.clock())
        if firing_id is not None:
            who = f" by {by}" if by else ""
            _finish(
                self.sessions,
                firing_id,
                Outcome.SKIPPED,
                f"skipped{who} before it was due",
                now=self.clock(),
                issue=issue_date_of(skipped, self.config).isoformat(),
            )
        trigger = make_trigger(row.trigger_kind, row.trigger_expr, self.config.tz)
        self.scheduler.modify_job(
            JOB_PREFIX + name, jobstore="default", next_run_time=trigger.get_next_fire_time(skipped, skipped)
        )
        return self.get(name)

    def remove(self, name: str) -> None:
        row = self._row(name)
        with self.sessions() as session:
            session.execute(update(Schedule).where(Schedule.name == row.name).values(removed_at=self.clock()))
            session.commit()
        with suppress(JobLookupError):
            self.scheduler.remove_job(JOB_PREFIX + name, jobstore="default")

    def run_now(self, name: str, *, by: str = "") -> FiringInfo:
        """Fire now, in this thread, whatever the schedule's state: staff decided it goes out.

        It sends the upcoming issue (`upcoming`), collected for its own send time and curated as
        staff curated it; in review mode only if that issue's approval holds."""
        self._row(name)
        issue_time, _held = self.upcoming(name)
        record = fire(
            self.config,
            self.engine,
            name,
            self.clock(),
            kind="manual",
            by=by,
            transport=self.context.transport(),
            issue_time=issue_time,
        )
        assert record is not None  # a manual firing's key is the moment it was asked for
        return record

    def upcoming(self, name: str) -> tuple[datetime, bool]:
        """(send time, held) of the issue that run-now and approve mean for schedule `name`:
        its newest scheduled firing's issue when that was held, missed or failed and has not
        gone out since; else the next issue its trigger fires (also while paused)."""
        row = self._row(name)
        from digest.send import finished_run_for

        with self.sessions() as session:
            last = session.scalar(
                select(Firing)
                .where(Firing.schedule_name == name, Firing.kind.in_(("send", "refire")))
                .order_by(Firing.fire_time.desc(), Firing.id.desc())
                .limit(1)
            )
            if last is not None and last.outcome in _NOT_OUT:
                issue = issue_date_of(last.fire_time, self.config).isoformat()
                if finished_run_for(session, issue) is None:
                    return last.fire_time.astimezone(UTC), True
        job = self.scheduler.get_job(JOB_PREFIX + name, jobstore="default")
        if job is not None and job.next_run_time is not None:
            return job.next_run_time.astimezone(UTC), False
        trigger = make_trigger(row.trigger_kind, row.trigger_expr, self.config.tz)
        following = trigger.get_next_fire_time(None, self.clock())
        return (following or self.clock()).astimezone(UTC), False

    def approve(self, target: str, *, by: str, issue: str | None = None) -> ApprovalInfo:
        """Approve one issue, as it is curated now: `target` is a schedule (its upcoming issue:
        the held one, else the next) or an ISO date; `issue` names the date explicitly."""
        if not by.strip():
            raise ScheduleError("approve: say who approves (by)")
        from digest.curate import curation_stamp
        from digest.drafts import load_draft

        if issue is not None:
            if not _ISO_DATE.fullmatch(issue):
                raise ScheduleError(f"issue {issue!r}: write the issue date as YYYY-MM-DD")
            schedule = "" if _ISO_DATE.fullmatch(target) else self._row(target).name
            issue = self._issue_of(issue)[0]
        else:
            issue, schedule = self._issue_of(target)
        with self.sessions() as session:
            row = session.get(Approval, issue)
            if row is None:
                row = Approval(issue=issue)
                session.add(row)
            row.schedule_name, row.approved_by, row.approved_at = schedule, by.strip(), self.clock()
            row.curation = curation_stamp(load_draft(session, date.fromisoformat(issue)))
            session.commit()
            return _approval_info(row, session)

    def revoke_approval(self, target: str) -> bool:
        issue, _schedule = self._issue_of(target)
        with self.sessions() as session:
            row = session.get(Approval, issue)
            if row is None:
                return False
            session.delete(row)
            session.commit()
            return True

    def approval_for(self, issue: str) -> ApprovalInfo | None:
        """The approval of `issue`, with `withdrawn` saying whether the curation changed since."""
        with self.sessions() as session:
            row = session.get(Approval, issue)
            return _approval_info(row, session) if row is not None else None

    def _issue_of(self, target: str) -> tuple[str, str]:
        if _ISO_DATE.fullmatch(target):
            try:
                return date.fromisoformat(target).isoformat(), ""
            except ValueError:
                raise ScheduleError(f"issue {target!r} is not a date") from None
        send_time, _held = self.upcoming(target)
        return issue_date_of(send_time, self.config).isoformat(), target

    # -- reading

    def get(self, name: str) -> ScheduleInfo:
        return self._info(self._row(name))

    def list(self) -> list[ScheduleInfo]:
        self._ensure()
        with self.sessions() as session:
            rows = list(
                session.scalars(select(Schedule).where(Schedule.removed_at.is_(None)).order_by(Schedule.name))
            )
        return [self._info(row) for row in rows]

    def firings(self, name: str | None = None, *, limit: int = 50) -> list[FiringInfo]:
        with self.sessions() as session:
            query = select(Firing).order_by(Firing.id.desc()).limit(limit)
            if name is not None:
                query = query.where(Firing.schedule_name == name)
            return [_firing_info(row, self.config.tz) for row in session.scalars(query)]

    def due_reviews(self) -> list[FiringInfo]:
        """What the running scheduler's tick does; for callers that drive time themselves."""
        return due_reviews(self.config, self.engine, self.clock(), transport=self.context.transport())

    def _row(self, name: str) -> Schedule:
        self._ensure()
        with self.sessions() as session:
            row = session.get(Schedule, name)
        if row is None or row.removed_at is not None:
            raise ScheduleError(f"no schedule named {name!r} (digest schedule list shows them)")
        return row

    def _set_paused(self, row: Schedule, paused: bool) -> None:
        with self.sessions() as session:
            session.execute(
                update(Schedule)
                .where(Schedule.name == row.name)
                .values(paused=paused, updated_at=self.clock())
            )
            session.commit()

    def _info(self, row: Schedule) -> ScheduleInfo:
        tz = self.config.tz
        job = self.scheduler.get_job(JOB_PREFIX + row.name, jobstore="default")
        next_fire = job.next_run_time if job is not None else None
        next_issue = issue_date_of(next_fire, self.config).isoformat() if next_fire else None
        send_time, held = self.upcoming(row.name)
        held_issue = issue_date_of(send_time, self.config).isoformat() if held else None
        with self.sessions() as session:
            last = session.scalar(
                select(Firing).where(Firing.schedule_name == row.name).order_by(Firing.id.desc()).limit(1)
            )
            upcoming = held_issue or next_issue
            approval = session.get(Approval, upcoming) if upcoming else None
            approval_info = _approval_info(approval, session) if approval is not None else None
            return ScheduleInfo(
                name=row.name,
                trigger=trigger_text(row.trigger_kind, row.trigger_expr),
                mode=row.mode,
                paused=row.paused,
                next_fire=next_fire.astimezone(tz) if next_fire else None,
                next_fire_utc=next_fire.astimezone(UTC) if next_fire else None,
                next_issue=next_issue,
                approval=approval_info,
                last=_firing_info(last, tz) if last is not None else None,
                held_issue=held_issue,
            )
