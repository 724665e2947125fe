"""The web edition of a sent issue (/archive/<issue>, "view in browser"), as the send wrote it."""

from __future__ import annotations

from flask import Response, abort

from digest.archive import archive_path
from digest.web.site import site

# The e-mail HTML carries its own inline styles and remote photos; still no scripts.
EDITION_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def archive(issue: str) -> Response:
    path = archive_path(site().config, issue)
    if path is None or not path.is_file():
        abort(404)
    resp = Response(path.read_text(encoding="utf-8"), mimetype="text/html")
    resp.headers["Content-Security-Policy"] = EDITION_CSP
    return resp
