"""Staff log-in and log-out (/staff/login, /staff/logout) and the console's stylesheet.

Log-in attempts are limited per client address (Flask-Limiter, `[web] staff_login_limit`, set
in the route table), and wrong passwords make the next try from that address for that account
wait longer and longer (`login_throttle`); no account is ever locked for its owner.
"""

from __future__ import annotations

import logging

from flask import Response, g, redirect, render_template, request, session, url_for

from digest.web import login_throttle, staff_sessions, staff_store
from digest.web.pages import staff_page
from digest.web.site import site
from digest.web.staff_store import LoginOutcome

log = logging.getLogger(__name__)


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
    web = s.config.web
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
            login_throttle.succeeded(db, email, address)
            token = staff_sessions.start(
                db, account.id, now=now, user_agent=request.user_agent.string, address=address
            )
            session.clear()  # nothing from before the login carries over (CSRF token included)
            session["staff"] = {"sid": token}  # the cookie names the session record, nothing more
            log.info("staff login: %s", account.email)
            return redirect(url_for("staff.dashboard"), 303)
        login_throttle.failed(
            db,
            email,
            address,
            now=now,
            free=web.staff_login_free_failures,
            max_delay=web.staff_login_max_delay_seconds,
        )
    return staff_page("login.html", 401, email=email, error="Wrong e-mail address or password.")


def _wait_page(email: str, wait: int) -> Response:
    resp = staff_page(
        "login.html",
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
