"""One run's clicks beyond its page (/staff/runs/<id>, section "Clicks"): the charts of clicks
and recipients per region, and the stories as CSV. Counted per story, never per reader."""

from __future__ import annotations

from typing import Any

from flask import Response, abort

from digest import operations
from digest.clicks import clicks_csv
from digest.send import SendRun
from digest.web import charts
from digest.web.dashboard import svg
from digest.web.site import site


def clicks_or_404(run_id: str) -> dict[str, Any]:
    with site().sessions() as db:
        if db.get(SendRun, run_id) is None:
            abort(404)
        return operations.run_clicks(db, run_id)


def run_clicks_csv(run_id: str) -> Response:
    """The stories with their counts, as a spreadsheet opens it (UTF-8 with a byte-order mark)."""
    body = "\ufeff" + clicks_csv(clicks_or_404(run_id))
    resp = Response(body.encode("utf-8"), mimetype="text/csv")
    resp.headers["Content-Disposition"] = f'attachment; filename="clicks-{run_id}.csv"'
    return resp


def run_clicks_chart(run_id: str) -> Response:
    web = site().config.web
    regions = clicks_or_404(run_id)["regions"]
    return svg(charts.clicks_by_region_chart(regions, primary=web.primary_color, accent=web.accent_color))


def run_recipients_chart(run_id: str) -> Response:
    web = site().config.web
    regions = clicks_or_404(run_id)["regions"]
    return svg(charts.recipients_by_region_chart(regions, primary=web.primary_color, accent=web.accent_color))
