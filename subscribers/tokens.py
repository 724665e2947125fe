"""Signed, purpose-bound tokens for unsubscribe, confirm and preference links.

A token carries only the subscriber id; the purpose is the signing salt, so a confirm token
can never unsubscribe anyone. The secret comes from DIGEST_SECRET_KEY.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer


class Purpose(enum.StrEnum):
    UNSUBSCRIBE = "unsubscribe"
    CONFIRM = "confirm"
    PREFERENCES = "preferences"


# Unsubscribe links in old issues must keep working (RFC 8058 readers may click months later).
MAX_AGE = {Purpose.UNSUBSCRIBE: None, Purpose.PREFERENCES: None, Purpose.CONFIRM: 7 * 24 * 3600}


# Real tokens are under 60 characters; anything far longer is refused before any decoding.
MAX_TOKEN_LENGTH = 512


# A fixed, public key for trying things on one's own machine: the demo's outbox links and
# `digest serve --dev-secret` share it, so demo links open on a local server. Links signed
# with it are forgeable by anyone; real mail needs DIGEST_SECRET_KEY.
DEV_SECRET = "digest-dev-secret-do-not-use-for-real-mail"


class TokenError(ValueError):
    """The token is tampered, meant for another purpose, or expired."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class Tokens:
    def __init__(self, secret_key: str) -> None:
        if not secret_key:
            raise ValueError("a secret key is required to sign tokens")
        self._serializers = {p: URLSafeTimedSerializer(secret_key, salt=f"digest.{p.value}") for p in Purpose}

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
