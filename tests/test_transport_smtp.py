"""The SMTP transport against a real SMTP server (aiosmtpd) on 127.0.0.1: delivery, the wire
form of DATA, STARTTLS and implicit TLS on a certificate made here, AUTH, and its config."""

from __future__ import annotations

import dataclasses
import email
import smtplib
from email import policy
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from site_helpers import free_port
from smtp_servers import Certificates, authenticator, faulty_smtp, make_certificates

from digest.config import config_from_dict
from digest.errors import ConfigError, PermanentError, TemporaryError
from digest.transports import make_transport
from digest.transports.base import Outbound, Result
from digest.transports.smtp import SmtpTransport, data_payload

MESSAGE = (
    b"From: n@rs.example\r\nTo: a@example.org\r\nSubject: hi\r\nMessage-ID: <1@rs.example>\r\n\r\n"
    b".a line starting with a dot\r\nbody\r\n..two dots\r\n.\r\nend\r\n"
)


def outbound(to: str = "a@example.org", *, key: str | None = None, data: bytes = MESSAGE) -> Outbound:
    return Outbound.from_bytes(data, key=key or to, envelope_sender="bounces@rs.example", recipient=to)


def crlf_outbound(to: str, data: bytes = MESSAGE) -> Outbound:
    """As MessageTemplate makes them: CRLF-only by construction, so DATA goes the fast path."""
    return Outbound(
        key=to,
        envelope_sender="bounces@rs.example",
        recipient=to,
        to_header=to,
        parts=outbound().parts,
        values={},
        headers=(),
        build_wire=lambda: data,
        wire_is_crlf=True,
    )


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    pytest.importorskip("cryptography", reason="the cryptography package makes the test certificates")
    return make_certificates(tmp_path)


# --- delivery and the wire form ---------------------------------------------------------------


@pytest.mark.parametrize("pipelining", [False, True], ids=["plain", "pipelining"])
@pytest.mark.parametrize("make", [outbound, crlf_outbound], ids=["checked", "crlf-by-construction"])
def test_a_batch_goes_over_one_connection_byte_for_byte(pipelining: bool, make) -> None:  # noqa: ANN001
    with faulty_smtp() as server:
        server.pipelining = pipelining
        with SmtpTransport(host=server.host, port=server.port, timeout=5) as t:
            outcomes = t.send_batch([make(f"r{i}@example.org") for i in range(3)])
    assert [o.result for o in outcomes] == [Result.SENT] * 3
    assert [o.key for o in outcomes] == ["r0@example.org", "r1@example.org", "r2@example.org"]
    assert outcomes[0].detail == "250 2.0.0 OK queued"
    assert [m.rcpt_tos for m in server.messages] == [
        ["r0@example.org"],
        ["r1@example.org"],
        ["r2@example.org"],
    ]
    assert {m.connection for m in server.messages} == {1}
    first = server.messages[0]
    assert first.mail_from == "bounces@rs.example"
    assert first.data == MESSAGE  # dot-stuffing undone by the server: every byte as we built it
    assert email.message_from_bytes(first.data, policy=policy.default)["Subject"] == "hi"


def test_the_next_message_is_built_while_the_server_answers_this_one() -> None:
    """Building (a DKIM signature: as long as the server's answer) overlaps the wait for the
    reply to the message before it, within the batch; a message that cannot be built is
    deferred unsent and the others go out."""
    events: list[str] = []

    class Recording(SmtpTransport):
        def handing_over(self, outbound: Outbound) -> None:
            events.append(f"hand over {outbound.key}")

        def answered(self, outbound: Outbound, outcome: object) -> None:
            events.append(f"answer {outbound.key}")

    def building(to: str) -> Outbound:
        def build() -> tuple[bytes, int]:
            events.append(f"build {to}")
            if to == "broken":
                raise ValueError("no template")
            return data_payload(MESSAGE, crlf_only=True), len(MESSAGE)

        return dataclasses.replace(crlf_outbound(f"{to}@example.org"), key=to, build_smtp_data=build)

    with faulty_smtp() as server, Recording(host=server.host, port=server.port, timeout=5) as t:
        outcomes = t.send_batch([building("a"), building("broken"), building("c")])
    assert [o.result for o in outcomes] == [Result.SENT, Result.DEFERRED, Result.SENT]
    assert "cannot build the message: ValueError('no template')" in outcomes[1].detail
    assert events == [
        "build a",
        "hand over a",
        "build broken",  # after a's message went out, before its answer was read
        "answer a",
        "answer broken",
        "build c",
        "hand over c",
        "answer c",
    ]
    assert server.recipients() == ["a@example.org", "c@example.org"]
    assert all(m.data == MESSAGE for m in server.messages)


def test_bare_line_feeds_are_sent_as_crlf() -> None:
    with faulty_smtp() as server, SmtpTransport(host=server.host, port=server.port, timeout=5) as t:
        (outcome,) = t.send_batch([outbound(data=b"Subject: lf\n\n.line\nmore\rend")])
    assert outcome.result is Result.SENT
    assert server.messages[0].data == b"Subject: lf\r\n\r\n.line\r\nmore\r\nend\r\n"


