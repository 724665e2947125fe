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
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from dkim.util import parse_tag_value
from dkim_verifier import verify_all
from hypothesis import given, settings
from hypothesis import strategies as st
from render_helpers import DATE, HEADERS, personal, renderer, sample_digest
from site_helpers import make_site

from digest.cli import main
from digest.config import config_from_dict
from digest.dkim import BodyPlan, DkimSigner, make_signer, relaxed_body
from digest.errors import ConfigError
from digest.message import ListHeaders, MessageTemplate
from digest.models import Recipient

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


def test_an_independent_verifier_agrees(template: MessageTemplate, signer: DkimSigner, key) -> None:  # noqa: ANN001
    wire = signed_message(template, signer)
    assert verify_all(wire, {SELECTOR: key.public_key()}) == ["rsa-sha256"]
    tampered = wire.replace(b"Keep reading", b"Read nothing", 1)
    with pytest.raises(AssertionError, match="body hash"):
        verify_all(tampered, {SELECTOR: key.public_key()})


def test_the_spliced_path_signs_the_same_bytes_as_the_whole_message_path(
    template: MessageTemplate, pem: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Hashing only what differs per reader gives exactly what hashing the whole body gives."""
    import digest.dkim

    clock = lambda: 1_790_000_000.0  # noqa: E731
    fixed = DkimSigner(domain=DOMAIN, selector=SELECTOR, private_key=pem, clock=clock)
    whole_body = digest.dkim.relaxed_body
    monkeypatch.setattr(digest.dkim, "relaxed_body", lambda body: pytest.fail("canonicalised the whole body"))
    for reader in (
        READER,
        Recipient(8, "tab@example.net", "Tab\tand  spaces "),
        Recipient(9, "x@example.net", ""),
    ):
        unsigned = template.personalise(reader, personal())
        outbound = template.outbound(reader, personal(), key="k", envelope_sender="b@x.org", sign=fixed)
        spliced = outbound.wire()
        with monkeypatch.context() as whole:
            whole.setattr(digest.dkim, "relaxed_body", whole_body)
            assert spliced == fixed(unsigned)


def test_the_smtp_data_of_a_signed_message_is_its_wire_dot_stuffed(
    template: MessageTemplate,
    pem: bytes,
    key,  # noqa: ANN001
    dns: Dns,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What the SMTP transport sends for a signed message, made from the pre-stuffed pieces and
    the body plan's hash, is byte for byte the signed wire stuffed whole, and it verifies; when
    the plan cannot hash a body piece by piece, the whole-message path still sends it signed."""
    from digest.transports.smtp import data_payload

    fixed = DkimSigner(domain=DOMAIN, selector=SELECTOR, private_key=pem, clock=lambda: 1_790_000_000.0)
    readers = (READER, Recipient(8, ".dot@example.net", ".a dot first"), Recipient(9, "x@example.net", ""))
    for reader in readers:
        outbound = template.outbound(reader, personal(), key="k", envelope_sender="b@x.org", sign=fixed)
        assert outbound.build_smtp_data is not None
        wire = outbound.wire()
        assert outbound.build_smtp_data() == (data_payload(wire, crlf_only=True), len(wire))
        assert dkim.verify(wire, dnsfunc=dns)
    monkeypatch.setattr(BodyPlan, "digest", lambda self, values: None)
    outbound = template.outbound(READER, personal(), key="k", envelope_sender="b@x.org", sign=fixed)
    assert template.smtp_data_signed(READER, personal(), fixed) is None
    payload, size = outbound.build_smtp_data()
    assert payload == data_payload(outbound.wire(), crlf_only=True) and size == len(outbound.wire())
    assert verify_all(outbound.wire(), {SELECTOR: key.public_key()}) == ["rsa-sha256"]


@settings(max_examples=60, deadline=None)
@given(
    pieces=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"\r\n")), min_size=1, max_size=6),
    values=st.lists(
        st.sampled_from([b"", b"a  b", b"\tx", b"y ", b"z\r", b"=\r\n  w", b"plain"]), max_size=5
    ),
)
def test_body_plan_hash_is_dkimpys_canonical_body_hash(pieces: list[bytes], values: list[bytes]) -> None:
    import hashlib

    from dkim.canonicalization import Relaxed

    layout: list = []
    for i, piece in enumerate(pieces):
        layout.append(piece)
        if i < len(values):
            layout.append(("v", i))
    given_values = {("v", i): v for i, v in enumerate(values)}
    body = b"".join(item if isinstance(item, bytes) else given_values[item] for item in layout)
    digest = BodyPlan(layout).digest(given_values)
    expected = hashlib.sha256(Relaxed.canonicalize_body(body)).digest()
    assert digest in (None, expected)  # None: the caller hashes the whole body instead
    assert hashlib.sha256(relaxed_body(body)).digest() == expected


def test_signing_needs_no_dkimpy(
    tmp_path: Path, pem: bytes, template: MessageTemplate, dns: Dns, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setenv("DIGEST_DKIM_PRIVATE_KEY", pem.decode())
    monkeypatch.setitem(sys.modules, "dkim", None)  # as if dkimpy were not installed
    signer = make_signer(load(tmp_path, dkim_config(tmp_path)))
    assert signer is not None
    wire = signed_message(template, signer)
    monkeypatch.undo()
    assert dkim.verify(wire, dnsfunc=dns)


def test_ed25519_signs_beside_rsa(
    tmp_path: Path, pem: bytes, key, template: MessageTemplate, dns: Dns
) -> None:  # noqa: ANN001
    """RFC 8463: a second signature, by its own selector; RSA-only receivers still verify the first."""
    ed_key = ed25519.Ed25519PrivateKey.generate()
    (tmp_path / "dkim.pem").write_bytes(pem)
    (tmp_path / "ed.pem").write_bytes(
        ed_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    data = dkim_config(tmp_path, key_file="dkim.pem", ed25519_key_file="ed.pem", ed25519_selector="ed2026")
    signer = make_signer(load(tmp_path, data))
    assert signer is not None
    wire = signed_message(template, signer)
    keys = {SELECTOR: key.public_key(), "ed2026": ed_key.public_key()}
    assert verify_all(wire, keys) == ["rsa-sha256", "ed25519-sha256"]
    assert dkim.verify(wire, dnsfunc=dns)  # dkimpy checks the first, the RSA one


@pytest.mark.parametrize(
    ("keys", "named", "says"),
    [
        ({"ed25519_key_file": "ed.pem"}, "[dkim] ed25519_selector", "must be set with"),
        (
            {"ed25519_key_file": "ed.pem", "ed25519_selector": SELECTOR},
            "[dkim] ed25519_selector",
            "must differ",
        ),
    ],
)
def test_ed25519_needs_its_own_selector(tmp_path: Path, keys: dict, named: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, dkim_config(tmp_path, **keys))
    assert err.value.key == named and says in str(err.value)


def test_an_rsa_key_as_the_ed25519_key_names_the_key(
    tmp_path: Path, pem: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGEST_DKIM_PRIVATE_KEY", pem.decode())
    (tmp_path / "ed.pem").write_bytes(pem)
    with pytest.raises(ConfigError) as err:
        make_signer(load(tmp_path, dkim_config(tmp_path, ed25519_key_file="ed.pem", ed25519_selector="ed1")))
    assert err.value.key == "[dkim] ed25519_key_file" and "not an Ed25519 private key" in str(err.value)


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
