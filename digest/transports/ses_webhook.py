"""Amazon SES notifications through SNS: the SNS message signature, checked against the
signing certificate fetched from Amazon SNS's own host only.

What is checked, cheapest first, so a forged request costs us no outbound request:
1. the envelope's shape (pydantic): Type, TopicArn, Timestamp, SignatureVersion 1 or 2, ...;
2. the Timestamp within `[bounces] webhook_max_age_seconds`;
3. the topic: in `[bounces] ses_topic_arns` when set; a SubscriptionConfirmation is refused
   unless that list is set and names its topic (otherwise anyone's topic could subscribe us);
4. the SigningCertURL: exactly `https://sns.<region>.amazonaws.com/SimpleNotificationService-<hex>.pem`
   (`.amazonaws.com.cn` for the `cn-` regions), the region that of the TopicArn;
5. the certificate, fetched once per URL and cached (failures too, for a while): within its
   validity dates, and naming that host in its subject (DNS name or common name);
6. the signature: SignatureVersion 1 (RSA, SHA-1) or 2 (RSA, SHA-256) over the fields AWS
   lists, each as "Name\\nvalue\\n" in that order.
A SubscriptionConfirmation is then confirmed by GETting its SubscribeURL (same host rule); a
Notification's Message is validated as an SES notification before it is read.

The fetcher is injectable (`SnsFetcher(get=...)`); tests serve the certificate from a local
server under the real host names.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from pydantic import Field

from digest.transports.webhook import Context, Incoming, Refused, Shape, json_body, shaped
from subscribers.bounces import Report, ses_findings

PROVIDER = "ses"
# An AWS region name (us-east-1, eu-central-2, us-gov-west-1, cn-north-1): not "s3" or "x-y".
REGION = r"[a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-[0-9]{1,2}"
AWS_HOST_RE = re.compile(rf"sns\.(?P<region>{REGION})\.amazonaws\.com(?P<cn>\.cn)?")
CERT_PATH_RE = re.compile(r"/SimpleNotificationService-[0-9a-f]{16,64}\.pem")
TOPIC_ARN_RE = re.compile(
    rf"arn:aws(?:-cn|-us-gov)?:sns:(?P<region>{REGION}):[0-9]{{12}}:[A-Za-z0-9_.-]{{1,256}}"
)
FAILED_FETCH_MEMORY = timedelta(minutes=10)
MAX_CACHED = 64

NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")


class Envelope(Shape):
    """An SNS HTTP(S) message as AWS documents it."""

    type: Literal["Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation"] = Field(alias="Type")
    message_id: str = Field(alias="MessageId")
    topic_arn: str = Field(alias="TopicArn")
    message: str = Field(alias="Message")
    timestamp: str = Field(alias="Timestamp")
    signature_version: Literal["1", "2"] = Field(alias="SignatureVersion")
    signature: str = Field(alias="Signature")
    signing_cert_url: str = Field(alias="SigningCertURL")
    subject: str | None = Field(None, alias="Subject")
    subscribe_url: str | None = Field(None, alias="SubscribeURL")
    token: str | None = Field(None, alias="Token")


class Recipient(Shape):
    email_address: str = Field("", alias="emailAddress")
    status: str | None = None
    diagnostic_code: str | None = Field(None, alias="diagnosticCode")


class Header(Shape):
    name: str
    value: str


class CommonHeaders(Shape):
    message_id: str | None = Field(None, alias="messageId")


class Mail(Shape):
    headers: list[Header] = []
    common_headers: CommonHeaders | None = Field(None, alias="commonHeaders")


class BounceInfo(Shape):
    bounce_type: str | None = Field(None, alias="bounceType")
    bounce_sub_type: str | None = Field(None, alias="bounceSubType")
    bounced_recipients: list[Recipient] = Field(default_factory=list, alias="bouncedRecipients")


class ComplaintInfo(Shape):
    complaint_feedback_type: str | None = Field(None, alias="complaintFeedbackType")
    complained_recipients: list[Recipient] = Field(default_factory=list, alias="complainedRecipients")


class DeliveryInfo(Shape):
    smtp_response: str | None = Field(None, alias="smtpResponse")
    recipients: list[str] = []


class Notification(Shape):
    """An SES notification (`notificationType`) or event (`eventType`): what we read of it."""

    notification_type: str | None = Field(None, alias="notificationType")
    event_type: str | None = Field(None, alias="eventType")
    mail: Mail = Mail()
    bounce: BounceInfo | None = None
    complaint: ComplaintInfo | None = None
    delivery: DeliveryInfo | None = None


def aws_host(url: str) -> re.Match[str] | None:
    """The host match of an https URL on Amazon SNS's own host, port 443; None otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "https" or parts.port not in (None, 443) or parts.username or parts.password:
        return None
    host = AWS_HOST_RE.fullmatch(parts.hostname or "")
    if host is None or bool(host["cn"]) != host["region"].startswith("cn-"):
        return None
    return host


def aws_url(url: str) -> bool:
    return aws_host(url) is not None


def certificate_url(url: str, region: str) -> str:
    """`url` if it is an SNS signing-certificate URL in `region`; refused otherwise."""
    host = aws_host(url)
    parts = urlsplit(url)
    if host is None or host["region"] != region or not CERT_PATH_RE.fullmatch(parts.path) or parts.query:
        raise Refused(403, f"SigningCertURL {url!r} is not an Amazon SNS certificate in {region}")
    return url


