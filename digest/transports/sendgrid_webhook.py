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

from digest.transports.webhook import Context, Incoming, Refused, fresh, json_body, required_secret
from subscribers.bounces import STATUS_RE, Finding, Kind, Report, reason_for

PROVIDER = "sendgrid"
SECRET = "sendgrid_webhook_key"
SIGNATURE = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP = "X-Twilio-Email-Event-Webhook-Timestamp"


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
    key = _public_key(required_secret(context, SECRET))
    try:
        key.verify(base64.b64decode(signature), timestamp.encode() + request.body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, binascii.Error, ValueError):
        raise Refused(403, "the SendGrid signature does not match") from None
    fresh(timestamp, context)
    events = json_body(request.body)
    if not isinstance(events, list):
        raise Refused(400, "a SendGrid event batch is a JSON array")
    return [r for r in (_report(e) for e in events if isinstance(e, dict)) if r is not None]


def _report(event: dict) -> Report | None:
    ids = tuple(
        str(v).strip().strip("<>") for v in (event.get("smtp-id"), event.get("digest_message_id")) if v
    )
    address = str(event.get("email") or "")
    if event.get("event") == "spamreport":
        return Report((Finding(address, Kind.COMPLAINT, reason="abuse"),), ids)
    if event.get("event") != "bounce":
        return None
    words = str(event.get("reason") or "")
    m = STATUS_RE.search(str(event.get("status") or "")) or STATUS_RE.search(words)
    code = m.group(0) if m else ""
    hard = event.get("type", "bounce") == "bounce"
    finding = Finding(
        address, Kind.BOUNCE, status=code, hard=hard, reason=reason_for(code, words), diagnostic=words[:300]
    )
    return Report((finding,), ids)
