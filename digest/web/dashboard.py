"""The console's first page (/staff/): what staff were told and nobody acknowledged yet (a
banner each: an issue held, missed, failed or paused, a run taken over), the next send, recent
runs, readers per region and their growth (two SVG charts drawn on the server, no scripts)."""

from __future__ import annotations

import logging

from flask import Response, flash, g, redirect, url_for

from digest import operations
from digest.web import charts, console
from digest.web.pages import SVG_CSP, staff_page
from digest.web.site import site
from subscribers import store as subscriber_store

log = logging.getLogger(__name__)


def dashboard() -> Response:
    s = site()
    now = s.clock()
    upcoming = console.next_send(s.config, s.schedules, now)
    with s.sessions() as db:
        runs = console.recent_runs(db)
        chose, everything = console.subscribers_per_region(db, s.config.regions.order)
        weeks = console.weekly_growth(db, now.astimezone(s.config.tz).date())
        counts = subscriber_store.count_by_status(db)
        alerts = operations.open_alerts(db)
    return staff_page(
        "dashboard.html",
        alerts=alerts,
        upcoming=upcoming,
        runs=runs,
        chose=chose,
        everything=everything,
        weeks=weeks,
        counts=counts,
        jobs=s.jobs.recent()[:3],
    )


def svg(data: bytes) -> Response:
    resp = Response(data, mimetype="image/svg+xml")
    resp.headers["Content-Security-Policy"] = SVG_CSP
    return resp


def chart_regions() -> Response:
    s = site()
    with s.sessions() as db:
        chose, everything = console.subscribers_per_region(db, s.config.regions.order)
    web = s.config.web
    return svg(charts.regions_chart(chose, everything, primary=web.primary_color, accent=web.accent_color))


def chart_growth() -> Response:
    s = site()
    with s.sessions() as db:
        weeks = console.weekly_growth(db, s.clock().astimezone(s.config.tz).date())
    web = s.config.web
    return svg(charts.growth_chart(weeks, primary=web.primary_color, accent=web.accent_color))


def alert_acknowledge(alert_id: int) -> Response:
    """Someone saw it: the banner goes (for everyone); the alert stays in the database."""
    s = site()
    with s.sessions() as db:
        done = operations.acknowledge_alert(db, alert_id, g.staff.email, s.clock())
    if done:
        log.info("staff: %s acknowledged alert %d", g.staff.email, alert_id)
    else:
        flash("That alert was acknowledged already.", "notice")
    return redirect(url_for("staff.dashboard"), 303)
