"""Provider webhooks through Flask's test client: payloads shaped as each provider documents
them, signed here with keys the test generates. A good signature suppresses or unsubscribes;
a missing one is 401; a tampered body, a wrong key, a stale timestamp or a replay is 403 and
changes nothing."""

from __future__ import annotations

import base64
import copy
import datetime as dt
import hashlib
import hmac
import json
import secrets
import time
from urllib.parse import urlsplit

import pytest
import requests
from bounce_helpers import SECRET, message_id, sent_run
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import NameOID
from svix.webhooks import Webhook

from digest.config import config_from_dict
from digest.db import session_factory
from digest.transports.ses_webhook import SnsFetcher, aws_url, string_to_sign
from digest.web import create_app
from subscribers import store
from subscribers.reports import run_bounce_counts
from subscribers.store import Status

pytest_plugins = ("subscriber_fixtures",)

RUN = "run7"


TOPIC = "arn:aws:sns:us-west-2:123456789012:ses-bounces"


@pytest.fixture
def world(db_engine):
    """An app, one subscriber who was sent run7, and a way to read their state back."""
    return _world(db_engine)


def _world(db_engine, **bounces):
    app = create_app(
        config_from_dict({"newsletter": {"base_url": "http://localhost"}, "bounces": bounces}),
        db_engine,
        secret_key=SECRET,
        send_mail=lambda _m: None,
    )
    with session_factory(db_engine).begin() as s:
        sub = store.add_subscriber(s, "reader@example.com", source="cli")
        sent_run(s, RUN, [sub])
        mid = message_id(RUN, sub)

    def state() -> tuple[Status, bool, list[str], dict[str, int]]:
        with session_factory(db_engine)() as s:
            row = store.get_by_email(s, "reader@example.com")
            events = [e.kind for e in store.events_for(s, row)]
            return row.status, store.is_suppressed(s, row.email), events, run_bounce_counts(s, RUN)

    return app.test_client(), mid, state, app


def unchanged(state) -> None:
    status, suppressed, events, counts = state()
    assert (status, suppressed, events, counts) == (
        Status.ACTIVE,
        False,
        ["subscribed"],
        {"bounced": 0, "complained": 0, "refused": 0},
    )


# --- SendGrid ---------------------------------------------------------------------------------


def _sendgrid_key(monkeypatch) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    monkeypatch.setenv("DIGEST_SENDGRID_WEBHOOK_KEY", base64.b64encode(der).decode())
    return key


def _sendgrid_post(client, key, body: bytes, *, timestamp: str | None = None, sign_body: bytes | None = None):
    timestamp = timestamp or str(int(time.time()))
    sig = key.sign(
        timestamp.encode() + (sign_body if sign_body is not None else body), ec.ECDSA(hashes.SHA256())
    )
    return client.post(
        "/webhooks/sendgrid",
        data=body,
        content_type="application/json",
        headers={
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(sig).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
        },
    )


def _sendgrid_events(mid: str) -> bytes:
    # Shaped as SendGrid's Event Webhook reference shows a bounce (a batch is a JSON array).
    return json.dumps(
        [
            {
                "email": "reader@example.com",
                "timestamp": int(time.time()),
                "smtp-id": mid,
                "event": "bounce",
                "category": ["digest"],
                "sg_event_id": "6g4ZI7SA-xmRDv57GoPIPw==",
                "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0",
                "reason": "550 5.1.1 The email account that you tried to reach does not exist.",
                "status": "5.1.1",
                "type": "bounce",
            },
            {"email": "reader@example.com", "timestamp": int(time.time()), "event": "open", "smtp-id": mid},
        ]
    ).encode()


def test_sendgrid_good_signature_suppresses(world, monkeypatch):
    client, mid, state, _app = world
    key = _sendgrid_key(monkeypatch)
    resp = _sendgrid_post(client, key, _sendgrid_events(mid))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    status, suppressed, events, counts = state()
    assert (status, suppressed, events[-1], counts) == (
        Status.BOUNCED,
        True,
        "bounced",
        {"bounced": 1, "complained": 0, "refused": 0},
    )


