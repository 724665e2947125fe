"""Amazon SES v2 transport: real digests sent through boto3 to moto's SES server, and SES-shaped
refusals (throttling, account errors, 5xx, a hang) from a local fake endpoint.

moto is an independent implementation of the SES API; what it stored (`/moto-api/data.json`)
is read back and checked byte for byte. moto neither throttles nor hangs, so those answers
come from pytest-httpserver, shaped like SES v2's rest-json errors (x-amzn-ErrorType header,
JSON body with "message").
"""

from __future__ import annotations

import base64
import dataclasses
import email
import json
import threading
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from pathlib import Path

import boto3
import pytest
import requests
from pytest_httpserver import HTTPServer
from render_helpers import DATE, HEADERS, personal, renderer, sample_digest
from site_helpers import SmtpSink, free_port, make_site
from sqlalchemy import create_engine, func, select
from werkzeug import Request, Response

from digest.cli import main
from digest.config import config_from_dict
from digest.errors import ConfigError
from digest.message import MessageTemplate
from digest.models import Recipient
from digest.send import SendRun
from digest.transports import make_transport
from digest.transports.base import Outbound, Result
from digest.transports.ses import SesTransport

SENDER = "newsletter@example.org"
SEND_PATH = "/v2/email/outbound-emails"


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Test credentials in boto3's standard variables, and nothing else boto3 could find.

    AWS_EC2_METADATA_DISABLED keeps boto3 from asking the instance-metadata address (not on
    this machine) when a test removes the credentials.
    """
    for var in (
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_SESV2",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
def moto(moto_url: str) -> str:
    """moto's SES with nothing in it: no identity verified, no message stored."""
    requests.post(f"{moto_url}/moto-api/reset", timeout=10).raise_for_status()
    return moto_url


def verify_domain(url: str, domain: str = "example.org") -> None:
    client = boto3.client("sesv2", region_name="us-east-1", endpoint_url=url)
    client.create_email_identity(EmailIdentity=domain)


def stored_messages(url: str) -> list[dict]:
    data = requests.get(f"{url}/moto-api/data.json", timeout=10).json()
    return data["ses"]["RawMessage"]


@pytest.fixture(scope="module")
def template() -> MessageTemplate:
    return MessageTemplate(renderer().render(sample_digest()), HEADERS, date=DATE)


def outbounds(template: MessageTemplate, count: int) -> list[Outbound]:
    return [
        template.outbound(
            Recipient(i, f"reader{i}@example.net", f"Reader {i}"),
            personal(token=f"tok{i}", sid=i),
            key=f"run42:{i}",
            envelope_sender=SENDER,
        )
        for i in range(1, count + 1)
    ]


def parse(raw: bytes) -> EmailMessage:
    return email.message_from_bytes(raw, policy=policy.default)  # type: ignore[return-value]


# --- against moto ------------------------------------------------------------------------


def test_raw_messages_reach_ses_as_built(moto: str, template: MessageTemplate) -> None:
    verify_domain(moto)
    batch = outbounds(template, 3)
    outcomes = SesTransport(endpoint_url=moto).send_batch(batch)

    assert [o.result for o in outcomes] == [Result.SENT] * 3
    stored = {m["id"]: m for m in stored_messages(moto)}
    assert set(stored) == {o.provider_id for o in outcomes}
    for outbound, outcome in zip(batch, outcomes, strict=True):
        message = stored[outcome.provider_id]
        assert message["source"] == SENDER
        assert outbound.recipient in message["destinations"]
        assert message["raw_data"].encode("utf-8") == outbound.wire()  # not a byte changed
        parsed = parse(outbound.wire())
        assert parsed["Message-ID"] == outbound.message_id
        unsub = str(parsed["List-Unsubscribe"])
        assert outbound.values["unsubscribe_url"] in unsub and "mailto:unsubscribe@example.org" in unsub
        assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        text, html = (part.get_content() for part in parsed.iter_parts())
        assert outbound.values["preferences_url"] in text
        assert outbound.values["unsubscribe_url"].replace("&", "&amp;") in html


def test_make_transport_builds_ses_from_config(moto: str, template: MessageTemplate) -> None:
    verify_domain(moto)
    config = config_from_dict(
        {"transport": {"kind": "ses", "ses": {"endpoint_url": moto, "concurrency": 3, "max_per_second": 5}}}
    )
    transport = make_transport(config)
    assert isinstance(transport, SesTransport)
    assert (transport.concurrency, transport.max_per_second) == (3, 5.0)
    with transport:
        outcome = transport.send_one(outbounds(template, 1)[0])
    assert outcome.result is Result.SENT
    assert [m["id"] for m in stored_messages(moto)] == [outcome.provider_id]


