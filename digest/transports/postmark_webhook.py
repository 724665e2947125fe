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

from digest.transports.webhook import Context, Incoming, Refused, json_body, required_secret, same
from subscribers.bounces import MESSAGE_ID_RE, STATUS_RE, Finding, Kind, Report, reason_for

PROVIDER = "postmark"
# Postmark's bounce types (its BounceType list); auto-replies, subscribe requests and the like
# are no bounce at all and are ignored.
HARD_TYPES = {"HardBounce", "BadEmailAddress", "ManuallyDeactivated"}
SOFT_TYPES = {"SoftBounce", "Transient", "DnsError", "Blocked", "DMARCPolicy", "Unknown"}


def reports(request: Incoming, context: Context) -> list[Report]:
    if request.authorization is None:
        raise Refused(401, "no Postmark credentials")
    user = required_secret(context, "postmark_webhook_user")
    password = required_secret(context, "postmark_webhook_password")
    given_user, given_password = request.authorization
    if not (same(user, given_user) & same(password, given_password)):
        raise Refused(403, "wrong Postmark credentials")
    event = json_body(request.body)
    if not isinstance(event, dict):
        raise Refused(400, "a Postmark webhook is a JSON object")
    ids = [str((event.get("Metadata") or {}).get("digest_message_id") or "")]
    ids += [m.group(1) for m in MESSAGE_ID_RE.finditer(str(event.get("Content") or ""))]
    ids_t = tuple(i.strip().strip("<>") for i in ids if i)
    address = str(event.get("Email") or "")
    record, kind = event.get("RecordType"), str(event.get("Type") or "")
    if record == "SpamComplaint" or kind == "SpamComplaint":
        return [Report((Finding(address, Kind.COMPLAINT, reason="abuse"),), ids_t)]
    if record != "Bounce" or kind not in HARD_TYPES | SOFT_TYPES:
        return []
    words = f"{event.get('Description') or ''} {event.get('Details') or ''}".strip()
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
