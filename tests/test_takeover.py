"""Takeover: two `digest run` processes on one PostgreSQL database, as two machines (each its
own host name, in a UTS namespace of its own, and its own local folder); the one sending is
killed with SIGKILL mid-send and never restarted. The other finishes the run by itself within
the lease plus a few seconds: every reader has exactly one message at the sink, except at most
one row per SMTP connection recorded as unknown (which reached the sink at most once)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery_helpers import SECRET, CountingSink, add_readers, answers
from conftest import free_port
from sqlalchemy import select, text
from subscriber_helpers import POSTGRES_URL, engine_in_schema

from digest.cli import main
from digest.db import make_engine, migrate, session_factory
from digest.models import DeliveryStatus
from digest.send import Delivery, SendRun

READERS = 1500
KILL_AT = 300  # messages at the sink when the sending process is killed
CONNECTIONS = 4  # [transport.smtp] connections: at most this many rows unknown
LEASE = 4.0  # [send] lease_seconds, short so the test is short; the default is 60
DEADLINE = 180.0  # seconds the whole run may take before the test gives up


def _wait_for(condition, limit: float, what: str) -> None:  # noqa: ANN001
    """Wait for `condition()` to hold, looking again every 0.2 s, up to `limit` seconds."""
    ticker = threading.Event()
    end = datetime.now(UTC) + timedelta(seconds=limit)
    while not condition():
        assert datetime.now(UTC) < end, f"gave up waiting for {what}"
        ticker.wait(0.2)


@pytest.fixture
def shared_db():  # noqa: ANN201
    if not answers(("127.0.0.1", 5432)):
        pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432")
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is needed to give each process a host name of its own")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    engine = engine_in_schema(url, schema)
    migrate(engine)
    yield url, engine
    engine.dispose()
    with admin.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


def machine(folder: Path, url: str, sink: CountingSink) -> Path:
    """One machine's local folder and digest.toml (the database is the shared one)."""
    folder.mkdir()
    path = folder / "digest.toml"
    path.write_text(
        f"""
[newsletter]
name = "RS Weekly"
sender = "RS Weekly <news@rs.example>"
base_url = "https://news.rs.example"
timezone = "UTC"
[transport]
kind = "smtp"
max_errors = 0
[transport.smtp]
host = "{sink.host}"
port = {sink.port}
connections = {CONNECTIONS}
[database]
url = "{url}"
[send]
lease_seconds = {LEASE}
[web]
archive_dir = "{folder / "archive"}"
""",
        encoding="utf-8",
    )
    return path


def start_run_process(name: str, config: Path, log: Path) -> subprocess.Popen:
    """`digest run` under a host name of its own (`unshare -u`), so its owner id names it."""
    command = " ".join(
        [
            f"hostname {name} &&",
            "exec",
            sys.executable,
            "-m digest.cli -c",
            str(config),
            "run --host 127.0.0.1 --port",
            str(free_port()),
        ]
    )
    env = {**os.environ, "DIGEST_SECRET_KEY": SECRET, "PYTHONUNBUFFERED": "1"}
    out = open(log, "wb")  # noqa: SIM115  closed with the process
    err = open(log.with_suffix(".err"), "wb")  # noqa: SIM115  closed with the process
    return subprocess.Popen(
        ["unshare", "-u", "sh", "-c", command], env=env, stdout=out, stderr=err, cwd=config.parent
    )


@pytest.mark.postgres
def test_a_standby_digest_run_finishes_the_run_of_a_machine_that_died(
    shared_db, tmp_path: Path, sink: CountingSink, capsys: pytest.CaptureFixture[str]
) -> None:
    from digest.config import load_config
    from digest.schedule import JOB_PREFIX, ScheduleService

    url, engine = shared_db
    add_readers(engine, READERS)
    configs = {name: machine(tmp_path / name, url, sink) for name in ("machine-a", "machine-b")}
    config = load_config(configs["machine-a"])
    with ScheduleService(config, engine) as service:
        service.add("now", weekly="mon 09:00")
        # Due a few seconds from now: whichever process's scheduler fires first owns the run.
        service.scheduler.modify_job(
            JOB_PREFIX + "now", next_run_time=datetime.now(UTC) + timedelta(seconds=4)
        )
    processes: dict[str, subprocess.Popen] = {}
    killed: dict[str, str] = {}

    def kill_the_owner(total: int) -> None:
        if total < KILL_AT or killed:
            return
        with engine.connect() as conn:
            owner = conn.scalar(select(SendRun.owner))
        host = (owner or "").partition(":")[0]
        if host in processes:
            killed["host"] = host
            processes[host].send_signal(signal.SIGKILL)  # mid-send, mid-conversation perhaps

    sink.on_message = kill_the_owner
    try:
        for name, path in configs.items():
            processes[name] = start_run_process(name, path, tmp_path / f"{name}.log")

        def finished() -> bool:
            with engine.connect() as conn:
                return conn.scalar(select(SendRun.status)) in ("finished", "failed")

        _wait_for(finished, DEADLINE, "the run to finish")
        assert killed, "the owner was never killed"
        dead = processes[killed["host"]]
        assert dead.wait(timeout=10) == -signal.SIGKILL
        survivor = next(p for name, p in processes.items() if name != killed["host"])
        assert survivor.poll() is None  # nobody restarted anything: the survivor did it
    finally:
        sink.on_message = None
        for proc in processes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in processes.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    logs = "\n".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("*.log")))  # stdout
    logs_err = "\n".join(p.read_text(errors="replace") for p in sorted(tmp_path.glob("*.err")))
    with engine.connect() as conn:
        run_id, status = conn.execute(select(SendRun.id, SendRun.status)).one()
        rows = conn.execute(select(Delivery.email, Delivery.status).where(Delivery.run_id == run_id)).all()
    assert status == "finished", logs + logs_err
    by_status = Counter(DeliveryStatus(s).value for _e, s in rows)
    assert set(by_status) <= {"sent", "unknown"} and by_status["unknown"] <= CONNECTIONS, by_status
    for email, value in rows:
        got = sink.per_recipient[email]
        assert got == 1 if DeliveryStatus(value) is DeliveryStatus.SENT else got <= 1, (email, got)
    readers = {e for e, _s in rows}
    assert len(readers) == READERS and set(sink.per_recipient) - readers <= {"news@rs.example"}
    # Staff heard of it: the alert mail (no staff accounts: the sender's address) and the log.
    assert sink.per_recipient["news@rs.example"] >= 1
    # On the survivor's stdout: each firing and its outcome at INFO, the takeover and the alert
    # as WARNING lines.
    assert "INFO digest.schedule: schedule now (send at" in logs
    assert re.search(r"INFO digest\.schedule: schedule now \(takeover at [^)]*\): sent: resumed run", logs), (
        logs
    )
    assert "WARNING digest.schedule: run " in logs and "taking it over" in logs
    assert "WARNING digest.alerts: staff alert" in logs and "(takeover)" in logs
    assert "maximum number of running instances" not in logs + logs_err
    if by_status["unknown"]:
        assert main(["-c", str(configs["machine-b"]), "runs", "show", run_id]) == 0
        shown = capsys.readouterr().out
        assert "died" in shown and f"digest resume {run_id} --include unknown" in shown
    assert main(["-c", str(configs["machine-b"]), "runs"]) == 0
    assert "finished" in capsys.readouterr().out
    with session_factory(engine)() as session:
        from digest.schedule import Firing

        kinds = dict(session.execute(select(Firing.kind, Firing.outcome)).all())
    assert kinds["send"] == "interrupted" and kinds["takeover"] == "sent", kinds