def test_unverified_sender_fails_each_message_with_ses_reason(moto: str, template: MessageTemplate) -> None:
    outcomes = SesTransport(endpoint_url=moto).send_batch(outbounds(template, 2))
    assert [o.result for o in outcomes] == [Result.FAILED, Result.FAILED]
    for outcome in outcomes:  # a refusal of the message, not the account: each one was tried
        assert "MessageRejected" in outcome.detail
        assert f"Did not have authority to send from email {SENDER}" in outcome.detail
    assert stored_messages(moto) == []


def test_a_message_that_cannot_be_built_fails_alone(moto: str, template: MessageTemplate) -> None:
    verify_domain(moto)

    def broken() -> bytes:
        raise ValueError("no bytes for this one")

    first, second, third = outbounds(template, 3)
    batch = [first, dataclasses.replace(second, build_wire=broken), third]
    outcomes = SesTransport(endpoint_url=moto).send_batch(batch)
    assert [o.result for o in outcomes] == [Result.SENT, Result.FAILED, Result.SENT]
    assert "no bytes for this one" in outcomes[1].detail
    assert len(stored_messages(moto)) == 2


def test_batches_from_many_threads_share_one_client(moto: str, template: MessageTemplate) -> None:
    verify_domain(moto)
    transport = SesTransport(endpoint_url=moto, concurrency=4)
    everyone = outbounds(template, 24)
    batches = [everyone[i : i + 6] for i in range(0, 24, 6)]
    results: list[list] = [[] for _ in batches]

    def send(i: int) -> None:
        results[i] = transport.send_batch(batches[i])

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    outcomes = [o for batch in results for o in batch]
    assert [o.result for o in outcomes] == [Result.SENT] * 24
    stored = stored_messages(moto)
    assert sorted(m["raw_data"].encode() for m in stored) == sorted(o.wire() for o in everyone)


def ses_site(tmp_path: Path, endpoint_url: str) -> Path:
    """A digest.toml sending through SES at `endpoint_url`, with two subscribers."""
    readers = {"all@example.net": {"name": "All Regions"}, "africa@example.net": {"regions": {"Africa"}}}
    site = make_site(tmp_path, SmtpSink(host="127.0.0.1", port=25), readers)
    text = site.read_text(encoding="utf-8").replace('kind = "smtp"', 'kind = "ses"')
    site.write_text(text + f'[transport.ses]\nendpoint_url = "{endpoint_url}"\n', encoding="utf-8")
    return site


