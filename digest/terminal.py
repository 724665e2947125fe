"""What the CLI prints: text from outside (names, SMTP replies, webhook text, feed titles) never
carries terminal control sequences, on a terminal or in a pipe.

ESC sequences (CSI colours and cursor moves, OSC 8 hyperlinks, OSC titles, ...) are removed
whole; then every other control character: C0 but newline and tab, DEL, C1, and the Unicode
bidirectional overrides that reorder what a line seems to say. `safe_text` is the one function;
`console()` gives a rich Console that applies it to every segment of text it renders (its own
styling is added after, so colours stay), and `LogFormatter` to every log line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

from rich.console import Console, ConsoleOptions, RenderableType
from rich.segment import Segment
from rich.text import Text

_ESCAPE_SEQUENCE = re.compile(
    r"""
    \x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?      # OSC ... BEL or ST (hyperlinks, window titles)
    | \x1b[P^_X][^\x1b]*(?:\x1b\\)?         # DCS, PM, APC, SOS ... ST
    | \x1b\[[0-?]*[ -/]*[@-~]?              # CSI (colours, cursor moves, erase)
    | \x9b[0-?]*[ -/]*[@-~]?                # 8-bit CSI
    | \x9d[^\x07\x9c]*(?:\x07|\x9c)?        # 8-bit OSC
    | \x1b[ -/]*[0-~]?                      # any other ESC sequence
    """,
    re.VERBOSE,
)
# C0 but \t and \n, DEL, C1; bidi embeddings, overrides and isolates (U+202A-E, U+2066-9).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def safe_text(text: str) -> str:
    """`text` without terminal escape sequences or control characters (newline and tab kept)."""
    if not _CONTROL.search(text):
        return text
    return _CONTROL.sub("", _ESCAPE_SEQUENCE.sub("", text))


class SafeConsole(Console):
    """A rich Console whose text passes through `safe_text`: every string before markup and
    highlighting (so a sequence goes whole), and every rendered segment after (a `Text` made
    elsewhere); rich's own control segments, such as a progress display's cursor moves, stay."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(safe_text(text), **kwargs)

    def render(self, renderable: RenderableType, options: ConsoleOptions | None = None) -> Iterable[Segment]:
        for segment in super().render(renderable, options):
            if segment.control is None and _CONTROL.search(segment.text):
                yield Segment(safe_text(segment.text), segment.style)
            else:
                yield segment


def console(**kwargs: Any) -> Console:
    """The Console every command prints through (same arguments as rich's)."""
    return SafeConsole(**kwargs)


class LogFormatter(logging.Formatter):
    """Log lines (which may quote an SMTP reply or a webhook's text) without control sequences."""

    def format(self, record: logging.LogRecord) -> str:
        return safe_text(super().format(record))
