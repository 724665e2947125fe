"""Fault injection into the SMTP transport, against a real aiosmtpd server that misbehaves on
cue: 421 mid-run, 451 and 550 5.1.1 on some recipients, a drop right after the final dot, a
server that stops answering, the per-connection cap, and many threads through one pool.

Every test runs with and without PIPELINING, since the two read the server's replies differently.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from smtp_servers import FaultySmtp, faulty_smtp

from digest.errors import TemporaryError
from digest.transports.base import Outbound, Result
from digest.transports.smtp import SmtpTransport

MESSAGE = b"From: n@rs.example\r\nTo: reader@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


def outbound(to: str) -> Outbound:
    return Outbound(
        key=f"key-{to}",
        envelope_sender="bounces@rs.example",
        recipient=to,
        to_header=to,
        parts=Outbound.from_bytes(MESSAGE, key="", envelope_sender="", recipient="").parts,
        values={},
        headers=(),
        build_wire=lambda: MESSAGE,
        wire_is_crlf=True,
    )


def batch(n: int, prefix: str = "r") -> list[Outbound]:
    return [outbound(f"{prefix}{i}@example.org") for i in range(n)]


@pytest.fixture(params=[False, True], ids=["plain", "pipelining"])
def server(request: pytest.FixtureRequest) -> Iterator[FaultySmtp]:
    with faulty_smtp() as sink:
        sink.pipelining = request.param
        yield sink


def transport(server: FaultySmtp, **kwargs: object) -> SmtpTransport:
    return SmtpTransport(host=server.host, port=server.port, **{"timeout": 5, **kwargs})  # type: ignore[arg-type]


def results(outcomes: list) -> list[Result]:  # noqa: ANN001
    return [o.result for o in outcomes]


def test_421_mid_run_defers_that_message_and_the_rest_go_on_a_new_connection(server: FaultySmtp) -> None:
    server.close_421_after = 3
    with transport(server) as t:
        outcomes = t.send_batch(batch(8))
    assert results(outcomes) == [Result.SENT] * 3 + [Result.DEFERRED] + [Result.SENT] * 4
    assert "421 4.3.2" in outcomes[3].detail
    assert server.recipients() == [f"r{i}@example.org" for i in (0, 1, 2, 4, 5, 6, 7)]
    assert [m.connection for m in server.messages] == [1, 1, 1, 2, 2, 2, 2]


def test_451_on_some_recipients_defers_only_them(server: FaultySmtp) -> None:
    for i in (1, 4, 5):
        server.rcpt_replies[f"r{i}@example.org"] = "451 4.7.1 greylisted, try again later"
    with transport(server) as t:
        outcomes = t.send_batch(batch(7))
    deferred = [i for i, o in enumerate(outcomes) if o.result is Result.DEFERRED]
    assert deferred == [1, 4, 5]
    assert outcomes[1].detail == "RCPT TO refused: 451 4.7.1 greylisted, try again later"
    assert server.recipients() == [f"r{i}@example.org" for i in (0, 2, 3, 6)]
    assert server.connections == 1  # a refusal is answered with RSET, not a new connection


def test_a_rate_limit_reply_is_deferred_and_flagged(server: FaultySmtp) -> None:
    server.rcpt_replies["r1@example.org"] = "450 4.7.0 rate limit exceeded, slow down"
    server.rcpt_replies["r2@example.org"] = "451 4.7.1 greylisted"
    with transport(server) as t:
        outcomes = t.send_batch(batch(3))
    assert results(outcomes) == [Result.SENT, Result.DEFERRED, Result.DEFERRED]
    assert [o.rate_limited for o in outcomes] == [False, True, False]


@pytest.mark.parametrize(("reply", "result"), [("550 5.7.1 sender refused", Result.FAILED),
                                               ("451 4.3.0 queue full", Result.DEFERRED)])  # fmt: skip
def test_a_refused_sender_and_the_pipelined_rcpt_after_it(
    server: FaultySmtp, reply: str, result: Result
) -> None:
    """Pipelined, RCPT TO has gone out behind the refused MAIL FROM: its reply (503) is read
    and the next transaction starts in step."""
    server.mail_reply_once = reply
    with transport(server) as t:
        outcomes = t.send_batch(batch(3))
    assert results(outcomes) == [result, Result.SENT, Result.SENT]
    assert outcomes[0].detail == f"MAIL FROM refused: {reply}"
    assert server.recipients() == ["r1@example.org", "r2@example.org"]
    assert server.connections == 1


def test_550_5_1_1_fails_that_one_and_keeps_the_enhanced_code(server: FaultySmtp) -> None:
    server.rcpt_replies["r2@example.org"] = "550 5.1.1 <r2@example.org>: no such user"
    with transport(server) as t:
        outcomes = t.send_batch(batch(4))
    assert results(outcomes) == [Result.SENT, Result.SENT, Result.FAILED, Result.SENT]
    assert "550 5.1.1" in outcomes[2].detail and "no such user" in outcomes[2].detail
    assert server.connections == 1


def test_a_drop_right_after_the_final_dot_is_unknown_for_exactly_that_message(server: FaultySmtp) -> None:
    server.drop_after_dot = {"r1@example.org"}
    with transport(server) as t:
        outcomes = t.send_batch(batch(4))
    assert results(outcomes) == [Result.SENT, Result.UNKNOWN, Result.SENT, Result.SENT]
    assert "after the message was handed over" in outcomes[1].detail
    # The server did take it: a blind retry would have sent a second copy.
    assert server.recipients() == [f"r{i}@example.org" for i in range(4)]
    assert [m.connection for m in server.messages] == [1, 1, 2, 2]


def test_two_lost_connections_in_a_row_leave_the_rest_of_the_batch_untried(server: FaultySmtp) -> None:
    server.drop_after_dot = {"r1@example.org", "r2@example.org"}
    with transport(server) as t:
        outcomes = t.send_batch(batch(5))
    assert results(outcomes) == [Result.SENT] + [Result.UNKNOWN] * 2 + [Result.DEFERRED] * 2
    assert outcomes[3].detail == "not tried: the connection was lost twice in a row"
    assert server.recipients() == ["r0@example.org", "r1@example.org", "r2@example.org"]
    with t:  # the next batch tries again
        assert results(t.send_batch(batch(2, prefix="again"))) == [Result.SENT] * 2


def test_a_server_that_stops_answering_after_the_dot_is_unknown(server: FaultySmtp) -> None:
    server.hang_after_dot = {"r1@example.org"}
    with transport(server, timeout=0.5) as t:
        outcomes = t.send_batch(batch(4))
    assert results(outcomes) == [Result.SENT, Result.UNKNOWN, Result.DEFERRED, Result.DEFERRED]
    assert "timed out after the message was handed over" in outcomes[1].detail
    assert "stopped answering" in outcomes[2].detail
    assert server.recipients() == ["r0@example.org", "r1@example.org"]


def test_a_server_that_stops_answering_before_data_is_deferred(server: FaultySmtp) -> None:
    server.hang_at_rcpt = {"r1@example.org"}
    with transport(server, timeout=0.5) as t:
        outcomes = t.send_batch(batch(3))
    assert results(outcomes) == [Result.SENT, Result.DEFERRED, Result.DEFERRED]
    assert "not handed over: connection timed out at RCPT TO" in outcomes[1].detail
    assert server.recipients() == ["r0@example.org"]


def test_a_server_that_never_greets_defers_the_batch() -> None:
    """It accepts the TCP connection (the kernel does) but never says 220."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        t = SmtpTransport(host="127.0.0.1", port=silent.getsockname()[1], timeout=0.5)
        with pytest.raises(TemporaryError, match="cannot connect"):
            t.open()
        outcomes = t.send_batch(batch(3))
    assert results(outcomes) == [Result.DEFERRED] * 3
    assert all(o.detail.startswith("not handed over: cannot connect") for o in outcomes)


