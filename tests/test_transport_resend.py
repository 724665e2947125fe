"""Resend's batch endpoint against a local server that checks every request against Resend's own
OpenAPI document (../shared/testdata/providers/resend/resend.yaml)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from provider_helpers import NOW, openapi_oracle, outbounds, silent_server
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from digest.config import config_from_dict
from digest.errors import ConfigError, PermanentError
from digest.transports import make_transport
from digest.transports.base import Result
from digest.transports.http import RequestPacer
from digest.transports.resend import ResendTransport, idempotency_key

SPEC = "resend/resend.yaml"


class ResendServer:
    """pytest-httpserver posing as api.resend.com: validates, records, answers as told."""

    def __init__(self, httpserver: HTTPServer) -> None:
        self.httpserver = httpserver
        self.validate = openapi_oracle(SPEC, httpserver.url_for("/"))
        self.bodies: list[list[dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []
        self.invalid: list[Exception] = []
        self.waits: list[float] = []  # the transport's waits before an idempotent retry
        self.answer: Response | None = None  # None: every email created
        self.answers: list[Response] = []  # answered first, one per request, before `answer`
        httpserver.expect_request("/emails/batch", method="POST").respond_with_handler(self._handle)

    def _handle(self, request: Request) -> Response:
        try:
            self.validate(request)
        except Exception as err:  # noqa: BLE001  every way the oracle objects is a test failure
            self.invalid.append(err)
        body = json.loads(request.get_data())
        self.bodies.append(body)
        self.headers.append(dict(request.headers))
        if self.answers:
            return self.answers.pop(0)
        if self.answer is not None:
            return self.answer
        data = {"data": [{"id": f"re-{i}"} for i in range(len(body))]}
        return Response(json.dumps(data), status=200, content_type="application/json")

    def transport(self, **options: Any) -> ResendTransport:
        options.setdefault("pacer", RequestPacer(1000.0, sleep=lambda _s: None))
        options.setdefault("retry_wait", self.waits.append)
        return ResendTransport(
            api_key="re_test", base_url=self.httpserver.url_for("/"), now=lambda: NOW, **options
        )


@pytest.fixture
def resend(httpserver: HTTPServer) -> Iterator[ResendServer]:
    server = ResendServer(httpserver)
    yield server
    assert not server.invalid, f"requests that break Resend's OpenAPI document: {server.invalid}"


def error(status: int, name: str, message: str, **headers: str) -> Response:
    body = json.dumps({"statusCode": status, "name": name, "message": message})
    return Response(body, status=status, headers=headers, content_type="application/json")


def test_every_email_carries_its_recipients_own_content_and_headers(resend: ResendServer) -> None:
    batch = outbounds(5)
    outcomes = resend.transport().send_batch(batch)

    assert [(o.result, o.provider_id) for o in outcomes] == [(Result.SENT, f"re-{i}") for i in range(5)]
    (body,) = resend.bodies
    (headers,) = resend.headers
    assert headers["Authorization"] == "Bearer re_test"
    assert headers["User-Agent"] == "digest/0.1.0"
    assert headers["X-Batch-Validation"] == "permissive"
    assert headers["Idempotency-Key"] == idempotency_key(batch)
    for outbound, email in zip(batch, body, strict=True):
        assert email["from"] == "Responsible Statecraft <newsletter@example.org>"
        assert email["subject"] == outbound.subject
        assert email["html"] == outbound.html() and email["text"] == outbound.text()
        assert "@@digest:" not in email["html"] + email["text"]
        assert outbound.recipient in email["html"]  # the recipient's own values are in
        assert email["headers"]["Message-ID"] == outbound.message_id
        assert email["headers"]["List-Unsubscribe"] == outbound.header("List-Unsubscribe")
        assert email["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert email["headers"]["List-Id"] == outbound.header("List-Id")
        assert "MIME-Version" not in email["headers"]
        ref = outbound.message_id.strip("<>").partition("@")[0].replace(".", "_")
        assert email["tags"] == [
            {"name": "digest_key", "value": outbound.key},
            {"name": "digest_ref", "value": ref},  # what bounce webhooks match by
        ]
    assert [e["to"] for e in body] == [
        ['"Reader, Bo" <reader1@example.org>'],
        ["Zoë Ünal <reader2@example.org>"],
        ["Cy & Co <reader3@example.org>"],
        ["reader4@example.org"],
        ["Ada Reader <reader5@example.org>"],
    ]


def test_the_idempotency_key_follows_the_rows_not_the_attempt(resend: ResendServer) -> None:
    batch = outbounds(3)
    transport = resend.transport()
    transport.send_batch(batch)
    transport.send_batch(outbounds(3))  # the same rows, built again (a retry after a restart)
    transport.send_batch(batch[:2])  # fewer rows: another request
    keys = [h["Idempotency-Key"] for h in resend.headers]
    assert keys[0] == keys[1] != keys[2]
    assert len(keys[0]) <= 256


def test_permissive_validation_fails_only_the_email_resend_lists(resend: ResendServer) -> None:
    answer = {
        "data": [{"id": "re-a"}, {"id": "re-c"}],
        "errors": [{"index": 1, "message": "Invalid `to` field."}],
    }
    resend.answer = Response(json.dumps(answer), status=200, content_type="application/json")
    batch = outbounds(3)
    outcomes = resend.transport().send_batch(batch)
    assert [o.key for o in outcomes] == [m.key for m in batch]
    assert [(o.result, o.provider_id) for o in outcomes] == [
        (Result.SENT, "re-a"),
        (Result.FAILED, ""),
        (Result.SENT, "re-c"),
    ]
    assert "Invalid `to` field." in outcomes[1].detail


@pytest.mark.parametrize("status", [400, 422])
def test_a_refused_request_fails_the_batch_quoting_resends_error(resend: ResendServer, status: int) -> None:
    resend.answer = error(status, "validation_error", "The `from` field is invalid.")
    outcomes = resend.transport().send_batch(outbounds(2))
    assert [o.result for o in outcomes] == [Result.FAILED, Result.FAILED]
    assert '"name":"validation_error"' in outcomes[0].detail and f"HTTP {status}" in outcomes[0].detail


@pytest.mark.parametrize(("status", "name"), [(401, "missing_api_key"), (403, "invalid_api_key")])
def test_a_refused_key_is_a_permanent_error_naming_the_variable(
    resend: ResendServer, status: int, name: str
) -> None:
    resend.answer = error(status, name, "API key is invalid")
    with pytest.raises(PermanentError, match="DIGEST_RESEND_API_KEY") as caught:
        resend.transport().send_batch(outbounds(2))
    assert name in str(caught.value)


def test_a_429_defers_the_batch_with_resends_retry_after(resend: ResendServer) -> None:
    resend.answer = error(429, "rate_limit_exceeded", "Too many requests.", **{"retry-after": "1"})
    outcomes = resend.transport().send_batch(outbounds(2))
    assert all(o.result is Result.DEFERRED and o.rate_limited and o.retry_after == 1.0 for o in outcomes)
    assert "rate_limit_exceeded" in outcomes[0].detail


def test_a_500_defers_the_batch(resend: ResendServer) -> None:
    resend.answer = error(500, "internal_server_error", "An unexpected error occurred.")
    outcomes = resend.transport().send_batch(outbounds(2))
    assert [o.result for o in outcomes] == [Result.DEFERRED, Result.DEFERRED]


@pytest.mark.parametrize(
    ("name", "result"),
    [("concurrent_idempotent_requests", Result.DEFERRED), ("invalid_idempotent_request", Result.UNKNOWN)],
)
def test_idempotency_conflicts(resend: ResendServer, name: str, result: Result) -> None:
    resend.answer = error(409, name, "Same idempotency key used with a different request payload.")
    outcomes = resend.transport().send_batch(outbounds(2))
    assert [o.result for o in outcomes] == [result, result]


def test_a_hang_is_unknown_for_the_batch() -> None:
    with silent_server("hang") as server:
        transport = ResendTransport(
            api_key="re_k", base_url=server.url, timeout=0.5, retry_wait=lambda _s: None
        )
        outcomes = transport.send_batch(outbounds(3))
    assert [o.result for o in outcomes] == [Result.UNKNOWN] * 3
    # Asked three times, each time the same request with the same key; no answer ever came.
    assert len(server.requests) == 3 and len(set(server.requests)) == 1
    assert b"Idempotency-Key: digest-" in server.requests[0]
    assert "sent again 2x with the same key" in outcomes[0].detail


def test_an_unanswered_request_is_sent_again_with_the_same_key(resend: ResendServer) -> None:
    """A 504 (the gateway gave up; Resend may have the emails): the same body with the same
    Idempotency-Key goes again, and Resend's answer settles every row; nothing stays unknown."""
    resend.answers = [error(504, "gateway_timeout", "The gateway gave up.")]
    outcomes = resend.transport().send_batch(outbounds(3))
    assert [o.result for o in outcomes] == [Result.SENT] * 3
    assert len(resend.bodies) == 2 and resend.bodies[0] == resend.bodies[1]
    assert resend.headers[0]["Idempotency-Key"] == resend.headers[1]["Idempotency-Key"]
    assert resend.waits == [2.0]


