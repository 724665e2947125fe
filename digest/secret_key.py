"""The key that signs every link token and the staff session cookie: real, or refused.

With a guessable key anyone forges an admin cookie and every reader's unsubscribe link, so:
- DIGEST_SECRET_KEY must carry at least 32 bytes (256 bits) of entropy, as far as we can tell
  from the text: its length times the bits of the alphabet it draws from (hex 4, base64 6, ...),
  and no more than what survives compression (a repeated pattern is one pattern);
- the public development key (`--dev-secret`) is only for a demo on this machine: outbox
  transport, an http base_url, and a loopback host to listen on and to link to.
"""

from __future__ import annotations

import ipaddress
import math
import string
import zlib
from urllib.parse import urlsplit

from digest.config import Config, secret
from digest.errors import ConfigError
from subscribers.tokens import DEV_SECRET

MIN_ENTROPY_BITS = 256
HOW_TO_MAKE = 'python -c "import secrets; print(secrets.token_urlsafe(48))"'

# Alphabets a generated key draws from, smallest first: the first that holds every character
# sets the bits per character.
_ALPHABETS = (
    set(string.digits),
    set(string.hexdigits.lower()),
    set(string.hexdigits.upper()),
    set(string.ascii_lowercase),
    set(string.ascii_uppercase),
    set(string.ascii_lowercase + string.digits),
    set(string.ascii_letters),
    set(string.ascii_letters + string.digits + "-_"),  # base64url (secrets.token_urlsafe)
    set(string.ascii_letters + string.digits + "+/="),  # base64 (openssl rand -base64)
    set(string.ascii_letters + string.digits + "+/=-_"),
    set(string.printable.strip()),
)
_ZLIB_OVERHEAD = len(zlib.compress(b"", 9))


def entropy_bits(key: str) -> float:
    """An upper estimate of the bits of entropy in `key`, for telling weak keys from real ones."""
    if not key:
        return 0.0
    chars = set(key)
    size = next((len(a) for a in _ALPHABETS if chars <= a), 256)
    by_alphabet = len(key) * math.log2(max(size, 2)) if len(chars) > 1 else 0.0
    by_compression = 8 * max(len(zlib.compress(key.encode("utf-8"), 9)) - _ZLIB_OVERHEAD, 0)
    return min(by_alphabet, by_compression)


def check_secret_key(key: str, name: str = "DIGEST_SECRET_KEY") -> str:
    """`key` if it is strong enough to sign links and cookies; ConfigError naming `name` if not."""
    if key == DEV_SECRET:
        raise ConfigError(
            "environment", name, f"is the public development key; make a real one: {HOW_TO_MAKE}"
        )
    bits = entropy_bits(key)
    if bits < MIN_ENTROPY_BITS:
        raise ConfigError(
            "environment",
            name,
            f"is too weak to sign links and cookies (about {int(bits) // 8} of at least "
            f"{MIN_ENTROPY_BITS // 8} bytes of entropy); make one with: {HOW_TO_MAKE}",
        )
    return key


def secret_key_from_environment(required_by: str = "") -> str:
    """DIGEST_SECRET_KEY, checked; "" when unset and nothing requires it."""
    key = secret("secret_key", required_by=required_by)
    return check_secret_key(key) if key else ""


def _loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def dev_secret_refusal(config: Config, listen_host: str) -> str | None:
    """Why `--dev-secret` may not be used with this config and host; None when it may."""
    base = urlsplit(config.newsletter.base_url)
    if config.transport.kind != "outbox":
        return f'[transport] kind is "{config.transport.kind}": real mail needs a real DIGEST_SECRET_KEY'
    if base.scheme == "https":
        return f"[newsletter] base_url {config.newsletter.base_url} is https: a public site needs a real key"
    if not _loopback(base.hostname or ""):
        return f"[newsletter] base_url {config.newsletter.base_url} is not on this machine (loopback)"
    if not _loopback(listen_host):
        return f"the host to listen on, {listen_host}, is not loopback (127.0.0.1, ::1 or localhost)"
    return None


def check_dev_secret(config: Config, listen_host: str) -> str:
    """The development key, if this config and host allow it; ConfigError saying what to set if not."""
    reason = dev_secret_refusal(config, listen_host)
    if reason is not None:
        raise ConfigError(
            "--dev-secret",
            None,
            f"refused: {reason}. Set DIGEST_SECRET_KEY instead (make one with: {HOW_TO_MAKE})",
        )
    return DEV_SECRET
