"""The readers, for admins (/staff/subscribers): search, one reader's history and deliveries;
change a reader's regions, unsubscribe, erase (after typing the address), send a new
confirmation mail; and the CSV import (/staff/subscribers/import, up to MAX_IMPORT_BYTES)."""

from __future__ import annotations

import io
import logging
from typing import Any

from flask import Response, abort, flash, g, redirect, request, url_for
from sqlalchemy import or_, select

from digest.errors import DigestError
from digest.web import console
from digest.web.mail import confirmation_message
from digest.web.pages import staff_page
from digest.web.site import site
from subscribers import csv_io
from subscribers import store as subscriber_store
from subscribers.store import Status, Subscriber
from subscribers.tokens import Purpose
from subscribers.validate import InputError, check_regions

log = logging.getLogger(__name__)

MAX_IMPORT_BYTES = 10 * 1024 * 1024  # a CSV of ~100,000 subscribers
IMPORT_ENDPOINT = "staff.subscribers_import"


def import_upload_limit() -> None:
    """Before CSRFProtect reads the form (app.before_request, registered first): the import's
    CSV may be larger than any other form."""
    if request.endpoint == IMPORT_ENDPOINT:
        request.max_content_length = MAX_IMPORT_BYTES
        # Werkzeug buffers multipart data up to this much between parts (the file's chunks).
        request.max_form_memory_size = 1024 * 1024


def like_pattern(q: str) -> str:
    return "%" + q.casefold().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def subscribers() -> Response:
    q = request.args.get("q", "").strip()[:320]
    status = request.args.get("status", "")
    with site().sessions() as db:
        query = select(Subscriber).order_by(Subscriber.id.desc()).limit(101)
        if q:
            pattern = like_pattern(q)
            query = query.where(
                or_(
                    Subscriber.email_key.like(pattern, escape="\\"),
                    Subscriber.name.ilike(pattern, escape="\\"),
                )
            )
        if status in {s.value for s in Status}:
            query = query.where(Subscriber.status == Status(status))
        found = list(db.scalars(query))
        counts = subscriber_store.count_by_status(db)
    return staff_page(
        "subscribers.html",
        found=found[:100],
        more=len(found) > 100,
        q=q,
        chosen_status=status,
        statuses=[s.value for s in Status],
        counts=counts,
    )


def subscriber(subscriber_id: int) -> Response:
    with site().sessions() as db:
        sub = subscriber_store.get(db, subscriber_id)
        if sub is None:
            abort(404)
        return staff_page(
            "subscriber.html",
            sub=sub,
            region_names=site().config.regions.order,
            events=subscriber_store.events_for(db, sub),
            deliveries=console.deliveries_of(db, sub.id),
            suppressed=subscriber_store.is_suppressed(db, sub.email),
        )


def subscribers_import() -> Response:
    """Import a CSV file as `digest subscribers import` does; "Check the file" first shows, as
    `--dry-run` does, how each column is understood and what the import would do (nothing is
    written: csv_io.plan_import rolls its session back)."""
    if request.method == "GET":
        return staff_page("import.html", report=None)
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return staff_page("import.html", 400, report=None, error="Choose a CSV file to import.")
    name = upload.filename
    data = upload.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as err:
        return staff_page(
            "import.html",
            400,
            report=None,
            error=f"{name} is not UTF-8 text ({err.reason} at byte {err.start}); nothing was imported. "
            "Save it as “CSV UTF-8” and try again.",
        )
    config = site().config
    options = {"aliases": config.regions.aliases}
    try:
        if request.form.get("action") == "plan":
            with site().sessions() as db:
                plan = csv_io.plan_import(db, data, config.regions.order, **options)
            return staff_page("import.html", report=None, plan=plan, filename=name)
        stream = io.TextIOWrapper(io.BytesIO(data), encoding="utf-8-sig", newline="")  # Excel writes a BOM
        with site().sessions.begin() as db:
            report = csv_io.import_csv(db, stream, config.regions.order, **options)
    except csv_io.CsvReadError as err:
        return staff_page("import.html", 400, report=None, error=f"{name}: {err}; nothing was imported.")
    log.info("staff: %s imported %s: %d rows", g.staff.email, name, report.rows)
    return staff_page("import.html", report=report, filename=name)


# --- changes an admin makes to one reader (each an event in the reader's history) -------------