def test_sendgrid_refusals_change_nothing(world, monkeypatch):
    client, mid, state, _app = world
    key = _sendgrid_key(monkeypatch)
    body = _sendgrid_events(mid)
    assert client.post("/webhooks/sendgrid", data=body, content_type="application/json").status_code == 401
    tampered = body.replace(b"5.1.1", b"5.1.2", 1)
    assert _sendgrid_post(client, key, tampered, sign_body=body).status_code == 403
    other = ec.generate_private_key(ec.SECP256R1())
    assert _sendgrid_post(client, other, body).status_code == 403
    stale = str(int(time.time()) - 3600)
    assert _sendgrid_post(client, key, body, timestamp=stale).status_code == 403
    unchanged(state)


# --- Mailgun ----------------------------------------------------------------------------------


def _mailgun_body(mid: str, key: str, *, timestamp: int | None = None, token: str | None = None) -> dict:
    timestamp = timestamp or int(time.time())
    token = token or secrets.token_hex(25)
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    # Shaped as Mailgun's "failed" (permanent) event in its webhook documentation.
    return {
        "signature": {"timestamp": str(timestamp), "token": token, "signature": signature},
        "event-data": {
            "event": "failed",
            "id": "G9Bn5sl1TC6nu79C8C0bwg",
            "timestamp": timestamp,
            "severity": "permanent",
            "reason": "bounce",
            "recipient": "reader@example.com",
            "delivery-status": {
                "code": 550,
                "message": "5.1.1 The email account that you tried to reach does not exist",
                "description": "",
                "attempt-no": 1,
            },
            "message": {
                "headers": {"to": "reader@example.com", "message-id": mid.strip("<>"), "subject": "This week"}
            },
            "user-variables": {},
        },
    }


