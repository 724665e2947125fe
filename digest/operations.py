"""What staff do to sends and schedules, whether from the command line or the console.

Both `digest.commands` (the CLI) and `digest.web` (the staff console) call these; neither
imports the other. Each operation takes what it works on (a session, a config, a schedule
service) and returns plain data or a sentence for staff: printing and pages are the callers'.

- run record: `run_record` (what `digest runs show` and the console's run page show)
- pause, abandon: `pause`, `abandon`
- resume and "send again" (pending, failed or unknown rows): `plan_resume`, then `send_resumed`
- run now: `run_now_plan` (what the confirmation shows), then `run_now`; approve a
  review-mode issue: `approve_next`, `approve`, `revoke`; its state: `approval_state`
- staff alerts (the dashboard's banners): `open_alerts`, `acknowledge_alert`
- test send: `test_send`
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Engine, func, select

from digest.clicks import click_report
from digest.config import Config
from digest.db import session_factory
from digest.drafts import load_draft
from digest.errors import RunBusyError, ScheduleError
from digest.models import STATUSES, DeliveryStatus
from digest.pipeline import Issue, SendOutcome, prepare_issue, send_issue, send_test
from digest.schedule import ApprovalInfo, FiringInfo, ScheduleInfo, ScheduleService
from digest.send import Delivery, RunStatus, SendRun, reopen, request_pause, rows_with_status, run_totals
from digest.send import abandon as abandon_run
from digest.transports.base import Transport

# --- the run record ----------------------------------------------------------------------


def rate_of(run: SendRun, totals: Counter[str]) -> float:
    return totals["sent"] / run.active_seconds if run.active_seconds > 0 else 0.0


def get_run(session: Any, run_id: str) -> SendRun:
    run = session.get(SendRun, run_id)
    if run is None:
        raise RunBusyError(run_id, "no such run (see `digest runs`)")
    return run


def run_record(session: Any, run: SendRun, config: Config) -> dict[str, Any]:
    """Everything staff need about one run, as plain data (for --json and the console)."""
    from digest.distributed import RunDispatch, worker_records

    totals = run_totals(session, run.id)
    problems = rows_with_status(session, run.id, [DeliveryStatus.FAILED, DeliveryStatus.UNKNOWN])
    record: dict[str, Any] = {
        "id": run.id,
        "issue": run.issue,
        "status": run.status,
        "reason": run.paused_reason,
        "transport": run.transport,
        "owner": run.owner,  # the process (or coordinator) holding an unfinished run
        "pause_requested": run.pause_requested,  # who asked the sending process to pause
        "started": run.created_at.isoformat(),
        "finished": run.finished_at.isoformat() if run.finished_at else None,
        "window_end": run.window_end.isoformat(),
        "active_seconds": round(run.active_seconds, 3),
        "rate_per_second": round(rate_of(run, totals), 1),
        "totals": {s: totals[s] for s in (*STATUSES, "sending")},
        "recipients": sum(totals.values()),
        "notes": run.notes_dict(),
        "problems": [
            {
                "email": row.email,
                "status": DeliveryStatus(row.status).value,
                "error": row.detail,
                "message_id": row.message_id,
                "attempts": row.attempts,
                "updated": row.updated_at.isoformat(),
            }
            for row in problems
        ],
    }
    record.update(skipped_readers(session, run.id))
    record.update(bounce_counts(session, run.id))
    record["alarms"] = alarms(session, run.id)
    record["workers"] = worker_records(session, run.id)
    record["distributed"] = session.get(RunDispatch, run.id) is not None  # sent by Celery workers
    record["clicks"] = run_clicks(session, run.id)
    return record


def run_clicks(session: Any, run_id: str) -> dict[str, Any]:
    """A run's clicks per story, region and variant (digest.clicks); never per reader."""
    return click_report(session, run_id)


SKIPPED_SHOWN = 100  # addresses listed with their reason; the counts cover every skipped row