class SnsFetcher:
    """GETs certificates (cached by URL, failures remembered for a while) and SubscribeURLs."""

    def __init__(
        self,
        *,
        get: Callable[[str], bytes] | None = None,
        timeout: float = 10.0,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        self.timeout = timeout
        self.get = get or self._requests_get
        self._certificates: dict[str, x509.Certificate] = {}
        self._failed: dict[str, datetime] = {}
        self.fetches = 0  # outbound certificate GETs, for tests and logs

    def _requests_get(self, url: str) -> bytes:
        resp = requests.get(url, timeout=self.timeout, allow_redirects=False)
        resp.raise_for_status()
        return resp.content

    def certificate(self, url: str, now: datetime) -> x509.Certificate:
        """The certificate at `url` (already checked by `certificate_url`), checked for its host."""
        if url in self._certificates:
            return self._certificates[url]
        failed = self._failed.get(url)
        if failed is not None and now - failed < FAILED_FETCH_MEMORY:
            raise Refused(403, "the SNS signing certificate could not be loaded (recently)")
        self.fetches += 1
        try:
            cert = x509.load_pem_x509_certificate(self.get(url))
        except (requests.RequestException, ValueError) as err:
            self._remember(self._failed, url, now)
            raise Refused(403, f"cannot load the SNS signing certificate: {err}") from None
        if not names_host(cert, urlsplit(url).hostname or "", now):
            self._remember(self._failed, url, now)
            raise Refused(403, "the SNS signing certificate does not name its host, or is out of date")
        self._remember(self._certificates, url, cert)
        return cert

    @staticmethod
    def _remember(cache: dict[str, Any], url: str, value: Any) -> None:
        if len(cache) >= MAX_CACHED:
            cache.pop(next(iter(cache)))  # the oldest: a bounded cache, whatever URLs arrive
        cache[url] = value

    def confirm(self, url: str) -> None:
        if not aws_url(url):
            raise Refused(403, f"SubscribeURL {url!r} is not an Amazon SNS host")
        try:
            self.get(url)
        except requests.RequestException as err:
            raise Refused(403, f"confirming the subscription failed: {err}") from None


def names_host(cert: x509.Certificate, host: str, now: datetime) -> bool:
    """Whether `cert` is valid at `now` and names `host` (a DNS subject alternative name or CN)."""
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return False
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = names.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        dns = []
    common = [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return host.lower() in {n.lower() for n in [*dns, *common]}


def string_to_sign(message: dict) -> bytes:
    fields = NOTIFICATION_FIELDS if message.get("Type") == "Notification" else CONFIRMATION_FIELDS
    out = []
    for name in fields:
        if name in message and message[name] is not None:
            out.append(f"{name}\n{message[name]}\n")
    return "".join(out).encode("utf-8")


def verify(message: dict, envelope: Envelope, region: str, fetcher: SnsFetcher, now: datetime) -> None:
    url = certificate_url(envelope.signing_cert_url, region)
    key = fetcher.certificate(url, now).public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Refused(403, "the SNS certificate has no RSA key")
    algorithm = hashes.SHA1() if envelope.signature_version == "1" else hashes.SHA256()
    try:
        signature = base64.b64decode(envelope.signature, validate=True)
        key.verify(signature, string_to_sign(message), padding.PKCS1v15(), algorithm)
    except (InvalidSignature, binascii.Error, ValueError):
        raise Refused(403, "the SNS signature does not match") from None


def reports(request: Incoming, context: Context) -> list[Report]:
    message = json_body(request.body)
    if not isinstance(message, dict) or not message.get("Signature") or not message.get("SigningCertURL"):
        raise Refused(401, "no SNS signature")
    envelope = shaped(Envelope, message, "SNS message")
    _fresh(envelope.timestamp, context)
    region = _topic_region(envelope, context.extra.get("ses_topic_arns") or ())
    fetcher: SnsFetcher = context.extra.get("sns_fetcher") or SnsFetcher()
    verify(message, envelope, region, fetcher, context.now())
    if envelope.type == "SubscriptionConfirmation":
        fetcher.confirm(envelope.subscribe_url or "")
        return []
    if envelope.type != "Notification":
        return []  # UnsubscribeConfirmation: nothing to do
    try:
        body = json.loads(envelope.message)
    except ValueError:
        raise Refused(400, "the SNS Message is not an SES notification (not JSON)") from None
    notification = shaped(Notification, body, "SES notification")
    findings, ids = ses_findings(notification.model_dump(by_alias=True, exclude_none=True))
    return [Report(tuple(findings), tuple(ids))]


def _topic_region(envelope: Envelope, topics: tuple[str, ...]) -> str:
    """The topic's region, once the topic is one we accept."""
    arn = TOPIC_ARN_RE.fullmatch(envelope.topic_arn)
    if arn is None:
        raise Refused(400, f"TopicArn {envelope.topic_arn!r} is not an SNS topic ARN")
    if envelope.type == "SubscriptionConfirmation" and not topics:
        raise Refused(403, "set [bounces] ses_topic_arns to the SES topics before subscribing them")
    if topics and envelope.topic_arn not in topics:
        raise Refused(403, f"topic {envelope.topic_arn!r} is not in [bounces] ses_topic_arns")
    return arn["region"]


def _fresh(timestamp: str, context: Context) -> None:
    try:
        at = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        raise Refused(401, "no valid SNS Timestamp") from None
    if at.tzinfo is None:
        raise Refused(400, "the SNS Timestamp has no time zone")
    if abs((context.now() - at).total_seconds()) > context.max_age_seconds:
        raise Refused(403, "the SNS message is stale")