def _smtplib_payload(data: bytes) -> bytes:
    """What smtplib.SMTP.data puts on the wire for `data`, given as text (it fixes line ends)."""
    fixed = smtplib._fix_eols(data.decode("latin-1")).encode("latin-1")
    quoted = smtplib._quote_periods(fixed)
    return quoted + (b"" if quoted.endswith(b"\r\n") else b"\r\n") + b".\r\n"


LINES = st.lists(st.text(alphabet=".ab \t=", max_size=6).map(str.encode), max_size=8)


@given(LINES, st.booleans())
def test_data_payload_is_what_smtplib_would_send(lines: list[bytes], final_break: bool) -> None:
    crlf = b"\r\n".join(lines) + (b"\r\n" if final_break else b"")
    assert data_payload(crlf, crlf_only=True) == _smtplib_payload(crlf)
    mixed = b"\n".join(lines[:3]) + b"\r".join(lines[3:])
    assert data_payload(mixed, crlf_only=False) == _smtplib_payload(mixed)


def test_an_address_that_would_forge_a_command_is_refused_unsent() -> None:
    with faulty_smtp() as server, SmtpTransport(host=server.host, port=server.port, timeout=5) as t:
        bad, good = t.send_batch(
            [outbound("x@example.org>\r\nRCPT TO:<y@example.org"), outbound("ok@example.org")]
        )
    assert bad.result is Result.FAILED and "invalid envelope recipient" in bad.detail
    assert good.result is Result.SENT
    assert server.recipients() == ["ok@example.org"]


def test_the_null_sender_is_allowed() -> None:
    """MAIL FROM:<> is how automatic mail avoids bounce loops."""
    message = Outbound.from_bytes(MESSAGE, key="k", envelope_sender="", recipient="a@example.org")
    with faulty_smtp() as server, SmtpTransport(host=server.host, port=server.port, timeout=5) as t:
        assert t.send_one(message).result is Result.SENT
    assert server.messages[0].mail_from == "<>"  # as aiosmtpd records the null reverse-path


def test_an_internationalised_address_needs_smtputf8() -> None:
    with faulty_smtp() as server, SmtpTransport(host=server.host, port=server.port, timeout=5) as t:
        (outcome,) = t.send_batch([outbound("jürgen@example.org")])
    assert outcome.result is Result.SENT
    assert server.recipients() == ["jürgen@example.org"]
    with faulty_smtp(enable_SMTPUTF8=False) as server, SmtpTransport(host=server.host, port=server.port) as t:
        (outcome,) = t.send_batch([outbound("jürgen@example.org")])
    assert outcome.result is Result.FAILED and "SMTPUTF8" in outcome.detail
    assert server.messages == []


def test_unreachable_server() -> None:
    t = SmtpTransport(host="127.0.0.1", port=free_port(), timeout=2)
    with pytest.raises(TemporaryError, match="cannot connect"):
        t.open()
    outcomes = t.send_batch([outbound("a@example.org"), outbound("b@example.org")])
    assert [o.result for o in outcomes] == [Result.DEFERRED] * 2
    assert all("not handed over" in o.detail for o in outcomes)


# --- TLS and AUTH ----------------------------------------------------------------------------


def test_starttls_on_a_certificate_from_our_own_ca(certs: Certificates) -> None:
    with faulty_smtp(tls_context=certs.server_context(), require_starttls=True) as server:
        t = SmtpTransport(host="127.0.0.1", port=server.port, security="starttls", ca_file=certs.ca_file)
        with t:
            (outcome,) = t.send_batch([outbound()])
    assert outcome.result is Result.SENT
    assert server.messages[0].tls


def test_implicit_tls_on_a_certificate_from_our_own_ca(certs: Certificates) -> None:
    with faulty_smtp(ssl_context=certs.server_context()) as server:
        t = SmtpTransport(host="localhost", port=server.port, security="tls", ca_file=certs.ca_file)
        with t:
            (outcome,) = t.send_batch([outbound()])
    assert outcome.result is Result.SENT
    assert server.messages[0].tls


@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_a_certificate_nobody_vouches_for_is_refused(certs: Certificates, security: str) -> None:
    """Without ca_file only the system's CAs count: our test CA is not one of them."""
    kwargs = {"tls_context": certs.server_context()} if security == "starttls" else {}
    ssl_context = certs.server_context() if security == "tls" else None
    with faulty_smtp(ssl_context=ssl_context, **kwargs) as server:
        t = SmtpTransport(host="127.0.0.1", port=server.port, security=security, timeout=5)
        with pytest.raises(PermanentError, match="cannot verify the certificate"):
            t.open()
        (outcome,) = t.send_batch([outbound()])
    assert outcome.result is Result.DEFERRED and "certificate" in outcome.detail
    assert server.messages == []