def skipped_readers(session: Any, run_id: str) -> dict[str, Any]:
    """Who the run skipped and why: the count per reason, and the first addresses."""
    reasons = session.execute(
        select(Delivery.detail, func.count())
        .where(Delivery.run_id == run_id, Delivery.status == DeliveryStatus.SKIPPED)
        .group_by(Delivery.detail)
        .order_by(func.count().desc())
    ).all()
    rows = rows_with_status(session, run_id, [DeliveryStatus.SKIPPED], limit=SKIPPED_SHOWN)
    return {
        "skipped_reasons": {reason or "no reason recorded": n for reason, n in reasons},
        "skipped": [{"email": row.email, "reason": row.detail} for row in rows],
    }


def bounce_counts(session: Any, run_id: str) -> dict[str, int]:
    """Bounced and complained counts, where the list-hygiene module is there to count them."""
    try:
        from subscribers.reports import run_bounce_counts
    except ImportError:
        return {}
    return dict(run_bounce_counts(session, run_id))


def alarms(session: Any, run_id: str) -> list[dict[str, Any]]:
    """Refusals of our sending (blocked, authfailure, spam...) by reason and receiving domain:
    staff's to fix, never the readers' (subscribers.reports.run_alarms)."""
    try:
        from subscribers.reports import run_alarms
    except ImportError:
        return []
    return [
        {"reason": a.reason, "domain": a.domain, "count": a.count, "text": a.text, "example": a.example}
        for a in run_alarms(session, run_id)
    ]


# --- pause and abandon -------------------------------------------------------------------


def pause(session: Any, run_id: str, by: str) -> tuple[bool, str]:
    """Pause a run sent by Celery workers (`digest runs pause`, the console's Pause): every
    worker stops at its next row. Returns whether it was paused, and what to tell staff."""
    from digest.distributed import RunDispatch, pause_run

    run = get_run(session, run_id)
    if run.status != RunStatus.RUNNING:
        return False, f"Run {run.id} is {run.status}: nothing to pause."
    if session.get(RunDispatch, run.id) is None:
        # Sent by one process: it reads the request before each batch it claims.
        if run.pause_requested or not request_pause(session, run.id, by):
            return False, f"Run {run.id}: a pause was asked already; it stops at its next batch."
        return True, (
            f"Run {run.id} pauses at its next batch: the sending process ({run.owner or '?'}) records "
            f"what it handed over and stops. Go on with Resume, or `digest resume {run.id}`."
        )
    if pause_run(session, run.id, f"paused by {by}") is None:
        return False, f"Run {run.id} ended meanwhile: nothing to pause."
    return True, (
        f"Run {run.id} paused: its workers stop at their next row. Go on with `digest resume {run.id}`."
    )


def abandon(session: Any, run_id: str) -> tuple[bool, str]:
    """Close an unfinished run for good (`digest send --abandon`, the console's Abandon): its
    pending rows are skipped, and workers stop at their next row."""
    run = get_run(session, run_id)
    if run.open_slot is None:
        return False, f"Run {run.id} is {run.status}: it is closed already."
    skipped = abandon_run(session, run.id)
    return True, f"Run {run.id} (issue {run.issue}) abandoned; {skipped} deliveries skipped."


# --- resume and send again ---------------------------------------------------------------


@dataclass(frozen=True)
class ResumePlan:
    """What `digest resume` (and the console's "send again to these") is about to send."""

    run_id: str
    status: str
    window_end: datetime  # the run's own week window, collected again
    since: datetime | None
    selected: bool  # staff chose rows (include/only): only those go, nothing else pending
    chosen: int  # rows made pending again (when selected)
    nothing_pending: bool  # a plain resume of a run with nothing left to send: nothing to do


def plan_resume(
    session: Any, run_id: str, *, include: Sequence[DeliveryStatus] = (), only: Sequence[str] = ()
) -> ResumePlan:
    """The database half of a resume: with `include` or `only`, those rows are made pending again
    (`digest.send.reopen`). RunBusyError (no such run, an address not in it, another run
    unfinished) leaves everything as it was."""
    run = get_run(session, run_id)
    selected = bool(include or only)
    plan = ResumePlan(
        run_id=run.id,
        status=run.status,
        window_end=run.window_end,
        since=window_start_for(session, run),
        selected=selected,
        chosen=0,
        nothing_pending=not selected and run.open_slot is None,
    )
    if not selected or plan.nothing_pending:
        return plan
    chosen = reopen(session, run.id, include=list(include) or [DeliveryStatus.PENDING], only=list(only))
    return dataclasses.replace(plan, chosen=chosen)


