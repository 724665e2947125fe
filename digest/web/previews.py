"""Preview the issue as readers get it (/staff/preview, each region's variant in a frame) and
send a `[TEST]` copy of it to staff (/staff/preview/test)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, g, request

from digest import operations
from digest.errors import DigestError, InvalidAddressError
from digest.personal import fill
from digest.pipeline import example_personal
from digest.web.curation import current_issue
from digest.web.pages import FRAME_CSP, PREVIEW_CSP, staff_page
from digest.web.site import site
from digest.web.staff_store import StaffAccount
from subscribers.validate import normalize_email

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
        addresses=extra.pop("typed_addresses", None) or remembered_addresses().replace("\n", ", "),
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


MAX_TEST_ADDRESSES = 10


def test_addresses(raw: str) -> list[str]:
    """The addresses typed for a test send (commas, spaces or lines between them), checked;
    ValueError naming the first that is not an address."""
    found: list[str] = []
    for part in raw.replace(",", " ").replace(";", " ").split():
        try:
            address = normalize_email(part)
        except InvalidAddressError as err:
            raise ValueError(f"“{part[:100]}” is not an e-mail address ({err}).") from None
        if address not in found:
            found.append(address)
    if len(found) > MAX_TEST_ADDRESSES:
        raise ValueError(f"At most {MAX_TEST_ADDRESSES} addresses for a test; you typed {len(found)}.")
    return found


def remembered_addresses() -> str:
    """The addresses of this staff member's last test send, or their own."""
    return getattr(g.staff, "test_addresses", "") or g.staff.email


def preview_test() -> Response:
    """A `[TEST]` copy of the chosen variant to each address typed (default: the staff member's
    own), remembered for the next test."""
    s = site()
    _collected, _draft, issue = current_issue()
    regions = chosen_regions(request.form.getlist("region"))
    typed = request.form.get("to")
    try:
        addresses = test_addresses(typed) if typed is not None else [g.staff.email]
    except ValueError as err:
        return preview_page(400, test_error=f"Nothing was sent: {err}", typed_addresses=typed)
    if not addresses:
        return preview_page(
            400, test_error="Nothing was sent: type at least one address.", typed_addresses=typed
        )
    sent, failed = [], []
    for to in addresses:
        try:
            reply = operations.test_send(s.config, issue, to, s.transport_factory(), regions=regions)
        except (DigestError, ValueError, OSError) as err:
            log.warning("staff: test send to %s failed: %s", to, err)
            failed.append(f"{to}: {err}")
            continue
        log.info("staff: %s sent a test copy to %s: %s", g.staff.email, to, reply)
        sent.append((to, reply))
    if typed is not None:
        remember(addresses)
    done = " ".join(f"A test copy went to {to} ({reply})." for to, reply in sent)
    if failed:
        return preview_page(
            502, test_sent=done, test_error="The test copy could not be sent: " + "; ".join(failed)
        )
    return preview_page(test_sent=done)


def remember(addresses: list[str]) -> None:
    with site().sessions.begin() as db:
        account = db.get(StaffAccount, g.staff.id)
        if account is not None:
            account.test_addresses = "\n".join(addresses)
    g.staff.test_addresses = "\n".join(addresses)
