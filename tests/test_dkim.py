"""DKIM: real digests signed with a key made here, checked by dkimpy's verifier against the
public key served from a stand-in DNS lookup; tampering breaks the signature, relaxed
re-folding does not; every configuration mistake is a ConfigError naming the key."""

from __future__ import annotations

import base64
import email
import re
from email import policy
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.util import parse_tag_value
from render_helpers import DATE, HEADERS, personal, renderer, sample_digest

from digest.cli import main
from digest.config import config_from_dict
from digest.dkim import DkimSigner, make_signer
from digest.errors import ConfigError
from digest.message import ListHeaders, MessageTemplate
from digest.models import Recipient
from tests.conftest import make_site

DOMAIN = "example.org"
SELECTOR = "sel2026"
READER = Recipient(7, "reader@example.net", "Ada Reader")


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


class Dns:
    """Answers the one TXT record a receiver would look up, and remembers what was asked."""

    def __init__(self, key: rsa.RSAPrivateKey, selector: str = SELECTOR, domain: str = DOMAIN) -> None:
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.name = f"{selector}._domainkey.{domain}.".encode()
        self.record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
        self.asked: list[bytes] = []

    def __call__(self, name: bytes, timeout: int = 5) -> bytes | None:
        self.asked.append(name)
        return self.record if name == self.name else None


@pytest.fixture(scope="module")
def dns(key: rsa.RSAPrivateKey) -> Dns:
    return Dns(key)


@pytest.fixture(scope="module")
def signer(pem: bytes) -> DkimSigner:
    return DkimSigner(domain=DOMAIN, selector=SELECTOR, private_key=pem)


@pytest.fixture(scope="module")
def template() -> MessageTemplate:
    return MessageTemplate(renderer().render(sample_digest()), HEADERS, date=DATE)


def signed_message(template: MessageTemplate, signer: DkimSigner) -> bytes:
    outbound = template.outbound(
        READER, personal(), key="run42:7", envelope_sender="b@example.org", sign=signer
    )
    return outbound.wire()


def signature_tags(wire: bytes) -> dict[bytes, bytes]:
    parsed = email.message_from_bytes(wire, policy=policy.compat32)
    value = re.sub(r"\s+", "", parsed["DKIM-Signature"])
    return parse_tag_value(value.encode())


def signed_names(wire: bytes) -> list[str]:
    return [h.decode().lower() for h in signature_tags(wire)[b"h"].split(b":")]


def test_signed_digest_verifies_against_the_published_key(
    template: MessageTemplate, signer: DkimSigner, dns: Dns
) -> None:
    wire = signed_message(template, signer)
    assert dkim.verify(wire, dnsfunc=dns)
    assert dns.asked[-1] == b"sel2026._domainkey.example.org."
    # The signature is one header on top of the very bytes we would send unsigned; CRLF kept.
    unsigned = template.personalise(READER, personal())
    assert wire.startswith(b"DKIM-Signature: ") and wire.endswith(unsigned)
    assert not re.search(rb"(?<!\r)\n", wire) and not re.search(rb"\r(?!\n)", wire)
    assert max(len(line) for line in wire.split(b"\r\n")) <= 998


def test_tags_name_domain_selector_relaxed_and_the_listed_headers(
    template: MessageTemplate, signer: DkimSigner
) -> None:
    tags = signature_tags(signed_message(template, signer))
    assert (tags[b"d"], tags[b"s"], tags[b"c"], tags[b"a"]) == (
        b"example.org",
        b"sel2026",
        b"relaxed/relaxed",
        b"rsa-sha256",
    )
    names = signed_names(signed_message(template, signer))
    assert set(names) == {
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
        "mime-version",
        "content-type",
    }
    assert names.count("from") == 2  # oversigned: an added From breaks the signature
    assert "precedence" not in names and "reply-to" not in names  # no Reply-To in this message


def test_reply_to_is_signed_when_the_message_has_one(signer: DkimSigner, dns: Dns) -> None:
    headers = ListHeaders(**{**HEADERS.__dict__, "reply_to": "editors@example.org"})
    template = MessageTemplate(renderer().render(sample_digest()), headers, date=DATE)
    wire = signed_message(template, signer)
    assert "reply-to" in signed_names(wire) and dkim.verify(wire, dnsfunc=dns)


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (rb"\r\nSubject: ", b"\r\nSubject: Re: "),
        (rb"/unsubscribe/tok123", b"/unsubscribe/someone-else"),
        (rb"\r\nList-Unsubscribe-Post: List-Unsubscribe=One-Click", b"\r\nList-Unsubscribe-Post: nothing"),
        (rb"\r\nTo: [^\r]*", b'\r\nTo: "Someone" <someone@example.com>'),
        (rb"Keep reading", b"Read nothing"),  # the body
        (rb"\r\nFrom: ", b"\r\nFrom: spoof@example.com\r\nFrom: "),  # a second From
    ],
)
def test_tampering_breaks_the_signature(
    template: MessageTemplate, signer: DkimSigner, dns: Dns, before: bytes, after: bytes
) -> None:
    wire = signed_message(template, signer)
    tampered, count = re.subn(before, after.replace(b"\\", b"\\\\"), wire, count=1)
    assert count == 1, f"{before!r} is not in the message"
    assert not dkim.verify(tampered, dnsfunc=dns)


