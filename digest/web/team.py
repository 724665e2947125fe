"""The staff accounts and their sessions, for admins (/staff/team): who is logged in, from
where and since when; an admin ends one session or all of a staff member's."""

from __future__ import annotations

import logging

from flask import Response, abort, flash, g, redirect, url_for

from digest.web import staff_sessions, staff_store
from digest.web.pages import staff_page
from digest.web.site import site

log = logging.getLogger(__name__)


def team() -> Response:
    with site().sessions() as db:
        accounts = staff_store.list_accounts(db)
        sessions = {a.id: staff_sessions.of_account(db, a.id) for a in accounts}
    return staff_page("team.html", accounts=accounts, sessions=sessions, current=g.get("staff_session"))


def team_end_session(sid: str) -> Response:
    with site().sessions.begin() as db:
        row = db.get(staff_sessions.StaffSession, sid)
        if row is None:
            abort(404)
        account = staff_store.get(db, row.account_id)
        staff_sessions.end(db, sid)
    who = account.email if account is not None else "a removed account"
    log.info("staff: %s ended a session of %s", g.staff.email, who)
    flash(f"Ended a session of {who}.", "notice")
    return redirect(url_for("staff.team"), 303)


def team_end_all(account_id: int) -> Response:
    with site().sessions.begin() as db:
        account = staff_store.get(db, account_id)
        if account is None:
            abort(404)
        ended = staff_sessions.end_all(db, account_id)
        email = account.email
    log.info("staff: %s ended %d session(s) of %s", g.staff.email, ended, email)
    flash(f"Ended {ended} session(s) of {email}.", "notice")
    return redirect(url_for("staff.team"), 303)
