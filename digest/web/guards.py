"""The staff console's checks, as decorators the route table puts around each staff view.

In the order a request meets them (after CSRFProtect, the app's, has checked the token of
every POST):
- `same_origin`: a state-changing request must come with an Origin (or, failing that, a
  Referer) of this site: a cross-site form post is refused even if a token leaked. Staff
  pages send `Referrer-Policy: same-origin` so browsers send a real Origin on their own forms.
- `with_staff`: the session's account, or None, in `g.staff`. The cookie only names a
  session record (`staff_sessions`): log-out, a new password, a role change, removal or an
  admin ends it, and it expires [web] staff_session_hours after the log-in.
- `login_required`: no account, to the log-in page; an admin without a second factor when
  [web] staff_require_2fa is set, to /staff/account to turn it on.
- `admin_only`: editors get 403 on admins' pages (schedules, "send again", subscribers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import Response, g, redirect, request, session, url_for
from sqlalchemy.orm import Session

from digest.web import staff_2fa, staff_sessions, staff_store
from digest.web.pages import refuse
from digest.web.site import site
from digest.web.staff_store import StaffAccount

log = logging.getLogger(__name__)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
View = Callable[..., Response]


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.scheme and parts.netloc else ""


def origin_ok() -> bool:
    sent = request.headers.get("Origin")
    if not sent or sent == "null":
        sent = origin_of(request.headers.get("Referer", ""))
    own = origin_of(site().config.newsletter.base_url)
    return bool(sent) and sent.lower() in {own, origin_of(request.host_url)}


def current_staff(db: Session) -> StaffAccount | None:
    """The account whose live session the cookie names (`staff_sessions`); sets
    `g.staff_session` to that session's id. A cookie naming no live session is dropped."""
    data = session.get("staff")
    token = data.get("sid") if isinstance(data, dict) else None
    g.staff_session = None
    length = timedelta(hours=site().config.web.staff_session_hours)
    found = staff_sessions.find(db, str(token or ""), now=site().clock(), length=length)
    account = staff_store.get(db, found.account_id) if found is not None else None
    if account is None:
        session.pop("staff", None)
        return None
    g.staff_session = found.id
    return account


def same_origin(view: View) -> View:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        if request.method not in SAFE_METHODS and not origin_ok():
            log.warning(
                "staff: refused %s %s from origin %r",
                request.method,
                request.path,
                request.headers.get("Origin"),
            )
            g.staff = None
            return refuse(403, "Refused", "This request did not come from the console's own pages.")
        return view(*args, **kwargs)

    return wrapper


def with_staff(view: View) -> View:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        with site().sessions.begin() as db:  # begin: finding a session marks it seen
            g.staff = current_staff(db)
        return view(*args, **kwargs)

    return wrapper


# What an admin who must turn on a second factor may still reach ([web] staff_require_2fa).
SETUP_ENDPOINTS = frozenset(
    {"staff.account", "staff.account_2fa_start", "staff.account_2fa_confirm", "staff.logout"}
)


def login_required(view: View) -> View:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        staff = g.get("staff")
        if staff is None:
            return redirect(url_for("staff.login"), 303)
        if (
            site().config.web.staff_require_2fa
            and staff.is_admin
            and not staff_2fa.enabled(staff)
            and request.endpoint not in SETUP_ENDPOINTS
        ):
            return redirect(url_for("staff.account"), 303)
        return view(*args, **kwargs)

    return wrapper


def admin_only(view: View) -> View:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        if not g.staff.is_admin:
            return refuse(403, "Admins only", "This page is for admins. Ask an admin if you need it.")
        return view(*args, **kwargs)

    return wrapper