def test_relaxed_canonicalisation_survives_refolding(
    template: MessageTemplate, signer: DkimSigner, dns: Dns
) -> None:
    wire = signed_message(template, signer)
    refolded = wire.replace(b"\r\nSubject: ", b"\r\nSubject:\r\n   ", 1).replace(b"\r\nTo: ", b"\r\nTO:  ", 1)
    assert refolded != wire and dkim.verify(refolded, dnsfunc=dns)


def test_the_signer_runs_only_when_the_bytes_are_asked_for(
    template: MessageTemplate, signer: DkimSigner
) -> None:
    calls: list[int] = []

    def counting(wire: bytes) -> bytes:
        calls.append(len(wire))
        return signer(wire)

    outbound = template.outbound(READER, personal(), key="k", envelope_sender="b@example.org", sign=counting)
    assert outbound.html() and outbound.subject and calls == []  # what JSON providers read: unsigned parts
    assert outbound.wire() == outbound.wire() and len(calls) == 1


def test_openssl_does_dkimpys_rsa_step_with_the_same_bytes(pem: bytes, signer: DkimSigner) -> None:
    import hashlib

    from dkim.crypto import RSASSA_PKCS1_v1_5_sign, parse_pem_private_key

    from digest.dkim import _openssl_pkcs1_v1_5_sign

    assert signer.openssl and dkim.RSASSA_PKCS1_v1_5_sign is _openssl_pkcs1_v1_5_sign
    private = parse_pem_private_key(pem)
    for data in (b"", b"relaxed/relaxed", bytes(range(256)) * 40):
        ours = _openssl_pkcs1_v1_5_sign(hashlib.sha256(data), private)
        assert ours == RSASSA_PKCS1_v1_5_sign(hashlib.sha256(data), private)  # PKCS#1 v1.5: deterministic


def test_dkimpys_own_rsa_still_signs_verifiably(
    template: MessageTemplate, signer: DkimSigner, dns: Dns, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dkim.crypto

    monkeypatch.setattr(dkim, "RSASSA_PKCS1_v1_5_sign", dkim.crypto.RSASSA_PKCS1_v1_5_sign)
    assert dkim.verify(signed_message(template, signer), dnsfunc=dns)


# --- make_signer: the configuration ------------------------------------------------------


def dkim_config(tmp_path: Path, **dkim_keys: object) -> dict:
    return {"dkim": {"enabled": True, "domain": DOMAIN, "selector": SELECTOR, **dkim_keys}}


def load(tmp_path: Path, data: dict):  # noqa: ANN201
    return config_from_dict(data, file=str(tmp_path / "digest.toml"))


def test_off_by_default() -> None:
    assert make_signer(config_from_dict({})) is None


def test_key_file_relative_to_digest_toml(
    tmp_path: Path, pem: bytes, template: MessageTemplate, dns: Dns
) -> None:
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "dkim.pem").write_bytes(pem)
    signer = make_signer(load(tmp_path, dkim_config(tmp_path, key_file="keys/dkim.pem")))
    assert signer is not None and dkim.verify(signed_message(template, signer), dnsfunc=dns)