def test_an_answer_that_settles_nothing_after_an_unanswered_one_stays_unknown(resend: ResendServer) -> None:
    """After a 504 the first request may have sent the emails: a 500 on the retry does not make
    them safe to send in another batch (another key), so they stay unknown."""
    resend.answers = [error(504, "gateway_timeout", "The gateway gave up.")] + [
        error(500, "internal_server_error", "An unexpected error occurred.")
    ] * 2
    outcomes = resend.transport().send_batch(outbounds(2))
    assert [o.result for o in outcomes] == [Result.UNKNOWN] * 2 and len(resend.bodies) == 3
    assert resend.waits == [2.0, 4.0]


def test_the_documented_rate_and_batch_size_are_enforced() -> None:
    transport = ResendTransport(api_key="re_k")
    assert (transport.max_batch, transport.requests_per_second, transport.max_per_second) == (100, 2.0, 200.0)
    with pytest.raises(ValueError, match="at most 100"):
        transport.send_batch(outbounds(1) * 101)


def test_requests_are_paced_to_the_rate_across_calls(resend: ResendServer) -> None:
    clock = [100.0]
    slept: list[float] = []
    pacer = RequestPacer(2.0, monotonic=lambda: clock[0], sleep=slept.append)
    transport = resend.transport(pacer=pacer)
    for _ in range(3):
        transport.send_batch(outbounds(1))
    assert slept == [0.5, 1.0]  # the clock stood still: the 2nd and 3rd request wait their slots


