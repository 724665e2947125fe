"""Our own DKIM signature (RFC 6376) on each message's wire bytes, with dkimpy. Optional.

`[dkim] enabled = true` in digest.toml turns it on; the `dkim` extra (`pip install
'digest[dkim]'`) brings dkimpy. The signature is computed over the finished bytes, so only
transports that take MIME bytes (SMTP, outbox, SES) carry it: `MessageTemplate.outbound`
wraps `build_wire` with the signer, and JSON-API providers, which never ask for the bytes,
never pay for it. Their own signing (set up at the provider) applies there.

Canonicalisation is relaxed/relaxed: relays that re-fold headers or change whitespace at line
ends (common, and allowed) leave the signature valid; the body is quoted-printable ASCII with
CRLF already, so nothing else about it changes on the way.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from typing import Any

from digest.config import Config, secret
from digest.errors import ConfigError

KEY_VARIABLE = "DIGEST_DKIM_PRIVATE_KEY"

# Signed when present, in this order: what a reader sees and what identifies the message (From,
# To, Subject, Date, Message-ID), and the two headers RFC 8058 wants a DKIM signature to cover
# before a mailbox provider offers one-click unsubscribe (Gmail and Yahoo require it for bulk
# mail). Also signed: Reply-To (where answers go), List-Id (what readers' filters sort on), and
# MIME-Version and Content-Type: Content-Type names the boundary, and a body signed as one
# structure must not be shown as another. Precedence is left out: nothing a reader relies on.
SIGNED_HEADERS: tuple[str, ...] = (
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "Reply-To",
    "List-Id",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "MIME-Version",
    "Content-Type",
)
# Listed once more in h= with no header left to match: a second From added on the way then breaks
# the signature (RFC 6376 section 8.15), so no one can put their own From above ours. dkimpy
# does the same for From by default.
OVERSIGNED: tuple[str, ...] = ("From",)
# Headers a transport may rewrite after we sign: a signature over them would then fail. Amazon
# SES may replace Message-ID and Date (its manual-DKIM guide: "Don't sign the following fields:
# Message-ID, Date, Return-Path, Bounces-To").
REWRITTEN_BY_TRANSPORT: dict[str, tuple[str, ...]] = {"ses": ("Message-ID", "Date")}

_HEADER_NAME = re.compile(rb"^([!-9;-~]+):", re.MULTILINE)


def use_openssl_rsa(dkim_module: Any) -> bool:
    """Let dkimpy's last step, the RSA operation, run in OpenSSL (through `cryptography`).

    dkimpy does RSA with Python integers: two `pow` calls on 1024-bit numbers per RSA-2048
    signature, about 60 % of its signing time and 10-20 times OpenSSL's (see `bench/dkim_cost.py`).
    PKCS#1 v1.5 signatures are deterministic, so the bytes are the same either way (the tests
    compare both); dkimpy still parses, canonicalises, hashes and writes the header. Without
    `cryptography`, or with a dkimpy that no longer has the hook, dkimpy's own RSA stays.
    """
    if getattr(dkim_module, "RSASSA_PKCS1_v1_5_sign", None) is _openssl_pkcs1_v1_5_sign:
        return True
    try:
        from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: F401
    except ImportError:
        return False
    if not callable(getattr(dkim_module, "RSASSA_PKCS1_v1_5_sign", None)):
        return False
    dkim_module.RSASSA_PKCS1_v1_5_sign = _openssl_pkcs1_v1_5_sign
    return True


_openssl_keys: dict[int, Any] = {}  # modulus -> cryptography key, built once per key
_openssl_lock = threading.Lock()


def _openssl_pkcs1_v1_5_sign(hash: Any, private_key: dict[str, int]) -> bytes:
    """`dkim.crypto.RSASSA_PKCS1_v1_5_sign`'s contract: dkimpy's hash object and key dict in."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    key = _openssl_keys.get(private_key["modulus"])
    if key is None:
        with _openssl_lock:
            public = rsa.RSAPublicNumbers(private_key["publicExponent"], private_key["modulus"])
            key = rsa.RSAPrivateNumbers(
                p=private_key["prime1"],
                q=private_key["prime2"],
                d=private_key["privateExponent"],
                dmp1=private_key["exponent1"],
                dmq1=private_key["exponent2"],
                iqmp=private_key["coefficient"],
                public_numbers=public,
            ).private_key()
            _openssl_keys[private_key["modulus"]] = key
    algorithm = {"sha256": hashes.SHA256(), "sha1": hashes.SHA1()}[hash.name.lower()]
    return key.sign(hash.digest(), padding.PKCS1v15(), Prehashed(algorithm))