def test_mailgun_good_signature_suppresses_and_a_replay_is_refused(world, monkeypatch):
    client, mid, state, _app = world
    monkeypatch.setenv("DIGEST_MAILGUN_WEBHOOK_SIGNING_KEY", "mg-key")
    body = _mailgun_body(mid, "mg-key")
    resp = client.post("/webhooks/mailgun", json=body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert state()[:2] == (Status.BOUNCED, True)
    # The same signed request again: its token was used.
    assert client.post("/webhooks/mailgun", json=body).status_code == 403


def test_mailgun_refusals_change_nothing(world, monkeypatch):
    client, mid, state, _app = world
    monkeypatch.setenv("DIGEST_MAILGUN_WEBHOOK_SIGNING_KEY", "mg-key")
    body = _mailgun_body(mid, "mg-key")
    missing = copy.deepcopy(body)
    del missing["signature"]
    assert client.post("/webhooks/mailgun", json=missing).status_code == 401
    wrong = _mailgun_body(mid, "another-key")
    assert client.post("/webhooks/mailgun", json=wrong).status_code == 403
    stale = _mailgun_body(mid, "mg-key", timestamp=int(time.time()) - 3600)
    assert client.post("/webhooks/mailgun", json=stale).status_code == 403
    tampered = copy.deepcopy(body)
    tampered["signature"]["timestamp"] = str(int(body["signature"]["timestamp"]) + 1)
    assert client.post("/webhooks/mailgun", json=tampered).status_code == 403
    unchanged(state)


# --- Postmark ---------------------------------------------------------------------------------


def _postmark_complaint(mid: str) -> dict:
    # Shaped as Postmark's Spam Complaint webhook example.
    return {
        "RecordType": "SpamComplaint",
        "MessageStream": "outbound",
        "ID": 42,
        "Type": "SpamComplaint",
        "TypeCode": 512,
        "Name": "Spam complaint",
        "Tag": "digest",
        "MessageID": "00000000-0000-0000-0000-000000000000",
        "Metadata": {"digest_message_id": mid},
        "ServerID": 1234,
        "Description": "",
        "Details": "Test spam complaint details",
        "Email": "reader@example.com",
        "From": "news@news.example.org",
        "BouncedAt": "2026-11-27T09:00:00Z",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": False,
        "Subject": "This week",
    }


def test_postmark_basic_auth(world, monkeypatch):
    client, mid, state, _app = world
    monkeypatch.setenv("DIGEST_POSTMARK_WEBHOOK_USER", "postmark")
    monkeypatch.setenv("DIGEST_POSTMARK_WEBHOOK_PASSWORD", "pm-pass")
    body = _postmark_complaint(mid)
    assert client.post("/webhooks/postmark", json=body).status_code == 401
    assert client.post("/webhooks/postmark", json=body, auth=("postmark", "wrong")).status_code == 403
    unchanged(state)
    resp = client.post("/webhooks/postmark", json=body, auth=("postmark", "pm-pass"))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    status, suppressed, events, counts = state()
    assert (status, suppressed, events[-1], counts) == (
        Status.COMPLAINED,
        True,
        "complained",
        {"bounced": 0, "complained": 1, "refused": 0},
    )


def test_postmark_unconfigured_accepts_nothing(world, monkeypatch):
    client, mid, state, _app = world
    monkeypatch.delenv("DIGEST_POSTMARK_WEBHOOK_PASSWORD", raising=False)
    assert (
        client.post("/webhooks/postmark", json=_postmark_complaint(mid), auth=("a", "b")).status_code == 403
    )
    unchanged(state)


# --- Resend (Svix) ----------------------------------------------------------------------------


def _resend_post(
    client, secret: str, body: bytes, *, at: dt.datetime | None = None, sign_body: bytes | None = None
):
    at = at or dt.datetime.now(dt.UTC)
    msg_id = "msg_" + secrets.token_hex(8)
    signature = Webhook(secret).sign(msg_id, at, (sign_body or body).decode())
    headers = {"svix-id": msg_id, "svix-timestamp": str(int(at.timestamp())), "svix-signature": signature}
    return client.post("/webhooks/resend", data=body, content_type="application/json", headers=headers)


def _resend_bounce(mid: str) -> bytes:
    # Shaped as Resend's email.bounced example; the tag is what our transport sets.
    ref = mid.strip("<>").split("@")[0].replace(".", "_")
    return json.dumps(
        {
            "type": "email.bounced",
            "created_at": "2026-11-27T09:00:00.000Z",
            "data": {
                "broadcast_id": None,
                "created_at": "2026-11-27T08:59:59.000Z",
                "email_id": "56761188-7520-42d8-8898-ff6fc54ce618",
                "from": "news@news.example.org",
                "to": ["reader@example.com"],
                "subject": "This week",
                "bounce": {
                    "message": "The recipient's email address does not exist (550 5.1.1).",
                    "subType": "Suppressed",
                    "type": "Permanent",
                },
                "tags": {"digest_ref": ref},
            },
        }
    ).encode()


def test_resend_svix_signature(world, monkeypatch):
    client, mid, state, _app = world
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    monkeypatch.setenv("DIGEST_RESEND_WEBHOOK_SECRET", secret)
    body = _resend_bounce(mid)
    assert client.post("/webhooks/resend", data=body, content_type="application/json").status_code == 401
    other = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    assert _resend_post(client, other, body).status_code == 403
    assert (
        _resend_post(client, secret, body.replace(b"Permanent", b"Transient"), sign_body=body).status_code
        == 403
    )
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    assert _resend_post(client, secret, body, at=old).status_code == 403
    unchanged(state)
    resp = _resend_post(client, secret, body)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert state()[:2] == (Status.BOUNCED, True)


# --- Amazon SES through SNS -------------------------------------------------------------------


CERT_URL = (
    "https://sns.us-west-2.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
)


def _certificate(key, host: str = "sns.us-west-2.amazonaws.com") -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # OpenSSL judges validity by the real clock; the date-proof runs move this process's clock
        # by up to a year (tests/conftest.py), so the window spans more than that either way.
        .not_valid_before(now - dt.timedelta(days=800))
        .not_valid_after(now + dt.timedelta(days=800))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def sns_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def sns(httpserver, sns_key):
    """A signing key and its certificate, served by a local server under Amazon's real URLs: the
    fetcher's `get` sends https://sns.us-west-2.amazonaws.com/<path> there (nothing leaves the
    machine), so the production host rule is the one tested."""
    key = sns_key
    httpserver.expect_request(urlsplit(CERT_URL).path).respond_with_data(_certificate(key))
    confirmed: list[str] = []
    httpserver.expect_request("/").respond_with_handler(
        lambda req: (confirmed.append(req.args.get("Token", "")), _ok())[1]
    )

    def get(url: str) -> bytes:
        parts = urlsplit(url)
        resp = requests.get(
            httpserver.url_for(parts.path) + ("?" + parts.query if parts.query else ""), timeout=5
        )
        resp.raise_for_status()
        return resp.content

    fetcher = SnsFetcher(get=get)
    return key, CERT_URL, fetcher, confirmed, httpserver


def _ok():
    from werkzeug.wrappers import Response

    return Response("<ConfirmSubscriptionResponse/>", content_type="text/xml")


def _sns_message(
    key, cert_url: str, message: dict, *, version: str = "1", timestamp: str | None = None
) -> dict:
    envelope = {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": TOPIC,
        "Subject": "Amazon SES Email Event Notification",
        "Message": json.dumps(message),
        "Timestamp": timestamp or dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "SignatureVersion": version,
        "SigningCertURL": cert_url,
        "UnsubscribeURL": "https://sns.us-west-2.amazonaws.com/?Action=Unsubscribe&SubscriptionArn=x",
    }
    return _signed(key, envelope)


def _signed(key, envelope: dict) -> dict:
    algorithm = hashes.SHA1() if envelope["SignatureVersion"] == "1" else hashes.SHA256()
    signature = key.sign(string_to_sign(envelope), padding.PKCS1v15(), algorithm)
    return {**envelope, "Signature": base64.b64encode(signature).decode()}


def _ses_bounce(mid: str) -> dict:
    # Shaped as the SES "Bounce" notification in the SES developer guide.
    return {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": "Permanent",
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": "reader@example.com",
                    "action": "failed",
                    "status": "5.1.1",
                    "diagnosticCode": "smtp; 550 5.1.1 user unknown",
                }
            ],
            "timestamp": "2026-11-27T09:00:00.000Z",
            "feedbackId": "0100017b-bounce",
            "reportingMTA": "dsn; a8-30.smtp-out.amazonses.com",
        },
        "mail": {
            "timestamp": "2026-11-27T08:59:59.000Z",
            "source": "news@news.example.org",
            "messageId": "0100017b-ses-own-id",
            "destination": ["reader@example.com"],
            "headersTruncated": False,
            "headers": [{"name": "Message-ID", "value": mid}],
            "commonHeaders": {"messageId": mid, "subject": "This week", "to": ["reader@example.com"]},
        },
    }


