"""Mailgun webhooks: HMAC-SHA256 of timestamp + token under the webhook signing key.

Body (JSON): {"signature": {"timestamp", "token", "signature"}, "event-data": {...}}. A token
is single-use (kept in the database for the freshness window); a stale timestamp is refused.
Our Message-ID comes back in event-data.message.headers["message-id"].
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import timedelta

from digest.transports.webhook import Context, Incoming, Refused, fresh, json_body, required_secret, same
from subscribers.bounces import STATUS_RE, Finding, Kind, Report, reason_for
from subscribers.reports import remember_nonce

PROVIDER = "mailgun"
SECRET = "mailgun_webhook_signing_key"


def reports(request: Incoming, context: Context) -> list[Report]:
    payload = json_body(request.body)
    sig = payload.get("signature") if isinstance(payload, dict) else None
    if not isinstance(sig, dict) or not all(sig.get(k) for k in ("timestamp", "token", "signature")):
        raise Refused(401, "no Mailgun signature")
    key = required_secret(context, SECRET)
    expected = hmac.new(
        key.encode(), f"{sig['timestamp']}{sig['token']}".encode(), hashlib.sha256
    ).hexdigest()
    if not same(expected, str(sig["signature"])):
        raise Refused(403, "the Mailgun signature does not match")
    fresh(str(sig["timestamp"]), context)
    keep = timedelta(seconds=2 * context.max_age_seconds)
    if not remember_nonce(context.session, PROVIDER, str(sig["token"]), now=context.now(), keep=keep):
        raise Refused(403, "this Mailgun token was used already (a replay)")
    event = payload.get("event-data") or {}
    return [r for r in [_report(event)] if r is not None]


def _report(event: dict) -> Report | None:
    headers = (event.get("message") or {}).get("headers") or {}
    ids = [str(headers.get("message-id") or "")]
    variables = event.get("user-variables") or {}
    ids.append(str(variables.get("digest_message_id") or ""))
    ids = [i.strip().strip("<>") for i in ids if i]
    recipient = str(event.get("recipient") or "")
    kind = event.get("event")
    if kind == "complained":
        return Report((Finding(recipient, Kind.COMPLAINT, reason="abuse"),), tuple(ids))
    if kind != "failed":
        return None
    status = event.get("delivery-status") or {}
    words = " ".join(str(status.get(k) or "") for k in ("message", "description"))
    m = STATUS_RE.search(str(status.get("enhanced-code") or "")) or STATUS_RE.search(words)
    code = m.group(0) if m else ""
    hard = event.get("severity") == "permanent"
    finding = Finding(
        recipient,
        Kind.BOUNCE,
        status=code,
        hard=hard,
        reason=reason_for(code, words + " " + str(event.get("reason") or "")),
        diagnostic=words.strip()[:300],
        reply=str(status.get("code") or ""),
    )
    return Report((finding,), tuple(ids))
