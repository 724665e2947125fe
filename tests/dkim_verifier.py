"""A small DKIM verifier of our own (RFC 6376 relaxed/relaxed; RFC 8463 Ed25519), for the tests.

Written apart from `digest.dkim` on purpose (line by line, through `str` after Latin-1, RSA
verified over the data rather than a pre-hash), so that a shared mistake in the signer and the
check is unlikely. dkimpy is the other verifier the tests use.
"""

from __future__ import annotations

import base64
import hashlib
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa


def _relaxed_body(body: str) -> str:
    lines = body.split("\r\n")
    if lines and lines[-1] == "":
        lines.pop()  # the split left an empty string after the final CRLF
    lines = [re.sub(r"[ \t]+", " ", line).rstrip(" ") for line in lines]
    while lines and lines[-1] == "":
        lines.pop()
    return "".join(line + "\r\n" for line in lines)


def _relaxed_field(name: str, value: str) -> str:
    value = re.sub(r"[ \t]+", " ", value.replace("\r\n", "")).strip(" ")
    return f"{name.strip().lower()}:{value}"


def _tags(value: str) -> dict[str, str]:
    pairs = (part.split("=", 1) for part in value.split(";") if part.strip())
    return {name.strip(): re.sub(r"\s+", "", tag) for name, tag in pairs}


def verify_all(wire: bytes, public_keys: dict[str, rsa.RSAPublicKey | ed25519.Ed25519PublicKey]) -> list[str]:
    """The algorithms of the DKIM signatures that verify; `public_keys` by selector.

    Raises AssertionError naming what is wrong for a signature that does not verify.
    """
    text = wire.decode("latin-1")
    head, _, body = text.partition("\r\n\r\n")
    fields = [f.split(":", 1) for f in re.split(r"\r\n(?![ \t])", head)]
    verified = []
    for index, (name, value) in enumerate(fields):
        if name.strip().lower() != "dkim-signature":
            continue
        tags = _tags(value)
        assert tags["v"] == "1" and tags["c"] == "relaxed/relaxed", tags
        canonical_body = _relaxed_body(body).encode("latin-1")
        body_hash = base64.b64encode(hashlib.sha256(canonical_body).digest()).decode()
        assert body_hash == tags["bh"], f"{tags['a']}: body hash differs"
        left = [(n, v) for n, v in fields if n.strip().lower() != "dkim-signature"]
        signed = []
        for wanted in tags["h"].split(":"):
            for position in range(len(left) - 1, -1, -1):  # the last unused instance
                if left[position][0].strip().lower() == wanted.strip().lower():
                    signed.append(_relaxed_field(*left.pop(position)) + "\r\n")
                    break
        without_b = re.sub(r"(b=)[^;]*", r"\1", value.replace(f"bh={tags['bh']}", "\0"))
        without_b = without_b.replace("\0", f"bh={tags['bh']}")
        data = ("".join(signed) + _relaxed_field(name, without_b)).encode("latin-1")
        signature = base64.b64decode(tags["b"])
        key = public_keys[tags["s"]]
        try:
            if tags["a"] == "rsa-sha256":
                assert isinstance(key, rsa.RSAPublicKey)
                key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            else:
                assert tags["a"] == "ed25519-sha256" and isinstance(key, ed25519.Ed25519PublicKey)
                key.verify(signature, hashlib.sha256(data).digest())
        except InvalidSignature:
            raise AssertionError(f"signature {index} ({tags['a']}) does not verify") from None
        verified.append(tags["a"])
    return verified
