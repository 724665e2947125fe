"""Sources: each kind of source turns its input into Articles plus warnings, never raising for bad input."""

from __future__ import annotations

from dataclasses import dataclass, field

from digest.models import Article


@dataclass
class SourceResult:
    """What one source gave: its articles and what went wrong (feedparser's `bozo`, in spirit)."""

    name: str
    articles: list[Article] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