def test_a_certificate_for_another_host_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("cryptography", reason="the cryptography package makes the test certificates")
    certs = make_certificates(tmp_path, names=("mail.example.org",))  # also valid for 127.0.0.1
    with faulty_smtp(ssl_context=certs.server_context()) as server:
        t = SmtpTransport(host="localhost", port=server.port, security="tls", ca_file=certs.ca_file)
        with pytest.raises(PermanentError, match="cannot verify the certificate"):
            t.open()


def test_starttls_asked_for_but_not_offered_sends_nothing_in_the_clear() -> None:
    with faulty_smtp() as server:
        t = SmtpTransport(host=server.host, port=server.port, security="starttls", timeout=5)
        with pytest.raises(PermanentError, match="does not offer STARTTLS"):
            t.open()
        (outcome,) = t.send_batch([outbound()])
    assert outcome.result is Result.DEFERRED
    assert server.messages == []


def test_auth_over_starttls(certs: Certificates) -> None:
    with faulty_smtp(
        tls_context=certs.server_context(),
        require_starttls=True,
        authenticator=authenticator("digest", "s3cret"),
        auth_required=True,
        auth_require_tls=True,
    ) as server:
        t = SmtpTransport(
            host="127.0.0.1",
            port=server.port,
            security="starttls",
            ca_file=certs.ca_file,
            username="digest",
            password="s3cret",
        )
        with t:
            outcomes = t.send_batch([outbound("a@example.org"), outbound("b@example.org")])
        assert [o.result for o in outcomes] == [Result.SENT] * 2
        assert [m.login for m in server.messages] == ["digest", "digest"]

        wrong = SmtpTransport(
            host="127.0.0.1", port=server.port, security="starttls", ca_file=certs.ca_file,
            username="digest", password="wrong",
        )  # fmt: skip
        with pytest.raises(PermanentError, match="login as 'digest' refused") as info:
            wrong.open()
        assert info.value.status == 535
        (outcome,) = wrong.send_batch([outbound("c@example.org")])
        assert outcome.result is Result.DEFERRED and "535" in outcome.detail
    assert server.recipients() == ["a@example.org", "b@example.org"]


def test_auth_is_not_offered_before_tls(certs: Certificates) -> None:
    with faulty_smtp(
        tls_context=certs.server_context(),
        authenticator=authenticator("digest", "s3cret"),
        auth_require_tls=True,
    ) as server:
        t = SmtpTransport(host=server.host, port=server.port, username="digest", password="s3cret", timeout=5)
        with pytest.raises(PermanentError, match="offers no AUTH"):
            t.open()


# --- configuration ---------------------------------------------------------------------------


def smtp_config(tmp_path: Path, **smtp: object) -> dict:
    return {"transport": {"kind": "smtp", "smtp": {"host": "127.0.0.1", "port": 2525, **smtp}}}


def test_pool_settings_reach_the_transport(tmp_path: Path, certs: Certificates) -> None:
    (tmp_path / "digest.toml").write_text(
        f'[transport]\nkind = "smtp"\n[transport.smtp]\nsecurity = "tls"\nconnections = 6\n'
        f'max_messages_per_connection = 20\nca_file = "{certs.ca_file.name}"\n'
    )
    from digest.config import load_config

    transport = make_transport(load_config(tmp_path / "digest.toml"))
    assert isinstance(transport, SmtpTransport)
    assert transport.concurrency == 6 and transport.max_messages_per_connection == 20
    assert transport.max_batch == 50
    default = make_transport(config_from_dict({"transport": {"kind": "smtp"}}))
    assert default.concurrency == 4 and default.max_messages_per_connection == 100  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("smtp", "key", "problem"),
    [
        ({"connections": 0}, "[transport.smtp] connections", "between 1 and 100"),
        ({"max_messages_per_connection": 0}, "[transport.smtp] max_messages_per_connection", "at least 1"),
        ({"ca_file": "missing.pem"}, "[transport.smtp] ca_file", "no such file"),
        ({"host": "mail.example.org", "username": "u"}, "[transport.smtp] security", "in the clear"),
    ],
)
def test_bad_smtp_settings_name_their_key(tmp_path: Path, smtp: dict, key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(smtp_config(tmp_path, **smtp))
    assert info.value.key == key and problem in info.value.problem


def test_a_password_may_cross_loopback_in_the_clear(tmp_path: Path) -> None:
    config = config_from_dict(smtp_config(tmp_path, username="u"))
    assert config.transport.smtp.username == "u"


def test_a_ca_file_that_is_not_pem_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "digest.toml").write_text(
        '[transport]\nkind = "smtp"\n[transport.smtp]\nsecurity = "starttls"\nca_file = "junk.pem"\n'
    )
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    from digest.config import load_config

    with pytest.raises(ConfigError) as info:
        make_transport(load_config(tmp_path / "digest.toml"))
    assert info.value.key == "[transport.smtp] ca_file"
