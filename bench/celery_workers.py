"""Celery mode: the send rate with one and with two `digest worker` processes, against the
in-process send of the same site, in the same run, into the same SMTP sink.

    python -m bench.celery_workers [--readers 2000] [--broker rabbitmq|redis]

The sink is Postfix's `smtp-sink` (aiosmtpd where it is absent). Each measurement is a fresh
PostgreSQL schema with the same readers; the rate is the run's own record (sent / seconds
from dispatch to finish; in-process: sent / seconds sending).
Needs PostgreSQL on 127.0.0.1:5432 and the broker; says what is missing otherwise.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from celery_helpers import BROKERS, answers, drop_site, make_site  # noqa: E402

from bench.send_throughput import smtp_server  # noqa: E402


def _rate(folder: Path, readers: int, broker: str, sink: SimpleNamespace, workers: int) -> float:
    site = make_site(folder, broker_url=BROKERS[broker][0], sink=sink, subscribers=readers)
    try:
        for i in range(workers):
            site.start_worker(f"bench{i}")
        for i in range(workers):
            # Workers run all the time: a send starts with them up. A worker that comes up while
            # the run dispatches took one task, then idled about 1.6 s in half the runs (README).
            site.wait_ready(f"bench{i}")
        mode = ["--workers", "celery"] if workers else ["--workers", "inprocess"]
        done = subprocess.run(
            site.command("send", *mode),
            env=site.env(),
            cwd=folder,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"digest send exited {done.returncode}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
            )
        runs = subprocess.run(
            site.command("runs", "show", _run_id(site), "--json"),
            env=site.env(),
            cwd=folder,
            capture_output=True,
            text=True,
            check=True,
        )
        record = json.loads(runs.stdout)
        if record["totals"]["sent"] != readers:
            raise RuntimeError(f"sent {record['totals']['sent']} of {readers}")
        return float(record["totals"]["sent"]) / float(record["active_seconds"])
    finally:
        site.stop_workers()
        drop_site(site)


def _run_id(site: object) -> str:
    from sqlalchemy import select

    from digest.send import SendRun

    with site.engine.connect() as conn:  # type: ignore[attr-defined]
        return conn.scalar(select(SendRun.id))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.celery_workers", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--readers", type=int, default=2000)
    parser.add_argument("--broker", choices=sorted(BROKERS), default="rabbitmq")
    args = parser.parse_args(argv)
    try:
        import celery  # noqa: F401
    except ImportError:
        print("celery workers: skipped, Celery is not installed (pip install 'digest[celery]')")
        return 0
    missing = [
        name
        for name, address in (("PostgreSQL", ("127.0.0.1", 5432)), (args.broker, BROKERS[args.broker][1]))
        if not answers(address)
    ]
    if missing:
        print(f"celery workers: skipped, {' and '.join(missing)} not answering on 127.0.0.1")
        return 0
    with tempfile.TemporaryDirectory() as tmp, smtp_server() as (host, port, server_name):
        sink = SimpleNamespace(host=host, port=port)
        rates = {}
        for workers in (0, 1, 2):
            folder = Path(tmp) / f"w{workers}"
            folder.mkdir()
            rates[workers] = _rate(folder, args.readers, args.broker, sink, workers)
    reference = rates[0]
    print(f"celery workers: {args.readers} readers over SMTP into one {server_name}, broker {args.broker}")
    for workers in (1, 2):
        name = f"celery {workers} worker{'s' if workers > 1 else ''} vs in-process"
        ours = rates[workers]
        print(f"{name}: ours {ours:.0f}/s, reference {reference:.0f}/s, ratio {ours / reference:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