def can_resume(session: Any, run_id: str) -> tuple[bool, str]:
    """Whether a plain resume (pending rows only) may start now, or why not."""
    run = get_run(session, run_id)
    if run.status != RunStatus.PAUSED or run.open_slot is None:
        return False, f"Run {run.id} is {run.status}: nothing to resume."
    return True, ""


def window_start_for(session: Any, run: SendRun) -> datetime | None:
    """Where the run's since_last_send window started: the last finished run before it."""
    return session.scalar(
        select(SendRun.window_end)
        .where(
            SendRun.status == RunStatus.FINISHED,
            SendRun.id != run.id,
            SendRun.window_end < run.window_end,
        )
        .order_by(SendRun.window_end.desc())
        .limit(1)
    )


def send_resumed(config: Config, plan: ResumePlan, send: Callable[..., SendOutcome]) -> SendOutcome:
    """The sending half: the run's week collected again, then `send(issue, resume_run=, unpark=)`
    (with progress at the command line; `send_quietly` in the console). After a selection,
    parked rows stay parked: only the chosen ones go."""
    issue = prepare_issue(config, plan.window_end.astimezone(config.tz), since=plan.since)
    return send(issue, resume_run=plan.run_id, unpark=not plan.selected)


def send_quietly(
    config: Config, engine: Engine, transport: Transport, issue: Issue, **kwargs: Any
) -> SendOutcome:
    """send_issue with nothing printed, for sends started from the console. It stops at a batch
    boundary on SIGTERM under `digest run` (the schedule's stop event), as scheduled sends do."""
    from rich.console import Console

    from digest.schedule import SEND_STOP

    kwargs.setdefault("stop", SEND_STOP)
    return send_issue(config, engine, transport, issue=issue, console=Console(quiet=True), **kwargs)


def outcome_line(outcome: SendOutcome) -> str:
    """One line for staff about what a (re)send did this time."""
    report = outcome.report
    done = ", ".join(f"{report.counts[s]} {s}" for s in ("sent", "failed", "unknown", "skipped"))
    paused = f"; paused: {report.reason}" if report.paused else ""
    return f"run {report.run_id}: {done}{paused}"


# --- schedules: run now, approve ---------------------------------------------------------


def run_now(service: ScheduleService, name: str, by: str) -> FiringInfo:
    """Fire a schedule now (`digest schedule run-now`, the console's Run now)."""
    return service.run_now(name, by=by)


@dataclass(frozen=True)
class RunNowPlan:
    """What "Run now" is about to send: shown to staff before they confirm."""

    schedule: str
    mode: str
    issue: str  # ISO date of the upcoming issue (the held one first)
    send_time: datetime  # its own send time, in the newsletter's zone
    held: bool  # a scheduled firing held, missed or failed it, and it has not gone out since
    readers: int  # active readers now: who gets it
    approval: str  # the approval state, in words
    will_send: bool  # False in review mode without an approval that holds: it would be held


def run_now_plan(service: ScheduleService, session: Any, name: str) -> RunNowPlan:
    """The issue `run_now` would send for schedule `name`, its readers and approval."""
    from digest.send import dedupe
    from subscribers.store import active_recipients

    info = service.get(name)
    send_time, held = service.upcoming(name)
    issue = send_time.astimezone(service.config.tz).date().isoformat()
    words, holds = approval_state(service, info.mode, issue)
    return RunNowPlan(
        schedule=name,
        mode=info.mode,
        issue=issue,
        send_time=send_time.astimezone(service.config.tz),
        held=held,
        readers=len(dedupe(active_recipients(session))),
        approval=words,
        will_send=holds,
    )


