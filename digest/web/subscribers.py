"""The readers, for admins (/staff/subscribers): search, one reader's history and deliveries,
and the CSV import (/staff/subscribers/import, up to MAX_IMPORT_BYTES)."""

from __future__ import annotations

import io
import logging

from flask import Response, abort, g, request
from sqlalchemy import or_, select

from digest.web import console
from digest.web.pages import staff_page
from digest.web.site import site
from subscribers import csv_io
from subscribers import store as subscriber_store
from subscribers.store import Status, Subscriber

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
            events=subscriber_store.events_for(db, sub),
            deliveries=console.deliveries_of(db, sub.id),
            suppressed=subscriber_store.is_suppressed(db, sub.email),
        )


def subscribers_import() -> Response:
    if request.method == "GET":
        return staff_page("import.html", report=None)
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return staff_page("import.html", 400, report=None, error="Choose a CSV file to import.")
    name = upload.filename
    stream = io.TextIOWrapper(upload.stream, encoding="utf-8-sig", newline="")  # Excel writes a BOM
    try:
        with site().sessions.begin() as db:
            report = csv_io.import_csv(db, stream, site().config.regions.order)
    except UnicodeDecodeError as err:
        return staff_page(
            "import.html",
            400,
            report=None,
            error=f"{name} is not UTF-8 text ({err.reason} at byte {err.start}); nothing was imported. "
            "Save it as “CSV UTF-8” and try again.",
        )
    log.info("staff: %s imported %s: %d rows", g.staff.email, name, report.rows)
    return staff_page("import.html", report=report, filename=name)
