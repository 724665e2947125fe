"""The shared HTTP base of the provider transports: status mapping, Retry-After, pacing, sessions
per thread, and telling "never sent" from "sent, no answer"."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests
from provider_helpers import outbounds, silent_server
from pytest_httpserver import HTTPServer
from werkzeug import Response

from digest.transports.base import Outbound, Outcome, Result
from digest.transports.http import (
    ApiRequest,
    HttpTransport,
    RequestPacer,
    display_address,
    json_request,
    parse_address,
    parse_retry_after,
)
from digest.transports.sendgrid import SendGridTransport

NOW = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)


class EchoTransport(HttpTransport):
    """The smallest provider: one JSON request per batch, everything sent on a 2xx."""

    name = "echo"
    credential_variable = "DIGEST_ECHO_KEY"
    max_batch = 10
    body_size = 100

    def build_request(self, group: Sequence[Outbound]) -> ApiRequest:
        return ApiRequest("/send", b"x" * self.body_size, "application/octet-stream")

    def parse_success(self, group: Sequence[Outbound], response: requests.Response) -> list[Outcome]:
        return [Outcome(o.key, Result.SENT, "ok") for o in group]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("120", 120.0),
        ("1.5", 1.5),
        (format_datetime(NOW + timedelta(minutes=2), usegmt=True), 120.0),
        ("Fri, 20 Nov 2026 13:00:00 GMT", 0.0),  # already past
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_retry_after_is_seconds_or_an_http_date(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, NOW) == expected


def test_a_hook_left_unimplemented_names_the_class() -> None:
    class Half(HttpTransport):
        name = "half"
        max_batch = 5

    with pytest.raises(NotImplementedError, match="Half must implement build_request"):
        Half(base_url="http://127.0.0.1:9").send_batch(outbounds(1))


def test_addresses_keep_their_display_names() -> None:
    assert parse_address("=?utf-8?q?Zo=C3=AB?= <z@example.org>") == ("Zoë", "z@example.org")
    assert display_address('"Reader, Bo" <b@example.org>') == '"Reader, Bo" <b@example.org>'
    assert display_address("plain@example.org") == "plain@example.org"
    with pytest.raises(ValueError, match="not an e-mail address"):
        parse_address("")


@pytest.mark.parametrize(
    ("status", "result"),
    [
        (408, Result.DEFERRED),
        (404, Result.FAILED),
        (413, Result.FAILED),
        (502, Result.DEFERRED),
        (504, Result.UNKNOWN),
    ],
)
def test_status_mapping(httpserver: HTTPServer, status: int, result: Result) -> None:
    httpserver.expect_request("/send").respond_with_json({"error": "nope"}, status=status)
    outcomes = EchoTransport(base_url=httpserver.url_for("/")).send_batch(outbounds(2))
    assert [o.result for o in outcomes] == [result, result]
    assert f'echo answered HTTP {status}: {{"error":"nope"}}' in outcomes[0].detail


def test_a_non_json_error_body_is_quoted_as_text(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/send").respond_with_data("<h1>Bad Gateway</h1>", status=502)
    (outcome,) = EchoTransport(base_url=httpserver.url_for("/")).send_batch(outbounds(1))
    assert outcome.detail.endswith("<h1>Bad Gateway</h1>")


def test_a_hang_up_before_the_body_went_out_is_deferred_not_unknown() -> None:
    """The server hangs up without reading: the 32 MB body cannot all go out, so the provider
    cannot have acted on it, and the batch may be sent again."""
    with silent_server("slam") as server:
        transport = EchoTransport(base_url=server.url, timeout=5)
        transport.body_size = 32 * 1024 * 1024
        outcomes = transport.send_batch(outbounds(2))
    assert [o.result for o in outcomes] == [Result.DEFERRED, Result.DEFERRED]
    assert "not sent" in outcomes[0].detail


def test_a_hang_up_after_the_body_went_out_is_unknown() -> None:
    with silent_server("drop") as server:
        outcomes = EchoTransport(base_url=server.url, timeout=5).send_batch(outbounds(2))
    assert [o.result for o in outcomes] == [Result.UNKNOWN, Result.UNKNOWN]
    assert server.requests[0].endswith(b"x" * 100)


def test_the_pacer_spaces_requests_across_threads() -> None:
    slept: list[float] = []
    lock = threading.Lock()

    def sleep(seconds: float) -> None:
        with lock:
            slept.append(seconds)

    pacer = RequestPacer(4.0, monotonic=lambda: 50.0, sleep=sleep)  # a clock that stands still
    threads = [threading.Thread(target=pacer.wait) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(slept) == [0.25, 0.5, 0.75, 1.0]  # the first goes at once, each next a slot later


def test_each_thread_has_its_own_session_and_close_releases_them(httpserver: HTTPServer) -> None:
    httpserver.expect_request("/v3/mail/send").respond_with_response(Response("", status=202))
    transport = SendGridTransport(api_key="SG.k", base_url=httpserver.url_for("/"))
    batches = [outbounds(3, start=1 + 3 * i) for i in range(4)]
    results: dict[int, list[Outcome]] = {}
    barrier = threading.Barrier(4)

    def send(i: int) -> None:
        barrier.wait()
        results[i] = transport.send_batch(batches[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(o.result is Result.SENT for i in range(4) for o in results[i])
    assert [[o.key for o in results[i]] for i in range(4)] == [[m.key for m in b] for b in batches]
    assert len(transport._sessions) == 4
    assert len({id(s) for s in transport._sessions}) == 4
    transport.close()
    assert transport._sessions == []
    payloads = [json.loads(req.get_data()) for req, _ in httpserver.log]
    assert sorted(len(p["personalizations"]) for p in payloads) == [3, 3, 3, 3]


def test_an_empty_batch_sends_nothing(httpserver: HTTPServer) -> None:
    assert EchoTransport(base_url=httpserver.url_for("/")).send_batch([]) == []
    assert httpserver.log == []


def test_json_requests_are_compact_utf8() -> None:
    request = json_request("/p", {"name": "Zoë"})
    assert request.body == '{"name":"Zoë"}'.encode()
    assert request.content_type == "application/json"


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ({"sendgrid": {"base_url": "ftp://x"}}, r"\[transport.sendgrid\] base_url: must be an http\(s\) URL"),
        ({"postmark": {"timeout": 0}}, r"\[transport.postmark\] timeout: must be a positive number"),
        ({"resend": {"concurrency": -1}}, r"\[transport.resend\] concurrency: must be 0"),
        ({"mailgun": {"requests_per_second": -2.0}}, r"\[transport.mailgun\] requests_per_second: must be 0"),
        ({"postmark": {"message_stream": " "}}, r"\[transport.postmark\] message_stream: must not be empty"),
        ({"resend": {"api_key": "re_x"}}, r"\[transport.resend\] api_key: unknown key"),  # secrets stay out
    ],
)
def test_provider_sections_are_validated(section: dict, expected: str) -> None:
    from digest.config import config_from_dict
    from digest.errors import ConfigError

    with pytest.raises(ConfigError, match=expected):
        config_from_dict({"transport": section})


def test_every_provider_kind_is_accepted() -> None:
    from digest.config import config_from_dict

    for kind in ("sendgrid", "postmark", "resend", "ses"):
        assert config_from_dict({"transport": {"kind": kind}}).transport.kind == kind
