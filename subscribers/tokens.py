"""Signed, purpose-bound tokens for unsubscribe, confirm and preference links.

A token carries only the subscriber id; the purpose is the signing salt, so a confirm token
can never unsubscribe anyone. The secret comes from DIGEST_SECRET_KEY.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from itsdangerous import BadSignature, SignatureExpired, Signer, TimestampSigner, URLSafeTimedSerializer
from itsdangerous.encoding import base64_encode, int_to_bytes, want_bytes
from itsdangerous.signer import HMACAlgorithm
from itsdangerous.url_safe import URLSafeSerializerMixin

if TYPE_CHECKING:
    from subscribers.bounces import Report


class _TimestampSigner(TimestampSigner):
    """itsdangerous's signer with its derived key kept: the stock one hashes the secret again
    for every token (the same key each time, since secret and salt do not change)."""

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        if secret_key is not None:
            return super().derive_key(secret_key)
        key = self.__dict__.get("_derived")
        if key is None:
            key = self.__dict__["_derived"] = super().derive_key()
        return key


class _Serializer(URLSafeTimedSerializer):
    """itsdangerous's URL-safe serializer, minus a zlib attempt per token that can never pay,
    and with one signer per salt, made once.

    The stock one compresses every payload and keeps the result only when it is at least two
    bytes shorter. zlib's output is 8 bytes at least (header, checksum, one block), so a
    payload of 9 bytes or fewer (every subscriber id below a billion) is never kept compressed,
    and the tokens are byte for byte the same (tests/test_tokens.py checks it). A send run makes
    two tokens per message: this spares it about 100 microseconds each.
    """

    default_signer = _TimestampSigner

    def make_signer(self, salt: str | bytes | None = None) -> TimestampSigner:
        """One signer per salt, made once (the stock serializer makes one per token)."""
        cache = self.__dict__.setdefault("_signers", {})
        signer = cache.get(salt)
        if signer is None:
            signer = cache[salt] = super().make_signer(salt)
            # Whether `dumps` may sign with HMAC itself: the stock HMAC-SHA1, nothing else.
            stock = (
                type(signer.algorithm) is HMACAlgorithm
                and signer.digest_method is Signer.default_digest_method
            )
            signer.plain_hmac_sha1 = stock  # type: ignore[attr-defined]
            if stock:
                signer.hmac_sha1 = keyed_hmac(signer.derive_key(), "sha1")  # type: ignore[attr-defined]
        return signer  # type: ignore[return-value]

    def dumps(self, obj: Any, salt: str | bytes | None = None) -> str:
        """The stock `dumps`, written out for a subscriber id (two per message a run sends): the
        same bytes, from one keyed HMAC (`keyed_hmac`) instead of the layers between (about half
        the time). Anything else takes the stock path."""
        plain = str(obj).encode("ascii") if type(obj) is int else b""
        signer = self.make_signer(salt)
        if not plain or len(plain) > 9 or not getattr(signer, "plain_hmac_sha1", False):
            return super().dumps(obj, salt)  # type: ignore[no-any-return]
        sep = want_bytes(signer.sep)
        value = base64_encode(plain) + sep + base64_encode(int_to_bytes(signer.get_timestamp()))
        signature = base64_encode(signer.hmac_sha1(value))
        return (value + sep + signature).decode("ascii")

    def dump_payload(self, obj: Any) -> bytes:
        if isinstance(obj, int) and not isinstance(obj, bool):
            plain = str(obj).encode("ascii")  # what json.dumps gives for an int, at a tenth the cost
        else:
            plain = super(URLSafeSerializerMixin, self).dump_payload(obj)  # the JSON, no compression
        if len(plain) <= 9:
            return base64_encode(plain)
        return super().dump_payload(obj)


def keyed_hmac(key: bytes, digest: str) -> Callable[[bytes], bytes]:
    """`mac(message)`: the same bytes as `hmac.digest(key, message, digest)`, from a copy of an
    HMAC object keyed once, and safe to share between threads.

    `hmac.digest` hands the GIL over for every call, however short the message (CPython 3.11),
    and a send run signs three tokens a message on the thread that also feeds four sending
    threads: each hand-over made that thread queue for the GIL behind them (about 18
    microseconds a call in a profile of `digest send`, for 2 of work). A copy and a short
    update do not let go of it.
    """
    keyed = hmac.new(key, digestmod=digest)

    def mac(message: bytes) -> bytes:
        h = keyed.copy()
        h.update(message)
        return h.digest()

    return mac


class Purpose(enum.StrEnum):
    UNSUBSCRIBE = "unsubscribe"
    CONFIRM = "confirm"
    PREFERENCES = "preferences"
    READER = "reader"  # story links with [analytics] per_reader: who clicked


# Unsubscribe links in old issues must keep working (RFC 8058 readers may click months later).
MAX_AGE = {
    Purpose.UNSUBSCRIBE: None,
    Purpose.PREFERENCES: None,
    Purpose.CONFIRM: 7 * 24 * 3600,
    Purpose.READER: None,
}


# Real tokens are under 60 characters; anything far longer is refused before any decoding.
MAX_TOKEN_LENGTH = 512


# A fixed, public key for trying things on one's own machine: the demo's outbox links and
# `digest serve --dev-secret` share it, so demo links open on a local server. Links signed
# with it are forgeable by anyone; real mail needs DIGEST_SECRET_KEY.
DEV_SECRET = "digest-dev-secret-do-not-use-for-real-mail"


# <run>.<subscriber>.<signature>@<domain>, or <run>_<subscriber>_<signature> where a provider
# allows only [A-Za-z0-9_-] in a tag (Resend)
_RETURN_PATH_RE = re.compile(r"\+([A-Za-z0-9_-]{1,40}?)\.([1-9][0-9]{0,17})\.([A-Za-z2-7]{20})@")
_MESSAGE_ID_RE = re.compile(r"([A-Za-z0-9_-]{1,40}?)[._]([1-9][0-9]{0,17})[._]([a-z2-7]{20})(?:@[^@\s]+)?")


class TokenError(ValueError):
    """The token is tampered, meant for another purpose, or expired."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Tokens:
    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise ValueError("a secret key is required to sign tokens")
        self._serializers = {p: _Serializer(secret_key, salt=f"digest.{p.value}") for p in Purpose}
        # A key of its own for Message-IDs (derived, so one secret still rules them all).
        message_key = hmac.new(secret_key.encode(), b"digest.message-id", hashlib.sha256).digest()
        self._message_mac = keyed_hmac(message_key, "sha256")

    def message_signature(self, run_id: str, subscriber_id: int) -> str:
        """20 base32 characters (100 bits) signing (run, subscriber) for the Message-ID."""
        mac = self._message_mac(f"{run_id}.{subscriber_id}".encode())
        # 20 characters are the first 100 bits: base32 encodes 5 bytes as 8 characters on their
        # own, so encoding 15 bytes gives the same first 20 as encoding all 32, in half the time.
        return base64.b32encode(mac[:15]).decode("ascii")[:20].lower()

    def read_message_id(self, message_id: str) -> tuple[str, int] | None:
        """(run id, subscriber id) from a Message-ID we made (see `digest.message.make_message_id`),
        or None for any other id, including one whose signature does not match."""
        m = _MESSAGE_ID_RE.fullmatch(message_id.strip().strip("<>"))
        if m is None:
            return None
        run_id, subscriber_id, signature = m.group(1), int(m.group(2)), m.group(3)
        if not hmac.compare_digest(signature, self.message_signature(run_id, subscriber_id)):
            return None
        return run_id, subscriber_id

    def read_return_path(self, address: str) -> tuple[str, int] | None:
        """(run id, subscriber id) from a VERP envelope sender we made
        (`digest.message.make_return_path`), or None. Case-insensitive in the signature: some
        mail systems lower-case local parts."""
        m = _RETURN_PATH_RE.search(address)
        if m is None:
            return None
        run_id, subscriber_id, signature = m.group(1), int(m.group(2)), m.group(3).lower()
        if not hmac.compare_digest(signature, self.message_signature(run_id, subscriber_id)):
            return None
        return run_id, subscriber_id

    def make(self, subscriber_id: int, purpose: Purpose) -> str:
        return self._serializers[purpose].dumps(subscriber_id)

    def read(self, token: str, purpose: Purpose, *, max_age: int | None = None) -> int:
        return self.read_with_time(token, purpose, max_age=max_age)[0]

    def read_with_time(
        self, token: str, purpose: Purpose, *, max_age: int | None = None
    ) -> tuple[int, datetime]:
        """The subscriber id and when the token was made (UTC, whole seconds)."""
        age = max_age if max_age is not None else MAX_AGE[purpose]
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
            raise TokenError("this link is not valid")
        try:
            value, issued = self._serializers[purpose].loads(token, max_age=age, return_timestamp=True)
        except SignatureExpired:
            raise TokenError("this link has expired") from None
        except BadSignature:
            raise TokenError("this link is not valid") from None
        # bool is an int subclass; a forged-but-signed payload of another shape is still refused.
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise TokenError("this link is not valid")
        return value, issued.astimezone(UTC)


def match_reference(tokens: Tokens, report: Report) -> tuple[str, int, str] | None:
    """(run, subscriber, how) from what the report carries and we signed, without the ledger:
    for reading a report by hand (`digest bounces classify`)."""
    for address in report.return_paths:
        ref = tokens.read_return_path(address)
        if ref is not None:
            return ref[0], ref[1], "verp"
    for message_id in report.message_ids:
        ref = tokens.read_message_id(message_id)
        if ref is not None:
            return ref[0], ref[1], "message-id"
    return None
