"""Mailgun webhooks: HMAC-SHA256 of timestamp + token under the webhook signing key.

Body (JSON): {"signature": {"timestamp", "token", "signature"}, "event-data": {...}}. The HMAC
covers the two values concatenated with no separator, so before it the shapes are checked that
make the split unambiguous: the timestamp a positive integer of ASCII digits, the token exactly
50 letters or digits (Mailgun's documented length), the signature 64 hex digits. Otherwise
`timestamp=T, token="e0"+X` and `timestamp=T+"e0", token=X` would share one signature. A token
is single-use (kept in the database for the freshness window); a stale timestamp is refused.
Our Message-ID comes back in event-data.message.headers["message-id"].
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import timedelta
from typing import Any

from pydantic import Field

from digest.transports.webhook import (
    Context,
    Incoming,
    Refused,
    Shape,
    fresh,
    json_body,
    required_secret,
    same,
    shaped,
    unix_seconds,
)
from subscribers.bounces import STATUS_RE, Finding, Kind, Report, reason_for
from subscribers.reports import remember_nonce

PROVIDER = "mailgun"
SECRET = "mailgun_webhook_signing_key"
TOKEN_RE = re.compile(r"[0-9A-Za-z]{50}")
SIGNATURE_RE = re.compile(r"[0-9a-fA-F]{64}")


class DeliveryStatus(Shape):
    code: int | str | None = None
    message: str | None = None
    description: str | None = None
    enhanced_code: str | None = Field(None, alias="enhanced-code")


class Headers(Shape):
    message_id: str | None = Field(None, alias="message-id")


class Message(Shape):
    headers: Headers = Headers()


class EventData(Shape):
    event: str
    recipient: str = ""
    severity: str | None = None
    reason: str | None = None
    delivery_status: DeliveryStatus = Field(DeliveryStatus(), alias="delivery-status")
    message: Message = Message()
    user_variables: dict[str, Any] = Field(default_factory=dict, alias="user-variables")


class Payload(Shape):
    event_data: EventData = Field(alias="event-data")


def reports(request: Incoming, context: Context) -> list[Report]:
    payload = json_body(request.body)
    sig = payload.get("signature") if isinstance(payload, dict) else None
    if not isinstance(sig, dict) or not all(sig.get(k) for k in ("timestamp", "token", "signature")):
        raise Refused(401, "no Mailgun signature")
    timestamp, token, signature = _signature_parts(sig)
    key = required_secret(context, SECRET)
    expected = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    if not same(expected, signature.lower()):
        raise Refused(403, "the Mailgun signature does not match")
    fresh(timestamp, context)
    keep = timedelta(seconds=2 * context.max_age_seconds)
    if not remember_nonce(context.session, PROVIDER, token, now=context.now(), keep=keep):
        raise Refused(403, "this Mailgun token was used already (a replay)")
    event = shaped(Payload, payload, "Mailgun event").event_data
    return [r for r in [_report(event)] if r is not None]


def _signature_parts(sig: dict) -> tuple[int, str, str]:
    """Timestamp, token and signature, refused unless each has its documented form."""
    timestamp = unix_seconds(sig["timestamp"])
    token, signature = sig["token"], sig["signature"]
    if not isinstance(token, str) or not TOKEN_RE.fullmatch(token):
        raise Refused(403, "the Mailgun token is not 50 letters or digits")
    if not isinstance(signature, str) or not SIGNATURE_RE.fullmatch(signature):
        raise Refused(403, "the Mailgun signature is not 64 hex digits")
    return timestamp, token, signature


def _report(event: EventData) -> Report | None:
    ids = [event.message.headers.message_id or ""]
    ids.append(str(event.user_variables.get("digest_message_id") or ""))
    ids = [i.strip().strip("<>") for i in ids if i]
    recipient = event.recipient
    if event.event == "complained":
        return Report((Finding(recipient, Kind.COMPLAINT, reason="abuse"),), tuple(ids))
    if event.event != "failed":
        return None
    status = event.delivery_status
    words = " ".join(s for s in (status.message, status.description) if s)
    m = STATUS_RE.search(status.enhanced_code or "") or STATUS_RE.search(words)
    code = m.group(0) if m else ""
    finding = Finding(
        recipient,
        Kind.BOUNCE,
        status=code,
        hard=event.severity == "permanent",
        reason=reason_for(code, words + " " + (event.reason or "")),
        diagnostic=words.strip()[:300],
        reply=str(status.code or ""),
    )
    return Report((finding,), tuple(ids))
