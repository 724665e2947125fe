"""SendGrid Event Webhook: ECDSA (P-256, SHA-256) signature over timestamp + raw body.

Headers X-Twilio-Email-Event-Webhook-Signature (base64 DER signature) and
-Timestamp; the verification key (base64 DER public key, as SendGrid's Mail Settings show it)
in DIGEST_SENDGRID_WEBHOOK_KEY. The body is a JSON array of events; "bounce" (type "bounce":
permanent, "blocked": temporary) and "spamreport" matter. Our Message-ID comes back in
"smtp-id", or in the custom argument "digest_message_id" where the transport sets one.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import Field

from digest.transports.webhook import (
    Context,
    Incoming,
    Refused,
    Shape,
    fresh,
    json_body,
    required_secret,
    shaped,
    unix_seconds,
)
from subscribers.bounces import STATUS_RE, Finding, Kind, Report, reason_for

PROVIDER = "sendgrid"
SECRET = "sendgrid_webhook_key"
SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


class Event(Shape):
    """One event of SendGrid's Event Webhook batch: the fields we read."""

    event: str
    email: str = ""
    smtp_id: str | None = Field(None, alias="smtp-id")
    digest_message_id: str | None = None
    reason: str | None = None
    status: str | None = None
    type: str | None = None


class Batch(Shape):
    events: list[Event]


def _public_key(text: str) -> ec.EllipticCurvePublicKey:
    try:
        if "BEGIN PUBLIC KEY" in text:
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = serialization.load_der_public_key(base64.b64decode(text))
    except (ValueError, binascii.Error) as err:
        raise Refused(403, f"DIGEST_SENDGRID_WEBHOOK_KEY is not an EC public key: {err}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise Refused(403, "DIGEST_SENDGRID_WEBHOOK_KEY is not an EC public key")
    return key


def reports(request: Incoming, context: Context) -> list[Report]:
    signature, timestamp = request.headers.get(SIGNATURE), request.headers.get(TIMESTAMP)
    if not signature or not timestamp:
        raise Refused(401, "no SendGrid signature")
    unix_seconds(timestamp)  # before the signature: "nan" or " 17" never reaches the key
    key = _public_key(required_secret(context, SECRET))
    try:
        key.verify(base64.b64decode(signature), timestamp.encode() + request.body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        raise Refused(403, "the SendGrid signature does not match") from None
    fresh(timestamp, context)
    batch = shaped(Batch, {"events": json_body(request.body)}, "SendGrid event batch")
    return [r for r in (_report(e) for e in batch.events) if r is not None]


def _report(event: Event) -> Report | None:
    ids = tuple(v.strip().strip("<>") for v in (event.smtp_id, event.digest_message_id) if v)
    address = event.email
    if event.event == "spamreport":
        return Report((Finding(address, Kind.COMPLAINT, reason="abuse"),), ids)
    if event.event != "bounce":
        return None
    words = event.reason or ""
    m = STATUS_RE.search(event.status or "") or STATUS_RE.search(words)
    code = m.group(0) if m else ""
    hard = (event.type or "bounce") == "bounce"
    finding = Finding(
        address, Kind.BOUNCE, status=code, hard=hard, reason=reason_for(code, words), diagnostic=words[:300]
    )
    return Report((finding,), ids)
