"""The web edition of each issue ("view in browser"): written by a send, served by `digest serve`.

One HTML file per issue date in `[web] archive_dir`; the same render as the e-mail with no
personal links (`Renderer.render_archive`).
"""

from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
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


@dataclass(frozen=True)
class ArchivedIssue:
    """One web edition as the archive lists it: its date, title and when the send wrote it."""

    issue: str  # ISO date, also the file's stem and the URL's last part
    title: str
    written: datetime  # the file's modification time (UTC): a re-send rewrites it
    path: Path


_TITLE = re.compile(r"<title[^>]*>(.*?)</title>", re.I | re.S)
_HEAD_CHARS = 16_384  # the MJML head (styles, title) is a few KB
_BODY = re.compile(r"<body[^>]*>(.*)</body>", re.I | re.S)


def issue_title(page: str, issue: str) -> str:
    """The web edition's <title> (the issue's subject line), or a plain name for the date."""
    m = _TITLE.search(page)
    title = " ".join(html.unescape(m.group(1)).split()) if m else ""
    return title or f"Issue of {issue}"


def issue_body(page: str) -> str:
    """What is between <body> and </body>: feed readers show a fragment, not a document.

    The e-mail HTML styles its elements inline, so the fragment reads the same without the
    <head>'s style sheet (which only holds the phone-width media queries).
    """
    m = _BODY.search(page)
    return m.group(1).strip() if m else page


def list_issues(config: Config) -> list[str]:
    """Dates of the written web editions, newest first."""
    folder = config.resolve_path(config.web.archive_dir)
    if not folder.is_dir():
        return []
    dates = [p.stem for p in folder.glob("*.html") if _ISSUE.fullmatch(p.stem) and p.is_file()]
    return sorted(dates, reverse=True)


def read_issue(config: Config, issue: str, *, whole: bool = True) -> tuple[ArchivedIssue, str] | None:
    """One web edition and its HTML; None if there is none for that date.

    `whole=False` reads only the start of the file, enough for its <title> (a listing page
    shows twenty issues and needs none of their bodies).
    """
    path = archive_path(config, issue)
    if path is None or not path.is_file():
        return None
    with path.open(encoding="utf-8", errors="replace") as f:
        page = f.read() if whole else f.read(_HEAD_CHARS)
    written = datetime.fromtimestamp(path.stat().st_mtime, UTC)
    return ArchivedIssue(issue, issue_title(page, issue), written, path), page