def test_the_per_connection_cap_is_honoured_within_and_across_batches(server: FaultySmtp) -> None:
    with transport(server, max_messages_per_connection=3) as t:
        first = t.send_batch(batch(7))
        second = t.send_batch(batch(4, prefix="s"))
    assert results(first + second) == [Result.SENT] * 11
    per_connection: dict[int, int] = {}
    for message in server.messages:
        per_connection[message.connection] = per_connection.get(message.connection, 0) + 1
    # 3+3+1 in the first batch; the second goes on with the third connection (1 -> 3), then a fourth.
    assert list(per_connection.values()) == [3, 3, 3, 2]
    assert server.quits == 4  # each left with QUIT: three at the cap, the last at close()


def test_a_pooled_connection_the_server_closed_meanwhile_is_replaced_silently(server: FaultySmtp) -> None:
    """Postfix answers 421 when a connection idles past its timeout; nothing was handed over."""
    server.close_421_after = 0  # the next MAIL FROM, on the connection open() made, gets 421
    with transport(server) as t:
        outcomes = t.send_batch(batch(2))
    assert results(outcomes) == [Result.SENT] * 2
    assert server.recipients() == ["r0@example.org", "r1@example.org"]


def test_a_fresh_connection_answering_421_is_not_retried(server: FaultySmtp) -> None:
    server.close_421_after = 0
    t = transport(server)  # no open(): the batch opens the connection it uses
    outcomes = t.send_batch(batch(2))
    t.close()
    assert results(outcomes) == [Result.DEFERRED, Result.SENT]


