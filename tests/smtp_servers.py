"""An in-process aiosmtpd server with switches for the faults real relays show, and the TLS
material (a CA and a server certificate) the SMTP tests generate for it."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import itertools
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from site_helpers import free_port


@dataclass
class Received:
    connection: int  # which connection carried it, numbered from 1 in order of first MAIL FROM
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    login: str | None  # the AUTH user, if the client logged in


@dataclass
class FaultySmtp:
    """What the server received, and the faults to inject. Knobs may change while it runs."""

    host: str
    port: int
    messages: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # address -> reply, e.g. "451 4.7.1 later"
    # After this many accepted messages (counted over all connections), the next MAIL FROM is
    # answered "421" and that connection closed, once; then the server behaves again.
    close_421_after: int | None = None
    mail_reply_once: str | None = None  # the next MAIL FROM gets this reply, e.g. "550 5.7.1 no"
    drop_after_dot: set[str] = field(default_factory=set)  # recipients: take the message, never answer
    hang_at_rcpt: set[str] = field(default_factory=set)  # recipients: never answer their RCPT TO
    hang_after_dot: set[str] = field(default_factory=set)  # recipients: take it, never answer the dot
    pipelining: bool = False  # advertise PIPELINING (aiosmtpd reads pipelined commands in order anyway)
    connections: int = 0  # connections that sent MAIL FROM at least once
    quits: int = 0  # QUIT commands received
    # The most connections open at one time, each counted from its first MAIL FROM to its QUIT
    # or to the server hanging up on it.
    most_at_once: int = 0
    _open_now: set[int] = field(default_factory=set)
    release: threading.Event = field(default_factory=threading.Event)  # ends every hang at teardown
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def recipients(self) -> list[str]:
        return [r for m in self.messages for r in m.rcpt_tos]


class _Handler:
    def __init__(self, sink: FaultySmtp) -> None:
        self.sink = sink

    def _hang_up(self, server, session) -> None:  # noqa: ANN001
        with self.sink._lock:
            self.sink._open_now.discard(getattr(session, "number", 0))
        server.transport.close()

    async def _hang(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.sink.release.wait)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: ANN001, ANN201
        session.host_name = hostname
        if self.sink.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: ANN001, ANN201
        sink = self.sink
        if not hasattr(session, "number"):
            with sink._lock:
                session.number = next(sink._numbers)
                sink.connections += 1
                sink._open_now.add(session.number)
                sink.most_at_once = max(sink.most_at_once, len(sink._open_now))
        if sink.close_421_after is not None and len(sink.messages) >= sink.close_421_after:
            sink.close_421_after = None
            await server.push("421 4.3.2 service shutting down")
            self._hang_up(server, session)
            return "421 4.3.2 service shutting down"  # never sent: the connection is closed
        if sink.mail_reply_once is not None:
            reply, sink.mail_reply_once = sink.mail_reply_once, None
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_QUIT(self, server, session, envelope):  # noqa: ANN001, ANN201
        with self.sink._lock:
            self.sink.quits += 1
            self.sink._open_now.discard(getattr(session, "number", 0))
        return "221 Bye"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001, ANN201
        if address in self.sink.hang_at_rcpt:
            await self._hang()
            return "451 4.4.2 too late"
        reply = self.sink.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, ANN201
        sink = self.sink
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        sink.messages.append(
            Received(
                connection=session.number,
                mail_from=envelope.mail_from,
                rcpt_tos=list(envelope.rcpt_tos),
                data=envelope.original_content,
                tls=server.transport.get_extra_info("ssl_object") is not None,
                login=login,
            )
        )
        if set(envelope.rcpt_tos) & sink.drop_after_dot:
            self._hang_up(server, session)  # accepted, but the client never hears so
            return "250 OK"
        if set(envelope.rcpt_tos) & sink.hang_after_dot:
            await self._hang()
        return "250 2.0.0 OK queued"


@contextmanager
def faulty_smtp(*, ssl_context: ssl.SSLContext | None = None, **smtp_kwargs: Any) -> Iterator[FaultySmtp]:
    """Run a FaultySmtp on 127.0.0.1. `ssl_context` makes it implicit TLS; `smtp_kwargs` go to
    aiosmtpd's SMTP (tls_context, require_starttls, authenticator, auth_require_tls, ...)."""
    sink = FaultySmtp(host="127.0.0.1", port=free_port())
    controller = Controller(
        _Handler(sink), hostname=sink.host, port=sink.port, ssl_context=ssl_context, **smtp_kwargs
    )
    controller.start()
    try:
        yield sink
    finally:
        sink.release.set()
        controller.stop()


def authenticator(user: str, password: str):  # noqa: ANN201
    """An aiosmtpd authenticator accepting one login (PLAIN or LOGIN)."""

    def check(server, session, envelope, mechanism, auth_data):  # noqa: ANN001, ANN202
        ok = isinstance(auth_data, LoginPassword) and auth_data == (user.encode(), password.encode())
        # handled=False on failure: aiosmtpd then sends its own 535 reply.
        return AuthResult(success=ok, handled=ok, auth_data=auth_data if ok else None)

    return check


@dataclass(frozen=True)
class Certificates:
    ca_file: Path  # the CA's certificate, PEM: what the client trusts
    cert_file: Path  # the server's certificate for localhost and 127.0.0.1, signed by the CA
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_certificates(folder: Path, *, names: tuple[str, ...] = ("localhost",)) -> Certificates:
    """A throwaway CA and a server certificate it signed, for `names` and 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "digest test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        # OpenSSL judges validity by the real clock; the date-proof runs move this process's clock
        # by up to a year (tests/conftest.py), so the window spans more than that either way.
        .not_valid_before(now - dt.timedelta(days=800))
        .not_valid_after(now + dt.timedelta(days=800))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt_names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # OpenSSL judges validity by the real clock; the date-proof runs move this process's clock
        # by up to a year (tests/conftest.py), so the window spans more than that either way.
        .not_valid_before(now - dt.timedelta(days=800))
        .not_valid_after(now + dt.timedelta(days=800))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    paths = Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    paths.ca_file.write_bytes(ca.public_bytes(pem))
    paths.cert_file.write_bytes(cert.public_bytes(pem))
    paths.key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths
