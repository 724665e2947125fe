"""SMTP transport throughput against bare smtplib, in the same run, into the same server.

    python -m bench.smtp_transport [--messages 2000] [--repeat 3]

Into Postfix's smtp-sink (aiosmtpd when it is not installed):
  * smtp_transport_1conn: `SmtpTransport(connections=1).send_batch` over batches of
    `max_batch`, each message spliced from the real digest's template (`MessageTemplate.outbound`,
    wire bytes built lazily as in a run), against bare `smtplib.sendmail` of one prebuilt
    message over one connection;
  * smtp_transport_4conn: the same through a pool of 4 connections with 4 threads calling
    `send_batch`, against 4 threads each with its own bare smtplib connection.
The transport runs with its default per-connection cap (QUIT and reconnect every 100 messages);
tokens are computed beforehand, the ledger is not involved (bench/send_throughput.py has both).
Each figure is the median of `--repeat` runs, reference and ours alternating.
"""

from __future__ import annotations

import argparse
import queue
import smtplib
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from bench.send_throughput import smtp_server
from digest.config import Config
from digest.message import MessageTemplate, Personal
from digest.models import Recipient
from digest.personal import Links
from digest.pipeline import Personaliser, Variants, list_headers, prepare_issue
from digest.transports.base import Result
from digest.transports.smtp import SmtpTransport
from subscribers.tokens import Tokens

SENDER = "bounces@example.org"


def reference(host: str, port: int, rcpts: Sequence[str], wire: bytes, connections: int) -> float:
    """Seconds for bare smtplib.sendmail of `wire` to every address, over `connections` threads."""
    shares = [rcpts[i::connections] for i in range(connections)]
    conns = [smtplib.SMTP(host, port) for _ in shares]

    def send(conn: smtplib.SMTP, share: Sequence[str]) -> None:
        for rcpt in share:
            conn.sendmail(SENDER, [rcpt], wire)

    start = time.perf_counter()
    threads = [threading.Thread(target=send, args=(c, s)) for c, s in zip(conns, shares, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for c in conns:
        c.quit()
    return elapsed


def ours(
    host: str,
    port: int,
    people: Sequence[tuple[Recipient, Personal]],
    template: MessageTemplate,
    connections: int,
) -> float:
    """Seconds for SmtpTransport to send one spliced message per person, `connections` threads."""
    transport = SmtpTransport(host=host, port=port, connections=connections)
    batches: queue.SimpleQueue[Sequence[tuple[Recipient, Personal]] | None] = queue.SimpleQueue()
    for i in range(0, len(people), transport.max_batch):
        batches.put(people[i : i + transport.max_batch])
    for _ in range(connections):
        batches.put(None)
    failures: list[str] = []

    def worker() -> None:
        while (chunk := batches.get()) is not None:
            outbound = [
                template.outbound(r, p, key=f"bench-{r.subscriber_id}", envelope_sender=SENDER)
                for r, p in chunk
            ]
            failures.extend(o.detail for o in transport.send_batch(outbound) if o.result is not Result.SENT)

    transport.open()
    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    transport.close()
    if failures:
        raise RuntimeError(f"{len(failures)} messages not sent, e.g. {failures[0]}")
    return elapsed


def median_of(repeat: int, run: Callable[[], float]) -> float:
    return statistics.median(run() for _ in range(repeat))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.smtp_transport", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    now = datetime.now(UTC)
    config = Config()
    issue = prepare_issue(config, now)
    variants = Variants(issue.digest, issue.renderer, list_headers(config), date=now)
    _rendered, template = variants.get(variants.key_for(None))
    personalise = Personaliser(
        Tokens("bench-secret"), Links(config.newsletter.base_url), run_id="bench", domain="example.org"
    )
    recipients = [Recipient(i + 1, f"reader{i}@example.org", f"Reader {i}") for i in range(args.messages)]
    people = [(r, personalise(r)) for r in recipients]
    wire = template.personalise(*people[0])
    rcpts = [r.email for r in recipients]
    n = len(people)

    with smtp_server() as (host, port, server_name):
        size = len(wire) / 1024
        print(f"smtp transport: {n} messages of {size:.0f} KiB into {server_name}, median of {args.repeat}")
        for connections in (1, 4):
            ref_times, our_times = [], []
            for _ in range(args.repeat):
                ref_times.append(reference(host, port, rcpts, wire, connections))
                our_times.append(ours(host, port, people, template, connections))
            ref, mine = statistics.median(ref_times), statistics.median(our_times)
            print(
                f"smtp_transport_{connections}conn: ours {n / mine:.0f}/s, reference {n / ref:.0f}/s, "
                f"ratio {ref / mine:.2f}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
