"""SendGrid v3 Mail Send against a local server that checks every request against SendGrid's own
OpenAPI document (../shared/testdata/providers/sendgrid/tsg_mail_v3.json)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests
from provider_helpers import NOW, openapi_oracle, other_template, outbounds, refused_url, silent_server
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from digest.config import config_from_dict
from digest.errors import ConfigError, PermanentError
from digest.transports import make_transport
from digest.transports.base import Outbound, Result
from digest.transports.sendgrid import SendGridTransport

SPEC = "sendgrid/tsg_mail_v3.json"


class SendGridServer:
    """pytest-httpserver posing as api.sendgrid.com: validates, records, answers as told."""

    def __init__(self, httpserver: HTTPServer) -> None:
        self.httpserver = httpserver
        self.validate = openapi_oracle(SPEC, httpserver.url_for("/"))
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.invalid: list[Exception] = []
        self.answer = Response("", status=202, headers={"X-Message-Id": "sgid-1"})
        httpserver.expect_request("/v3/mail/send", method="POST").respond_with_handler(self._handle)

    def _handle(self, request: Request) -> Response:
        try:
            self.validate(request)
        except Exception as err:  # noqa: BLE001  every way the oracle objects is a test failure
            self.invalid.append(err)
        self.bodies.append(json.loads(request.get_data()))
        self.headers.append(dict(request.headers))
        return self.answer

    def transport(self, **options: Any) -> SendGridTransport:
        return SendGridTransport(
            api_key="SG.test-key", base_url=self.httpserver.url_for("/"), now=lambda: NOW, **options
        )


@pytest.fixture
def sendgrid(httpserver: HTTPServer) -> Iterator[SendGridServer]:
    server = SendGridServer(httpserver)
    yield server
    assert not server.invalid, f"requests that break SendGrid's OpenAPI document: {server.invalid}"


def substitute(value: str, substitutions: dict[str, str]) -> str:
    """What SendGrid does with a personalization's substitutions."""
    for key, replacement in substitutions.items():
        value = value.replace(key, replacement)
    return value


def test_a_batch_is_one_request_of_personalizations_and_every_message_is_sent(
    sendgrid: SendGridServer,
) -> None:
    batch = outbounds(5)
    outcomes = sendgrid.transport().send_batch(batch)

    assert [(o.key, o.result, o.provider_id) for o in outcomes] == [
        (m.key, Result.SENT, "sgid-1") for m in batch
    ]
    (body,) = sendgrid.bodies
    (headers,) = sendgrid.headers
    assert headers["Authorization"] == "Bearer SG.test-key"
    assert headers["User-Agent"] == "digest/0.1.0"
    assert body["from"] == {"email": "newsletter@example.org", "name": "Responsible Statecraft"}
    assert body["subject"] == batch[0].subject
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    # Shared headers once; the list headers every copy needs.
    assert body["headers"]["List-Id"] == "<responsible-statecraft-weekly.newsletter.example.org>"
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "MIME-Version" not in body["headers"]
    text, html = (c["value"] for c in body["content"])
    for outbound, person in zip(batch, body["personalizations"], strict=True):
        assert person["to"][0]["email"] == outbound.recipient
        assert person["headers"] == {
            "Message-ID": outbound.message_id,
            "List-Unsubscribe": outbound.header("List-Unsubscribe"),
        }
        assert person["custom_args"] == {
            "digest_key": outbound.key,
            "digest_message_id": outbound.message_id.strip("<>"),  # what bounce webhooks match by
        }
        # Filled in as SendGrid fills substitutions, each part comes out as the recipient's own.
        assert substitute(text, person["substitutions"]) == outbound.text()
        assert substitute(html, person["substitutions"]) == outbound.html()
    names = [p["to"][0].get("name") for p in body["personalizations"]]
    assert names == ['"Reader, Bo"', "Zoë Ünal", "Cy & Co", None, "Ada Reader"]


