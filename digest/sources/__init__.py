"""Sources: each kind of source turns its input into Articles plus warnings, never raising for bad input.

One module per kind: `rss` (RSS, Atom, RDF; JSON Feed through `jsonfeed`), `wordpress` (REST API),
`files` (a folder of Markdown or JSON), `sample` (the demo's feed). `http` is the one fetcher
they all use; `extract` the pure HTML helpers (nh3 sanitising, lede, image, credit); `enrich`
reads OpenGraph and JSON-LD from article pages. Articles leave a source with plain-text title,
lede and credit and absolute http(s) URLs; `digest.collect` does the rest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from digest.models import Article


@dataclass
class SourceResult:
    """What one source gave: its articles and what went wrong (feedparser's `bozo`, in spirit)."""

    name: str
    articles: list[Article] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, articles: Iterable[Article | None], *, unreadable: str) -> None:
        """Keep the articles; count the items that gave none (None) in one warning.

        `unreadable` names them, e.g. "entries without an http(s) link or a date".
        """
        skipped = 0
        for article in articles:
            if article is None:
                skipped += 1
            else:
                self.articles.append(article)
        if skipped:
            self.warnings.append(f"{self.name}: {skipped} {unreadable} were skipped")
