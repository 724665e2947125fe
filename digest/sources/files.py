"""A folder of hand-curated articles: Markdown with YAML front matter, or JSON.

    ---
    title: Iraq's quiet election
    url: https://example.org/iraq-election/
    date: 2025-11-06T09:00:00-05:00
    region: Middle East            # or: categories: [Analysis, Middle East], or "Analysis | Middle East"
    format: Analysis               # optional; else found in the categories
    author: Jane Doe               # or a list of names
    image: https://example.org/iraq.jpg
    image_alt: Voters in Karbala   # or caption; none: an empty alt
    credit: REUTERS/Thaier Al-Sudani
    lede: Optional; else the first real paragraph of the body.
    ---
    Body in Markdown...

A .json file holds one such object (keys as in the front matter, `lede` or `body`) or a list
of them. Files are read in name order; a bad file is a warning naming it, and so is a file
over the size cap (`[collect] fetch_max_bytes`, as for HTTP), which is not read.
"""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from digest.models import Article
from digest.sources import SourceResult
from digest.sources.extract import (
    find_credit,
    first_paragraph,
    join_names,
    plain_text,
    safe_url,
    sanitize_html,
)
from digest.sources.http import DEFAULT_MAX_BYTES
from digest.sources.local import FileTooBig, read_capped, too_big_warning

SUFFIXES = {".md", ".markdown", ".json"}
_FRONT_MATTER = re.compile(
    r"\A\ufeff?---[ \t]*\r?\n(?P<meta>.*?)\r?\n(?:---|\.\.\.)[ \t]*(?:\r?\n|\Z)(?P<body>.*)\Z", re.S
)


def read_folder(
    folder: Path, *, name: str, tz: Any = UTC, max_bytes: int = DEFAULT_MAX_BYTES
) -> SourceResult:
    """Every article file in `folder` (not recursive). `tz` applies to dates without a zone."""
    result = SourceResult(name=name)
    if not folder.is_dir():
        result.warnings.append(f"{name}: {folder} is not a folder")
        return result
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in SUFFIXES and p.is_file()):
        try:
            text = read_capped(path, max_bytes).decode("utf-8")
        except FileTooBig as err:
            result.warnings.append(too_big_warning(name, err))
            continue
        except (OSError, UnicodeDecodeError) as err:
            result.warnings.append(f"{name}: cannot read {path.name} ({err})")
            continue
        try:
            records = _records(path, text)
        except ValueError as err:
            result.warnings.append(f"{name}: {path.name}: {err}")
            continue
        for i, (meta, body) in enumerate(records):
            where = path.name if len(records) == 1 else f"{path.name} item {i + 1}"
            try:
                result.articles.append(record_article(meta, body, source=name, tz=tz))
            except ValueError as err:
                result.warnings.append(f"{name}: {where}: {err}")
    return result


def _records(path: Path, text: str) -> list[tuple[dict[str, Any], str]]:
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as err:
            raise ValueError(f"not valid JSON ({err})") from None
        items = data if isinstance(data, list) else [data]
        if not all(isinstance(i, dict) for i in items):
            raise ValueError("must hold an object or a list of objects")
        return [(i, str(i.get("body") or "")) for i in items]
    m = _FRONT_MATTER.match(text)
    if not m:
        raise ValueError("no front matter (a block between --- lines at the top)")
    import yaml  # here: only Markdown files with front matter need it, and it costs every command ~10 ms

    try:
        meta = yaml.safe_load(m.group("meta"))
    except yaml.YAMLError as err:
        raise ValueError(f"front matter is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(meta, dict):
        raise ValueError("front matter must be a mapping of keys to values")
    return [(meta, m.group("body"))]


def record_article(meta: dict[str, Any], body: str, *, source: str, tz: Any = UTC) -> Article:
    url = safe_url(_text(meta.get("url") or meta.get("link")))
    if not url:
        raise ValueError("url is missing or not an http(s) URL")
    published = _date(meta.get("date") or meta.get("published"), tz)
    if published is None:
        raise ValueError("date is missing or not a date (use e.g. 2025-11-06T09:00:00-05:00)")
    title = plain_text(html.escape(_text(meta.get("title"))))
    if not title:
        raise ValueError("title is missing")
    categories: list[str] = []
    for key in ("region", "section"):
        if meta.get(key):
            categories.append(_text(meta[key]))
    extra = meta.get("categories") or meta.get("tags") or []
    categories += [_text(c) for c in (extra if isinstance(extra, list) else [extra])]
    body_html = sanitize_html(markdown_paragraphs(body))
    lede = _text(meta.get("lede") or meta.get("summary") or meta.get("description"))
    return Article(
        guid=_text(meta.get("guid") or meta.get("id")) or url,
        url=url,
        title=title,
        lede=plain_text(html.escape(lede)) if lede else first_paragraph(body_html),
        published=published,
        categories=tuple(c for c in (plain_text(html.escape(c)) for c in categories) if c),
        image_url=safe_url(_text(meta.get("image"))),
        image_alt=plain_text(html.escape(_text(meta.get("image_alt") or meta.get("caption")))),
        image_credit=plain_text(html.escape(_text(meta.get("credit")))) or find_credit(body_html),
        author=join_names([plain_text(html.escape(_text(a))) for a in _as_list(meta.get("author"))]) or None,
        source=source,
        format_label=plain_text(html.escape(_text(meta.get("format")))),
    )


def markdown_paragraphs(markdown: str) -> str:
    """Just enough Markdown for a lede and a credit line: paragraphs, links, emphasis.

    The result is escaped text in <p> tags; it still goes through sanitize_html.
    """
    paragraphs = []
    for block in re.split(r"\n\s*\n", markdown.strip()):
        lines = [ln for ln in block.splitlines() if not re.match(r"\s*(#|!\[|<!--|```|>?\s*$)", ln)]
        text = " ".join(ln.strip() for ln in lines).strip()
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # [text](url) -> text
        text = re.sub(r"(\*\*|__|\*|_|`)(.+?)\1", r"\2", text)
        text = re.sub(r"^(?:[-*+]|\d+\.)\s+", "", text)
        if text:
            paragraphs.append(f"<p>{html.escape(text)}</p>")
    return "".join(paragraphs)


def _date(value: Any, tz: Any) -> datetime | None:
    if isinstance(value, datetime):
        stamp = value
    elif isinstance(value, date):
        stamp = datetime.combine(value, time(0, 0))
    elif isinstance(value, str) and value.strip():
        try:
            stamp = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=tz)


def _as_list(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    return value if isinstance(value, list) else [value]


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)
