"""Postmark (`POST /email/batch`): up to 500 messages and 50 MB per request, each with its own result.

Each message is complete in the request (From, To with the display name, Subject, HtmlBody and
TextBody with the recipient's values filled, the list headers, `MessageStream`), and Postmark
answers 200 with one result per message, in request order: `ErrorCode` 0 is accepted (with its
`MessageID`), anything else was refused for that message alone. 406 is an inactive recipient
(a hard bounce or spam complaint on Postmark's side), 300 an invalid message; both are final.
A whole-request error comes as 422 with an `ErrorCode` (409 JSON required, 410 too many
messages, ...). Postmark documents no request rate; a 429 is honoured.
"""

from __future__ import annotations

from collections.abc import Sequence

import requests

from digest.transports.base import Outbound, Outcome, Result
from digest.transports.http import ApiRequest, HttpTransport, display_address, json_request, passed_through

# Postmark's per-message error codes that are worth naming in the ledger (API error codes page).
ERROR_CODES = {
    300: "invalid email request",
    400: "sender signature not found",
    401: "sender signature not confirmed",
    405: "not allowed to send (account)",
    406: "inactive recipient (hard bounce or spam complaint)",
    411: "forbidden attachment type",
    412: "account pending: may only send to its own domain",
}
_METADATA_VALUE_LIMIT = 80  # Postmark caps metadata values at 80 characters
# Postmark's cap on one batch request is 50 MB; this leaves room for what the estimate misses.
MAX_PAYLOAD_BYTES = 45_000_000


def _estimated_size(outbound: Outbound) -> int:
    """An upper estimate of one message's JSON: its parts as UTF-8, a fifth more for JSON escapes
    (quotes and newlines in the HTML), and room for the headers and the personal values."""
    parts = outbound.parts
    body = len(parts.text.encode("utf-8")) + len((parts.html or "").encode("utf-8"))
    return body * 6 // 5 + 4096


class PostmarkTransport(HttpTransport):
    name = "postmark"
    default_base_url = "https://api.postmarkapp.com"
    credential_variable = "DIGEST_POSTMARK_SERVER_TOKEN"
    max_batch = 500  # messages per /email/batch request (and 50 MB)
    concurrency = 4
    max_requests_per_second = None  # none documented

    def __init__(self, *, server_token: str, message_stream: str = "broadcast", **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.server_token = server_token
        self.message_stream = message_stream

    def session_headers(self) -> dict[str, str]:
        return {"X-Postmark-Server-Token": self.server_token}

    def requests_for(self, batch: Sequence[Outbound]) -> list[Sequence[Outbound]]:
        """Up to 500 messages per request, and under Postmark's 50 MB payload: 500 worst-case
        digests (100 KB of HTML and the text part each) would be well over it."""
        groups: list[list[Outbound]] = [[]]
        size = 0
        for outbound in batch:
            estimate = _estimated_size(outbound)
            if groups[-1] and size + estimate > MAX_PAYLOAD_BYTES:
                groups.append([])
                size = 0
            groups[-1].append(outbound)
            size += estimate
        return groups

    def build_request(self, group: Sequence[Outbound]) -> ApiRequest:
        return json_request("/email/batch", [self._message(o) for o in group])

    def _message(self, outbound: Outbound) -> dict[str, object]:
        message: dict[str, object] = {
            "From": display_address(outbound.parts.from_header),
            "To": display_address(outbound.to_header),
            "Subject": outbound.subject,
            "TextBody": outbound.text(),
            "MessageStream": self.message_stream,
        }
        html = outbound.html()
        if html is not None:
            message["HtmlBody"] = html
        reply_to = outbound.header("Reply-To")
        if reply_to:
            message["ReplyTo"] = display_address(reply_to)
        headers = passed_through(outbound.all_headers())
        if headers:
            message["Headers"] = [{"Name": k, "Value": v} for k, v in headers.items()]
        # Metadata comes back on Postmark's webhooks: the signed Message-ID is what the bounce
        # handling matches a report by (digest/transports/postmark_webhook.py).
        metadata = {"digest_key": outbound.key, "digest_message_id": outbound.message_id.strip("<>")}
        metadata = {k: v for k, v in metadata.items() if v and len(v) <= _METADATA_VALUE_LIMIT}
        if metadata:
            message["Metadata"] = metadata
        return message

    def parse_success(self, group: Sequence[Outbound], response: requests.Response) -> list[Outcome]:
        try:
            results = response.json()
        except ValueError:
            results = None
        if not isinstance(results, list):
            detail = f"postmark answered HTTP {response.status_code} without per-message results"
            return [Outcome(o.key, Result.UNKNOWN, detail) for o in group]
        outcomes = []
        # Results come in request order; a missing one is left out, and `complete` makes it unknown.
        for outbound, result in zip(group, results, strict=False):
            outcomes.append(_outcome(outbound, result if isinstance(result, dict) else {}))
        return outcomes


def _outcome(outbound: Outbound, result: dict[str, object]) -> Outcome:
    # Postmark has been seen to leave ErrorCode out of an accepted message's result (a delay notice).
    code = result.get("ErrorCode", 0 if result.get("MessageID") else None)
    message = str(result.get("Message", ""))
    if code == 0:
        return Outcome(
            outbound.key, Result.SENT, f"postmark: {message}", provider_id=str(result.get("MessageID", ""))
        )
    if not isinstance(code, int):
        return Outcome(
            outbound.key, Result.UNKNOWN, f"postmark gave no ErrorCode for this message: {result!r}"
        )
    meaning = ERROR_CODES.get(code, "refused")
    return Outcome(outbound.key, Result.FAILED, f"postmark ErrorCode {code} ({meaning}): {message}")
