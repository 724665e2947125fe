"""When the issue goes out (/staff/schedules, admins): add, edit, pause, resume, skip, remove,
run now; and approving a review-mode issue (/staff/approvals, editors too). The schedules are
`console.ConsoleSchedules`: `digest run`'s running service, or one made for the app."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Response, abort, flash, g, redirect, request, url_for

from digest import operations
from digest.errors import ConsoleBusyError, ScheduleError
from digest.schedule import MODES, ScheduleInfo
from digest.web import console
from digest.web.pages import staff_page
from digest.web.site import site

log = logging.getLogger(__name__)

# Where an approval form may send the browser back to.
APPROVAL_RETURNS = frozenset({"staff.issue", "staff.dashboard", "staff.schedules"})


def schedule_form() -> dict[str, str]:
    form = request.form
    return {
        "name": form.get("name", "").strip()[:64],
        "kind": form.get("kind", "weekly"),
        "when": form.get("when", "").strip()[:200],
        "mode": form.get("mode", "send"),
    }


def trigger_args(form: dict[str, str]) -> dict[str, str]:
    if form["kind"] not in {"weekly", "cron"}:
        raise ScheduleError(f"kind {form['kind']!r}: must be weekly or cron")
    if not form["when"]:
        raise ScheduleError("say when: a day and time such as “fri 09:00”, or the five crontab fields")
    return {form["kind"]: form["when"]}


def schedules_page(status: int = 200, **extra: Any) -> Response:
    s = site()
    entries, note = console.scheduled_sends(s.schedules)
    try:
        history = s.schedules().firings(limit=50)
    except Exception as err:  # noqa: BLE001  shown with the note; the page stays up
        log.exception("cannot read the firing history")
        history, note = [], note or f"cannot read the firings ({err})"
    extra.setdefault("form", {"name": "", "kind": "weekly", "when": "", "mode": "send"})
    return staff_page(
        "schedules.html",
        status,
        entries=entries,
        note=note,
        history=history,
        modes=MODES,
        jobs=s.jobs.recent()[:5],
        **extra,
    )


def back_to_schedules(message: str) -> Response:
    flash(message, "notice")
    return redirect(url_for("staff.schedules"), 303)


def schedules_index() -> Response:
    return schedules_page()


def schedule_add() -> Response:
    form = schedule_form()
    try:
        info = site().schedules().add(form["name"], mode=form["mode"], **trigger_args(form))
    except ScheduleError as err:
        return schedules_page(400, form=form, form_error=str(err))
    log.info("staff: %s added schedule %s (%s, %s)", g.staff.email, info.name, info.trigger, info.mode)
    return back_to_schedules(f"Schedule “{info.name}” added: {info.trigger}, {info.mode}.")


def schedule_info_or_404(name: str) -> ScheduleInfo:
    try:
        return site().schedules().get(name)
    except ScheduleError:
        abort(404)


def schedule_page(name: str, status: int = 200, **extra: Any) -> Response:
    info = schedule_info_or_404(name)
    kind, _sep, when = info.trigger.partition(" ")
    extra.setdefault("form", {"name": info.name, "kind": kind, "when": when, "mode": info.mode})
    history = site().schedules().firings(info.name, limit=100)
    return staff_page("schedule.html", status, info=info, history=history, modes=MODES, **extra)


def schedule(name: str) -> Response:
    return schedule_page(name)


def schedule_edit(name: str) -> Response:
    schedule_info_or_404(name)
    form = schedule_form()
    form["name"] = name
    try:
        info = site().schedules().edit(name, mode=form["mode"], **trigger_args(form))
    except ScheduleError as err:
        return schedule_page(name, 400, form=form, form_error=str(err))
    log.info("staff: %s changed schedule %s to %s, %s", g.staff.email, name, info.trigger, info.mode)
    return back_to_schedules(f"Schedule “{name}” is now {info.trigger}, {info.mode}.")


def schedule_action(name: str, act: Callable[[], str]) -> Response:
    schedule_info_or_404(name)
    try:
        message = act()
    except ScheduleError as err:
        flash(f"Nothing was changed: {err}", "error")
        return redirect(url_for("staff.schedules"), 303)
    log.info("staff: %s: %s", g.staff.email, message)
    return back_to_schedules(message)


def schedule_pause(name: str) -> Response:
    def pause() -> str:
        site().schedules().pause(name)
        return f"Schedule “{name}” is paused: it fires nothing until resumed."

    return schedule_action(name, pause)


def schedule_resume(name: str) -> Response:
    def resume() -> str:
        return f"Schedule “{name}” resumed: {operations.next_fire_text(site().schedules().resume(name))}."

    return schedule_action(name, resume)


def schedule_skip(name: str) -> Response:
    def skip() -> str:
        service = site().schedules()
        before = service.get(name).next_fire
        info = service.skip_next(name, by=g.staff.email)
        after = operations.next_fire_text(info)
        return f"Schedule “{name}”: the firing of {before:%a %d %b %H:%M} is skipped; {after}."

    return schedule_action(name, skip)


def schedule_remove(name: str) -> Response:
    def remove() -> str:
        site().schedules().remove(name)
        return f"Schedule “{name}” removed; its history stays below."

    return schedule_action(name, remove)


def run_now_page(name: str, status: int = 200, error: str = "") -> Response:
    s = site()
    schedule_info_or_404(name)
    with s.sessions() as db:
        plan = operations.run_now_plan(s.schedules(), db, name)
    return staff_page("run_now.html", status, plan=plan, error=error)


def schedule_run_now_confirm(name: str) -> Response:
    """Run now asks first, on a page of its own: which issue, to how many readers, approved?"""
    return run_now_page(name)


def schedule_run_now(name: str) -> Response:
    s = site()
    schedule_info_or_404(name)
    if request.form.get("confirm") != "yes":
        return run_now_page(name, 400, "Nothing was sent: confirm on this page first.")
    with s.sessions() as db:
        plan = operations.run_now_plan(s.schedules(), db, name)
    if request.form.get("issue") != plan.issue:
        # What staff confirmed is no longer what would go out (a firing or an edit in between).
        return run_now_page(
            name, 409, f"Nothing was sent: the upcoming issue is now {plan.issue}; check again."
        )
    by = g.staff.email
    service = s.schedules()
    try:
        with s.starting:
            job = s.jobs.start(
                f"run now: schedule {name}, issue {plan.issue}",
                by,
                lambda: operations.firing_line(operations.run_now(service, name, by)),
            )
    except ConsoleBusyError as err:
        flash(f"Not started: {err}.", "error")
        return redirect(url_for("staff.schedules"), 303)
    log.info("staff: %s started schedule %s now (issue %s)", by, name, plan.issue)
    flash(
        f"Started at {job.started_at.astimezone(s.config.tz):%H:%M:%S}: the issue of {plan.issue} "
        f"(schedule “{name}”) is collecting and sending in the background. Its run shows in the run history.",
        "notice",
    )
    return redirect(url_for("staff.schedules"), 303)


def approval() -> Response:
    """Approve (or revoke) the upcoming issue of a review-mode schedule (the held one first), as
    it is curated now: editors and admins."""
    back = request.form.get("back", "")
    target = url_for(back if back in APPROVAL_RETURNS else "staff.issue")
    try:
        message = operations.approve_next(
            site().schedules(),
            request.form.get("schedule", ""),
            g.staff.email,
            revoke_it=request.form.get("action") == "revoke",
        )
    except ScheduleError as err:
        flash(f"Nothing was changed: {err}", "error")
        return redirect(target, 303)
    log.info("staff: %s: %s", g.staff.email, message)
    flash(message, "notice")
    return redirect(target, 303)
