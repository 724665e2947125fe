"""Mailgun's MIME endpoint against a local server written from Mailgun's documentation
(api-reference: POST /v3/{domain_name}/messages.mime, basic auth `api:<key>`, multipart/form-data
with `to` and the MIME `message` as a file upload; 200 answers `{"id", "message"}`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from email import message_from_bytes, policy
from typing import Any

import pytest
from provider_helpers import NOW, outbounds, refused_url, silent_server
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from digest.config import config_from_dict
from digest.errors import ConfigError, PermanentError
from digest.transports import make_transport
from digest.transports.base import Result
from digest.transports.mailgun import MailgunTransport

KEY = "key-123"
DOMAIN = "mg.example.org"


class MailgunServer:
    """api.mailgun.net as documented, for one domain; answers per recipient as told."""

    def __init__(self, httpserver: HTTPServer) -> None:
        self.httpserver = httpserver
        self.received: list[tuple[str, bytes, dict[str, str]]] = []  # (to, MIME bytes, other fields)
        self.problems: list[str] = []
        self.per_recipient: dict[str, Response] = {}
        httpserver.expect_request(f"/v3/{DOMAIN}/messages.mime", method="POST").respond_with_handler(
            self._handle
        )
        httpserver.expect_request("/v3/other.example.org/messages.mime", method="POST").respond_with_response(
            _json({"message": "Domain not found: other.example.org"}, 404)
        )

    def _handle(self, request: Request) -> Response:
        auth = request.authorization
        if auth is None or (auth.username, auth.password) != ("api", KEY):
            return Response("Forbidden", status=401)
        if request.mimetype != "multipart/form-data":
            self.problems.append(f"not multipart/form-data: {request.mimetype}")
        upload = request.files.get("message")
        to = request.form.get("to", "")
        if upload is None or not to:
            return _json({"message": "to parameter is missing"}, 400)
        mime = upload.read()
        self.received.append((to, mime, {k: v for k, v in request.form.items() if k != "to"}))
        if to in self.per_recipient:
            return self.per_recipient[to]
        n = len(self.received)
        return _json({"id": f"<20261120.{n}@{DOMAIN}>", "message": "Queued. Thank you."}, 200)

    def transport(self, **options: Any) -> MailgunTransport:
        return MailgunTransport(
            api_key=KEY, domain=DOMAIN, base_url=self.httpserver.url_for("/"), now=lambda: NOW, **options
        )


def _json(data: Any, status: int, **headers: str) -> Response:
    return Response(json.dumps(data), status=status, headers=headers, content_type="application/json")


@pytest.fixture
def mailgun(httpserver: HTTPServer) -> Iterator[MailgunServer]:
    server = MailgunServer(httpserver)
    yield server
    assert not server.problems, server.problems


def test_each_message_is_posted_as_its_own_mime_bytes(mailgun: MailgunServer) -> None:
    batch = outbounds(3)
    outcomes = mailgun.transport().send_batch(batch)
    assert [(o.result, o.provider_id) for o in outcomes] == [
        (Result.SENT, f"<20261120.{n}@{DOMAIN}>") for n in (1, 2, 3)
    ]
    assert "Queued. Thank you." in outcomes[0].detail
    for outbound, (to, mime, fields) in zip(batch, mailgun.received, strict=True):
        assert to == outbound.recipient
        assert mime == outbound.wire()  # byte for byte: headers, list headers, QP bodies
        assert fields == {"v:digest_key": outbound.key}
        parsed = message_from_bytes(mime, policy=policy.default)
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert parsed["Message-ID"] == outbound.message_id


def test_a_refused_message_fails_alone(mailgun: MailgunServer) -> None:
    mailgun.per_recipient["reader2@example.org"] = _json(
        {"message": "to parameter is not a valid address."}, 400
    )
    outcomes = mailgun.transport().send_batch(outbounds(3))
    assert [o.result for o in outcomes] == [Result.SENT, Result.FAILED, Result.SENT]
    assert "not a valid address" in outcomes[1].detail and "HTTP 400" in outcomes[1].detail


def test_a_bad_key_is_a_permanent_error_naming_the_variable(mailgun: MailgunServer) -> None:
    transport = MailgunTransport(api_key="wrong", domain=DOMAIN, base_url=mailgun.httpserver.url_for("/"))
    with pytest.raises(PermanentError, match="DIGEST_MAILGUN_API_KEY"):
        transport.send_batch(outbounds(2))


def test_a_refusal_after_accepted_messages_keeps_what_was_accepted(mailgun: MailgunServer) -> None:
    mailgun.per_recipient["reader2@example.org"] = Response("Forbidden", status=401)
    outcomes = mailgun.transport().send_batch(outbounds(3))
    assert [o.result for o in outcomes] == [Result.SENT, Result.FAILED, Result.FAILED]
    assert "DIGEST_MAILGUN_API_KEY" in outcomes[2].detail
    assert len(mailgun.received) == 2  # nothing after the refusal was posted


def test_an_unknown_domain_stops_the_run(mailgun: MailgunServer) -> None:
    transport = MailgunTransport(
        api_key=KEY, domain="other.example.org", base_url=mailgun.httpserver.url_for("/")
    )
    with pytest.raises(PermanentError, match=r"\[transport.mailgun\] domain and region"):
        transport.send_batch(outbounds(1))


def test_a_429_defers_that_message_and_the_rest_without_posting_them(mailgun: MailgunServer) -> None:
    mailgun.per_recipient["reader2@example.org"] = _json(
        {"message": "Too many requests"}, 429, **{"Retry-After": "3"}
    )
    outcomes = mailgun.transport().send_batch(outbounds(4))
    assert [o.result for o in outcomes] == [Result.SENT] + [Result.DEFERRED] * 3
    assert all(o.rate_limited and o.retry_after == 3.0 for o in outcomes[1:])
    assert len(mailgun.received) == 2


def test_a_5xx_defers(mailgun: MailgunServer) -> None:
    mailgun.per_recipient["reader1@example.org"] = _json({"message": "Internal Server Error"}, 502)
    outcomes = mailgun.transport().send_batch(outbounds(2))
    assert [o.result for o in outcomes] == [Result.DEFERRED, Result.DEFERRED]


def test_a_hang_is_unknown_for_the_message_and_defers_the_rest() -> None:
    with silent_server("hang") as server:
        transport = MailgunTransport(api_key=KEY, domain=DOMAIN, base_url=server.url, timeout=0.5)
        outcomes = transport.send_batch(outbounds(3))
    assert [o.result for o in outcomes] == [Result.UNKNOWN, Result.DEFERRED, Result.DEFERRED]
    assert len(server.requests) == 1


def test_a_refused_connection_is_deferred() -> None:
    outcomes = MailgunTransport(api_key=KEY, domain=DOMAIN, base_url=refused_url()).send_batch(outbounds(2))
    assert [o.result for o in outcomes] == [Result.DEFERRED, Result.DEFERRED]


def test_regions_pick_the_api_host() -> None:
    assert MailgunTransport(api_key=KEY, domain=DOMAIN).base_url == "https://api.mailgun.net"
    assert MailgunTransport(api_key=KEY, domain=DOMAIN, region="eu").base_url == "https://api.eu.mailgun.net"
    with pytest.raises(ValueError, match="region"):
        MailgunTransport(api_key=KEY, domain=DOMAIN, region="asia")


def test_make_transport_and_its_config(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"\[transport.mailgun\] domain"):
        config_from_dict({"transport": {"kind": "mailgun"}})
    with pytest.raises(ConfigError, match=r"\[transport.mailgun\] region: must be one of us, eu"):
        config_from_dict({"transport": {"kind": "mailgun", "mailgun": {"domain": DOMAIN, "region": "asia"}}})
    config = config_from_dict(
        {"transport": {"kind": "mailgun", "mailgun": {"domain": DOMAIN, "region": "eu"}}}
    )
    monkeypatch.delenv("DIGEST_MAILGUN_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="DIGEST_MAILGUN_API_KEY"):
        make_transport(config)
    monkeypatch.setenv("DIGEST_MAILGUN_API_KEY", KEY)
    transport = make_transport(config)
    assert isinstance(transport, MailgunTransport)
    assert (transport.base_url, transport.domain, transport.concurrency) == (
        "https://api.eu.mailgun.net",
        DOMAIN,
        8,
    )
