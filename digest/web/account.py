"""The logged-in staff member's own account (/staff/account): the password and the second factor.

A new password takes the current one and must pass the strength rule (`staff_store.
check_password`: the page says why one is refused); it ends every session, this one too.

Turning it on: "Set up" draws a secret (POST), the page shows it as a QR code (segno, inline
SVG: no script, no request elsewhere) and as text; the first good code from the app turns it
on and shows ten recovery codes, once. Turning it off, or new recovery codes, take a current
code. With `[web] staff_require_2fa`, an admin without it sees only this page until it is on.
"""

from __future__ import annotations

import logging

import segno
from flask import Response, flash, g, redirect, request, session, url_for
from markupsafe import Markup

from digest.web import staff_2fa, staff_store
from digest.web.pages import staff_page
from digest.web.site import site

log = logging.getLogger(__name__)


def account() -> Response:
    s = site()
    with s.sessions() as db:
        me = staff_store.get(db, g.staff.id)
        left = staff_2fa.recovery_codes_left(db, me) if staff_2fa.enabled(me) else 0
        qr = secret = None
        if not staff_2fa.enabled(me) and me.totp_pending:
            uri = staff_2fa.provisioning_uri(me, s.config.newsletter.name)
            # segno writes only paths and attributes: no script, no style element.
            qr = Markup(segno.make(uri, error="m").svg_inline(scale=4, title="QR code for your app"))
            secret = " ".join(me.totp_pending[i : i + 4] for i in range(0, len(me.totp_pending), 4))
    required = s.config.web.staff_require_2fa and g.staff.is_admin
    return staff_page(
        "account.html", enabled=staff_2fa.enabled(me), left=left, qr=qr, secret=secret, required=required
    )


def account_2fa_start() -> Response:
    with site().sessions.begin() as db:
        staff_2fa.begin(staff_store.get(db, g.staff.id))
    return redirect(url_for("staff.account"), 303)


def account_2fa_confirm() -> Response:
    s = site()
    with s.sessions.begin() as db:
        me = staff_store.get(db, g.staff.id)
        codes = staff_2fa.confirm(db, me, request.form.get("code", ""), now=s.clock())
    if codes is None:
        flash("That code is not right: check the time on your phone and try the newest code.", "error")
        return redirect(url_for("staff.account"), 303)
    log.info("staff: %s turned on a second factor", g.staff.email)
    return staff_page("recovery_codes.html", codes=codes)


def account_2fa_codes() -> Response:
    """New recovery codes (the old ones stop working), for a current code."""
    s = site()
    with s.sessions.begin() as db:
        me = staff_store.get(db, g.staff.id)
        if not staff_2fa.verify(db, me, request.form.get("code", ""), now=s.clock()):
            flash("That code is not right, or was used already.", "error")
            return redirect(url_for("staff.account"), 303)
        codes = staff_2fa.new_recovery_codes(db, me)
    return staff_page("recovery_codes.html", codes=codes)


def account_2fa_off() -> Response:
    s = site()
    if s.config.web.staff_require_2fa and g.staff.is_admin:
        flash("Admins must keep a second factor here ([web] staff_require_2fa).", "error")
        return redirect(url_for("staff.account"), 303)
    with s.sessions.begin() as db:
        me = staff_store.get(db, g.staff.id)
        if not staff_2fa.verify(db, me, request.form.get("code", ""), now=s.clock()):
            flash("That code is not right, or was used already.", "error")
            return redirect(url_for("staff.account"), 303)
        staff_2fa.turn_off(db, me)
    log.info("staff: %s turned off their second factor", g.staff.email)
    flash("The second factor is off: your password alone logs you in.", "notice")
    return redirect(url_for("staff.account"), 303)


def account_password() -> Response:
    s = site()
    form = request.form
    with s.sessions.begin() as db:
        checked = staff_store.authenticate(db, g.staff.email, form.get("current", ""), now=s.clock())
        if checked.outcome != staff_store.LoginOutcome.OK:
            flash("The current password is not right; nothing changed.", "error")
            return redirect(url_for("staff.account"), 303)
        if form.get("new", "") != form.get("again", ""):
            flash("The two new passwords differ; nothing changed.", "error")
            return redirect(url_for("staff.account"), 303)
        try:
            staff_store.set_password(db, g.staff.email, form.get("new", ""))
        except staff_store.StaffError as err:
            flash(f"Not changed: {err}", "error")
            return redirect(url_for("staff.account"), 303)
    log.info("staff: %s set a new password", g.staff.email)
    session.clear()  # every session of the account ended, this one too
    flash("Your password is changed. Log in with it.", "notice")
    return redirect(url_for("staff.login"), 303)