def _ses_complaint(mid: str) -> dict:
    return {
        "notificationType": "Complaint",
        "complaint": {
            "complainedRecipients": [{"emailAddress": "reader@example.com"}],
            "timestamp": "2026-11-27T09:00:00.000Z",
            "feedbackId": "0100017b-complaint",
            "complaintFeedbackType": "abuse",
        },
        "mail": {"messageId": "0100017b-ses-own-id", "commonHeaders": {"messageId": mid}},
    }


@pytest.mark.parametrize("version", ["1", "2"])
def test_ses_sns_signature_versions(world, sns, version):
    client, mid, state, app = world
    key, cert_url, fetcher, _confirmed, _server = sns
    app.extensions["digest.webhooks"].extra["sns_fetcher"] = fetcher
    resp = client.post("/webhooks/ses", json=_sns_message(key, cert_url, _ses_bounce(mid), version=version))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert state()[:2] == (Status.BOUNCED, True)


def test_ses_complaint_unsubscribes(world, sns):
    client, mid, state, app = world
    key, cert_url, fetcher, _confirmed, _server = sns
    app.extensions["digest.webhooks"].extra["sns_fetcher"] = fetcher
    assert (
        client.post("/webhooks/ses", json=_sns_message(key, cert_url, _ses_complaint(mid))).status_code == 200
    )
    assert state()[0] == Status.COMPLAINED and state()[3] == {"bounced": 0, "complained": 1, "refused": 0}


def test_ses_refusals_change_nothing(world, sns):
    client, mid, state, app = world
    key, cert_url, fetcher, _confirmed, server = sns
    app.extensions["digest.webhooks"].extra["sns_fetcher"] = fetcher
    good = _sns_message(key, cert_url, _ses_bounce(mid))
    unsigned = {k: v for k, v in good.items() if k != "Signature"}
    assert client.post("/webhooks/ses", json=unsigned).status_code == 401
    tampered = {**good, "Message": good["Message"].replace("Permanent", "Transient")}
    assert client.post("/webhooks/ses", json=tampered).status_code == 403
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert (
        client.post("/webhooks/ses", json=_sns_message(other, cert_url, _ses_bounce(mid))).status_code == 403
    )
    stale = _sns_message(key, cert_url, _ses_bounce(mid), timestamp="2026-01-01T00:00:00.000Z")
    assert client.post("/webhooks/ses", json=stale).status_code == 403
    # A certificate from anywhere but an SNS host is never fetched.
    before = len(server.log)
    elsewhere = _sns_message(key, server.url_for("/SimpleNotificationService-0123456789abcdef.pem"), {})
    assert client.post("/webhooks/ses", json=elsewhere).status_code == 403
    assert len(server.log) == before
    unchanged(state)