def test_key_from_the_environment_pkcs8_and_escaped_newlines(
    tmp_path: Path,
    key: rsa.RSAPrivateKey,
    template: MessageTemplate,
    dns: Dns,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pkcs8 = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    monkeypatch.setenv("DIGEST_DKIM_PRIVATE_KEY", pkcs8.decode().strip().replace("\n", "\\n"))
    signer = make_signer(load(tmp_path, dkim_config(tmp_path)))
    assert signer is not None and dkim.verify(signed_message(template, signer), dnsfunc=dns)


def test_through_ses_message_id_and_date_are_left_unsigned(
    tmp_path: Path, pem: bytes, template: MessageTemplate, dns: Dns, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGEST_DKIM_PRIVATE_KEY", pem.decode())
    signer = make_signer(load(tmp_path, {**dkim_config(tmp_path), "transport": {"kind": "ses"}}))
    assert signer is not None
    wire = signed_message(template, signer)
    names = signed_names(wire)
    assert "message-id" not in names and "date" not in names and "list-unsubscribe" in names
    assert dkim.verify(wire, dnsfunc=dns)


@pytest.mark.parametrize(
    ("keys", "named", "says"),
    [
        ({"domain": ""}, "[dkim] domain", "must be set when [dkim] enabled = true"),
        ({"selector": ""}, "[dkim] selector", "must be set when [dkim] enabled = true"),
        ({"selector": "bad selector"}, "[dkim] selector", "must be a DNS name"),
        ({"domain": "-example.org"}, "[dkim] domain", "must be a DNS name"),
    ],
)
def test_names_are_checked_when_loading(tmp_path: Path, keys: dict, named: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, dkim_config(tmp_path, **keys))
    assert err.value.key == named and says in str(err.value)


def test_without_dkimpy_enabled_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "dkim", None)  # as if the dkim extra were not installed
    with pytest.raises(ConfigError) as err:
        make_signer(load(tmp_path, dkim_config(tmp_path, key_file="dkim.pem")))
    assert err.value.key == "[dkim] enabled" and "pip install 'digest[dkim]'" in str(err.value)


def test_missing_key_file_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        make_signer(load(tmp_path, dkim_config(tmp_path, key_file="nope.pem")))
    assert err.value.key == "[dkim] key_file" and f"file not found: {tmp_path / 'nope.pem'}" in str(err.value)


def test_unreadable_key_file_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "a-folder.pem").mkdir()
    with pytest.raises(ConfigError) as err:
        make_signer(load(tmp_path, dkim_config(tmp_path, key_file="a-folder.pem")))
    assert err.value.key == "[dkim] key_file" and "cannot read" in str(err.value)


def test_a_file_that_is_no_pem_key_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "dkim.pem").write_text(
        "-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5\n-----END RSA PRIVATE KEY-----\n"
    )
    with pytest.raises(ConfigError) as err:
        make_signer(load(tmp_path, dkim_config(tmp_path, key_file="dkim.pem")))
    assert err.value.key == "[dkim] key_file" and "is not an RSA private key in PEM form" in str(err.value)


def test_a_bad_key_in_the_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGEST_DKIM_PRIVATE_KEY", "hunter2")
    with pytest.raises(ConfigError) as err:
        make_signer(load(tmp_path, dkim_config(tmp_path)))
    assert err.value.key == "DIGEST_DKIM_PRIVATE_KEY" and "hunter2" not in str(err.value)


def test_no_key_anywhere_names_both_places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIGEST_DKIM_PRIVATE_KEY", raising=False)
    with pytest.raises(ConfigError) as err:
        make_signer(load(tmp_path, dkim_config(tmp_path)))
    assert err.value.key == "[dkim] key_file" and "DIGEST_DKIM_PRIVATE_KEY is not set" in str(err.value)


def test_key_in_both_places_is_refused(tmp_path: Path, pem: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dkim.pem").write_bytes(pem)
    monkeypatch.setenv("DIGEST_DKIM_PRIVATE_KEY", pem.decode())
    with pytest.raises(ConfigError) as err:
        make_signer(load(tmp_path, dkim_config(tmp_path, key_file="dkim.pem")))
    assert err.value.key == "[dkim] key_file" and "keep one" in str(err.value)


# --- end to end: `digest send` signs what goes over SMTP ------------------------------------


def test_digest_send_signs_every_message(
    tmp_path: Path,
    smtp_server,
    pem: bytes,
    dns: Dns,
    monkeypatch: pytest.MonkeyPatch,  # noqa: ANN001
) -> None:
    monkeypatch.setenv("DIGEST_SECRET_KEY", "Xr5Kq2Vw8Ln3Tz7Bc1Hm6Jd4Fg9Ps0YaQe7Wn2Rb5Mk-t3")
    monkeypatch.delenv("DIGEST_DKIM_PRIVATE_KEY", raising=False)
    site = make_site(
        tmp_path, smtp_server, {"all@example.org": {}, "africa@example.org": {"regions": {"Africa"}}}
    )
    (tmp_path / "dkim.pem").write_bytes(pem)
    with site.open("a", encoding="utf-8") as f:
        f.write(
            f'[dkim]\nenabled = true\ndomain = "{DOMAIN}"\nselector = "{SELECTOR}"\nkey_file = "dkim.pem"\n'
        )

    assert main(["-c", str(site), "send"]) == 0
    assert len(smtp_server.messages) == 2
    for _sender, _rcpts, data in smtp_server.messages:
        assert dkim.verify(data, dnsfunc=dns), data[:400]
        assert "list-unsubscribe" in signed_names(data)
