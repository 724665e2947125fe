"""Staff log-in and log-out (/staff/login, /staff/logout) and the console's stylesheet.

Log-in attempts are limited per client address (Flask-Limiter, `[web] staff_login_limit`, set
in the route table) and per account (a lock-out stored with the account, see `staff_store`).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from flask import Response, g, redirect, render_template, request, session, url_for

from digest.web import staff_store
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
    with s.sessions.begin() as db:
        result = staff_store.authenticate(
            db,
            email,
            password,
            now=s.clock(),
            max_failures=web.staff_max_failed_logins,
            lock_for=timedelta(minutes=web.staff_lockout_minutes),
        )
        account = result.account
        if result.outcome == LoginOutcome.OK and account is not None:
            session.clear()  # nothing from before the login carries over (CSRF token included)
            session["staff"] = {"id": account.id, "v": account.password_version, "at": s.clock().isoformat()}
            log.info("staff login: %s", account.email)
            return redirect(url_for("staff.dashboard"), 303)
    if result.outcome == LoginOutcome.LOCKED and result.locked_until is not None:
        until = result.locked_until.astimezone(s.config.tz)
        return staff_page(
            "login.html",
            403,
            email=email,
            error=f"This account is locked after {web.staff_max_failed_logins} wrong passwords in a row, "
            f"until {until:%H:%M} ({s.config.newsletter.timezone}). An admin can unlock it now by "
            "setting a new password (digest staff passwd).",
        )
    return staff_page("login.html", 401, email=email, error="Wrong e-mail address or password.")


def logout() -> Response:
    session.clear()
    return redirect(url_for("staff.login"), 303)
