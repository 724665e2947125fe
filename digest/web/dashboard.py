"""The console's first page (/staff/): the next send, recent runs, readers per region and
their growth (two SVG charts drawn on the server, no scripts)."""

from __future__ import annotations

from flask import Response

from digest.web import charts, console
from digest.web.pages import SVG_CSP, staff_page
from digest.web.site import site
from subscribers import store as subscriber_store


def dashboard() -> Response:
    s = site()
    now = s.clock()
    upcoming = console.next_send(s.config, s.schedules, now)
    with s.sessions() as db:
        runs = console.recent_runs(db)
        chose, everything = console.subscribers_per_region(db, s.config.regions.order)
        weeks = console.weekly_growth(db, now.astimezone(s.config.tz).date())
        counts = subscriber_store.count_by_status(db)
    return staff_page(
        "dashboard.html",
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
