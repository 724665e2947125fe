"""Resend webhooks, signed the Svix way (svix-id, svix-timestamp, svix-signature), checked with
the `svix` library against DIGEST_RESEND_WEBHOOK_SECRET ("whsec_..."); it also refuses a
timestamp older or newer than five minutes.

email.bounced (bounce.type "Permanent" is hard) and email.complained matter. Our Message-ID
comes back in data.headers where Resend includes them, or in the tag "digest_ref" (Resend tags
allow only [A-Za-z0-9_-]: the id's local part with "." as "_").
"""

from __future__ import annotations

from digest.transports.webhook import Context, Incoming, Refused, json_body, required_secret
from subscribers.bounces import STATUS_RE, Finding, Kind, Report, reason_for

PROVIDER = "resend"
SECRET = "resend_webhook_secret"


def reports(request: Incoming, context: Context) -> list[Report]:
    headers = {k.lower(): v for k, v in request.headers.items()}
    if not all(headers.get(h) for h in ("svix-id", "svix-timestamp", "svix-signature")):
        raise Refused(401, "no Svix signature")
    # Imported here: svix brings pydantic (0.6 s), and every `digest` command imports this package.
    from svix.webhooks import Webhook, WebhookVerificationError

    try:
        Webhook(required_secret(context, SECRET)).verify(request.body, headers)
    except WebhookVerificationError as err:
        raise Refused(403, f"the Resend signature does not verify: {err}") from None
    event = json_body(request.body)
    if not isinstance(event, dict):
        return []
    data = event.get("data") or {}
    ids = _ids(data)
    to = data.get("to") or []
    addresses = [str(a) for a in (to if isinstance(to, list) else [to])] or [""]
    if event.get("type") == "email.complained":
        return [Report(tuple(Finding(a, Kind.COMPLAINT, reason="abuse") for a in addresses), ids)]
    if event.get("type") != "email.bounced":
        return []
    bounce = data.get("bounce") or {}
    words = f"{bounce.get('message') or ''} {bounce.get('subType') or ''}".strip()
    m = STATUS_RE.search(words)
    code = m.group(0) if m else ""
    hard = str(bounce.get("type") or "Permanent") == "Permanent"
    findings = tuple(
        Finding(
            a, Kind.BOUNCE, status=code, hard=hard, reason=reason_for(code, words), diagnostic=words[:300]
        )
        for a in addresses
    )
    return [Report(findings, ids)]


def _ids(data: dict) -> tuple[str, ...]:
    ids: list[str] = []
    headers = data.get("headers") or []
    for h in headers if isinstance(headers, list) else []:
        if isinstance(h, dict) and str(h.get("name", "")).lower() == "message-id":
            ids.append(str(h.get("value", "")))
    tags = data.get("tags") or {}
    if isinstance(tags, list):  # [{"name": ..., "value": ...}]
        tags = {str(t.get("name")): t.get("value") for t in tags if isinstance(t, dict)}
    if isinstance(tags, dict) and tags.get("digest_ref"):
        ids.append(str(tags["digest_ref"]))
    return tuple(i.strip().strip("<>") for i in ids if i)
