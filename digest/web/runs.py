"""The run history (/staff/runs) and one run's page (/staff/runs/<id>): what went out, to
whom, what failed; Pause (editors too: it loses nothing), Abandon and "send again to these"
(admins). Each action is one call of `digest.operations`, as `digest runs` makes it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Response, abort, flash, g, redirect, request, url_for

from digest import operations
from digest.errors import ConfigError, RunBusyError
from digest.models import DeliveryStatus
from digest.pipeline import signing_key
from digest.send import SendRun
from digest.web import console
from digest.web.pages import staff_page
from digest.web.site import Site, site

log = logging.getLogger(__name__)


def runs() -> Response:
    s = site()
    with s.sessions() as db:
        found = console.recent_runs(db, limit=100)
    return staff_page("runs.html", runs=found, jobs=s.jobs.recent()[:5])


def record_or_404(run_id: str) -> dict[str, Any]:
    s = site()
    with s.sessions() as db:
        run = db.get(SendRun, run_id)
        if run is None:
            abort(404)
        return operations.run_record(db, run, s.config)


def run_page(run_id: str, status: int = 200, **extra: Any) -> Response:
    record = record_or_404(run_id)
    return staff_page("run.html", status, record=record, jobs=site().jobs.recent()[:5], **extra)


def run(run_id: str) -> Response:
    return run_page(run_id)


def stop_run(run_id: str, act: Callable[[Any], tuple[bool, str]]) -> Response:
    """Pause or abandon: `act(db)` says whether it did, and what; the run's page shows it."""
    with site().sessions() as db:
        if db.get(SendRun, run_id) is None:
            abort(404)
        done, said = act(db)
    log.info("staff: %s: %s", g.staff.email, said)
    flash(said, "notice" if done else "error")
    return redirect(url_for("staff.run", run_id=run_id), 303)


def run_pause(run_id: str) -> Response:
    """Pause a run: its senders stop at their next row."""
    return stop_run(run_id, lambda db: operations.pause(db, run_id, g.staff.email))


def run_resume(run_id: str) -> Response:
    """Go on with a paused run, in the background: its pending rows, as `digest resume ID`."""
    s = site()
    by = g.staff.email
    with s.starting:
        busy = s.jobs.running()
        if busy is not None:
            flash(f"Not resumed: “{busy.label}” (started by {busy.by}) is still running.", "error")
            return redirect(url_for("staff.run", run_id=run_id), 303)
        with s.sessions() as db:
            if db.get(SendRun, run_id) is None:
                abort(404)
            ok, why = operations.can_resume(db, run_id)
            plan = operations.plan_resume(db, run_id) if ok else None
        if plan is None:
            flash(why, "error")
            return redirect(url_for("staff.run", run_id=run_id), 303)
        resumable = plan
        job = s.jobs.start(f"resume run {run_id}", by, lambda: send_plan(s, resumable))
    log.info("staff: %s resumed run %s", by, run_id)
    flash(
        f"Resumed at {job.started_at.astimezone(s.config.tz):%H:%M:%S}: its pending deliveries go out.",
        "notice",
    )
    return redirect(url_for("staff.run", run_id=run_id), 303)


def send_plan(s: Site, plan: operations.ResumePlan) -> str:
    """On the console's background thread (no request there: `s` is passed): the plan's rows
    sent; one line on how it went."""

    def send(issue: Any, **kwargs: Any) -> Any:
        return operations.send_quietly(s.config, s.engine, s.transport_factory(), issue, **kwargs)

    return operations.outcome_line(operations.send_resumed(s.config, plan, send))


def abandon_page(run_id: str, status: int = 200, error: str = "") -> Response:
    return staff_page("run_abandon.html", status, record=record_or_404(run_id), error=error)


def run_abandon_confirm(run_id: str) -> Response:
    """Abandon asks on a page of its own (the run's page reloads while the run is running)."""
    return abandon_page(run_id)


def run_abandon(run_id: str) -> Response:
    """Close an unfinished run for good: its pending rows are skipped, workers stop."""
    if request.form.get("confirm") != "yes":
        return abandon_page(run_id, 400, "Nothing was changed: tick the box to confirm.")
    return stop_run(run_id, lambda db: operations.abandon(db, run_id))


def resend_choice() -> tuple[list[DeliveryStatus], list[str], str]:
    """The rows the form asks to send again to, or what is wrong with the choice."""
    wanted = set(request.form.getlist("include"))
    include = [st for st in (DeliveryStatus.FAILED, DeliveryStatus.UNKNOWN) if st.value in wanted]
    only = [a.strip() for a in request.form.getlist("only") if a.strip()]
    if not include:
        return include, only, "Choose failed or unknown rows to send again to."
    if request.form.get("selection") == "ticked" and not only:
        return include, only, "Tick the rows to send again to first."
    return include, only, ""


def run_resend(run_id: str) -> Response:
    """ "Send again to these": the chosen failed or unknown rows of a run, and no one else."""
    s = site()
    include, only, problem = resend_choice()
    if problem:
        return run_page(run_id, 400, resend_error=problem)
    by = g.staff.email
    try:
        signing_key(s.config)  # a missing DIGEST_SECRET_KEY is said here, before any row is reopened
    except ConfigError as err:
        return run_page(run_id, 500, resend_error=f"Nothing was changed: {err}.")
    with s.starting:
        busy = s.jobs.running()
        if busy is not None:
            return run_page(
                run_id,
                409,
                resend_error=f"Nothing was changed: “{busy.label}” (started by {busy.by}) is still "
                "running; wait until it has finished.",
            )
        try:
            with s.sessions() as db:
                if db.get(SendRun, run_id) is None:
                    abort(404)
                plan = operations.plan_resume(db, run_id, include=include, only=only)
        except RunBusyError as err:
            log.info("staff: %s: send again to run %s refused: %s", by, run_id, err)
            return run_page(run_id, 409, resend_error=f"Nothing was changed: {err}.")
        if not plan.chosen:
            return run_page(
                run_id, 200, resend_error="No row of the run matches; nothing was changed or sent."
            )

        kinds = " or ".join(st.value for st in include)
        job = s.jobs.start(
            f"send again: {plan.chosen} {kinds} rows of run {run_id}", by, lambda: send_plan(s, plan)
        )
    log.info("staff: %s sends again to %d rows of run %s", by, plan.chosen, run_id)
    flash(
        f"Started at {job.started_at.astimezone(s.config.tz):%H:%M:%S}: sending again to {plan.chosen} "
        f"{'delivery' if plan.chosen == 1 else 'deliveries'} of this run, and no one else.",
        "notice",
    )
    return redirect(url_for("staff.run", run_id=run_id), 303)