def test_html_gets_escaped_values_and_text_gets_them_as_they_are(sendgrid: SendGridServer) -> None:
    (outbound,) = outbounds(1)
    sendgrid.transport().send_batch([outbound])
    person = sendgrid.bodies[0]["personalizations"][0]
    assert person["substitutions"]["@@digest:unsubscribe_url@@"].endswith("?a=1&b=2")
    assert person["substitutions"]["@@digest-html:unsubscribe_url@@"].endswith("?a=1&amp;b=2")


def test_a_batch_of_two_variants_is_one_request_per_variant(sendgrid: SendGridServer) -> None:
    first, second = outbounds(3), outbounds(2, start=10, tmpl=other_template())
    mixed = [first[0], second[0], first[1], second[1], first[2]]
    outcomes = sendgrid.transport().send_batch(mixed)
    assert [o.key for o in outcomes] == [m.key for m in mixed]
    assert all(o.result is Result.SENT for o in outcomes)
    assert [len(b["personalizations"]) for b in sendgrid.bodies] == [3, 2]
    assert sendgrid.bodies[0]["content"] != sendgrid.bodies[1]["content"]


def test_a_400_naming_one_personalization_fails_it_and_defers_the_rest(sendgrid: SendGridServer) -> None:
    error = {
        "errors": [{"message": "Does not contain a valid address.", "field": "personalizations.1.to.0.email"}]
    }
    sendgrid.answer = Response(json.dumps(error), status=400, content_type="application/json")
    batch = outbounds(3)
    outcomes = sendgrid.transport().send_batch(batch)
    assert [o.result for o in outcomes] == [Result.DEFERRED, Result.FAILED, Result.DEFERRED]
    assert "Does not contain a valid address." in outcomes[1].detail
    assert "HTTP 400" in outcomes[1].detail
    assert "another message" in outcomes[0].detail


def test_a_400_about_the_whole_request_fails_every_message_quoting_the_error(
    sendgrid: SendGridServer,
) -> None:
    error = {
        "errors": [{"message": "The from object must be provided for every email send.", "field": "from"}]
    }
    sendgrid.answer = Response(json.dumps(error), status=400, content_type="application/json")
    outcomes = sendgrid.transport().send_batch(outbounds(2))
    assert [o.result for o in outcomes] == [Result.FAILED, Result.FAILED]
    assert '"field":"from"' in outcomes[0].detail


def test_a_401_is_a_permanent_error_naming_the_variable(sendgrid: SendGridServer) -> None:
    error = {
        "errors": [
            {"message": "The provided authorization grant is invalid, expired, or revoked", "field": None}
        ]
    }
    sendgrid.answer = Response(json.dumps(error), status=401, content_type="application/json")
    with pytest.raises(PermanentError) as caught:
        sendgrid.transport().send_batch(outbounds(2))
    assert "DIGEST_SENDGRID_API_KEY" in str(caught.value)
    assert "authorization grant is invalid" in str(caught.value)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "17"}, 17.0),
        ({"Retry-After": format_datetime(NOW + timedelta(seconds=90), usegmt=True)}, 90.0),
        ({"X-RateLimit-Reset": str(int(NOW.timestamp()) + 42)}, 42.0),
    ],
)
def test_a_429_defers_the_batch_as_rate_limited_with_the_wait(
    sendgrid: SendGridServer, headers: dict[str, str], expected: float
) -> None:
    body = json.dumps({"errors": [{"field": None, "message": "too many requests"}]})
    sendgrid.answer = Response(body, status=429, headers=headers, content_type="application/json")
    outcomes = sendgrid.transport().send_batch(outbounds(2))
    assert all(o.result is Result.DEFERRED and o.rate_limited for o in outcomes)
    assert [o.retry_after for o in outcomes] == [expected, expected]
    assert "too many requests" in outcomes[0].detail


def test_a_429_stops_the_rest_of_a_mixed_batch_without_sending_it(sendgrid: SendGridServer) -> None:
    sendgrid.answer = Response("", status=429, headers={"Retry-After": "5"})
    mixed = outbounds(2) + outbounds(2, start=10, tmpl=other_template())
    outcomes = sendgrid.transport().send_batch(mixed)
    assert len(sendgrid.bodies) == 1
    assert all(o.result is Result.DEFERRED and o.rate_limited and o.retry_after == 5.0 for o in outcomes)