def staff_source() -> str:
    """Who changed it, as the reader's event log records it."""
    return f"console ({g.staff.email})"[:50]


def subscriber_or_404(db: Any, subscriber_id: int) -> Subscriber:
    sub = subscriber_store.get(db, subscriber_id)
    if sub is None:
        abort(404)
    return sub


def back_to(subscriber_id: int, message: str, category: str = "notice") -> Response:
    flash(message, category)
    return redirect(url_for("staff.subscriber", subscriber_id=subscriber_id), 303)


def subscriber_regions(subscriber_id: int) -> Response:
    """Change a reader's regions (none ticked: every region)."""
    s = site()
    with s.sessions.begin() as db:
        sub = subscriber_or_404(db, subscriber_id)
        try:
            chosen = check_regions(request.form.getlist("region"), s.config.regions.order)
        except InputError as err:
            return back_to(subscriber_id, f"Nothing was changed: {err.message}", "error")
        changed = subscriber_store.set_regions(db, sub, chosen, source=staff_source())
        email = sub.email
    log.info("staff: %s set the regions of %s to %s", g.staff.email, email, sorted(chosen) or "all")
    said = ", ".join(sorted(chosen)) or "every region"
    return back_to(subscriber_id, f"{email} now gets {said}." if changed else "Nothing was changed.")


def subscriber_unsubscribe(subscriber_id: int) -> Response:
    with site().sessions.begin() as db:
        sub = subscriber_or_404(db, subscriber_id)
        changed = subscriber_store.unsubscribe(db, sub, source=staff_source())
        email, status = sub.email, sub.status.value
    log.info("staff: %s unsubscribed %s", g.staff.email, email)
    if not changed:
        return back_to(subscriber_id, f"{email} was already {status}; nothing was changed.")
    return back_to(subscriber_id, f"{email} is unsubscribed; the address stays suppressed.")


def subscriber_confirm_again(subscriber_id: int) -> Response:
    """Mail a pending reader a new confirmation link (the older ones stop working)."""
    s = site()
    with s.sessions.begin() as db:
        sub = subscriber_or_404(db, subscriber_id)
        if sub.status != Status.PENDING:
            return back_to(
                subscriber_id, f"{sub.email} is {sub.status.value}: only a pending reader confirms.", "error"
            )
        subscriber_store.note_confirmation_sent(db, sub, source=staff_source(), at=s.clock())
        url = s.links.confirm(s.tokens.make(sub.id, Purpose.CONFIRM))
        mail = confirmation_message(s.config, to_email=sub.email, confirm_url=url)
        email = sub.email
    try:
        s.signups.mailer(mail)
    except (OSError, DigestError) as err:
        log.warning("staff: confirmation mail to %s failed: %s", email, err)
        return back_to(subscriber_id, f"The confirmation mail to {email} could not be sent: {err}", "error")
    log.info("staff: %s sent %s a new confirmation mail", g.staff.email, email)
    return back_to(subscriber_id, f"A new confirmation mail went to {email}.")


def erase_page(subscriber_id: int, status: int = 200, error: str = "") -> Response:
    with site().sessions() as db:
        sub = subscriber_or_404(db, subscriber_id)
        return staff_page("subscriber_erase.html", status, sub=sub, error=error)


def subscriber_erase_confirm(subscriber_id: int) -> Response:
    """Erasing asks first, on a page of its own: the admin types the address."""
    return erase_page(subscriber_id)


def subscriber_erase(subscriber_id: int) -> Response:
    """Erase a reader and their history (a data-protection request), as `digest subscribers
    remove --delete`: the address stays suppressed, as a hash only."""
    with site().sessions.begin() as db:
        sub = subscriber_or_404(db, subscriber_id)
        typed = request.form.get("confirm", "").strip()
        if typed.casefold() != sub.email.casefold():
            return erase_page(
                subscriber_id, 400, "Nothing was erased: type the reader's address exactly to confirm."
            )
        email = sub.email
        subscriber_store.unsubscribe(db, sub, source=staff_source())
        subscriber_store.delete_subscriber(db, sub, source=staff_source())
    # Nothing of the reader is left to carry an event: the log line is the record.
    log.info("staff: %s erased subscriber %d on request", g.staff.email, subscriber_id)
    flash(f"{email} is erased, with its history; the address stays suppressed (as a hash only).", "notice")
    return redirect(url_for("staff.subscribers"), 303)
