"""Our own DKIM signatures (RFC 6376, and RFC 8463 for Ed25519) on each message's wire bytes.

`[dkim] enabled = true` in digest.toml turns it on. The signature is computed over the finished
bytes, so only transports that take MIME bytes (SMTP, outbox, SES) carry it:
`MessageTemplate.outbound` wraps `build_wire` with the signer, and JSON-API providers, which
never ask for the bytes, never pay for it. Their own signing (set up at the provider) applies there.

Canonicalisation is relaxed/relaxed: relays that re-fold headers or change whitespace at line
ends (common, and allowed) leave the signature valid; the body is quoted-printable ASCII with
CRLF already, so nothing else about it changes on the way.

Speed: the RSA step runs in OpenSSL through `cryptography`, which releases the GIL while it
signs, and messages are built (`build_wire`, or for SMTP `build_smtp_data`) on the transport's
connection threads, each while the server answers the message before, so signing overlaps sending.
A digest's body is the same for every reader but for a few spliced values (links, name), so
`MessageTemplate` hands the signer the body as constant pieces and values (`BodyPlan`): the
constant pieces are canonicalised once per variant, the hash state up to the first value is
kept and copied, and per message only the values are canonicalised and the rest hashed once.
dkimpy is no longer needed to sign; the tests verify with it and with a verifier of their own.
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
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
_FIELD_START = re.compile(rb"\r\n(?![ \t])")  # a CRLF not followed by folding whitespace
_WSP_RUN = re.compile(rb"[ \t]+")
_WSP_BEFORE_CRLF = re.compile(rb"[ \t]+\r\n")
_UNSAFE_END = (b" ", b"\t", b"\r")  # a piece ending so could join a whitespace run across pieces
# Canonical header fields kept per signer: a run's constant fields are a handful (a few per
# variant); the fields that differ per reader are never kept, and the bound caps the rest.
_FIELD_CACHE_SIZE = 1024
_PER_READER = frozenset((b"to", b"message-id", b"list-unsubscribe"))


def relaxed_piece(data: bytes) -> bytes:
    """RFC 6376 3.4.4 steps a and b on a run of body lines: WSP runs to one SP, none at line ends."""
    if b" " not in data and b"\t" not in data:
        return data
    return _WSP_BEFORE_CRLF.sub(b"\r\n", _WSP_RUN.sub(b" ", data))


def _end_of_body(canonical: bytes) -> bytes:
    """RFC 6376 3.4.4 step c: no empty lines at the end; a non-empty body ends with CRLF."""
    while canonical.endswith(b"\r\n\r\n"):
        canonical = canonical[:-2]
    if canonical == b"\r\n":
        return b""
    if canonical and not canonical.endswith(b"\r\n"):
        canonical += b"\r\n"
    return canonical


def relaxed_body(body: bytes) -> bytes:
    """The relaxed canonical form of a whole body (RFC 6376 3.4.4)."""
    return _end_of_body(relaxed_piece(body))


def relaxed_header(field: bytes) -> bytes:
    """One header field (name, colon, value, folds; no final CRLF) in relaxed form, with CRLF."""
    name, _, value = field.partition(b":")
    value = _WSP_RUN.sub(b" ", value.replace(b"\r\n", b"")).strip(b" ")
    return name.rstrip(b" \t").lower() + b":" + value + b"\r\n"


class BodyPlan:
    """The relaxed body hash of bodies made of the same constant pieces with values between them.

    `layout` is the body in order: `bytes` items are the same in every message; any other item
    names a value, given per message to `digest`. Canonicalising piece by piece is exact when no
    whitespace run and no CRLF crosses from one piece into the next, so every piece but the last
    must not end in SP, TAB or CR; a plan or a value that breaks this makes `digest` return
    None and the caller canonicalises the whole body.
    """

    def __init__(self, layout: Sequence[bytes | Hashable]) -> None:
        merged: list[Any] = []
        for item in layout:
            if isinstance(item, bytes) and merged and isinstance(merged[-1], bytes):
                merged[-1] += item
            else:
                merged.append(item)
        canonical: list[Any] = [relaxed_piece(i) if isinstance(i, bytes) else i for i in merged]
        self.exact = bool(canonical) and isinstance(canonical[-1], bytes)
        if self.exact:
            canonical[-1] = _end_of_body(canonical[-1])
            self.exact = bool(canonical[-1])  # else the empty lines at the end reach into earlier pieces
        for piece in canonical[:-1]:
            if isinstance(piece, bytes) and piece.endswith(_UNSAFE_END):
                self.exact = False
        leading = canonical.pop(0) if canonical and isinstance(canonical[0], bytes) else b""
        rest = canonical
        self._prefix = hashlib.sha256(leading)  # hashed once, copied per message
        self._rest = rest

    def digest(self, values: Mapping[Hashable, bytes]) -> bytes | None:
        """SHA-256 of the canonical body with these values, or None if the pieces cannot say."""
        if not self.exact:
            return None
        canonical: list[bytes] = []
        for item in self._rest:
            if type(item) is bytes:
                canonical.append(item)
                continue
            value = values[item]
            if value.endswith(_UNSAFE_END):
                return None
            canonical.append(relaxed_piece(value))
        state = self._prefix.copy()
        state.update(b"".join(canonical))  # one call: hashlib lets go of the GIL for big buffers
        return state.digest()


class DkimSigner:
    """`signer(wire) -> wire` with DKIM-Signature headers on top; safe to share between threads.

    RSA-SHA256 always; Ed25519-SHA256 (RFC 8463) as a second signature when `ed25519_key` is
    given. Receivers that know only RSA ignore the Ed25519 one, and the others may use either.
    """

    def __init__(
        self,
        *,
        domain: str,
        selector: str,
        private_key: bytes,
        headers: Sequence[str] = SIGNED_HEADERS,
        key_source: tuple[str, str] = ("environment", KEY_VARIABLE),
        ed25519_key: bytes | None = None,
        ed25519_selector: str = "",
        ed25519_source: tuple[str, str] = ("digest.toml", "[dkim] ed25519_key_file"),
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`key_source` is (file, key) for the ConfigError a bad key raises: where it came from."""
        self.domain = domain.encode("ascii")
        self.selector = selector.encode("ascii")
        self.headers = tuple(headers)
        self.clock = clock
        self._rsa = _load_rsa_key(private_key, key_source)
        self._rsa_scheme = _pkcs1v15_sha256_prehashed()
        self._names_cache: dict[frozenset[bytes], list[bytes]] = {}  # header names present -> h=
        # Most signed fields (From, Subject, Date, List-Id, ...) are the same in every message of
        # a run: their canonical form is kept (bounded; To and Message-ID only pass through).
        self._canonical_fields: dict[bytes, bytes] = {}
        self._ed25519 = _load_ed25519_key(ed25519_key, ed25519_source) if ed25519_key else None
        self.ed25519_selector = (ed25519_selector or selector).encode("ascii")
        try:  # a key that parses but cannot sign fails here, before any run starts
            self(b"From: check@" + self.domain + b"\r\n\r\nkey check\r\n")
        except Exception as err:  # noqa: BLE001  OpenSSL's errors have no common class
            raise ConfigError(*key_source, f"cannot sign with this key: {err}") from None

    def include_headers(self, head: bytes) -> list[bytes]:
        """The h= list for this message: the configured headers it has, then the oversigned ones."""
        present = {m.group(1).decode("ascii").lower() for m in _HEADER_NAME.finditer(head)}
        return self._names_for(frozenset(n.encode("ascii") for n in present))

    def _names_for(self, present: frozenset[bytes]) -> list[bytes]:
        names = self._names_cache.get(present)
        if names is None:
            chosen = [h for h in self.headers if h.lower().encode("ascii") in present]
            chosen += [h for h in OVERSIGNED if h in chosen]
            names = self._names_cache[present] = [h.encode("ascii") for h in chosen]
        return names

    def __call__(self, wire: bytes) -> bytes:
        """Any message: its body canonicalised and hashed whole."""
        end = wire.find(b"\r\n\r\n")
        head, body = (wire, b"") if end < 0 else (wire[: end + 2], wire[end + 4 :])
        return self.signatures(head, hashlib.sha256(relaxed_body(body)).digest()) + wire

    @staticmethod
    def body_plan(layout: Sequence[bytes | Hashable]) -> BodyPlan:
        """The plan `sign_spliced` takes for bodies of this layout (see `BodyPlan`)."""
        return BodyPlan(layout)

    def sign_spliced(self, head: bytes, plan: BodyPlan, pieces: Sequence[bytes], values: Mapping) -> bytes:
        """A message spliced from `plan`'s layout: `head` (ending CRLF CRLF), body `pieces` in order.

        Only the values are canonicalised here; see `BodyPlan`. The result is the signed wire.
        """
        body = b"".join(pieces)
        body_hash = plan.digest(values)
        if body_hash is None:
            body_hash = hashlib.sha256(relaxed_body(body)).digest()
        return b"".join((self.signatures(head[:-2], body_hash), head, body))

    def signatures(self, head: bytes, body_hash: bytes) -> bytes:
        """The DKIM-Signature header lines for a header section (each field ending CRLF)."""
        fields: dict[bytes, list[bytes]] = {}
        for field in _FIELD_START.split(head.removesuffix(b"\r\n")):
            if field:
                fields.setdefault(field.split(b":", 1)[0].rstrip(b" \t").lower(), []).append(field)
        names = self._names_for(frozenset(fields))
        signed = b"".join(_pick_from_bottom(fields, names, self._canonical_fields))
        common = b"c=relaxed/relaxed; d=%s; s=%%s;\r\n\tt=%d; h=%s;\r\n\tbh=%s;\r\n\tb=" % (
            self.domain,
            int(self.clock()),
            b" : ".join(names),
            base64.b64encode(body_hash),
        )
        out = [self._one(signed, b"rsa-sha256", common % self.selector, self._sign_rsa)]
        if self._ed25519 is not None:
            out.append(
                self._one(signed, b"ed25519-sha256", common % self.ed25519_selector, self._ed25519.sign)
            )
        return b"".join(out)

    @staticmethod
    def _one(signed: bytes, algorithm: bytes, tags: bytes, sign: Callable[[bytes], bytes]) -> bytes:
        field = b"DKIM-Signature: v=1; a=" + algorithm + b"; " + tags
        data_hash = hashlib.sha256(signed + relaxed_header(field)[:-2]).digest()
        return field + base64.b64encode(sign(data_hash)) + b"\r\n"

    def _sign_rsa(self, data_hash: bytes) -> bytes:
        return self._rsa.sign(data_hash, *self._rsa_scheme)  # OpenSSL, without the GIL


