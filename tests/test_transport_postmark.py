"""Postmark's batch endpoint against a local server written from Postmark's documentation
(developer/user-guide/send-email-with-api/batch-emails and developer/api/overview): the request
shape it asserts and the per-message answers it gives are the ones documented there."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from provider_helpers import NOW, outbounds, refused_url, silent_server
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from digest.config import config_from_dict
from digest.errors import ConfigError, PermanentError
from digest.transports import make_transport
from digest.transports.base import Result
from digest.transports.postmark import PostmarkTransport

TOKEN = "server-token-123"
# What every message of a batch may carry (the "Send a single email" body fields we use).
DOCUMENTED_FIELDS = {
    "From",
    "To",
    "Subject",
    "HtmlBody",
    "TextBody",
    "ReplyTo",
    "Headers",
    "MessageStream",
    "Metadata",
}


class PostmarkServer:
    """api.postmarkapp.com as documented: refuses what the docs say it refuses, answers per message."""

    def __init__(self, httpserver: HTTPServer) -> None:
        self.httpserver = httpserver
        self.batches: list[list[dict[str, Any]]] = []
        self.headers: list[dict[str, str]] = []
        self.problems: list[str] = []
        self.per_recipient: dict[str, tuple[int, str]] = {}  # address -> (ErrorCode, Message)
        self.answer: Response | None = None
        httpserver.expect_request("/email/batch", method="POST").respond_with_handler(self._handle)

    def _handle(self, request: Request) -> Response:
        self.headers.append(dict(request.headers))
        if request.headers.get("X-Postmark-Server-Token") != TOKEN:
            return _json(
                {
                    "ErrorCode": 10,
                    "Message": "The Server Token you provided in the X-Postmark-Server-Token request header "
                    "was invalid.",
                },
                401,
            )
        if request.mimetype != "application/json" or "application/json" not in request.headers.get(
            "Accept", ""
        ):
            return _json({"ErrorCode": 409, "Message": "JSON required."}, 422)
        batch = json.loads(request.get_data())
        self.batches.append(batch)
        self._check(batch)
        if self.answer is not None:
            return self.answer
        results = []
        for message in batch:
            address = message["To"].rsplit("<", 1)[-1].rstrip(">")
            code, text = self.per_recipient.get(address, (0, "OK"))
            result: dict[str, Any] = {"ErrorCode": code, "Message": text}
            if code == 0:
                result |= {
                    "MessageID": str(uuid.uuid4()),
                    "SubmittedAt": NOW.isoformat(),
                    "To": message["To"],
                }
            results.append(result)
        return _json(results, 200)

    def _check(self, batch: Any) -> None:
        if not isinstance(batch, list) or not 1 <= len(batch) <= 500:
            self.problems.append("the body must be a JSON array of 1 to 500 messages")
            return
        for message in batch:
            unknown = set(message) - DOCUMENTED_FIELDS
            if unknown:
                self.problems.append(f"fields Postmark does not document: {unknown}")
            for key in ("From", "To", "Subject", "MessageStream"):
                if not isinstance(message.get(key), str) or not message[key]:
                    self.problems.append(f"{key} missing")
            if not (message.get("HtmlBody") or message.get("TextBody")):
                self.problems.append("neither HtmlBody nor TextBody")
            for header in message.get("Headers", []):
                if set(header) != {"Name", "Value"}:
                    self.problems.append(f"a header must be {{Name, Value}}: {header}")

    def transport(self, **options: Any) -> PostmarkTransport:
        return PostmarkTransport(
            server_token=TOKEN, base_url=self.httpserver.url_for("/"), now=lambda: NOW, **options
        )


def _json(data: Any, status: int) -> Response:
    return Response(json.dumps(data), status=status, content_type="application/json")


@pytest.fixture
def postmark(httpserver: HTTPServer) -> Iterator[PostmarkServer]:
    server = PostmarkServer(httpserver)
    yield server
    assert not server.problems, server.problems


def test_a_batch_is_one_request_and_every_message_is_sent(postmark: PostmarkServer) -> None:
    batch = outbounds(5)
    outcomes = postmark.transport().send_batch(batch)
    assert [o.result for o in outcomes] == [Result.SENT] * 5
    assert all(uuid.UUID(o.provider_id) for o in outcomes)
    (sent,) = postmark.batches
    assert postmark.headers[0]["User-Agent"] == "digest/0.1.0"
    for outbound, message in zip(batch, sent, strict=True):
        assert message["From"] == "Responsible Statecraft <newsletter@example.org>"
        assert message["To"].endswith(f"<{outbound.recipient}>") or message["To"] == outbound.recipient
        assert message["HtmlBody"] == outbound.html() and message["TextBody"] == outbound.text()
        assert message["MessageStream"] == "broadcast"
        # The signed Message-ID comes back in Metadata: what bounce webhooks match by.
        mid = outbound.message_id.strip("<>")
        assert message["Metadata"] == {"digest_key": outbound.key, "digest_message_id": mid}
        headers = {h["Name"]: h["Value"] for h in message["Headers"]}
        assert headers["Message-ID"] == outbound.message_id
        assert headers["List-Unsubscribe"] == outbound.header("List-Unsubscribe")
        assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert headers["List-Id"] == outbound.header("List-Id")
        assert not {"From", "To", "Subject", "MIME-Version"} & set(headers)
    assert sent[0]["To"] == '"Reader, Bo" <reader1@example.org>'


def test_per_message_error_codes_map_onto_outcomes(postmark: PostmarkServer) -> None:
    postmark.per_recipient = {
        "reader2@example.org": (406, "You tried to send to recipient(s) that have been marked as inactive."),
        "reader3@example.org": (300, "Invalid 'To' address: 'reader3@example.org'."),
    }
    outcomes = postmark.transport().send_batch(outbounds(4))
    assert [o.result for o in outcomes] == [Result.SENT, Result.FAILED, Result.FAILED, Result.SENT]
    assert "ErrorCode 406 (inactive recipient" in outcomes[1].detail
    assert "Invalid 'To' address" in outcomes[2].detail


def test_a_short_answer_leaves_the_unanswered_messages_unknown(postmark: PostmarkServer) -> None:
    postmark.answer = _json([{"ErrorCode": 0, "Message": "OK", "MessageID": "m-1"}], 200)
    outcomes = postmark.transport().send_batch(outbounds(2))
    assert [o.result for o in outcomes] == [Result.SENT, Result.UNKNOWN]


# 422 is Postmark's documented status for a refused request; a 400 (from a proxy in front, say)
# is read the same way.
@pytest.mark.parametrize("status", [422, 400])
def test_a_refused_request_fails_the_batch_quoting_postmark(postmark: PostmarkServer, status: int) -> None:
    postmark.answer = _json({"ErrorCode": 402, "Message": "Received invalid JSON input."}, status)
    outcomes = postmark.transport().send_batch(outbounds(2))
    assert [o.result for o in outcomes] == [Result.FAILED, Result.FAILED]
    assert '"ErrorCode":402' in outcomes[0].detail


def test_a_bad_token_is_a_permanent_error_naming_the_variable(postmark: PostmarkServer) -> None:
    transport = PostmarkTransport(server_token="wrong", base_url=postmark.httpserver.url_for("/"))
    with pytest.raises(PermanentError, match="DIGEST_POSTMARK_SERVER_TOKEN") as caught:
        transport.send_batch(outbounds(2))
    assert "ErrorCode" in str(caught.value)


def test_a_429_defers_the_batch_with_the_wait(postmark: PostmarkServer) -> None:
    postmark.answer = Response("Rate limit exceeded", status=429, headers={"Retry-After": "30"})
    outcomes = postmark.transport().send_batch(outbounds(2))
    assert all(o.result is Result.DEFERRED and o.rate_limited and o.retry_after == 30.0 for o in outcomes)


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_defer_the_batch(postmark: PostmarkServer, status: int) -> None:
    postmark.answer = _json({"ErrorCode": 0, "Message": "Internal Server Error"}, status)
    outcomes = postmark.transport().send_batch(outbounds(2))
    assert [o.result for o in outcomes] == [Result.DEFERRED, Result.DEFERRED]


def test_a_hang_is_unknown_for_the_batch() -> None:
    with silent_server("hang") as server:
        outcomes = PostmarkTransport(server_token=TOKEN, base_url=server.url, timeout=0.5).send_batch(
            outbounds(3)
        )
    assert [o.result for o in outcomes] == [Result.UNKNOWN] * 3


def test_a_refused_connection_is_deferred() -> None:
    outcomes = PostmarkTransport(server_token=TOKEN, base_url=refused_url()).send_batch(outbounds(1))
    assert outcomes[0].result is Result.DEFERRED


def test_the_batch_size_is_enforced() -> None:
    with pytest.raises(ValueError, match="at most 500"):
        PostmarkTransport(server_token=TOKEN).send_batch(outbounds(1) * 501)


def test_make_transport_reads_the_section_and_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    config = config_from_dict(
        {"transport": {"kind": "postmark", "postmark": {"message_stream": "newsletter"}}}
    )
    monkeypatch.delenv("DIGEST_POSTMARK_SERVER_TOKEN", raising=False)
    with pytest.raises(ConfigError, match="DIGEST_POSTMARK_SERVER_TOKEN"):
        make_transport(config)
    monkeypatch.setenv("DIGEST_POSTMARK_SERVER_TOKEN", "tok")
    transport = make_transport(config)
    assert isinstance(transport, PostmarkTransport)
    assert (transport.message_stream, transport.base_url, transport.max_batch) == (
        "newsletter",
        "https://api.postmarkapp.com",
        500,
    )


def test_a_batch_over_postmarks_payload_cap_is_split_into_requests(
    postmark: PostmarkServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import digest.transports.postmark as module

    batch = outbounds(5)
    one = len(json.dumps(PostmarkTransport(server_token=TOKEN)._message(batch[0])).encode())
    monkeypatch.setattr(module, "MAX_PAYLOAD_BYTES", 2 * one * 6 // 5 + 2 * 4096)  # two messages a request
    outcomes = postmark.transport().send_batch(batch)
    assert [o.result for o in outcomes] == [Result.SENT] * 5
    assert [len(b) for b in postmark.batches] == [2, 2, 1]
    sizes = [len(json.dumps(b).encode()) for b in postmark.batches]
    assert max(sizes) <= module.MAX_PAYLOAD_BYTES


def test_the_size_estimate_errs_on_the_safe_side() -> None:
    from digest.transports.postmark import MAX_PAYLOAD_BYTES, _estimated_size

    (outbound,) = outbounds(1)
    actual = len(
        json.dumps(PostmarkTransport(server_token=TOKEN)._message(outbound), ensure_ascii=False).encode()
    )
    assert _estimated_size(outbound) >= actual  # the estimate errs on the safe side
    assert MAX_PAYLOAD_BYTES < 50_000_000


def test_send_one_takes_a_finished_email_message(postmark: PostmarkServer) -> None:
    """The web app's confirmation mail: an EmailMessage with no personal markers."""
    from email.message import EmailMessage

    from digest.transports.base import Outbound

    message = EmailMessage()
    message["From"] = "Responsible Statecraft <newsletter@example.org>"
    message["To"] = "Zoë Ünal <zoe@example.org>"
    message["Subject"] = "Confirm your subscription"
    message["Message-ID"] = "<confirm.1@example.org>"
    message.set_content("Confirm: https://newsletter.example.org/confirm/abc")
    message.add_alternative(
        "<p><a href='https://newsletter.example.org/confirm/abc'>Confirm</a></p>", subtype="html"
    )
    outbound = Outbound.from_email_message(message, key="confirm-1", envelope_sender="bounces@example.org")
    outcome = postmark.transport().send_one(outbound)
    assert outcome.result is Result.SENT
    (sent,) = postmark.batches[0]
    assert sent["To"] == "Zoë Ünal <zoe@example.org>"
    assert "confirm/abc" in sent["TextBody"] and "confirm/abc" in sent["HtmlBody"]
    assert {"Name": "Message-ID", "Value": "<confirm.1@example.org>"} in sent["Headers"]
