"""The send path against bare references measured in the same run.

    python -m bench.send_throughput [--messages 2000] [--outbox 100000] [--freeze 1000000]

Lines printed (`NAME: ours X/s, reference Y/s, ratio Z`):
  * send_smtp_1conn: a real run (ledger on a SQLite file with synchronous=FULL, tokens, links,
    Message-ID, splicing, batched claims and group commits) through `SmtpTransport` with one
    connection into Postfix's smtp-sink (aiosmtpd when it is absent), against bare
    `smtplib.sendmail` of one prebuilt message over one connection;
  * send_smtp_4conn: the same run with a pool of 4 connections, against 4 threads each with a
    bare smtplib connection;
  * send_451_every_7th: the 1-connection run where every 7th recipient is first answered 451
    (aiosmtpd), against the same run with no faults: the ratio says how little the retries
    hold the others up;
  * send_outbox: `digest send` (a subprocess, the CLI as staff run it) to N subscribers into
    the outbox transport, against writing the same number of files of the same size;
  * freeze: `start_run` freezing N subscribers into a run (its own subprocess, so its peak
    memory is its own), against a bare executemany INSERT of the same rows.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from digest.config import Config
from digest.db import create_schema, make_engine, session_factory
from digest.models import Recipient
from digest.personal import Links
from digest.pipeline import Personaliser, Variants, list_headers, prepare_issue
from digest.send import Courier, Prepared, RetryPolicy, start_run
from digest.transports.smtp import SmtpTransport
from subscribers.store import Subscriber, iter_active_recipients
from subscribers.tokens import Tokens

SENDER = "bounces@example.org"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def smtp_server() -> Iterator[tuple[str, int, str]]:
    """smtp-sink when Postfix is installed, else an in-process aiosmtpd that accepts everything."""
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
    with _aiosmtpd(every=0) as (host, port):
        yield host, port, "aiosmtpd"


@contextmanager
def _aiosmtpd(every: int) -> Iterator[tuple[str, int]]:
    """aiosmtpd accepting everything, except a first 451 for every `every`-th recipient."""
    from aiosmtpd.controller import Controller

    order: dict[str, int] = {}
    refused: set[str] = set()
    lock = threading.Lock()

    class Handler:
        async def handle_RCPT(self, server, session, envelope, address, options):  # noqa: ANN001
            with lock:
                n = order.setdefault(address, len(order) + 1)
                if every and n % every == 0 and address not in refused:
                    refused.add(address)  # the first try only; the retry is accepted
                    return "451 4.7.1 try again later"
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):  # noqa: ANN001
            return "250 OK"

    port = _free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield "127.0.0.1", port
    finally:
        controller.stop()


def figure(name: str, ours: float, reference: float, unit: str = "/s", extra: str = "") -> None:
    ratio = ours / reference if reference else 0.0
    tail = f" ({extra})" if extra else ""
    print(f"{name}: ours {ours:.0f}{unit}, reference {reference:.0f}{unit}, ratio {ratio:.2f}{tail}")


class Fixture:
    """A real issue, its template, and recipients, built once for the SMTP figures."""

    def __init__(self, messages: int) -> None:
        now = datetime.now(UTC)
        self.config = Config()
        issue = prepare_issue(self.config, now)
        variants = Variants(issue.digest, issue.renderer, list_headers(self.config), date=now)
        _rendered, self.template = variants.get(variants.key_for(None))
        self.recipients = [Recipient(i + 1, f"reader{i}@example.org", f"Reader {i}") for i in range(messages)]
        self.tokens = Tokens("bench-secret")
        self.links = Links(self.config.newsletter.base_url)
        probe = Personaliser(self.tokens, self.links, run_id="probe", domain="example.org")
        self.prebuilt = self.template.personalise(self.recipients[0], probe(self.recipients[0]))

    def run(
        self, host: str, port: int, connections: int, folder: Path, sign: object = None
    ) -> tuple[float, dict[str, int]]:
        """Seconds for a whole run through the real engine, and its totals; `sign`: a DkimSigner."""
        engine = make_engine(f"sqlite:///{folder}/ledger-{time.monotonic_ns()}.db")
        create_schema(engine)
        sessions = session_factory(engine)
        with sessions() as s:
            run_id = start_run(s, self.recipients, issue="bench")
        personalise = Personaliser(self.tokens, self.links, run_id=run_id, domain="example.org")
        template = self.template

        def prepare(r: Recipient, key: str) -> Prepared:
            return Prepared(template.outbound(r, personalise(r), key=key, envelope_sender=SENDER, sign=sign))

        def unwanted(_s: object, _ids: Sequence[int]) -> set[int]:
            return set()  # no subscriber table here: one query per batch in a real run

        courier = Courier(
            SmtpTransport(host=host, port=port, connections=connections),
            prepare=prepare,
            unwanted=unwanted,
            retry=RetryPolicy(),  # the defaults of [transport]: 3 tries, 1 s backoff with jitter
            journal_dir=folder / "journal",
        )
        start = time.perf_counter()
        report = courier.run(sessions, run_id)
        elapsed = time.perf_counter() - start
        engine.dispose()
        return elapsed, dict(report.totals)

    def bare(self, host: str, port: int, connections: int) -> float:
        from bench.smtp_transport import reference  # imports this module: not at the top

        return reference(host, port, [r.email for r in self.recipients], self.prebuilt, connections)


def smtp_figures(messages: int, repeat: int) -> None:
    fx = Fixture(messages)
    with tempfile.TemporaryDirectory() as tmp, smtp_server() as (host, port, server):
        for connections in (1, 4):
            ours, bare = [], []
            for _ in range(repeat):  # alternating, so load on the machine hits both alike
                bare.append(fx.bare(host, port, connections))
                elapsed, totals = fx.run(host, port, connections, Path(tmp))
                assert totals == {"sent": messages}, totals
                ours.append(elapsed)
            size = len(fx.prebuilt) / 1024
            figure(
                f"send_smtp_{connections}conn",
                messages / sorted(ours)[len(ours) // 2],
                messages / sorted(bare)[len(bare) // 2],
                extra=f"{messages} messages of {size:.0f} KiB into {server}, median of {repeat}",
            )
    with tempfile.TemporaryDirectory() as tmp:
        with _aiosmtpd(every=0) as (host, port):
            clean, totals = fx.run(host, port, 1, Path(tmp))
        with _aiosmtpd(every=7) as (host, port):
            faulty, totals = fx.run(host, port, 1, Path(tmp))
        assert totals == {"sent": messages}, totals
        figure(
            "send_451_every_7th",
            messages / faulty,
            messages / clean,
            extra=f"every 7th of {messages} first answered 451, retried 0.5-1.5 s later; "
            "reference: the same run with no faults, both into aiosmtpd",
        )


def subscriber_rows(count: int) -> Iterator[dict[str, object]]:
    """Active subscribers as table rows, for filling a list fast (no ORM, no validation)."""
    now = datetime.now(UTC)
    for i in range(count):
        address = f"reader{i}@example.org"
        yield {
            "email": address,
            "email_key": address,
            "name": f"Reader {i}",
            "status": "active",
            "paused": False,
            "source": "bench",
            "created_at": now,
            "updated_at": now,
        }


def outbox_figure(count: int) -> None:
    """`digest send` to `count` subscribers into the outbox, against bare file writes."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "digest.toml").write_text(
            '[database]\nurl = "sqlite:///digest.db"\n[transport]\nkind = "outbox"\noutbox_dir = "out"\n',
            encoding="utf-8",
        )
        engine = make_engine(f"sqlite:///{folder}/digest.db")
        create_schema(engine)
        with engine.begin() as conn:
            conn.execute(Subscriber.__table__.insert(), list(subscriber_rows(count)))
        engine.dispose()
        env = {**os.environ, "DIGEST_SECRET_KEY": secrets.token_urlsafe(48)}  # 32+ bytes, as digest requires
        start = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "digest.cli", "-c", str(folder / "digest.toml"), "send"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
        )
        ours = time.perf_counter() - start
        files = list((folder / "out").glob("*.eml"))
        assert proc.returncode == 0 and len(files) == count, (
            proc.returncode,
            len(files),
            proc.stdout[-2000:],
        )
        data = files[0].read_bytes()
        bare_dir = folder / "bare"
        bare_dir.mkdir()
        start = time.perf_counter()
        for i in range(count):
            (bare_dir / f"{i}.eml").write_bytes(data)
        bare = time.perf_counter() - start
        figure(
            "send_outbox",
            count / ours,
            count / bare,
            extra=f"`digest send` to {count} subscribers took {ours:.1f} s (collect, render and freeze "
            "included); reference: writing the same files bare, no fsync",
        )


