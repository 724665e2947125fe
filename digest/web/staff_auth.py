"""Staff log-in and log-out (/staff/login, /staff/logout) and the console's stylesheet.

Log-in attempts are limited per client address (Flask-Limiter, `[web] staff_login_limit`, set
in the route table), and wrong passwords make the next try from that address for that account
wait longer and longer (`login_throttle`); no account is ever locked for its owner.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from flask import Response, g, redirect, render_template, request, session, url_for
from sqlalchemy.orm import Session

from digest.web import login_throttle, staff_2fa, staff_sessions, staff_store
from digest.web.pages import staff_page
from digest.web.site import site
from digest.web.staff_store import LoginOutcome, StaffAccount

log = logging.getLogger(__name__)

SECOND_STEP = "staff_second_step"  # in the cookie between the password and the code: no session yet
SECOND_STEP_TIME = timedelta(minutes=5)


def style() -> Response:
    web = site().config.web
    css = render_template("staff/staff.css", primary=web.primary_color, accent=web.accent_color)
    return Response(css, mimetype="text/css")


def login() -> Response:
    if request.method == "GET":
        if g.staff is not None:
            return redirect(url_for("staff.dashboard"), 303)
        return staff_page("login.html", email="")
    s = site()
    email = request.form.get("email", "").strip()[:320]
    password = request.form.get("password", "")
    address = request.remote_addr or ""
    now = s.clock()
    with s.sessions.begin() as db:
        # Checked before the password, the same way for every address typed, known or not.
        wait = login_throttle.wait_seconds(db, email, address, now=now)
        if wait:
            return _wait_page(email, wait)
        result = staff_store.authenticate(db, email, password, now=now)
        account = result.account
        if result.outcome == LoginOutcome.OK and account is not None:
            if staff_2fa.enabled(account):
                # The password was right; the session starts only with the second factor.
                session.clear()
                session[SECOND_STEP] = {"id": account.id, "email": email, "at": now.isoformat()}
                return redirect(url_for("staff.login_code"), 303)
            return _start_session(db, account, email, address, now)
        _count_failure(db, email, address, now)
    return staff_page("login.html", 401, email=email, error="Wrong e-mail address or password.")


def _count_failure(db: Session, email: str, address: str, now: datetime) -> None:
    """One more wrong password or code from this address for this account: the next wait grows."""
    web = site().config.web
    login_throttle.failed(
        db,
        email,
        address,
        now=now,
        free=web.staff_login_free_failures,
        max_delay=web.staff_login_max_delay_seconds,
    )


def _start_session(db: Session, account: StaffAccount, email: str, address: str, now: datetime) -> Response:
    login_throttle.succeeded(db, email, address)
    token = staff_sessions.start(
        db, account.id, now=now, user_agent=request.user_agent.string, address=address
    )
    session.clear()  # nothing from before the login carries over (CSRF token included)
    session["staff"] = {"sid": token}  # the cookie names the session record, nothing more
    log.info("staff login: %s", account.email)
    return redirect(url_for("staff.dashboard"), 303)


def login_code() -> Response:
    """The second step for accounts with a second factor: a code from the app or a recovery code."""
    s = site()
    now = s.clock()
    pending = session.get(SECOND_STEP)
    started = _parse_time(pending.get("at")) if isinstance(pending, dict) else None
    if started is None or not timedelta(0) <= now - started <= SECOND_STEP_TIME:
        session.pop(SECOND_STEP, None)
        return redirect(url_for("staff.login"), 303)
    if request.method == "GET":
        return staff_page("login_code.html")
    email, address = str(pending.get("email", "")), request.remote_addr or ""
    with s.sessions.begin() as db:
        wait = login_throttle.wait_seconds(db, email, address, now=now)
        if wait:
            return _wait_page(email, wait, template="login_code.html")
        account = staff_store.get(db, int(pending.get("id", 0)))
        if account is not None and staff_2fa.verify(db, account, request.form.get("code", ""), now=now):
            return _start_session(db, account, email, address, now)
        _count_failure(db, email, address, now)
    return staff_page("login_code.html", 401, error="That code is not right, or was used already.")


def _parse_time(value: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _wait_page(email: str, wait: int, template: str = "login.html") -> Response:
    resp = staff_page(
        template,
        429,
        email=email,
        error="Too many wrong passwords from here for this address. "
        f"Try again in {wait} second{'' if wait == 1 else 's'}.",
    )
    resp.headers["Retry-After"] = str(wait)
    return resp


def logout() -> Response:
    """Ends the session record itself: a copy of the cookie opens nothing afterwards."""
    data = session.get("staff")
    if isinstance(data, dict) and data.get("sid"):
        with site().sessions.begin() as db:
            staff_sessions.end_token(db, str(data["sid"]))
    session.clear()
    return redirect(url_for("staff.login"), 303)