def _confirmation(key, *, topic: str = TOPIC) -> dict:
    envelope = {
        "Type": "SubscriptionConfirmation",
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a",
        "TopicArn": topic,
        "Message": f"You have chosen to subscribe to the topic {topic}."
        " To confirm the subscription, visit the SubscribeURL included in this message.",
        "SubscribeURL": f"https://sns.us-west-2.amazonaws.com/?Action=ConfirmSubscription&TopicArn={topic}"
        "&Token=tok-1",
        "Timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "SignatureVersion": "1",
        "SigningCertURL": CERT_URL,
    }
    return _signed(key, envelope)


def test_ses_subscription_confirmation(db_engine, sns):
    client, _mid, state, app = _world(db_engine, ses_topic_arns=[TOPIC])
    key, _cert_url, fetcher, confirmed, _server = sns
    app.extensions["digest.webhooks"].extra["sns_fetcher"] = fetcher
    resp = client.post("/webhooks/ses", json=_confirmation(key))
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert confirmed == ["tok-1"]
    # A SubscribeURL off the allowed hosts is not visited, even when signed.
    foreign = _signed(key, {**_confirmation(key), "SubscribeURL": "https://evil.example/confirm?Token=x"})
    assert client.post("/webhooks/ses", json=foreign).status_code == 403
    # Nor is a topic that is not ours confirmed.
    theirs = _confirmation(key, topic="arn:aws:sns:us-west-2:999999999999:theirs")
    assert client.post("/webhooks/ses", json=theirs).status_code == 403
    assert confirmed == ["tok-1"]
    unchanged(state)


def test_aws_host_rule():
    assert aws_url("https://sns.us-west-2.amazonaws.com/SimpleNotificationService-abc.pem")
    assert aws_url("https://sns.cn-north-1.amazonaws.com.cn/x.pem")
    assert aws_url("https://sns.us-gov-west-1.amazonaws.com/x.pem")
    for bad in (
        "http://sns.us-west-2.amazonaws.com/x.pem",
        "https://sns.us-west-2.amazonaws.com.evil.example/x.pem",
        "https://evil.example/sns.us-west-2.amazonaws.com/x.pem",
        "https://sns.us-west-2.amazonaws.com:8443/x.pem",
        "https://s3.amazonaws.com/x.pem",
        # Finding 9: any label passed for the region, so hosts of other AWS services did too.
        "https://sns.s3.amazonaws.com/x.pem",
        "https://sns.x.amazonaws.com/x.pem",
        "https://sns.us-west-2.amazonaws.com.cn/x.pem",
        "https://user@sns.us-west-2.amazonaws.com/x.pem",
    ):
        assert not aws_url(bad), bad


# --- The findings of issue 19: each test failed on the code before it -------------------------


def test_mailgun_characters_moved_between_timestamp_and_token_are_refused(world, monkeypatch):
    """Finding 6: the HMAC covers timestamp + token concatenated; moving "e0" from the token's
    front to the timestamp's end kept the signature and made a new token (and 1e0 * T == T)."""
    client, mid, state, _app = world
    monkeypatch.setenv("DIGEST_MAILGUN_WEBHOOK_SIGNING_KEY", "mg-key")
    seen = _mailgun_body(mid, "mg-key", token="e0" + secrets.token_hex(24))
    moved = copy.deepcopy(seen)
    moved["signature"]["timestamp"] = seen["signature"]["timestamp"] + "e0"
    moved["signature"]["token"] = seen["signature"]["token"][2:]
    assert client.post("/webhooks/mailgun", json=moved).status_code == 403
    for timestamp in ("-1", "0", "1.7e9", " 1770920772", "１７７０９２０７７２"):
        odd = _mailgun_body(mid, "mg-key")
        odd["signature"]["timestamp"] = timestamp
        odd["signature"]["signature"] = hmac.new(
            b"mg-key", (timestamp + odd["signature"]["token"]).encode(), hashlib.sha256
        ).hexdigest()
        assert client.post("/webhooks/mailgun", json=odd).status_code == 403, timestamp
    unchanged(state)


def test_sendgrid_signed_nan_timestamp_is_refused(world, monkeypatch):
    """Finding 7: float("nan") is never "too far from now", so a signed `nan` was fresh forever."""
    client, mid, state, _app = world
    key = _sendgrid_key(monkeypatch)
    for timestamp in ("nan", "inf", "1.7e9", str(time.time())):
        assert _sendgrid_post(client, key, _sendgrid_events(mid), timestamp=timestamp).status_code == 403
    unchanged(state)


