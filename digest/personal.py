"""Per-recipient values and the placeholders that stand for them in a rendered variant.

Templates render once per variant with a marker such as `@@digest:unsubscribe_url@@` where a
personal value goes; `digest.message` splices the real value in per recipient, so Jinja2 and
MJML never run per recipient. The markers use only characters that survive HTML escaping,
MJML and quoted-printable untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

FIELDS = ("email", "name", "unsubscribe_url", "preferences_url", "reader")  # reader: [analytics] per_reader
MARKER_RE = re.compile(r"@@digest:(" + "|".join(FIELDS) + r")@@")


def marker(name: str) -> str:
    if name not in FIELDS:
        raise KeyError(f"unknown personal field {name!r}; known: {', '.join(FIELDS)}")
    return f"@@digest:{name}@@"


MARKERS: dict[str, str] = {name: marker(name) for name in FIELDS}


@dataclass(frozen=True)
class Links:
    """Where the subscriber-facing web pages live; the web app serves these paths."""

    base_url: str

    def unsubscribe(self, token: str) -> str:
        return f"{self.base_url.rstrip('/')}/unsubscribe/{token}"

    def preferences(self, token: str) -> str:
        return f"{self.base_url.rstrip('/')}/preferences/{token}"

    def confirm(self, token: str) -> str:
        return f"{self.base_url.rstrip('/')}/confirm/{token}"

    def archive(self, issue_slug: str) -> str:
        return f"{self.base_url.rstrip('/')}/archive/{issue_slug}"

    def subscribe(self) -> str:
        return f"{self.base_url.rstrip('/')}/subscribe"


def fill(text: str, values: dict[str, str]) -> str:
    """Replace markers with values (for previews and the web archive, not the hot path)."""
    return MARKER_RE.sub(lambda m: values.get(m.group(1), ""), text)