def _pick_from_bottom(
    fields: dict[bytes, list[bytes]], names: Sequence[bytes], cache: dict[bytes, bytes]
) -> list[bytes]:
    """RFC 6376 5.4.2: each name in h= takes the last instance not yet taken; none left adds nothing."""
    taken: dict[bytes, int] = {}
    out = []
    for name in names:
        key = name.lower()
        found = fields.get(key)
        used = taken.get(key, 0)
        if found and used < len(found):
            taken[key] = used + 1
            field = found[-1 - used]
            canonical = cache.get(field)
            if canonical is None:
                canonical = relaxed_header(field)
                if key not in _PER_READER and len(cache) < _FIELD_CACHE_SIZE:
                    cache[field] = canonical
            out.append(canonical)
    return out


def _pkcs1v15_sha256_prehashed() -> tuple[Any, Any]:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    return padding.PKCS1v15(), Prehashed(hashes.SHA256())


def _load_rsa_key(pem: bytes, source: tuple[str, str]) -> Any:
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(_normalise_pem(pem), password=None)
    except (ValueError, TypeError) as err:
        raise ConfigError(*source, f"is not an RSA private key in PEM form: {err}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ConfigError(*source, f"is not an RSA private key in PEM form: a {type(key).__name__}")
    if key.key_size < 1024:
        raise ConfigError(
            *source, f"is a {key.key_size}-bit key; verifiers refuse keys under 1024 bits (use 2048)"
        )
    return key


def _load_ed25519_key(pem: bytes, source: tuple[str, str]) -> Any:
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(_normalise_pem(pem), password=None)
    except (ValueError, TypeError) as err:
        raise ConfigError(*source, f"is not an Ed25519 private key in PEM form: {err}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise ConfigError(*source, f"is not an Ed25519 private key in PEM form: a {type(key).__name__}")
    return key


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
    from_env = secret("dkim_private_key")
    if dkim.key_file and from_env:
        raise ConfigError(
            config.path, "[dkim] key_file", f"is set and so is {KEY_VARIABLE}: keep one of them"
        )
    if dkim.key_file:
        source = (config.path, "[dkim] key_file")
        pem = _read_key_file(config, dkim.key_file, source)
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
    ed25519_source = (config.path, "[dkim] ed25519_key_file")
    return DkimSigner(
        domain=dkim.domain,
        selector=dkim.selector,
        private_key=pem,
        headers=headers,
        key_source=source,
        ed25519_key=_read_key_file(config, dkim.ed25519_key_file, ed25519_source)
        if dkim.ed25519_key_file
        else None,
        ed25519_selector=dkim.ed25519_selector,
        ed25519_source=ed25519_source,
    )


def _read_key_file(config: Config, name: str, source: tuple[str, str]) -> bytes:
    path = config.resolve_path(name)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(*source, f"file not found: {path}") from None
    except OSError as err:
        raise ConfigError(*source, f"cannot read {path}: {err.strerror}") from None
