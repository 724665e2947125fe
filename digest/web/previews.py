"""Preview the issue as readers get it (/staff/preview, each region's variant in a frame) and
send a `[TEST]` copy of it to staff (/staff/preview/test)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, g, request

from digest import operations
from digest.errors import DigestError
from digest.personal import fill
from digest.pipeline import example_personal
from digest.web.curation import current_issue
from digest.web.pages import FRAME_CSP, PREVIEW_CSP, staff_page
from digest.web.site import site

log = logging.getLogger(__name__)


def chosen_regions(values: list[str]) -> frozenset[str] | None:
    chosen = frozenset(v for v in values if v in site().config.regions.order)
    return chosen or None


def preview_page(status: int = 200, **extra: Any) -> Response:
    _collected, _draft, issue = current_issue()
    regions = chosen_regions(request.values.getlist("region"))
    variant = issue.digest.for_regions(regions)
    empty = regions is not None and not variant.sections and bool(issue.digest.sections)
    rendered = None if empty else issue.renderer.variants(issue.digest).get(regions)
    return staff_page(
        "preview.html",
        status,
        csp=PREVIEW_CSP,
        issue=issue,
        rendered=rendered,
        regions=regions or frozenset(),
        query=[("region", r) for r in sorted(regions or ())],
        empty=empty,
        **extra,
    )


def preview() -> Response:
    return preview_page()


def preview_frame() -> Response:
    _collected, _draft, issue = current_issue()
    regions = chosen_regions(request.args.getlist("region"))
    rendered = issue.renderer.variants(issue.digest).get(regions)
    resp = Response(fill(rendered.html, example_personal(site().links)), mimetype="text/html")
    resp.headers["Content-Security-Policy"] = FRAME_CSP
    return resp


def preview_test() -> Response:
    s = site()
    _collected, _draft, issue = current_issue()
    regions = chosen_regions(request.form.getlist("region"))
    to = g.staff.email
    try:
        reply = operations.test_send(s.config, issue, to, s.transport_factory(), regions=regions)
    except (DigestError, ValueError, OSError) as err:
        log.warning("staff: test send to %s failed: %s", to, err)
        return preview_page(502, test_error=f"The test copy could not be sent: {err}")
    log.info("staff: test copy to %s: %s", to, reply)
    return preview_page(test_sent=f"A test copy went to {to} ({reply}).")