def test_threads_through_one_pool_deliver_every_message_exactly_once(server: FaultySmtp) -> None:
    t = transport(server, connections=3, max_messages_per_connection=7)
    threads, outcomes, start = 6, [], threading.Barrier(6)
    lock = threading.Lock()

    def worker(n: int) -> None:
        start.wait(10)
        for b in range(4):
            got = t.send_batch(batch(10, prefix=f"t{n}b{b}-"))
            with lock:
                outcomes.extend(got)

    with t:
        workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
    expected = {f"t{n}b{b}-{i}@example.org" for n in range(threads) for b in range(4) for i in range(10)}
    assert results(outcomes) == [Result.SENT] * len(expected)
    received = server.recipients()
    assert len(received) == len(expected) and set(received) == expected
    # Never more than 3 at once, and close() quit every one of them.
    per_connection: dict[int, int] = {}
    for message in server.messages:
        per_connection[message.connection] = per_connection.get(message.connection, 0) + 1
    assert max(per_connection.values()) <= 7
    assert server.most_at_once <= 3
    assert server.quits == server.connections == len(per_connection)


def test_threads_and_faults_together_never_lose_or_duplicate_a_message(server: FaultySmtp) -> None:
    """Drops after the dot, 451s and 550s spread over 6 threads sharing 3 connections."""
    addresses = [f"t{n}b{b}-{i}@example.org" for n in range(6) for b in range(3) for i in range(10)]
    server.drop_after_dot = set(addresses[5::23])
    server.rcpt_replies |= {a: "451 4.3.0 try later" for a in addresses[2::17]}
    server.rcpt_replies |= {a: "550 5.1.1 no such user" for a in addresses[9::31]}
    t = transport(server, connections=3, max_messages_per_connection=7)
    outcomes, lock, start = [], threading.Lock(), threading.Barrier(6)

    def worker(n: int) -> None:
        start.wait(10)
        for b in range(3):
            got = t.send_batch(batch(10, prefix=f"t{n}b{b}-"))
            with lock:
                outcomes.extend(got)

    with t:
        workers = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
    by_result: dict[Result, set[str]] = {r: set() for r in Result}
    for o in outcomes:
        by_result[o.result].add(o.key.removeprefix("key-"))
    assert len(outcomes) == len(addresses) == sum(len(v) for v in by_result.values())
    received = server.recipients()
    assert len(received) == len(set(received))  # nobody twice
    # What arrived is exactly what was sent or may have been; nothing deferred or failed arrived.
    assert set(received) == by_result[Result.SENT] | by_result[Result.UNKNOWN]
    assert by_result[Result.UNKNOWN] <= server.drop_after_dot
    assert by_result[Result.FAILED] == {
        a for a in addresses if server.rcpt_replies.get(a, "").startswith("550")
    }
    assert server.most_at_once <= 3


def test_close_quits_idle_connections_and_later_returns(server: FaultySmtp) -> None:
    t = transport(server, connections=2)
    t.open()
    t.send_batch(batch(1))
    t.close()
    assert server.quits == server.connections == 1
    assert results(t.send_batch(batch(1, prefix="after"))) == [Result.SENT]  # the pool opens again
    t.close()
    assert server.quits == 2


class _LaxServer:
    """A bare SMTP server that answers DATA with 354 even after it refused the only RCPT (RFC 2920
    says it must not): the pipelined client must end that empty message and not reuse the line."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.bodies: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _addr = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 lax.example ESMTP\r\n")
            for line in lines:
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-lax.example\r\n250 PIPELINING\r\n")
                elif verb == b"MAIL":
                    conn.sendall(b"250 ok\r\n")
                elif verb == b"RCPT":
                    refused = b"refused@" in line
                    conn.sendall(b"550 5.1.1 no such user\r\n" if refused else b"250 ok\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    body = b""
                    for data_line in lines:
                        if data_line == b".\r\n":
                            break
                        body += data_line
                    self.bodies.append(body)
                    conn.sendall(b"250 queued\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")

    def close(self) -> None:
        self.listener.close()


def test_a_server_that_takes_data_after_a_refused_recipient_gets_nothing_and_a_new_line() -> None:
    lax = _LaxServer()
    try:
        with SmtpTransport(host="127.0.0.1", port=lax.port, timeout=5) as t:
            outcomes = t.send_batch([outbound("refused@example.org"), outbound("r1@example.org")])
    finally:
        lax.close()
    assert results(outcomes) == [Result.FAILED, Result.SENT]
    assert outcomes[0].detail == "RCPT TO refused: 550 5.1.1 no such user"
    assert lax.bodies == [b"", MESSAGE]  # the refused reader's DATA was ended empty
    assert lax.connections == 2  # and that connection was not used again