def freeze_figure(count: int) -> None:
    """Run in a subprocess: its peak RSS is the freeze's own."""
    proc = subprocess.run(
        [sys.executable, "-m", "bench.send_throughput", "--freeze-child", str(count)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        print(proc.stderr[-3000:])
        raise SystemExit(1)
    print(proc.stdout.strip())


def _freeze_child(count: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/freeze.db")
        create_schema(engine)
        with engine.begin() as conn:
            rows = subscriber_rows(count)
            while chunk := list(itertools.islice(rows, 10_000)):
                conn.execute(Subscriber.__table__.insert(), chunk)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        sessions = session_factory(engine)
        start = time.perf_counter()
        with sessions() as s:
            start_run(s, iter_active_recipients(s), issue="bench")
        ours = time.perf_counter() - start
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        # Reference: the same number of ledger-shaped rows, one bare executemany per 5,000.
        import sqlite3

        db = sqlite3.connect(f"{tmp}/bare.db")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE d (run_id TEXT, subscriber_id INT, email TEXT, email_key TEXT, name TEXT)")
        start = time.perf_counter()
        for base in range(0, count, 5000):
            db.executemany(
                "INSERT INTO d VALUES (?, ?, ?, ?, ?)",
                (
                    ("r", i, f"reader{i}@example.org", f"reader{i}@example.org", f"Reader {i}")
                    for i in range(base, min(base + 5000, count))
                ),
            )
        db.commit()
        bare = time.perf_counter() - start
        db.close()
        figure(
            "freeze",
            count / ours,
            count / bare,
            unit=" rows/s",
            extra=f"{count} recipients frozen in {ours:.1f} s; peak memory {peak:.0f} MB "
            f"({before:.0f} MB before the freeze)",
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--outbox", type=int, default=100_000)
    parser.add_argument("--freeze", type=int, default=1_000_000)
    parser.add_argument("--freeze-child", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.freeze_child:
        _freeze_child(args.freeze_child)
        return
    smtp_figures(args.messages, args.repeat)
    if args.outbox:
        outbox_figure(args.outbox)
    if args.freeze:
        freeze_figure(args.freeze)


if __name__ == "__main__":
    main()
