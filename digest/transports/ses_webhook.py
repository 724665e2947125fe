"""Amazon SES notifications through SNS: the SNS message signature, checked against the
signing certificate fetched from an allowed AWS host only.

- The certificate URL must be https://sns.<region>.amazonaws.com[.cn]/...; anything else is
  refused before any fetch, so a forged message cannot point us at its own key.
- SignatureVersion 1 (RSA, SHA-1) and 2 (RSA, SHA-256) over the fields AWS lists, each as
  "Name\\nvalue\\n" in that order.
- A Timestamp older than `[bounces] webhook_max_age_seconds` is refused.
- `[bounces] ses_topic_arns`, when set, lists the only topics accepted.
- SubscriptionConfirmation: after the same checks, GET its SubscribeURL (same host rule),
  which confirms the subscription.

The fetcher is injectable (`SnsFetcher`); tests give it a local server and widen the host rule
for themselves only.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from datetime import datetime
from urllib.parse import urlsplit

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from digest.transports.webhook import Context, Incoming, Refused, json_body
from subscribers.bounces import Report, ses_findings

PROVIDER = "ses"
AWS_HOST_RE = re.compile(r"sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?")

NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")


def aws_url(url: str) -> bool:
    parts = urlsplit(url)
    return (
        parts.scheme == "https"
        and parts.port in (None, 443)
        and bool(AWS_HOST_RE.fullmatch(parts.hostname or ""))
    )


class SnsFetcher:
    """GETs certificates (cached by URL) and SubscribeURLs, from allowed URLs only."""

    def __init__(
        self,
        *,
        allowed: Callable[[str], bool] = aws_url,
        get: Callable[[str], bytes] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.allowed = allowed
        self.timeout = timeout
        self._get = get or self._requests_get
        self._certificates: dict[str, x509.Certificate] = {}

    def _requests_get(self, url: str) -> bytes:
        resp = requests.get(url, timeout=self.timeout, allow_redirects=False)
        resp.raise_for_status()
        return resp.content

    def certificate(self, url: str) -> x509.Certificate:
        if not self.allowed(url):
            raise Refused(403, f"SigningCertURL {url!r} is not an Amazon SNS host")
        if url not in self._certificates:
            try:
                self._certificates[url] = x509.load_pem_x509_certificate(self._get(url))
            except (requests.RequestException, ValueError) as err:
                raise Refused(403, f"cannot load the SNS signing certificate: {err}") from None
        return self._certificates[url]

    def confirm(self, url: str) -> None:
        if not self.allowed(url):
            raise Refused(403, f"SubscribeURL {url!r} is not an Amazon SNS host")
        try:
            self._get(url)
        except requests.RequestException as err:
            raise Refused(403, f"confirming the subscription failed: {err}") from None


def string_to_sign(message: dict) -> bytes:
    fields = NOTIFICATION_FIELDS if message.get("Type") == "Notification" else CONFIRMATION_FIELDS
    out = []
    for name in fields:
        if name in message and message[name] is not None:
            out.append(f"{name}\n{message[name]}\n")
    return "".join(out).encode("utf-8")


def verify(message: dict, fetcher: SnsFetcher) -> None:
    version = str(message.get("SignatureVersion") or "")
    if not message.get("Signature") or not message.get("SigningCertURL"):
        raise Refused(401, "no SNS signature")
    algorithm = {"1": hashes.SHA1(), "2": hashes.SHA256()}.get(version)
    if algorithm is None:
        raise Refused(403, f"unknown SNS SignatureVersion {version!r}")
    key = fetcher.certificate(str(message["SigningCertURL"])).public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Refused(403, "the SNS certificate has no RSA key")
    try:
        signature = base64.b64decode(str(message["Signature"]), validate=True)
        key.verify(signature, string_to_sign(message), padding.PKCS1v15(), algorithm)
    except (InvalidSignature, binascii.Error, ValueError):
        raise Refused(403, "the SNS signature does not match") from None


def reports(request: Incoming, context: Context) -> list[Report]:
    message = json_body(request.body)
    if not isinstance(message, dict):
        raise Refused(400, "an SNS message is a JSON object")
    fetcher: SnsFetcher = context.extra.get("sns_fetcher") or SnsFetcher()
    verify(message, fetcher)
    _fresh(str(message.get("Timestamp") or ""), context)
    topics: tuple[str, ...] = context.extra.get("ses_topic_arns") or ()
    if topics and message.get("TopicArn") not in topics:
        raise Refused(403, f"topic {message.get('TopicArn')!r} is not in [bounces] ses_topic_arns")
    kind = message.get("Type")
    if kind == "SubscriptionConfirmation":
        fetcher.confirm(str(message.get("SubscribeURL") or ""))
        return []
    if kind != "Notification":
        return []  # UnsubscribeConfirmation: nothing to do
    try:
        notification = json.loads(str(message.get("Message") or ""))
    except ValueError:
        return []
    if not isinstance(notification, dict):
        return []
    findings, ids = ses_findings(notification)
    return [Report(tuple(findings), tuple(ids))]


def _fresh(timestamp: str, context: Context) -> None:
    try:
        at = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        raise Refused(401, "no valid SNS Timestamp") from None
    if abs((context.now() - at).total_seconds()) > context.max_age_seconds:
        raise Refused(403, "the SNS message is stale")
