"""Resend webhooks, signed the Svix way (svix-id, svix-timestamp, svix-signature), checked with
the `svix` library against DIGEST_RESEND_WEBHOOK_SECRET ("whsec_..."); it also refuses a
timestamp older or newer than five minutes.

email.bounced (bounce.type "Permanent" is hard) and email.complained matter. Our Message-ID
comes back in data.headers where Resend includes them, or in the tag "digest_ref" (Resend tags
allow only [A-Za-z0-9_-]: the id's local part with "." as "_").
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from digest.transports.webhook import (
    Context,
    Incoming,
    Refused,
    Shape,
    json_body,
    required_secret,
    shaped,
    unix_seconds,
)
from subscribers.bounces import STATUS_RE, Finding, Kind, Report, reason_for

PROVIDER = "resend"
SECRET = "resend_webhook_secret"


class NameValue(Shape):
    name: str
    value: Any = None


class Bounce(Shape):
    message: str | None = None
    sub_type: str | None = Field(None, alias="subType")
    type: str | None = None


class Data(Shape):
    to: list[str] | str = Field(default_factory=list)
    headers: list[NameValue] | None = None
    tags: dict[str, Any] | list[NameValue] | None = None
    bounce: Bounce | None = None


class Event(Shape):
    """Resend's webhook body (`type`, `created_at`, `data`): the fields we read."""

    type: str
    data: Data = Data()


def reports(request: Incoming, context: Context) -> list[Report]:
    headers = {k.lower(): v for k, v in request.headers.items()}
    if not all(headers.get(h) for h in ("svix-id", "svix-timestamp", "svix-signature")):
        raise Refused(401, "no Svix signature")
    unix_seconds(headers["svix-timestamp"])  # svix would also take " 17" or "+17"
    # Imported here: svix brings pydantic (0.6 s), and every `digest` command imports this package.
    from svix.webhooks import Webhook, WebhookVerificationError

    try:
        Webhook(required_secret(context, SECRET)).verify(request.body, headers)
    except WebhookVerificationError as err:
        raise Refused(403, f"the Resend signature does not verify: {err}") from None
    event = shaped(Event, json_body(request.body), "Resend event")
    data = event.data
    ids = _ids(data)
    addresses = (data.to if isinstance(data.to, list) else [data.to]) or [""]
    if event.type == "email.complained":
        return [Report(tuple(Finding(a, Kind.COMPLAINT, reason="abuse") for a in addresses), ids)]
    if event.type != "email.bounced":
        return []
    bounce = data.bounce or Bounce()
    words = f"{bounce.message or ''} {bounce.sub_type or ''}".strip()
    m = STATUS_RE.search(words)
    code = m.group(0) if m else ""
    hard = (bounce.type or "Permanent") == "Permanent"
    findings = tuple(
        Finding(
            a, Kind.BOUNCE, status=code, hard=hard, reason=reason_for(code, words), diagnostic=words[:300]
        )
        for a in addresses
    )
    return [Report(findings, ids)]


def _ids(data: Data) -> tuple[str, ...]:
    ids = [str(h.value or "") for h in data.headers or [] if h.name.lower() == "message-id"]
    tags: dict[str, Any] | list[NameValue] = data.tags or {}
    if isinstance(tags, list):  # [{"name": ..., "value": ...}]
        tags = {t.name: t.value for t in tags}
    if tags.get("digest_ref"):
        ids.append(str(tags["digest_ref"]))
    return tuple(i.strip().strip("<>") for i in ids if i)
