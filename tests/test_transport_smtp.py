"""The SMTP transport against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import email
import socket
import threading
from email import policy

import pytest

from digest.errors import PermanentError, TemporaryError, UnknownOutcomeError
from digest.transports.base import Outbound
from digest.transports.smtp import SmtpTransport

MESSAGE = (
    b"From: n@rs.example\r\nTo: a@example.org\r\nSubject: hi\r\nMessage-ID: <1@rs.example>\r\n\r\n"
    b".a line starting with a dot\r\nbody\r\n"
)


def envelope(to: str = "a@example.org") -> Outbound:
    return Outbound.from_bytes(MESSAGE, key="run-1", envelope_sender="bounces@rs.example", recipient=to)


def transport(sink) -> SmtpTransport:  # noqa: ANN001
    return SmtpTransport(host=sink.host, port=sink.port, timeout=5)


def test_delivers_over_one_connection(smtp_server) -> None:  # noqa: ANN001
    with transport(smtp_server) as t:
        for i in range(3):
            t.deliver(envelope(f"r{i}@example.org"))
    assert [m[1] for m in smtp_server.messages] == [
        ["r0@example.org"],
        ["r1@example.org"],
        ["r2@example.org"],
    ]
    mail_from, _rcpts, data = smtp_server.messages[0]
    assert mail_from == "bounces@rs.example"
    msg = email.message_from_bytes(data, policy=policy.default)
    assert msg["Subject"] == "hi"
    assert ".a line starting with a dot" in msg.get_content()  # dot-stuffing undone by the server


def test_recipient_5xx_is_permanent_and_connection_survives(smtp_server) -> None:  # noqa: ANN001
    smtp_server.rcpt_replies["gone@example.org"] = "550 5.1.1 no such user"
    with transport(smtp_server) as t:
        with pytest.raises(PermanentError) as info:
            t.deliver(envelope("gone@example.org"))
        assert info.value.status == 550 and "no such user" in info.value.response
        t.deliver(envelope("ok@example.org"))
    assert [m[1] for m in smtp_server.messages] == [["ok@example.org"]]


def test_recipient_4xx_is_temporary(smtp_server) -> None:  # noqa: ANN001
    smtp_server.rcpt_replies["busy@example.org"] = "450 4.2.1 mailbox busy"
    with transport(smtp_server) as t, pytest.raises(TemporaryError) as info:
        t.deliver(envelope("busy@example.org"))
    assert info.value.retryable and info.value.status == 450


def test_data_4xx_is_temporary(smtp_server) -> None:  # noqa: ANN001
    smtp_server.data_reply = "451 4.3.0 try again later"
    with transport(smtp_server) as t, pytest.raises(TemporaryError):
        t.deliver(envelope())


def test_connection_lost_after_data_is_unknown(smtp_server) -> None:  # noqa: ANN001
    smtp_server.drop_after_data = True
    with transport(smtp_server) as t, pytest.raises(UnknownOutcomeError):
        t.deliver(envelope())
    assert len(smtp_server.messages) == 1  # the server did take it: a blind retry would duplicate


def test_unreachable_server_is_temporary() -> None:
    from tests.conftest import free_port

    t = SmtpTransport(host="127.0.0.1", port=free_port(), timeout=2)
    with pytest.raises(TemporaryError):
        t.deliver(envelope())


def refusing_server(stage: str) -> tuple[int, threading.Thread]:
    """A one-connection SMTP server that answers 421 and hangs up at `stage` ("DATA" or "."),
    as servers going down do; aiosmtpd cannot close after replying, so this is a raw socket."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as rfile:
            conn.sendall(b"220 test ESMTP\r\n")
            in_data = False
            for line in rfile:
                if in_data:
                    if line == b".\r\n":
                        conn.sendall(b"421 4.3.2 shutting down\r\n")
                        return
                    continue
                verb = line.split(b" ", 1)[0].strip().upper()
                if verb == b"DATA":
                    if stage == "DATA":
                        conn.sendall(b"421 4.3.2 shutting down\r\n")
                        return
                    conn.sendall(b"354 go ahead\r\n")
                    in_data = True
                else:
                    conn.sendall(b"250 ok\r\n")
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return port, thread


@pytest.mark.parametrize("stage", ["DATA", "."])
def test_421_and_hang_up_is_temporary_not_a_crash(stage: str) -> None:
    port, thread = refusing_server(stage)
    t = SmtpTransport(host="127.0.0.1", port=port, timeout=5)
    with pytest.raises(TemporaryError) as info:
        t.deliver(envelope())
    assert info.value.status == 421
    assert t._conn is None  # the dead connection is dropped; the next send reconnects
    thread.join(5)
