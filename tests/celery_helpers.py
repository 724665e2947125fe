"""A distributed site for the Celery tests and the benchmark: a PostgreSQL schema of its own,
a broker URL, a counting SMTP sink, and `digest worker` subprocesses."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from site_helpers import free_port
from sqlalchemy import Engine, insert, text
from subscriber_helpers import POSTGRES_URL, engine_in_schema

from digest.db import make_engine, migrate

BROKERS = {
    "rabbitmq": ("amqp://guest:guest@127.0.0.1:5672//", ("127.0.0.1", 5672)),
    "redis": ("redis://127.0.0.1:6379/0", ("127.0.0.1", 6379)),
}
SECRET = "Xr5Kq2Vw8Ln3Tz7Bc1Hm6Jd4Fg9Ps0YaQe7Wn2Rb5Mk-t3"


def answers(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=0.5):
            return True
    except OSError:
        return False


@dataclass
class CountingSink:
    """An in-process SMTP server that keeps only how many messages each recipient got."""

    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    per_recipient: Counter[str] = field(default_factory=Counter)
    total: int = 0
    on_message: Callable[[int], None] | None = None
    refuse_with: str = ""  # e.g. "550 no such user": every RCPT is refused so
    refused: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        from aiosmtpd.controller import Controller

        sink = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001
                if sink.refuse_with:
                    with sink.lock:
                        sink.refused += 1
                    return sink.refuse_with
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):  # noqa: ANN001
                with sink.lock:
                    for rcpt in envelope.rcpt_tos:
                        sink.per_recipient[rcpt] += 1
                    sink.total += 1
                    total = sink.total
                if sink.on_message is not None:
                    sink.on_message(total)
                return "250 OK queued"

        self.controller = Controller(Handler(), hostname=self.host, port=self.port)
        self.controller.start()

    def stop(self) -> None:
        self.controller.stop()


@dataclass
class Site:
    folder: Path
    config_path: Path
    schema: str
    url: str
    engine: Engine
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["DIGEST_SECRET_KEY"] = SECRET
        env.pop("DIGEST_CELERY_BROKER_URL", None)
        return env

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "digest.cli", "-c", str(self.config_path), *args]

    def start_worker(self, name: str, *options: str) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115  closed with the process
        # Celery's control queue (`<node name>.celery.pidbox`) is exclusive on the broker: two
        # tests running at once (pytest-xdist) must not both start a `w1@<host>`.
        node = f"{name}-{self.schema}@%h"
        proc = subprocess.Popen(
            self.command("worker", "--name", node, *options),
            env=self.env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.folder,
        )
        self.workers[name] = proc
        return proc

    def kill(self, name: str) -> None:
        self.workers[name].send_signal(signal.SIGKILL)

    def stop_workers(self) -> None:
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def wait_ready(self, name: str, timeout: float = 30.0) -> None:
        """Until worker `name` says it is ready (its log's " ready." line), as a worker that runs
        all the time is before a send starts; raises after `timeout` seconds, with its log."""
        log = self.folder / f"{name}.log"
        deadline = time.monotonic() + timeout
        while b" ready." not in log.read_bytes():
            if self.workers[name].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} is not ready:\n{self.logs()}")
            time.sleep(0.05)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n" + p.read_text(errors="replace")[-3000:]
            for p in sorted(self.folder.glob("*.log"))
        )


def make_site(
    folder: Path,
    *,
    broker_url: str,
    sink: CountingSink,
    subscribers: int,
    extra: str = "",
    max_errors: int = 1000,
    transport: str = "",
    smtp: str = "",
) -> Site:
    """A digest.toml in celery mode on a fresh PostgreSQL schema holding `subscribers` readers.

    `transport` and `smtp` add lines to [transport] (e.g. "max_per_hour = 50") and
    [transport.smtp]; `extra` adds whole tables.
    """
    schema = f"c_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    admin.dispose()
    # libpq's `options` puts every connection of every process (workers too) in the schema.
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    config_path = folder / "digest.toml"
    config_path.write_text(
        f"""
[newsletter]
name = "RS Weekly"
sender = "RS Weekly <news@rs.example>"
base_url = "https://news.rs.example"
[transport]
kind = "smtp"
max_errors = {max_errors}
{transport}
[transport.smtp]
host = "{sink.host}"
port = {sink.port}
{smtp}
[database]
url = "{url}"
[send]
workers = "celery"
[celery]
broker_url = "{broker_url}"
queue = "digest-test-{schema}"
task_rows = 250
claim_rows = 100
handover_rows = 20
worker_lease_seconds = 5
visibility_timeout = 8
[web]
archive_dir = "{folder / "archive"}"
{extra}
""",
        encoding="utf-8",
    )
    engine = engine_in_schema(url, schema)
    migrate(engine)
    add_readers(engine, subscribers)
    return Site(folder=folder, config_path=config_path, schema=schema, url=url, engine=engine)


def drop_site(site: Site) -> None:
    site.engine.dispose()
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{site.schema}" CASCADE'))
    admin.dispose()


def add_readers(engine: Engine, count: int) -> None:
    """`count` confirmed, active readers reader0@example.org ... in one INSERT."""
    from subscribers.store import Status, Subscriber

    now = datetime.now(UTC)
    rows = [
        {
            "email": f"reader{i}@example.org",
            "email_key": f"reader{i}@example.org",
            "name": f"Reader {i}",
            "status": Status.ACTIVE,
            "paused": False,
            "source": "test",
            "created_at": now,
            "updated_at": now,
            "confirmed_at": now,
        }
        for i in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(insert(Subscriber), rows)
