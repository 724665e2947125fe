"""What every provider webhook module shares: the request it reads, and how it refuses one.

A module `<provider>_webhook.py` beside its transport has `PROVIDER` and
`reports(request, context) -> list[Report]`: it checks the signature first and raises
`Refused` (401 missing, 403 wrong or stale) before reading anything else, so a request that
fails changes nothing. Then it validates the payload against the provider's documented shape
(`shaped`, pydantic): a signed but malformed body is a 400, never an error inside our code.
Matching and the policy are `subscribers.reports`'s, the same as for reports read from a mailbox.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
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


# Unix seconds as ASCII digits, no sign, no leading zero, no fraction, no exponent: "nan", "1e9",
# " 17", "017" and "17.0" are refused, so one signed value has exactly one spelling.
UNIX_SECONDS_RE = re.compile(r"[1-9][0-9]{0,11}")


def unix_seconds(value: object) -> int:
    """A timestamp as providers send it (a JSON integer or a string of digits), strictly."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 10**12:
        return value
    if isinstance(value, str) and UNIX_SECONDS_RE.fullmatch(value):
        return int(value)
    raise Refused(403, "the timestamp is not a positive whole number of seconds")


def fresh(timestamp: object, context: Context) -> None:
    """Refuse a timestamp (Unix seconds) that is malformed or further than max_age from now."""
    at = unix_seconds(timestamp)
    if abs(context.now().timestamp() - at) > context.max_age_seconds:
        raise Refused(403, "the timestamp is stale")


class Shape(BaseModel):
    """A provider's documented payload: the fields we read, typed; other fields are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, frozen=True)


ShapeT = TypeVar("ShapeT", bound=BaseModel)


def shaped(model: type[ShapeT], data: Any, what: str) -> ShapeT:
    """`data` validated as `model`; a signed but malformed payload is a 400 naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the body"
        raise Refused(400, f"{what}: {where}: {first['msg']}") from None


def required_secret(context: Context, name: str) -> str:
    value = context.secret(name)
    if not value:
        # Not configured: nothing could be verified, so nothing is accepted.
        raise Refused(403, f"DIGEST_{name.upper()} is not set")
    return value
