"""What every provider webhook module shares: the request it reads, and how it refuses one.

A module `<provider>_webhook.py` beside its transport has `PROVIDER` and
`reports(request, context) -> list[Report]`: it checks the signature first and raises
`Refused` (401 missing, 403 wrong or stale) before reading anything else, so a request that
fails changes nothing. Matching and the policy are `subscribers.reports`'s, the same as for
reports read from a mailbox.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session


class Refused(Exception):
    """The request is not from the provider (or is a replay): answer `status`, change nothing."""

    def __init__(self, status: int, reason: str) -> None:
        self.status = status
        self.reason = reason
        super().__init__(reason)


@dataclass
class Incoming:
    body: bytes
    headers: Mapping[str, str]
    path_secret: str = ""  # the secret path segment, for providers that use one
    authorization: tuple[str, str] | None = None  # HTTP basic auth (user, password)


@dataclass
class Context:
    now: Callable[[], datetime]
    max_age_seconds: int
    session: Session  # for single-use tokens (Mailgun)
    secret: Callable[[str], str]  # env lookup: secret("mailgun_webhook_signing_key")
    extra: dict[str, Any] = field(default_factory=dict)  # per-provider (SNS certificate fetcher)


def json_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        raise Refused(400, "the body is not JSON") from None


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


def fresh(timestamp: str, context: Context) -> None:
    """Refuse a timestamp (Unix seconds) further than max_age from now, either way."""
    try:
        at = float(timestamp)
    except (TypeError, ValueError):
        raise Refused(401, "no valid timestamp") from None
    if abs(context.now().timestamp() - at) > context.max_age_seconds:
        raise Refused(403, "the timestamp is stale")


def required_secret(context: Context, name: str) -> str:
    value = context.secret(name)
    if not value:
        # Not configured: nothing could be verified, so nothing is accepted.
        raise Refused(403, f"DIGEST_{name.upper()} is not set")
    return value
