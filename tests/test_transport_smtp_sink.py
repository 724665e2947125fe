"""The SMTP transport against Postfix's smtp-sink (Debian package `postfix`), a second real server.

smtp-sink offers PIPELINING unless told to reject something (-r, -f imply -p), so the first
test and the hang-up and 421 cases go the pipelined way, the reject cases the plain one."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from site_helpers import free_port

from digest.errors import PermanentError, TemporaryError, UnknownOutcomeError
from digest.transports.base import Outbound, Result
from digest.transports.smtp import SmtpTransport

SMTP_SINK = shutil.which("smtp-sink") or (
    "/usr/sbin/smtp-sink" if Path("/usr/sbin/smtp-sink").exists() else None
)
pytestmark = pytest.mark.skipif(
    SMTP_SINK is None, reason="smtp-sink (Debian package postfix) is not installed"
)

MESSAGE = b"From: n@rs.example\r\nTo: a@example.org\r\nSubject: hi\r\n\r\n" + b"x" * 70 + b"\r\n"


def start_sink(*options: str) -> Iterator[tuple[int, Path]]:
    dump = Path(tempfile.mkdtemp(prefix="digest-sink-"))
    dump.chmod(0o777)  # smtp-sink drops to user nobody before it writes
    port = free_port()
    cmd = [SMTP_SINK, "-u", "nobody", "-d", f"{dump}/%H%M%S.", *options, f"127.0.0.1:{port}", "100"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while True:  # wait until it listens
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"smtp-sink did not start: {proc.stderr.read().decode()}") from None
            time.sleep(0.02)
    try:
        yield port, dump
    finally:
        proc.terminate()
        proc.wait(5)
        shutil.rmtree(dump, ignore_errors=True)


def envelope(i: int = 0) -> Outbound:
    return Outbound.from_bytes(
        MESSAGE, key=f"k{i}", envelope_sender="bounces@rs.example", recipient=f"r{i}@example.org"
    )


@pytest.fixture
def sink() -> Iterator[tuple[int, Path]]:
    yield from start_sink()


def test_many_messages_over_the_pool(sink: tuple[int, Path]) -> None:
    port, dump = sink
    with SmtpTransport(host="127.0.0.1", port=port, timeout=5, max_messages_per_connection=30) as t:
        outcomes = [
            o for b in range(0, 200, 50) for o in t.send_batch([envelope(i) for i in range(b, b + 50)])
        ]
    assert [o.result for o in outcomes] == [Result.SENT] * 200
    deadline = time.monotonic() + 5
    while len(list(dump.iterdir())) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    files = list(dump.iterdir())
    assert len(files) == 200
    assert b"Subject: hi" in files[0].read_bytes()


@pytest.mark.parametrize(
    ("option", "error"),
    [
        (("-r", "RCPT"), TemporaryError),  # smtp-sink answers 4xx to RCPT
        (("-f", "RCPT"), PermanentError),  # 5xx to RCPT
        (("-r", "."), TemporaryError),  # 4xx after the message data
        (("-q", "."), UnknownOutcomeError),  # hangs up after the data, before replying
        (("-q", "RCPT"), TemporaryError),  # hangs up before DATA: nothing was handed over
        (("-Q", "MAIL"), TemporaryError),  # 421 and hangs up
        (("-Q", "."), TemporaryError),  # 421 to the final dot: refused, not lost
    ],
)
def test_server_refusals_map_to_error_classes(option: tuple[str, str], error: type[Exception]) -> None:
    for port, _dump in start_sink(*option):
        t = SmtpTransport(host="127.0.0.1", port=port, timeout=5)  # no open(): no silent retry
        with pytest.raises(error):
            t.send_one(envelope())
        t.close()