def approval_state(service: ScheduleService, mode: str, issue: str) -> tuple[str, bool]:
    """(what to tell staff, whether it may go out) of the approval of `issue` in `mode`."""
    if mode != "review":
        return "not needed (send mode)", True
    approval = service.approval_for(issue)
    if approval is None:
        return f"not approved: the issue of {issue} is held until someone approves it", False
    if not approval.holds:
        return f"approval withdrawn: {approval.withdrawn}", False
    return (
        f"approved by {approval.approved_by} at {approval.approved_at:%Y-%m-%d %H:%M} UTC, as curated now",
        True,
    )


def open_alerts(session: Any) -> list[Any]:
    """What staff were told and nobody acknowledged yet (digest.alerts), newest first."""
    from digest.alerts import open_alerts as unacknowledged

    return unacknowledged(session)


def acknowledge_alert(session: Any, alert_id: int, by: str, now: datetime) -> bool:
    from digest.alerts import acknowledge

    return acknowledge(session, alert_id, by=by, now=now)


def firing_line(firing: FiringInfo) -> str:
    run = f" (run {firing.run_id})" if firing.run_id else ""
    return f"{firing.outcome}{run}: {firing.detail}"


def approve(service: ScheduleService, target: str, by: str, *, issue: str | None = None) -> ApprovalInfo:
    """Approve a review-mode issue as it is curated now: a schedule's upcoming one (the held
    issue first, else the next), an issue date (YYYY-MM-DD), or `issue` of schedule `target`.
    With `[schedule] approver_must_differ`, ScheduleError if `by` last edited its curation."""
    if service.config.schedule.approver_must_differ:
        check_four_eyes(service, issue or target, by)
    return service.approve(target, by=by, issue=issue)


def check_four_eyes(service: ScheduleService, target: str, by: str) -> None:
    try:
        issue = date.fromisoformat(target)
    except ValueError:
        next_issue = service.get(target).upcoming_issue  # what approve(target) approves
        if next_issue is None:
            return  # service.approve says why there is nothing to approve
        issue = date.fromisoformat(next_issue)
    with session_factory(service.engine)() as db:
        draft = load_draft(db, issue)
    if draft is not None and draft.updated_by.strip().casefold() == by.strip().casefold():
        raise ScheduleError(
            f"{by} last edited the curation of the issue of {issue}: with [schedule] approver_must_differ "
            "someone else must approve it"
        )


def revoke(service: ScheduleService, target: str) -> bool:
    """Take an approval back; whether there was one."""
    return service.revoke_approval(target)


def next_fire_text(info: ScheduleInfo) -> str:
    if info.next_fire is None:
        return "no next firing"
    return f"next {info.next_fire:%a %d %b %Y %H:%M %Z} ({info.next_fire_utc:%H:%M} UTC)"


def approve_next(service: ScheduleService, name: str, by: str, *, revoke_it: bool = False) -> str:
    """Approve (or revoke) the upcoming issue of schedule `name` (the held one first, else the
    next), as it is curated now; what to tell staff. ScheduleError when the schedule has no
    issue to approve."""
    info = service.get(name)
    issue = info.upcoming_issue
    if issue is None:
        raise ScheduleError(f"schedule {name!r} is paused: it has no next issue to approve")
    if revoke_it:
        if revoke(service, issue):
            return f"Approval of the issue of {issue} revoked: it is held at its time."
        return f"The issue of {issue} was not approved."
    approved = approve(service, name, by, issue=issue)
    when = (
        "held since its time: Run now sends it"
        if info.held_issue
        else f"it goes out {next_fire_text(info).removeprefix('next ')}"
    )
    return f"The issue of {approved.issue} is approved by {approved.approved_by}, as curated now: {when}."


# --- test send ---------------------------------------------------------------------------


def test_send(
    config: Config,
    issue: Issue,
    to: str,
    transport: Transport,
    *,
    regions: frozenset[str] | None = None,
) -> str:
    """One `[TEST]` copy of the variant for `regions` to `to`, outside any run; the reply."""
    return send_test(config, issue, to, transport, regions=regions)


test_send.__test__ = False  # type: ignore[attr-defined]  # pytest: not a test
