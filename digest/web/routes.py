"""Every URL of the web app, in one place: method, path, view, who may use it.

Readers' pages are at the root; the staff console under /staff/ (blueprint "staff", so its
endpoints are "staff.<view name>"); provider webhooks under /webhooks/ (`webhooks.py`, signed
by the provider, no session). Who may use a route is its `access`:

- READER: anyone; every POST carries a CSRF token.
- TOKEN: anyone with a signed link; no cookie, no CSRF token (RFC 8058 one-click unsubscribe,
  the confirmation link opened in a fresh browser).
- STAFF_PUBLIC: the console's log-in page and stylesheet (Origin-checked, no account needed).
- EMBED: a page of a site in `[web] embed_origins` (the Origin, or the Referer, is checked by
  `embed.allowed_origin_only`); no CSRF token, since another site's page cannot hold one.
- EDITOR / ADMIN: a logged-in staff account / an admin's (see `guards`).

A route's `limit` counts per client address on POST; routes naming the same `limit_scope`
count together (`/subscribe` and `/subscribe/embed`: one count for every sign-up form).
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint, Flask, Response
from flask_limiter import Limiter
from flask_wtf.csrf import CSRFProtect

from digest.config import WebConfig
from digest.web import (
    account,
    curation,
    dashboard,
    editions,
    embed,
    guards,
    previews,
    reader,
    run_clicks,
    runs,
    schedules,
    signup_limits,
    staff_auth,
    subscribers,
    team,
)
from digest.web.pages import staff_headers


class Access(enum.Enum):
    READER = "reader"
    TOKEN = "token"
    STAFF_PUBLIC = "staff-public"
    EMBED = "embed"
    EDITOR = "editor"
    ADMIN = "admin"


@dataclass(frozen=True)
class Route:
    methods: str  # "GET", "POST" or "GET POST"
    path: str
    view: Callable[..., Response]
    access: Access
    endpoint: str = ""  # default: the view's name
    limit: Callable[[WebConfig], str] | None = None  # per client address (Flask-Limiter), on POST
    limit_scope: str = ""  # routes with one scope share one count per client (sign-ups)


R, T, SP, E, A = Access.READER, Access.TOKEN, Access.STAFF_PUBLIC, Access.EDITOR, Access.ADMIN
EM = Access.EMBED

READER_ROUTES = (
    Route("GET", "/style.css", reader.style, R),
    Route("GET", "/", reader.index, R),
    Route("GET", "/subscribe", reader.subscribe_form, R),
    Route(
        "POST",
        "/subscribe",
        reader.subscribe,
        R,
        limit=signup_limits.per_client,
        limit_scope=signup_limits.SCOPE,
    ),
    # the sign-up form other sites embed: the same path, the same shared limit
    Route(
        "POST",
        "/subscribe/embed",
        embed.subscribe_embed,
        EM,
        limit=signup_limits.per_client,
        limit_scope=signup_limits.SCOPE,
    ),
    Route("GET", "/subscribe/embed/start", embed.embed_start, R),
    Route("GET", "/subscribe/embed.js", embed.embed_script, R),
    Route("GET", "/confirm/<token>", reader.confirm_page, R),
    Route("POST", "/confirm/<token>", reader.confirm, T),
    Route("GET", "/unsubscribe/<token>", reader.unsubscribe_page, R),
    Route("POST", "/unsubscribe/<token>", reader.unsubscribe, T),
    Route("GET", "/preferences", reader.preferences_help, R),
    Route("GET", "/preferences/<token>", reader.preferences_page, R),
    Route("POST", "/preferences/<token>", reader.preferences, R),
    Route("GET", "/archive", editions.archive_index, R),
    Route("GET", "/archive/feed.xml", editions.archive_feed, R),
    Route("GET", "/archive/<issue>", editions.archive, R),
)

STAFF_ROUTES = (  # under /staff
    Route("GET", "/staff.css", staff_auth.style, SP),
    Route("GET POST", "/login", staff_auth.login, SP, limit=lambda web: web.staff_login_limit),
    Route("GET POST", "/login/code", staff_auth.login_code, SP, limit=lambda web: web.staff_login_limit),
    Route("POST", "/logout", staff_auth.logout, E),
    # the staff member's own account: the second factor
    Route("GET", "/account", account.account, E),
    Route("POST", "/account/password", account.account_password, E),
    Route("POST", "/account/2fa/start", account.account_2fa_start, E),
    Route("POST", "/account/2fa/confirm", account.account_2fa_confirm, E),
    Route("POST", "/account/2fa/codes", account.account_2fa_codes, E),
    Route("POST", "/account/2fa/off", account.account_2fa_off, E),
    # dashboard
    Route("GET", "/", dashboard.dashboard, E),
    Route("GET", "/charts/regions.svg", dashboard.chart_regions, E),
    Route("GET", "/charts/growth.svg", dashboard.chart_growth, E),
    Route("POST", "/alerts/<int:alert_id>/acknowledge", dashboard.alert_acknowledge, E),
    # this week's issue
    Route("GET", "/issue", curation.issue, E),
    Route("POST", "/issue", curation.issue_save, E),
    Route("POST", "/issue/collect", curation.issue_collect, E),
    Route("POST", "/issue/add", curation.issue_add, E),
    Route("GET", "/curation.js", curation.curation_script, E),
    # preview and test sends
    Route("GET", "/preview", previews.preview, E),
    Route("GET", "/preview/frame", previews.preview_frame, E),
    Route("POST", "/preview/test", previews.preview_test, E),
    # readers (admins)
    Route("GET", "/subscribers", subscribers.subscribers, A),
    Route("GET", "/subscribers/<int:subscriber_id>", subscribers.subscriber, A),
    Route("GET POST", "/subscribers/import", subscribers.subscribers_import, A),
    Route("POST", "/subscribers/<int:subscriber_id>/regions", subscribers.subscriber_regions, A),
    Route("POST", "/subscribers/<int:subscriber_id>/unsubscribe", subscribers.subscriber_unsubscribe, A),
    Route("POST", "/subscribers/<int:subscriber_id>/confirm-again", subscribers.subscriber_confirm_again, A),
    Route("GET", "/subscribers/<int:subscriber_id>/erase", subscribers.subscriber_erase_confirm, A),
    Route("POST", "/subscribers/<int:subscriber_id>/erase", subscribers.subscriber_erase, A),
    # the sign-up form to paste into the site (admins)
    Route("GET", "/embed", embed.console_page, A, endpoint="embed"),
    # schedules (admins); approving a review-mode issue (editors too)
    Route("GET", "/schedules", schedules.schedules_index, A, endpoint="schedules"),
    Route("POST", "/schedules", schedules.schedule_add, A),
    Route("GET", "/schedules/<name>", schedules.schedule, A),
    Route("POST", "/schedules/<name>", schedules.schedule_edit, A),
    Route("POST", "/schedules/<name>/pause", schedules.schedule_pause, A),
    Route("POST", "/schedules/<name>/resume", schedules.schedule_resume, A),
    Route("POST", "/schedules/<name>/skip", schedules.schedule_skip, A),
    Route("POST", "/schedules/<name>/remove", schedules.schedule_remove, A),
    Route("GET", "/schedules/<name>/run-now", schedules.schedule_run_now_confirm, A),
    Route("POST", "/schedules/<name>/run-now", schedules.schedule_run_now, A),
    Route("POST", "/approvals", schedules.approval, E),
    # runs (editors read, pause and resume; admins abandon and send again)
    Route("GET", "/runs", runs.runs, E),
    Route("GET", "/runs/<run_id>", runs.run, E),
    Route("POST", "/runs/<run_id>/pause", runs.run_pause, E),
    Route("POST", "/runs/<run_id>/resume", runs.run_resume, E),
    Route("GET", "/runs/<run_id>/abandon", runs.run_abandon_confirm, A),
    Route("POST", "/runs/<run_id>/abandon", runs.run_abandon, A),
    Route("POST", "/runs/<run_id>/resend", runs.run_resend, A),
    # staff accounts and their sessions (admins)
    Route("GET", "/team", team.team, A),
    Route("POST", "/team/sessions/<sid>/end", team.team_end_session, A),
    Route("POST", "/team/<int:account_id>/end-sessions", team.team_end_all, A),
    # a run's clicks: charts and CSV (the numbers are on the run's page)
    Route("GET", "/runs/<run_id>/clicks.csv", run_clicks.run_clicks_csv, E),
    Route("GET", "/runs/<run_id>/clicks.svg", run_clicks.run_clicks_chart, E),
    Route("GET", "/runs/<run_id>/recipients.svg", run_clicks.run_recipients_chart, E),
)


def guarded(route: Route) -> Callable[..., Response]:
    """The view with its access checks around it, outermost first: Origin, account, role."""
    view = route.view
    if route.access == Access.ADMIN:
        view = guards.admin_only(view)
    if route.access in (Access.EDITOR, Access.ADMIN):
        view = guards.login_required(view)
    if route.access in (Access.STAFF_PUBLIC, Access.EDITOR, Access.ADMIN):
        view = guards.same_origin(guards.with_staff(view))
    if route.access == Access.EMBED:
        view = embed.allowed_origin_only(view)
    return view


def add(target: Flask | Blueprint, route: Route, limiter: Limiter, csrf: CSRFProtect, web: WebConfig) -> None:
    view = guarded(route)
    if route.limit is not None and route.limit_scope:
        view = limiter.shared_limit(route.limit(web), scope=route.limit_scope, methods=["POST"])(view)
    elif route.limit is not None:
        view = limiter.limit(route.limit(web), methods=["POST"])(view)
    if route.access in (Access.TOKEN, Access.EMBED):
        csrf.exempt(view)
    target.add_url_rule(
        route.path,
        endpoint=route.endpoint or route.view.__name__,
        view_func=view,
        methods=route.methods.split(),
    )


def register_routes(app: Flask, limiter: Limiter, csrf: CSRFProtect, web: WebConfig) -> None:
    for route in READER_ROUTES:
        add(app, route, limiter, csrf, web)
    staff = Blueprint("staff", __name__, url_prefix="/staff")
    staff.after_request(staff_headers)
    for route in STAFF_ROUTES:
        add(staff, route, limiter, csrf, web)
    app.register_blueprint(staff)
