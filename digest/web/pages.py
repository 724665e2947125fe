"""How a page is answered: the reader pages' and the staff pages' templates, their security
headers, and the error pages. No views here."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from flask import Response, g, get_flashed_messages, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from digest.web.site import site

log = logging.getLogger(__name__)

READER_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
PAGE_CSP = READER_CSP  # a staff page: the same, set by the staff blueprint
# The issue page shows the stories' photos (from their sites) and runs its one script, from here.
ISSUE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' https: http: data:; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
# The preview page frames the issue from this site, and nothing else.
PREVIEW_CSP = PAGE_CSP + "; frame-src 'self'"
# The framed issue: the e-mail's inline styles and remote photos, no scripts, framed only here.
FRAME_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)
SVG_CSP = "default-src 'none'; style-src 'unsafe-inline'"
STYLESHEETS = frozenset({"style", "staff.style"})


@dataclass(frozen=True)
class NavItem:
    endpoint: str
    label: str
    admin: bool = False


NAV = (
    NavItem("staff.dashboard", "Dashboard"),
    NavItem("staff.issue", "This week's issue"),
    NavItem("staff.preview", "Preview"),
    NavItem("staff.runs", "Runs"),
    NavItem("staff.schedules", "Schedules", admin=True),
    NavItem("staff.subscribers", "Subscribers", admin=True),
    NavItem("staff.team", "Staff", admin=True),
    NavItem("staff.embed", "Embed", admin=True),
    NavItem("staff.account", "Your account"),
)


# --- readers' pages ----------------------------------------------------------------------


def page(template: str, status: int = 200, **context: Any) -> Response:
    """A reader page (templates/web/)."""
    return Response(render_template(template, **context), status=status, mimetype="text/html")


def template_globals() -> dict[str, Any]:
    config = site().config
    web = config.web
    return {
        "newsletter": config.newsletter,
        "colors": {"primary": web.primary_color, "accent": web.accent_color},
        # [analytics] per_reader: the subscribe page says that clicks are kept per subscriber.
        "per_reader_clicks": config.analytics.enabled and config.analytics.per_reader,
    }


def security_headers(resp: Response) -> Response:
    resp.headers.setdefault("Content-Security-Policy", READER_CSP)
    resp.headers["X-Content-Type-Options"] = "nosniff"
    # Token URLs must never leak to other sites through the Referer header (the staff pages
    # set their own policy).
    resp.headers.setdefault("Referrer-Policy", "no-referrer")
    stylesheet = request.endpoint in STYLESHEETS
    resp.headers["Cache-Control"] = "public, max-age=3600" if stylesheet else "no-store"
    return resp


def csrf_error(err: CSRFError) -> Response:
    log.info("CSRF check failed on %s: %s", request.path, err.description)
    return page(
        "message.html",
        400,
        title="Please try again",
        message="This form has expired or was not sent from our page. "
        "Reload the page and send it again (cookies must be allowed for this site).",
    )


HTTP_MESSAGES = {
    429: "There have been too many attempts from your network. Please try again later.",
    413: "What you sent is far larger than this form allows. Shorten it and try again.",
    404: "There is no page at this address.",
    405: "This page cannot be used that way.",
}


def http_error(err: HTTPException) -> Response:
    message = HTTP_MESSAGES.get(err.code or 500) or err.description or "Something went wrong."
    return page("message.html", err.code or 500, title=err.name, message=message)


# --- staff pages -------------------------------------------------------------------------


def staff_page(template: str, status: int = 200, *, csp: str = PAGE_CSP, **context: Any) -> Response:
    """A staff page (templates/web/staff/), with the navigation and the flashed messages."""
    html = render_template(
        f"staff/{template}",
        staff=g.get("staff"),
        nav=NAV,
        flashes=get_flashed_messages(with_categories=True),
        **context,
    )
    resp = Response(html, status=status, mimetype="text/html")
    resp.headers["Content-Security-Policy"] = csp
    return resp


def refuse(status: int, title: str, message: str) -> Response:
    return staff_page("message.html", status, title=title, message=message)


def staff_headers(resp: Response) -> Response:
    # Staff URLs carry no tokens; a same-origin Referer lets browsers send a real Origin.
    resp.headers["Referrer-Policy"] = "same-origin"
    resp.headers.setdefault("Content-Security-Policy", PAGE_CSP)
    return resp