def header_names(wire: bytes) -> set[str]:
    """The lower-cased field names in the header section of `wire`."""
    end = wire.find(b"\r\n\r\n")
    head = wire if end < 0 else wire[: end + 2]
    return {m.group(1).decode("ascii").lower() for m in _HEADER_NAME.finditer(head)}


class DkimSigner:
    """`signer(wire) -> wire` with a DKIM-Signature header on top; safe to share between threads."""

    def __init__(
        self,
        *,
        domain: str,
        selector: str,
        private_key: bytes,
        headers: Sequence[str] = SIGNED_HEADERS,
        key_source: tuple[str, str] = ("environment", KEY_VARIABLE),
    ) -> None:
        """`key_source` is (file, key) for the ConfigError a bad key raises: where it came from."""
        try:
            import dkim
            from dkim.crypto import UnparsableKeyError, parse_pem_private_key
        except ImportError:
            raise ConfigError(
                key_source[0], "[dkim] enabled", "needs dkimpy: pip install 'digest[dkim]'"
            ) from None
        self._dkim = dkim
        self.openssl = use_openssl_rsa(dkim)
        self.domain = domain.encode("ascii")
        self.selector = selector.encode("ascii")
        self.headers = tuple(headers)
        self.key = _normalise_pem(private_key)
        try:
            modulus = parse_pem_private_key(self.key)["modulus"]
        except (UnparsableKeyError, ValueError, IndexError, KeyError, TypeError) as err:
            raise ConfigError(*key_source, f"is not an RSA private key in PEM form: {err}") from None
        if modulus.bit_length() < 1024:
            raise ConfigError(
                *key_source,
                f"is a {modulus.bit_length()}-bit key; verifiers refuse keys under 1024 bits (use 2048)",
            )
        try:  # a key that parses but cannot sign fails here, before any run starts
            self(b"From: check@" + self.domain + b"\r\n\r\nkey check\r\n")
        except dkim.DKIMException as err:
            raise ConfigError(*key_source, f"cannot sign with this key: {err}") from None

    def include_headers(self, wire: bytes) -> list[bytes]:
        """The h= list for this message: the configured headers it has, then the oversigned ones."""
        present = header_names(wire)
        names = [h for h in self.headers if h.lower() in present]
        names += [h for h in OVERSIGNED if h in names]
        return [h.encode("ascii") for h in names]

    def __call__(self, wire: bytes) -> bytes:
        signature = self._dkim.sign(
            wire,
            self.selector,
            self.domain,
            self.key,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=self.include_headers(wire),
            linesep=b"\r\n",
        )
        return signature + wire


def _normalise_pem(key: bytes) -> bytes:
    """LF line ends (dkimpy looks for them), also from an env file that wrote the newlines as \\n."""
    key = key.strip().replace(b"\r\n", b"\n")
    if b"\n" not in key and b"\\n" in key:
        key = key.replace(b"\\n", b"\n")
    return key + b"\n"


def make_signer(config: Config) -> DkimSigner | None:
    """The signer `[dkim]` asks for, or None when it is off. Every problem is a ConfigError."""
    dkim = config.dkim
    if not dkim.enabled:
        return None
    try:
        import dkim as _dkimpy  # noqa: F401
    except ImportError:
        raise ConfigError(config.path, "[dkim] enabled", "needs dkimpy: pip install 'digest[dkim]'") from None
    from_env = secret("dkim_private_key")
    if dkim.key_file and from_env:
        raise ConfigError(
            config.path, "[dkim] key_file", f"is set and so is {KEY_VARIABLE}: keep one of them"
        )
    if dkim.key_file:
        path = config.resolve_path(dkim.key_file)
        source = (config.path, "[dkim] key_file")
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(*source, f"file not found: {path}") from None
        except OSError as err:
            raise ConfigError(*source, f"cannot read {path}: {err.strerror}") from None
    elif from_env:
        pem, source = from_env.encode("utf-8"), ("environment", KEY_VARIABLE)
    else:
        raise ConfigError(
            config.path,
            "[dkim] key_file",
            f"is empty and {KEY_VARIABLE} is not set: [dkim] enabled needs the private key from one of them",
        )
    rewritten = {h.lower() for h in REWRITTEN_BY_TRANSPORT.get(config.transport.kind, ())}
    headers = tuple(h for h in SIGNED_HEADERS if h.lower() not in rewritten)
    return DkimSigner(
        domain=dkim.domain, selector=dkim.selector, private_key=pem, headers=headers, key_source=source
    )
