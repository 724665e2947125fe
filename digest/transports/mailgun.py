"""Mailgun (`POST /v3/<domain>/messages.mime`): the finished MIME bytes, one request per message.

Mailgun's MIME endpoint takes one message (`message`, uploaded as a file) and the addresses to
deliver it to (`to`); every recipient's bytes differ (address, links, Message-ID), so each
message is its own request. A batch (up to `max_batch`) goes out one request after another on
the thread's kept-alive connection; the run's threads give the parallelism. Mailgun answers 200
with the message's id, 400 for a message it refuses, 401 for a bad key, 404 for a domain it
does not know (a configuration error: the run stops), 429 when the account's rate is exceeded.
Mailgun publishes no fixed request rate (it depends on the account); a 429 is honoured.

Regions: US `https://api.mailgun.net`, EU `https://api.eu.mailgun.net`; a domain lives in one.
Authentication is HTTP basic with the user `api` and the API key as password.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote

import requests

from digest.errors import PermanentError
from digest.transports.base import Outbound, Outcome, Result
from digest.transports.http import ApiRequest, HttpTransport, describe_answer, form_request

REGIONS = {"us": "https://api.mailgun.net", "eu": "https://api.eu.mailgun.net"}


class MailgunTransport(HttpTransport):
    name = "mailgun"
    default_base_url = REGIONS["us"]
    credential_variable = "DIGEST_MAILGUN_API_KEY"
    max_batch = 50  # messages per send_batch, each its own request (see the module docstring)
    concurrency = 8
    max_requests_per_second = None  # account-dependent, not published

    def __init__(self, *, api_key: str, domain: str, region: str = "us", **options: object) -> None:
        if region not in REGIONS:
            raise ValueError(f"mailgun region must be one of {', '.join(REGIONS)}, not {region!r}")
        if not options.get("base_url"):
            options["base_url"] = REGIONS[region]
        super().__init__(**options)  # type: ignore[arg-type]
        if not domain:
            raise ValueError("mailgun needs the sending domain")
        self.api_key = api_key
        self.domain = domain
        self.region = region

    def requests_for(self, batch: Sequence[Outbound]) -> list[Sequence[Outbound]]:
        return [[outbound] for outbound in batch]

    def build_request(self, group: Sequence[Outbound]) -> ApiRequest:
        (outbound,) = group
        fields: list[tuple[str, str | tuple[str, bytes, str]]] = [
            ("to", outbound.recipient),
            ("message", ("message.mime", outbound.wire(), "message/rfc822")),
            ("v:digest_key", outbound.key),  # comes back as user-variables on Mailgun's webhooks
        ]
        path = f"/v3/{quote(self.domain, safe='')}/messages.mime"
        return form_request(path, fields, auth=("api", self.api_key))

    def parse_success(self, group: Sequence[Outbound], response: requests.Response) -> list[Outcome]:
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        message_id = str(answer.get("id", "")) if isinstance(answer, dict) else ""
        text = str(answer.get("message", "")) if isinstance(answer, dict) else ""
        return [
            Outcome(o.key, Result.SENT, f"mailgun: {text or 'accepted'}", provider_id=message_id)
            for o in group
        ]

    def classify(self, group: Sequence[Outbound], response: requests.Response) -> list[Outcome] | None:
        if response.status_code == 404:
            raise PermanentError(
                f"mailgun does not know the domain {self.domain!r} at {self.base_url}: "
                "check [transport.mailgun] domain and region",
                transport=self.name,
                status=404,
                response=describe_answer(response),
            )
        return None
