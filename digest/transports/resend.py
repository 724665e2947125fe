"""Resend (`POST /emails/batch`): up to 100 messages per request, partial success per message.

Each message is complete in the request (from, to with the display name, subject, html and
text with the recipient's values filled, the list headers). The request asks for Resend's
permissive batch validation (`x-batch-validation: permissive`): valid messages are sent, and
the answer lists the others by index under `errors`, so one bad address fails alone.

`Idempotency-Key` is a hash of the batch's ledger keys in order: a retry of the same rows
carries the same key, and Resend (for 24 hours) answers it without sending twice. So a request
that goes unanswered (a timeout after the body went out, a 504) is posted again as it was, up to
`unknown_retries` times (2 s, then 4 s later): the rows get Resend's real answer instead of
staying `unknown`. Resend's
documented default rate is 2 requests per second per team, for all API keys together;
`[transport.resend] requests_per_second` sets a raised one.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import requests

from digest.transports.base import Outbound, Outcome, Result
from digest.transports.http import (
    ApiRequest,
    HttpTransport,
    describe_answer,
    display_address,
    json_request,
    passed_through,
)

_TAG_VALUE_RE = re.compile(r"[A-Za-z0-9_-]{1,256}")  # what Resend accepts in a tag's value


def idempotency_key(batch: Sequence[Outbound]) -> str:
    """Stable for the same rows in the same order; 71 characters (Resend allows 256)."""
    digest = hashlib.sha256("\n".join(o.key for o in batch).encode("utf-8")).hexdigest()
    return f"digest-{digest}"


class ResendTransport(HttpTransport):
    name = "resend"
    default_base_url = "https://api.resend.com"
    credential_variable = "DIGEST_RESEND_API_KEY"
    max_batch = 100  # emails per /emails/batch request
    concurrency = 2
    max_requests_per_second = 2.0  # default per team; raised on request
    unknown_retries = 2  # the same request and key again: Resend sends each email once

    def __init__(self, *, api_key: str, **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.api_key = api_key

    def session_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def build_request(self, group: Sequence[Outbound]) -> ApiRequest:
        headers = {"Idempotency-Key": idempotency_key(group), "x-batch-validation": "permissive"}
        return json_request("/emails/batch", [self._email(o) for o in group], headers)

    def _email(self, outbound: Outbound) -> dict[str, object]:
        email: dict[str, object] = {
            "from": display_address(outbound.parts.from_header),
            "to": [display_address(outbound.to_header)],
            "subject": outbound.subject,
            "text": outbound.text(),
        }
        html = outbound.html()
        if html is not None:
            email["html"] = html
        reply_to = outbound.header("Reply-To")
        if reply_to:
            email["reply_to"] = display_address(reply_to)
        headers = passed_through(outbound.all_headers())
        if headers:
            email["headers"] = headers
        # Tags come back on Resend's webhooks: digest_ref is the signed Message-ID's local part
        # ('.' as '_', which tags allow), what the bounce handling matches a report by.
        ref = outbound.message_id.strip("<>").partition("@")[0].replace(".", "_")
        tags = [{"name": "digest_key", "value": outbound.key}, {"name": "digest_ref", "value": ref}]
        tags = [t for t in tags if t["value"] and _TAG_VALUE_RE.fullmatch(t["value"])]
        if tags:
            email["tags"] = tags
        return email

    def parse_success(self, group: Sequence[Outbound], response: requests.Response) -> list[Outcome]:
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("data"), list):
            detail = f"resend answered HTTP {response.status_code} without per-message results"
            return [Outcome(o.key, Result.UNKNOWN, detail) for o in group]
        refused: dict[int, str] = {}
        for error in answer.get("errors") or []:
            if isinstance(error, dict) and isinstance(error.get("index"), int):
                refused[error["index"]] = str(error.get("message", ""))
        created = [o for i, o in enumerate(group) if i not in refused]
        ids = [str(d.get("id", "")) if isinstance(d, dict) else "" for d in answer["data"]]
        if len(ids) != len(created):
            ids = [""] * len(created)  # cannot tell which id is whose; each was still created
        outcomes = [
            Outcome(o.key, Result.FAILED, f"resend refused this email: {refused[i]}")
            for i, o in enumerate(group)
            if i in refused
        ]
        outcomes += [
            Outcome(o.key, Result.SENT, "accepted by resend", provider_id=id_)
            for o, id_ in zip(created, ids, strict=True)
        ]
        return outcomes

    def classify(self, group: Sequence[Outbound], response: requests.Response) -> list[Outcome] | None:
        if response.status_code != 409:
            return None
        try:
            name = str(response.json().get("name", ""))
        except (ValueError, AttributeError):
            name = ""
        detail = f"resend answered HTTP 409: {describe_answer(response)}"
        if name == "concurrent_idempotent_requests":  # the same batch is in flight elsewhere
            return [Outcome(o.key, Result.DEFERRED, detail) for o in group]
        # The key was used before, for another body (a resumed run has a new Date header): that
        # earlier request reached Resend and may have sent these rows. Not knowable from here.
        unknown = (
            f"{detail}; these rows' Idempotency-Key was used in the last 24 hours: they may have been sent"
        )
        return [Outcome(o.key, Result.UNKNOWN, unknown) for o in group]
