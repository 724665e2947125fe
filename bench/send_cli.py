"""The whole `digest send`, as staff run it, over 4 SMTP connections, against 4 bare smtplib threads.

    python -m bench.send_cli [--subscribers 10000] [--dkim] [--repeat 3]

`send_cli_4conn`: a fresh `digest -c digest.toml send` process (start-up, collect, render,
freeze, ledger, tokens, splicing and the SMTP pool with its defaults: 4 connections, a new one
every 100 messages) to N active subscribers in a SQLite file, into Postfix's smtp-sink
(aiosmtpd where Postfix is absent); reference: 4 threads, each with one bare smtplib connection,
sending a prebuilt message of the same size to the same number of recipients, in the same run.
With `--dkim` the send signs every message (RSA-2048) and the line is `send_cli_4conn_dkim`.
The two alternate `--repeat` times (each send on a site of its own, filled before the first
round) and the figure is the median of each: one run of either moved by up to 15 % between
runs on a quiet machine. The goal is a ratio of at least 0.85.
"""

from __future__ import annotations

import argparse
import os
import resource
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.send_throughput import Fixture, figure, smtp_server, subscriber_rows
from digest.db import create_schema, make_engine
from subscribers.store import Subscriber


def write_site(folder: Path, host: str, port: int, *, dkim: bool) -> Path:
    """digest.toml for a send into the sink; with `dkim`, a key made for the run."""
    config = (
        '[database]\nurl = "sqlite:///digest.db"\n'
        f'[transport]\nkind = "smtp"\n[transport.smtp]\nhost = "{host}"\nport = {port}\n'
    )
    if dkim:
        from bench.dkim_cost import rsa_pem

        (folder / "dkim.pem").write_bytes(rsa_pem())
        config += (
            '[dkim]\nenabled = true\ndomain = "example.org"\nselector = "bench"\nkey_file = "dkim.pem"\n'
        )
    (folder / "digest.toml").write_text(config, encoding="utf-8")
    return folder / "digest.toml"


def fill(folder: Path, count: int) -> None:
    engine = make_engine(f"sqlite:///{folder}/digest.db")
    create_schema(engine)
    rows = subscriber_rows(count)
    with engine.begin() as conn:
        while chunk := [row for _, row in zip(range(50_000), rows, strict=False)]:
            conn.execute(Subscriber.__table__.insert(), chunk)
    engine.dispose()


@contextmanager
def peak_memory() -> Iterator[list[float]]:
    """The largest resident size (MB) of any child process waited for, read after the block."""
    out: list[float] = []
    yield out
    out.append(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)


def digest_cli(site: Path, *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    """Seconds a fresh `digest` process took, start-up included, and what it printed."""
    env = {**os.environ, "DIGEST_SECRET_KEY": secrets.token_urlsafe(48)}  # 32+ bytes, as digest requires
    script = str(Path(sys.executable).parent / "digest")
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, script, "-c", str(site), *args],
        cwd=site.parent,
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode not in (0,):
        raise SystemExit(
            f"digest {' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return elapsed, proc


def bare_rate(fx: Fixture, host: str, port: int, messages: int) -> float:
    from bench.smtp_transport import reference

    rcpts = [f"reader{i}@example.org" for i in range(messages)]
    return messages / reference(host, port, rcpts, fx.prebuilt, 4)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.send_cli", description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--dkim", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    fx = Fixture(1)
    with tempfile.TemporaryDirectory() as tmp, smtp_server() as (host, port, server):
        sites = []
        for round_ in range(args.repeat):  # a site per send: a sent issue is not sent again
            folder = Path(tmp) / f"site{round_}"
            folder.mkdir()
            sites.append(write_site(folder, host, port, dkim=args.dkim))
            fill(folder, args.subscribers)
        references, times = [], []
        for site in sites:  # alternating, so load on the machine hits both alike
            references.append(bare_rate(fx, host, port, args.subscribers))
            times.append(digest_cli(site, "send")[0])
        elapsed = statistics.median(times)
        name = "send_cli_4conn_dkim" if args.dkim else "send_cli_4conn"
        figure(
            name,
            args.subscribers / elapsed,
            statistics.median(references),
            extra=f"`digest send` to {args.subscribers} subscribers into {server} took {elapsed:.1f} s "
            f"(median of {args.repeat}; runs {', '.join(f'{t:.1f}' for t in times)} s), start-up, "
            "collect, render and freeze included; reference: 4 bare smtplib threads",
        )


if __name__ == "__main__":
    main()
