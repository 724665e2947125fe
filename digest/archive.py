"""The web edition of each issue ("view in browser"): written by a send, served by `digest serve`.

One HTML file per issue date in `[web] archive_dir`; the same render as the e-mail with no
personal links (`Renderer.render_archive`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from digest.config import Config
from digest.models import Digest
from digest.render import Renderer

_ISSUE = re.compile(r"\d{4}-\d{2}-\d{2}")


def archive_path(config: Config, issue: str) -> Path | None:
    """Where the issue of that date lives; None for anything that is not a date (no path tricks)."""
    if not _ISSUE.fullmatch(issue):
        return None
    return config.resolve_path(config.web.archive_dir) / f"{issue}.html"


def write_archive(config: Config, digest: Digest, renderer: Renderer) -> Path:
    path = archive_path(config, digest.issue_date.isoformat())
    assert path is not None  # an ISO date always matches
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")
    tmp.write_text(renderer.render_archive(digest), encoding="utf-8")
    os.replace(tmp, path)  # readers never see half a page
    return path
