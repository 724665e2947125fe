"""SendGrid v3 Mail Send (`POST /v3/mail/send`), in its batch form: one personalization per recipient.

One request carries a variant's subject and content once, and up to 1,000 personalizations
(SendGrid's documented cap on personalizations and on recipients per request), each with its
recipient, its own headers (Message-ID, List-Unsubscribe) and `substitutions` that fill the
variant's `@@digest:field@@` markers. The HTML part gets its own marker names, so it receives
HTML-escaped values while the text part gets them as they are. A batch that mixes variants is
sent as one request per variant.

SendGrid answers 202 for the whole request (with `X-Message-Id`) or refuses the whole request;
a 400 whose errors name `personalizations.N` fails those messages and defers the others, which
were refused only with them. SendGrid documents no request rate for Mail Send (the plan's
volume applies); a 429 is honoured with Retry-After or X-RateLimit-Reset.
"""

from __future__ import annotations

import html as html_escaping
import re
from collections.abc import Sequence

import requests

from digest.personal import MARKER_RE
from digest.transports.base import Outbound, Outcome, Result
from digest.transports.http import (
    ApiRequest,
    HttpTransport,
    json_request,
    parse_address,
    passed_through,
)

_PERSONALIZATION_RE = re.compile(r"^personalizations\.(\d+)\b")
_HTML_MARKER = "@@digest-html:{}@@"


class SendGridTransport(HttpTransport):
    name = "sendgrid"
    default_base_url = "https://api.sendgrid.com"
    credential_variable = "DIGEST_SENDGRID_API_KEY"
    max_batch = 1000  # personalizations (and recipients) per request
    concurrency = 4
    max_requests_per_second = None  # none documented for Mail Send

    def __init__(self, *, api_key: str, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.api_key = api_key

    def session_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def requests_for(self, batch: Sequence[Outbound]) -> list[Sequence[Outbound]]:
        by_variant: dict[int, list[Outbound]] = {}
        for outbound in batch:  # one Parts object per variant: group by identity, keep order
            by_variant.setdefault(id(outbound.parts), []).append(outbound)
        return list(by_variant.values())

    def build_request(self, group: Sequence[Outbound]) -> ApiRequest:
        parts = group[0].parts
        from_name, from_email = parse_address(parts.from_header)
        text_fields = set(MARKER_RE.findall(parts.text))
        html = parts.html
        html_fields: set[str] = set()
        if html is not None:
            html_fields = set(MARKER_RE.findall(html))
            html = MARKER_RE.sub(lambda m: _HTML_MARKER.format(m.group(1)), html)
        content = [{"type": "text/plain", "value": parts.text or " "}]
        if html:
            content.append({"type": "text/html", "value": html})
        payload: dict[str, object] = {
            "personalizations": [self._personalization(o, text_fields, html_fields) for o in group],
            "from": _email_object(from_name, from_email),
            "subject": parts.subject or " ",
            "content": content,
        }
        shared = passed_through(parts.headers)
        if shared:
            payload["headers"] = shared
        reply_to = group[0].header("Reply-To")
        if reply_to:
            payload["reply_to"] = _email_object(*parse_address(reply_to))
        return json_request("/v3/mail/send", payload)

    def _personalization(
        self, outbound: Outbound, text_fields: set[str], html_fields: set[str]
    ) -> dict[str, object]:
        name, _ = parse_address(outbound.to_header)
        personalization: dict[str, object] = {
            "to": [_email_object(name, outbound.recipient, quote_specials=True)],
            # Both come back on SendGrid's event webhook; the signed Message-ID is what the
            # bounce handling matches a report by (digest/transports/sendgrid_webhook.py).
            "custom_args": {"digest_key": outbound.key, "digest_message_id": outbound.message_id.strip("<>")},
        }
        personal = passed_through(outbound.headers)
        if personal:
            personalization["headers"] = personal
        substitutions = {f"@@digest:{f}@@": outbound.values.get(f, "") for f in text_fields}
        substitutions |= {
            _HTML_MARKER.format(f): html_escaping.escape(outbound.values.get(f, "")) for f in html_fields
        }
        if substitutions:
            personalization["substitutions"] = substitutions
        return personalization

    def parse_success(self, group: Sequence[Outbound], response: requests.Response) -> list[Outcome]:
        message_id = response.headers.get("X-Message-Id", "")
        detail = f"accepted by sendgrid (HTTP {response.status_code})"
        return [Outcome(o.key, Result.SENT, detail, provider_id=message_id) for o in group]

    def refused(self, group: Sequence[Outbound], response: requests.Response) -> set[str] | None:
        try:
            errors = response.json().get("errors") or []
        except (ValueError, AttributeError):
            return None
        named: set[str] = set()
        for error in errors:
            match = _PERSONALIZATION_RE.match(str((error or {}).get("field") or ""))
            if match is None:
                return None  # an error about the request as a whole: every message shares it
            index = int(match.group(1))
            if index < len(group):
                named.add(group[index].key)
        return named or None

    def retry_after(self, response: requests.Response) -> float | None:
        wait = super().retry_after(response)
        reset = response.headers.get("X-RateLimit-Reset", "")
        if wait is None and reset.isdigit():  # SendGrid's own: the Unix time the window resets
            wait = max(0.0, int(reset) - self._now().timestamp())
        return wait


def _email_object(name: str, email: str, *, quote_specials: bool = False) -> dict[str, str]:
    obj = {"email": email}
    if name:
        # SendGrid refuses ',' and ';' in a personalization's names unless the name is quoted.
        if quote_specials and re.search(r"[,;]", name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        obj["name"] = name
    return obj
