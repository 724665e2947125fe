"""Send throughput: our send path against bare smtplib on prebuilt bytes, in the same run.

Both push the same number of messages over one connection into Postfix's smtp-sink (or, if
it is not installed, an in-process aiosmtpd server). The reference is bare
`smtplib.sendmail` of one prebuilt message; ours personalises every message (tokens, links,
Message-ID, splicing) and records each outcome in a SQLite ledger, as a real run does.
Figures are printed as messages per second and as a ratio to the reference.
"""

from __future__ import annotations

import shutil
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session

from digest.config import Config
from digest.db import create_schema, make_engine, session_factory
from digest.models import Recipient
from digest.personal import Links
from digest.pipeline import Personaliser, Variants, list_headers, prepare_issue
from digest.send import Courier, Prepared, RetryPolicy, start_run
from digest.transports.smtp import SmtpTransport
from subscribers.tokens import Tokens

MESSAGES = 1000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def smtp_server() -> Iterator[tuple[str, int, str]]:
    port = _free_port()
    sink = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if Path(sink).exists():
        proc = subprocess.Popen([sink, "-u", "nobody", f"127.0.0.1:{port}", "100"])
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.02)
        try:
            yield "127.0.0.1", port, "smtp-sink"
        finally:
            proc.terminate()
            proc.wait()
        return
    from aiosmtpd.controller import Controller

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: ANN001
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield "127.0.0.1", port, "aiosmtpd"
    finally:
        controller.stop()


def main() -> None:
    now = datetime.now(UTC)
    config = Config()
    issue = prepare_issue(config, now)
    variants = Variants(issue.digest, issue.renderer, list_headers(config), date=now)
    key = variants.key_for(None)
    _rendered, template = variants.get(key)
    recipients = [Recipient(i + 1, f"reader{i}@example.org", f"Reader {i}") for i in range(MESSAGES)]
    personalise = Personaliser(
        Tokens("bench-secret"), Links(config.newsletter.base_url), run_id="bench", domain="x"
    )
    prebuilt = template.personalise(recipients[0], personalise(recipients[0]))

    with tempfile.TemporaryDirectory() as tmp, smtp_server() as (host, port, server_name):
        # Reference: bare smtplib, one prebuilt message, one connection.
        conn = smtplib.SMTP(host, port)
        start = time.perf_counter()
        for r in recipients:
            conn.sendmail("bounces@example.org", [r.email], prebuilt)
        reference = time.perf_counter() - start
        conn.quit()

        # Ours: ledger rows, personalisation and a commit per outcome.
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        create_schema(engine)
        sessions = session_factory(engine)
        with sessions() as s:
            run_id = start_run(s, recipients, issue="bench")

        def prepare(r: Recipient, key: str) -> Prepared:
            return Prepared(template.outbound(r, personalise(r), key=key, envelope_sender="b@x.example"))

        def unwanted(_s: Session, _ids: object) -> set[int]:
            return set()  # no subscriber table here: this measures personalisation, ledger and SMTP

        courier = Courier(
            SmtpTransport(host=host, port=port),
            prepare=prepare,
            unwanted=unwanted,
            retry=RetryPolicy(attempts=1),
        )
        start = time.perf_counter()
        report = courier.run(sessions, run_id)
        ours = time.perf_counter() - start
        assert report.sent == MESSAGES, report.counts

    size = len(prebuilt) / 1024
    print(f"send throughput: {MESSAGES} messages of {size:.0f} KiB into {server_name}, one connection")
    print(f"  reference (bare smtplib.sendmail, prebuilt bytes): {MESSAGES / reference:8.0f} msg/s")
    print(f"  digest (personalise + ledger + SMTP transport):    {MESSAGES / ours:8.0f} msg/s")
    print(f"  ratio digest / reference: {reference / ours:.2f}")


if __name__ == "__main__":
    main()