def test_signed_but_malformed_payloads_are_400_and_change_nothing(world, monkeypatch, sns):
    """Finding 7: oddly shaped but signed bodies answered 500; each is a 400 naming the field."""
    client, mid, state, app = world
    monkeypatch.setenv("DIGEST_MAILGUN_WEBHOOK_SIGNING_KEY", "mg-key")
    mailgun = _mailgun_body(mid, "mg-key") | {"event-data": [{"event": "failed"}]}
    resp = client.post("/webhooks/mailgun", json=mailgun)
    assert (resp.status_code, "event-data" in resp.json["error"]) == (400, True)

    monkeypatch.setenv("DIGEST_POSTMARK_WEBHOOK_USER", "postmark")
    monkeypatch.setenv("DIGEST_POSTMARK_WEBHOOK_PASSWORD", "pm-pass")
    postmark = _postmark_complaint(mid) | {"Metadata": "digest_message_id"}
    resp = client.post("/webhooks/postmark", json=postmark, auth=("postmark", "pm-pass"))
    assert (resp.status_code, "Metadata" in resp.json["error"]) == (400, True)

    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    monkeypatch.setenv("DIGEST_RESEND_WEBHOOK_SECRET", secret)
    resend = json.dumps({"type": "email.bounced", "data": [json.loads(_resend_bounce(mid))["data"]]})
    resp = _resend_post(client, secret, resend.encode())
    assert (resp.status_code, "data" in resp.json["error"]) == (400, True)

    key = _sendgrid_key(monkeypatch)
    sendgrid = json.loads(_sendgrid_events(mid)) + [["not", "an", "event"]]
    assert _sendgrid_post(client, key, json.dumps(sendgrid).encode()).status_code == 400

    sns_key, cert_url, fetcher, _confirmed, _server = sns
    app.extensions["digest.webhooks"].extra["sns_fetcher"] = fetcher
    bounce = _ses_bounce(mid)
    bounce["bounce"]["bouncedRecipients"] = "reader@example.com"
    resp = client.post("/webhooks/ses", json=_sns_message(sns_key, cert_url, bounce))
    assert (resp.status_code, "bouncedRecipients" in resp.json["error"]) == (400, True)
    unchanged(state)


def test_postmark_password_guessing_gets_429(world, monkeypatch):
    """Finding 8: 100 guesses of the basic-auth password went through with no throttle."""
    client, mid, state, _app = world
    monkeypatch.setenv("DIGEST_POSTMARK_WEBHOOK_USER", "postmark")
    monkeypatch.setenv("DIGEST_POSTMARK_WEBHOOK_PASSWORD", "pm-pass")
    body = _postmark_complaint(mid)
    guesses = [
        client.post("/webhooks/postmark", json=body, auth=("postmark", f"guess-{i}")).status_code
        for i in range(15)
    ]
    assert guesses == [403] * 10 + [429] * 5
    # Once throttled, even the right password from that address waits (nothing is checked).
    right = client.post("/webhooks/postmark", json=body, auth=("postmark", "pm-pass"))
    assert right.status_code == 429 and int(right.headers["Retry-After"]) > 0
    unchanged(state)
    # Postmark's own servers, at another address, are not held up.
    other = {"REMOTE_ADDR": "192.0.2.7"}
    resp = client.post("/webhooks/postmark", json=body, auth=("postmark", "pm-pass"), environ_base=other)
    assert resp.status_code == 200