def test_digest_send_through_ses(
    moto: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DIGEST_SECRET_KEY", "Xr5Kq2Vw8Ln3Tz7Bc1Hm6Jd4Fg9Ps0YaQe7Wn2Rb5Mk-t3")
    verify_domain(moto, "rs.example")  # make_site's sender is news@rs.example
    assert main(["-c", str(ses_site(tmp_path, moto)), "send"]) == 0

    stored = stored_messages(moto)
    assert sorted(m["destinations"][0] for m in stored) == ["africa@example.net", "all@example.net"]
    for message in stored:
        parsed = parse(message["raw_data"].encode("utf-8"))
        assert parsed["To"].addresses[0].addr_spec == message["destinations"][0]
        assert str(parsed["List-Unsubscribe"]).startswith("<https://news.rs.example/unsubscribe/")
        assert [p.get_content_type() for p in parsed.iter_parts()] == ["text/plain", "text/html"]
    assert "2 sent" in capsys.readouterr().out


def test_digest_send_without_credentials_stops_before_a_run(
    moto: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DIGEST_SECRET_KEY", "Xr5Kq2Vw8Ln3Tz7Bc1Hm6Jd4Fg9Ps0YaQe7Wn2Rb5Mk-t3")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    site = ses_site(tmp_path, moto)
    assert main(["-c", str(site), "send"]) == 2
    assert "AWS_ACCESS_KEY_ID" in capsys.readouterr().err
    engine = create_engine(f"sqlite:///{tmp_path / 'subscribers.db'}")
    with engine.connect() as db:  # no run was frozen: nothing is left behind to resume
        assert db.scalar(select(func.count()).select_from(SendRun)) == 0
    engine.dispose()


# --- SES-shaped answers from a local endpoint -------------------------------------------


def ses_error(status: int, error_type: str, message: str, **headers: str) -> Response:
    return Response(
        json.dumps({"message": message}),
        status=status,
        headers={
            "x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/coral/com.amazon.sesv2/",
            **headers,
        },
        content_type="application/json",
    )


def fake(httpserver: HTTPServer, **kwargs: object) -> SesTransport:
    return SesTransport(endpoint_url=httpserver.url_for("/").rstrip("/"), **kwargs)  # type: ignore[arg-type]


def test_request_is_sigv4_signed_raw_content_with_configuration_set(
    httpserver: HTTPServer, template: MessageTemplate
) -> None:
    httpserver.expect_request(SEND_PATH, method="POST").respond_with_json({"MessageId": "ses-id-1"})
    (outbound,) = outbounds(template, 1)
    (outcome,) = fake(httpserver, configuration_set="weekly-digest", region="eu-west-1").send_batch(
        [outbound]
    )

    assert (outcome.result, outcome.provider_id) == (Result.SENT, "ses-id-1")
    (request, _response), *_ = httpserver.log
    body = json.loads(request.get_data())
    assert body["FromEmailAddress"] == SENDER
    assert body["Destination"] == {"ToAddresses": [outbound.recipient]}
    assert base64.b64decode(body["Content"]["Raw"]["Data"]) == outbound.wire()
    assert body["ConfigurationSetName"] == "weekly-digest"
    auth = request.headers["Authorization"]
    assert auth.startswith("AWS4-HMAC-SHA256 Credential=testing-key-id/")
    assert "/eu-west-1/ses/aws4_request" in auth


def test_throttling_defers_the_batch_and_is_not_retried_by_botocore(
    httpserver: HTTPServer, template: MessageTemplate
) -> None:
    httpserver.expect_request(SEND_PATH, method="POST").respond_with_response(
        ses_error(429, "TooManyRequestsException", "Maximum sending rate exceeded.", **{"Retry-After": "3"})
    )
    outcomes = fake(httpserver).send_batch(outbounds(template, 3))

    assert len(httpserver.log) == 1  # no retry hid the 429, and the rest of the batch waited
    assert [o.result for o in outcomes] == [Result.DEFERRED] * 3
    assert all(o.rate_limited and o.retry_after == 3.0 for o in outcomes)
    assert "TooManyRequestsException (HTTP 429): Maximum sending rate exceeded." in outcomes[0].detail
    assert outcomes[1].detail.startswith("not tried")


@pytest.mark.parametrize("code", ["Throttling", "LimitExceededException"])
def test_other_throttling_codes_are_rate_limits(
    httpserver: HTTPServer, template: MessageTemplate, code: str
) -> None:
    httpserver.expect_request(SEND_PATH, method="POST").respond_with_response(
        ses_error(400, code, "Daily message quota exceeded.")
    )
    (outcome,) = fake(httpserver).send_batch(outbounds(template, 1))
    assert (outcome.result, outcome.rate_limited, outcome.retry_after) == (Result.DEFERRED, True, None)
    assert code in outcome.detail


def test_message_rejected_fails_that_message_only(httpserver: HTTPServer, template: MessageTemplate) -> None:
    def answer(request: Request) -> Response:
        data = base64.b64decode(json.loads(request.get_data())["Content"]["Raw"]["Data"])
        if b"reader2@example.net" in data:
            return ses_error(400, "MessageRejected", "Email address is on the suppression list.")
        return Response(
            json.dumps({"MessageId": f"id-{len(httpserver.log)}"}), content_type="application/json"
        )

    httpserver.expect_request(SEND_PATH, method="POST").respond_with_handler(answer)
    outcomes = fake(httpserver).send_batch(outbounds(template, 3))
    assert [o.result for o in outcomes] == [Result.SENT, Result.FAILED, Result.SENT]
    assert "MessageRejected (HTTP 400): Email address is on the suppression list." in outcomes[1].detail


@pytest.mark.parametrize(
    "code",
    ["AccountSuspendedException", "MailFromDomainNotVerifiedException", "SendingPausedException"],
)
def test_account_refusal_fails_the_rest_untried(
    httpserver: HTTPServer, template: MessageTemplate, code: str
) -> None:
    httpserver.expect_request(SEND_PATH, method="POST").respond_with_response(
        ses_error(400, code, "This account's ability to send is restricted.")
    )
    outcomes = fake(httpserver).send_batch(outbounds(template, 3))
    assert len(httpserver.log) == 1
    assert [o.result for o in outcomes] == [Result.FAILED] * 3
    assert outcomes[0].detail.startswith("SES refused the account, not this message")
    assert code in outcomes[0].detail and code in outcomes[2].detail


def test_server_error_defers_and_is_not_retried(httpserver: HTTPServer, template: MessageTemplate) -> None:
    httpserver.expect_request(SEND_PATH, method="POST").respond_with_response(
        ses_error(503, "ServiceUnavailable", "Service is unavailable.")
    )
    outcomes = fake(httpserver).send_batch(outbounds(template, 2))
    assert len(httpserver.log) == 1
    assert [o.result for o in outcomes] == [Result.DEFERRED, Result.DEFERRED]
    assert not any(o.rate_limited for o in outcomes)
    assert "HTTP 503" in outcomes[0].detail


def test_hang_after_sending_is_unknown(httpserver: HTTPServer, template: MessageTemplate) -> None:
    release = threading.Event()

    def hang(_request: Request) -> Response:
        release.wait(30)  # held until the test is done; the client gives up long before
        return Response("{}", content_type="application/json")

    httpserver.expect_request(SEND_PATH, method="POST").respond_with_handler(hang)
    try:
        outcomes = fake(httpserver, timeout=0.5).send_batch(outbounds(template, 2))
    finally:
        release.set()
    assert [o.result for o in outcomes] == [Result.UNKNOWN, Result.DEFERRED]
    assert "no answer from SES after sending" in outcomes[0].detail and "Read timeout" in outcomes[0].detail
    assert outcomes[1].detail.startswith("not tried")


def test_connection_refused_defers(template: MessageTemplate) -> None:
    transport = SesTransport(endpoint_url=f"http://127.0.0.1:{free_port()}", timeout=2)
    outcomes = transport.send_batch(outbounds(template, 2))
    assert [o.result for o in outcomes] == [Result.DEFERRED, Result.DEFERRED]
    assert "cannot reach SES" in outcomes[0].detail


# --- credentials and configuration -------------------------------------------------------


def test_no_credentials_is_a_config_error_naming_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ConfigError) as err:
        make_transport(config_from_dict({"transport": {"kind": "ses"}}))
    assert err.value.key == "AWS_ACCESS_KEY_ID"
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        assert var in str(err.value)


def test_half_the_credentials_names_the_missing_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(ConfigError) as err:
        SesTransport()
    assert err.value.key == "AWS_SECRET_ACCESS_KEY"


def test_unknown_profile_names_aws_profile(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    with pytest.raises(ConfigError) as err:
        SesTransport()
    assert err.value.key == "AWS_PROFILE" and "no-such-profile" in str(err.value)


@pytest.mark.parametrize(
    ("ses", "key"),
    [
        ({"region": "mars"}, "[transport.ses] region"),
        ({"endpoint_url": "localhost:4566"}, "[transport.ses] endpoint_url"),
        ({"timeout": 0}, "[transport.ses] timeout"),
        ({"concurrency": 0}, "[transport.ses] concurrency"),
        ({"max_per_second": 0}, "[transport.ses] max_per_second"),
        ({"region": 5}, "[transport.ses] region"),
    ],
)
def test_bad_ses_settings_name_the_key(ses: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"transport": {"kind": "ses", "ses": ses}}, file="digest.toml")
    assert str(err.value).startswith(f"digest.toml: {key}: ")


def test_ses_defaults() -> None:
    ses = config_from_dict({"transport": {"kind": "ses"}}).transport.ses
    assert (ses.region, ses.endpoint_url, ses.configuration_set) == ("us-east-1", "", "")
    assert (ses.concurrency, ses.max_per_second) == (8, 14.0)


def test_a_verp_return_path_gets_the_notifications_forwarded(
    httpserver: HTTPServer, template: MessageTemplate
) -> None:
    """[bounces] return_path_domain: SES keeps its own MAIL FROM, so it is asked to forward
    bounces and complaints to the VERP address; a plain sender asks for nothing."""
    import dataclasses

    from digest.message import make_return_path

    httpserver.expect_request(SEND_PATH, method="POST").respond_with_json({"MessageId": "ses-id-1"})
    plain, other = outbounds(template, 2)
    address = make_return_path("run42", 1, "bounce.example.org", signature="a" * 20)
    fake(httpserver).send_batch([dataclasses.replace(plain, envelope_sender=address), other])
    bodies = [json.loads(request.get_data()) for request, _response in httpserver.log]
    assert bodies[0]["FeedbackForwardingEmailAddress"] == address
    assert "FeedbackForwardingEmailAddress" not in bodies[1]