def test_the_oracle_refuses_a_request_resend_would_refuse(httpserver: HTTPServer) -> None:
    """The check is not vacuous: an email without `subject` and a 300-character key fail it."""
    validate = openapi_oracle(SPEC, httpserver.url_for("/"))
    seen: list[Request] = []
    httpserver.expect_request("/emails/batch").respond_with_handler(
        lambda request: (seen.append(request), Response("{}", status=200))[1]
    )
    headers = {"Authorization": "Bearer re_k", "Idempotency-Key": "k" * 300}
    body = [{"from": "a@b.org", "to": ["c@d.org"], "html": "<p>hi</p>"}]
    requests.post(httpserver.url_for("/emails/batch"), json=body, headers=headers, timeout=5)
    with pytest.raises(Exception, match="(?i)invalid|missing"):
        validate(seen[0])


def test_make_transport_reads_the_section_and_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_from_dict({"transport": {"kind": "resend", "resend": {"requests_per_second": 10.0}}})
    monkeypatch.delenv("DIGEST_RESEND_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="DIGEST_RESEND_API_KEY"):
        make_transport(config)
    monkeypatch.setenv("DIGEST_RESEND_API_KEY", "re_env")
    transport = make_transport(config)
    assert isinstance(transport, ResendTransport)
    assert (transport.base_url, transport.requests_per_second, transport.concurrency) == (
        "https://api.resend.com",
        10.0,
        2,
    )