def test_ses_forgeries_cost_no_fetch_and_certificates_are_checked(world, sns, sns_key):
    """Finding 9: every request fetched its SigningCertURL before any cheap check, with no cache,
    and the certificate's identity was never checked."""
    client, mid, state, app = world
    key, cert_url, fetcher, _confirmed, server = sns
    app.extensions["digest.webhooks"].extra["sns_fetcher"] = fetcher
    # The app's own fetcher lives as long as the app: its cache is what spares the GETs.
    assert isinstance(app.extensions["digest.webhooks"].extra["sns_fetcher"], SnsFetcher)
    good = _sns_message(key, cert_url, _ses_bounce(mid))
    cheap_refusals = [
        {**good, "Type": "Something"},  # not an SNS message type
        {**good, "TopicArn": "arn:aws:sns:s3:123456789012:x"},  # not a topic ARN
        # A certificate in another region than the topic's, or not a certificate path.
        {**good, "SigningCertURL": cert_url.replace("us-west-2", "eu-west-1")},
        {**good, "SigningCertURL": "https://sns.us-west-2.amazonaws.com/?Action=Publish"},
    ]
    for forged in cheap_refusals:
        assert client.post("/webhooks/ses", json=forged).status_code in (400, 403)
    assert fetcher.fetches == 0
    badly_signed = {**good, "Signature": base64.b64encode(b"x" * 256).decode()}
    for _ in range(3):
        assert client.post("/webhooks/ses", json=badly_signed).status_code == 403
    assert fetcher.fetches == 1  # once, then from the cache
    unchanged(state)
    # A certificate that does not name sns.us-west-2.amazonaws.com is refused, and not re-fetched.
    server.clear()
    server.expect_request(urlsplit(CERT_URL).path).respond_with_data(_certificate(key, "sns.amazonaws.com"))
    fresh_fetcher = SnsFetcher(get=fetcher.get)
    app.extensions["digest.webhooks"].extra["sns_fetcher"] = fresh_fetcher
    for _ in range(2):
        assert client.post("/webhooks/ses", json=good).status_code == 403
    assert fresh_fetcher.fetches == 1
    unchanged(state)


def test_ses_subscription_needs_ses_topic_arns(world, sns):
    """Finding 9: with an empty ses_topic_arns, any topic's subscription was confirmed."""
    client, _mid, state, app = world
    key, _cert_url, fetcher, confirmed, _server = sns
    app.extensions["digest.webhooks"].extra["sns_fetcher"] = fetcher
    resp = client.post("/webhooks/ses", json=_confirmation(key))
    assert resp.status_code == 403 and "ses_topic_arns" in resp.json["error"]
    assert confirmed == [] and fetcher.fetches == 0
    unchanged(state)


def test_postmark_hard_bounce_and_sendgrid_soft_bounce(world, monkeypatch):
    client, mid, state, _app = world
    monkeypatch.setenv("DIGEST_POSTMARK_WEBHOOK_USER", "postmark")
    monkeypatch.setenv("DIGEST_POSTMARK_WEBHOOK_PASSWORD", "pm-pass")
    key = _sendgrid_key(monkeypatch)
    # SendGrid "blocked" with 4.7.1 is a refusal of our sending: the run's alarm, not the reader's.
    blocked = json.loads(_sendgrid_events(mid))[0] | {
        "type": "blocked",
        "status": "4.7.1",
        "reason": "try later",
    }
    assert _sendgrid_post(client, key, json.dumps([blocked]).encode()).status_code == 200
    status, suppressed, events, counts = state()
    assert (status, suppressed, counts["refused"], counts["bounced"]) == (Status.ACTIVE, False, 1, 0)
    assert "soft_bounce" not in events
    # A temporary bounce that is the reader's (a full mailbox): recorded, under the soft limit.
    full = blocked | {"status": "4.2.2", "reason": "452 4.2.2 mailbox full"}
    assert _sendgrid_post(client, key, json.dumps([full]).encode()).status_code == 200
    status, suppressed, events, counts = state()
    assert (status, suppressed, events[-1], counts["bounced"]) == (Status.ACTIVE, False, "soft_bounce", 1)
    # Shaped as Postmark's Bounce webhook example.
    bounce = {
        "RecordType": "Bounce",
        "MessageStream": "outbound",
        "ID": 4323372036854775807,
        "Type": "HardBounce",
        "TypeCode": 1,
        "Name": "Hard bounce",
        "Tag": "digest",
        "MessageID": "883953f4-6105-42a2-a16a-77a8eac79483",
        "Metadata": {"digest_message_id": mid},
        "ServerID": 23,
        "Description": "The server was unable to deliver your message (ex: unknown user, mailbox not found).",
        "Details": "smtp;550 5.1.1 The email account that you tried to reach does not exist.",
        "Email": "reader@example.com",
        "From": "news@news.example.org",
        "BouncedAt": "2026-11-27T09:00:00Z",
        "DumpAvailable": True,
        "Inactive": True,
        "CanActivate": True,
        "Subject": "This week",
        "Content": "",
    }
    assert client.post("/webhooks/postmark", json=bounce, auth=("postmark", "pm-pass")).status_code == 200
    assert state()[:2] == (Status.BOUNCED, True)
