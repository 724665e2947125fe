"""Postmark bounce and spam-complaint webhooks, protected by HTTP basic auth.

Postmark signs nothing; its documentation has the webhook URL carry basic-auth credentials
(https://user:password@host/webhooks/postmark), which it then sends on every request. They are
checked against DIGEST_POSTMARK_WEBHOOK_USER and DIGEST_POSTMARK_WEBHOOK_PASSWORD. Basic auth
cannot tell a replay: the policy's own de-duplication (one event per run and subscriber)
keeps a replayed report from counting twice. Postmark's MessageID is its own; our Message-ID
comes back in Metadata["digest_message_id"] where the transport sets it.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field

from digest.transports.webhook import (
    Context,
    Incoming,
    Refused,
    Shape,
    json_body,
    required_secret,
    same,
    shaped,
)
from subscribers.bounces import MESSAGE_ID_RE, STATUS_RE, Finding, Kind, Report, reason_for

PROVIDER = "postmark"
# Postmark's bounce types (its BounceType list); auto-replies, subscribe requests and the like
# are no bounce at all and are ignored.
HARD_TYPES = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
SOFT_TYPES = {"SoftBounce", "Transient", "DnsError", "Blocked", "DMARCPolicy", "Unknown"}


class Event(Shape):
    """Postmark's Bounce and SpamComplaint webhook bodies: the fields we read."""

    record_type: str | None = Field(None, alias="RecordType")
    type: str | None = Field(None, alias="Type")
    email: str = Field("", alias="Email")
    description: str | None = Field(None, alias="Description")
    details: str | None = Field(None, alias="Details")
    content: str | None = Field(None, alias="Content")
    metadata: dict[str, Any] | None = Field(None, alias="Metadata")


def reports(request: Incoming, context: Context) -> list[Report]:
    if request.authorization is None:
        raise Refused(401, "no Postmark credentials")
    user = required_secret(context, "postmark_webhook_user")
    password = required_secret(context, "postmark_webhook_password")
    given_user, given_password = request.authorization
    if not (same(user, given_user) & same(password, given_password)):
        raise Refused(403, "wrong Postmark credentials")
    event = shaped(Event, json_body(request.body), "Postmark event")
    ids = [str((event.metadata or {}).get("digest_message_id") or "")]
    ids += [m.group(1) for m in MESSAGE_ID_RE.finditer(event.content or "")]
    ids_t = tuple(i.strip().strip("<>") for i in ids if i)
    address = event.email
    record, kind = event.record_type, event.type or ""
    if record == "SpamComplaint" or kind == "SpamComplaint":
        return [Report((Finding(address, Kind.COMPLAINT, reason="abuse"),), ids_t)]
    if record != "Bounce" or kind not in HARD_TYPES | SOFT_TYPES:
        return []
    words = f"{event.description or ''} {event.details or ''}".strip()
    m = STATUS_RE.search(words)
    code = m.group(0) if m else ""
    reply = re.search(r"\b([45]\d\d)\b", words)
    finding = Finding(
        address,
        Kind.BOUNCE,
        status=code,
        hard=kind in HARD_TYPES,
        reason=reason_for(code, words),
        diagnostic=words[:300],
        reply=reply.group(1) if reply else "",
    )
    return [Report((finding,), ids_t)]