@pytest.mark.parametrize(
    ("status", "result"), [(500, Result.DEFERRED), (503, Result.DEFERRED), (504, Result.UNKNOWN)]
)
def test_server_errors(sendgrid: SendGridServer, status: int, result: Result) -> None:
    sendgrid.answer = Response(json.dumps({"errors": [{"message": "internal error"}]}), status=status)
    outcomes = sendgrid.transport().send_batch(outbounds(2))
    assert [o.result for o in outcomes] == [result, result]
    assert f"HTTP {status}" in outcomes[0].detail and "internal error" in outcomes[0].detail


@pytest.mark.parametrize("mode", ["hang", "drop"])
def test_no_answer_after_the_request_was_sent_is_unknown_for_the_batch(mode: str) -> None:
    with silent_server(mode) as server:
        transport = SendGridTransport(api_key="SG.k", base_url=server.url, timeout=0.5)
        outcomes = transport.send_batch(outbounds(3))
    assert [o.result for o in outcomes] == [Result.UNKNOWN] * 3
    assert "may have accepted" in outcomes[0].detail
    assert b"/v3/mail/send" in server.requests[0]  # it did get the whole request


def test_a_refused_connection_is_deferred() -> None:
    outcomes = SendGridTransport(api_key="SG.k", base_url=refused_url(), timeout=2).send_batch(outbounds(2))
    assert [o.result for o in outcomes] == [Result.DEFERRED, Result.DEFERRED]
    assert "not sent" in outcomes[0].detail


def test_the_batch_size_is_enforced() -> None:
    transport = SendGridTransport(api_key="SG.k")
    assert transport.max_batch == 1000
    many = outbounds(1) * 1001
    with pytest.raises(ValueError, match="at most 1000"):
        transport.send_batch(many)


def test_the_oracle_refuses_a_request_sendgrid_would_refuse(httpserver: HTTPServer) -> None:
    """The check is not vacuous: a body without `from` and without the Bearer token fails it."""
    validate = openapi_oracle(SPEC, httpserver.url_for("/"))
    seen: list[Request] = []
    httpserver.expect_request("/v3/mail/send").respond_with_handler(
        lambda request: (seen.append(request), Response("", status=202))[1]
    )
    requests.post(
        httpserver.url_for("/v3/mail/send"), json={"personalizations": [{"to": [{"email": "a@b.org"}]}]}
    )
    with pytest.raises(Exception, match="(?i)invalid|security|missing"):
        validate(seen[0])


def test_make_transport_reads_the_section_and_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_from_dict(
        {
            "transport": {
                "kind": "sendgrid",
                "sendgrid": {"base_url": "http://127.0.0.1:9", "timeout": 3, "concurrency": 6},
            }
        }
    )
    monkeypatch.delenv("DIGEST_SENDGRID_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="DIGEST_SENDGRID_API_KEY"):
        make_transport(config)
    monkeypatch.setenv("DIGEST_SENDGRID_API_KEY", "SG.from-env")
    transport = make_transport(config)
    assert isinstance(transport, SendGridTransport)
    assert (transport.base_url, transport.timeout, transport.concurrency) == ("http://127.0.0.1:9", 3.0, 6)
    assert transport.api_key == "SG.from-env"
    default = make_transport(config_from_dict({"transport": {"kind": "sendgrid"}}))
    assert default.base_url == "https://api.sendgrid.com" and default.concurrency == 4


def test_outbound_from_bytes_goes_through_too(sendgrid: SendGridServer) -> None:
    """A finished message (the confirmation mail, a test send) has no markers to substitute."""
    raw = outbounds(1)[0].wire()
    outbound = Outbound.from_bytes(
        raw, key="single-1", envelope_sender="b@example.org", recipient="reader1@example.org"
    )
    (outcome,) = sendgrid.transport().send_batch([outbound])
    assert outcome.result is Result.SENT
    person = sendgrid.bodies[0]["personalizations"][0]
    assert "substitutions" not in person
    assert sendgrid.bodies[0]["headers"]["Message-ID"] == "<run42.1@example.org>"
