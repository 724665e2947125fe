"""`digest run` as a real process: waitress serves the pages, the scheduler runs beside them,
SIGTERM and SIGINT stop it cleanly, and a start resumes the send run a dead process left."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from schedule_helpers import READERS, digests_sent, make_site
from site_helpers import free_port
from sqlalchemy import func, select

from digest.db import session_factory
from digest.schedule import Firing
from digest.send import SendRun, start_run
from subscribers import store

STARTUP_SECONDS = 60  # a generous bound on a loaded machine; nothing is timed


class Daemon:
    def __init__(self, toml: Path, port: int) -> None:
        env = {
            **os.environ,
            "DIGEST_SECRET_KEY": "Xr5Kq2Vw8Ln3Tz7Bc1Hm6Jd4Fg9Ps0YaQe7Wn2Rb5Mk-t3",
            "PYTHONUNBUFFERED": "1",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "digest.cli", "-c", str(toml), "run", "--port", str(port)],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put("")  # end of output

    def wait_for(self, text: str) -> None:
        while True:
            try:
                line = self.lines.get(timeout=STARTUP_SECONDS)
            except queue.Empty:
                pytest.fail(f"digest run never printed {text!r}; printed: {''.join(self.seen)}")
            self.seen.append(line)
            if text in line:
                return
            if line == "":
                pytest.fail(f"digest run ended before printing {text!r}: {''.join(self.seen)}")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        code = self.proc.wait(timeout=STARTUP_SECONDS)
        while True:
            line = self.lines.get(timeout=STARTUP_SECONDS)
            if line == "":
                break
            self.seen.append(line)
        return code


@pytest.fixture
def daemon_factory() -> Iterator:
    started: list[Daemon] = []

    def start(toml: Path, port: int) -> Daemon:
        daemon = Daemon(toml, port)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        if daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_digest_run_serves_the_pages_over_waitress_and_stops_cleanly(
    tmp_path: Path, daemon_factory, signum: int
) -> None:  # noqa: ANN001
    config, engine = make_site(tmp_path)
    engine.dispose()
    port = free_port()
    daemon = daemon_factory(tmp_path / "digest.toml", port)
    daemon.wait_for("(waitress)")
    response = requests.get(f"http://127.0.0.1:{port}/subscribe", timeout=30)
    assert response.status_code == 200
    assert response.headers["Server"] == "waitress"
    assert "RS Weekly" in response.text
    assert daemon.stop(signum) == 0
    output = "".join(daemon.seen)
    assert "schedule weekly: weekly fri 09:00, send" in output  # seeded from [schedule]
    assert "stopped" in output
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/subscribe", timeout=5)


def test_digest_run_resumes_the_run_a_killed_process_left(tmp_path: Path, daemon_factory) -> None:  # noqa: ANN001
    config, engine = make_site(tmp_path)
    now = datetime.now(UTC)
    with session_factory(engine)() as session:
        run_id = start_run(
            session, store.active_recipients(session), issue=now.date().isoformat(), window_end=now
        )
        # What a SIGKILLed `digest run` leaves: a firing still "running", a run held by a dead pid.
        session.add(
            Firing(schedule_name="weekly", fire_time=now, kind="manual", owner=_dead_owner(), started_at=now)
        )
        session.execute(SendRun.__table__.update().values(owner=_dead_owner() + ":x", heartbeat_at=now))
        session.commit()
    daemon = daemon_factory(tmp_path / "digest.toml", free_port())
    daemon.wait_for("(waitress)")
    # The stop may come before the resume has sent everything: the send then stops at a batch
    # boundary with what it handed over recorded, and the next start resumes the rest.
    assert daemon.stop() == 0
    with session_factory(engine)() as session:
        assert session.get(SendRun, run_id).status in ("finished", "paused")
    again = daemon_factory(tmp_path / "digest.toml", free_port())
    again.wait_for("(waitress)")
    for _ in range(600):  # waits for the resume to finish (a condition, not a timing)
        with session_factory(engine)() as session:
            if session.get(SendRun, run_id).status == "finished":
                break
        time.sleep(0.05)
    assert again.stop() == 0
    sent = digests_sent(config)
    assert len(sent) == len(READERS) and len(set(sent)) == len(sent)  # everyone once, nobody twice
    with session_factory(engine)() as session:
        run = session.get(SendRun, run_id)
        firings = [(f.kind, f.outcome) for f in session.scalars(select(Firing).order_by(Firing.id))]
    assert run.status == "finished"
    assert firings[0] == ("manual", "interrupted") and firings[-1][1] == "sent"
    engine.dispose()


def _dead_owner() -> str:
    import socket

    # pid_max on Linux is at most 2**22: this pid cannot exist.
    return f"{socket.gethostname()}:{2**22 + 1}"


def test_digest_run_refuses_a_port_in_use_without_firing(tmp_path: Path) -> None:
    import socket

    make_site(tmp_path)[1].dispose()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "digest.cli",
                "-c",
                str(tmp_path / "digest.toml"),
                "run",
                "--port",
                str(port),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "DIGEST_SECRET_KEY": "Xr5Kq2Vw8Ln3Tz7Bc1Hm6Jd4Fg9Ps0YaQe7Wn2Rb5Mk-t3"},
            timeout=STARTUP_SECONDS,
        )
    assert result.returncode != 0
    assert "address already in use" in (result.stderr + result.stdout).lower()


def test_two_digest_run_processes_on_one_database_send_once(tmp_path: Path, daemon_factory) -> None:  # noqa: ANN001
    """Both processes share the job store and may both fire the due job; one sends.

    (Whether the second one fires at all depends on timing; test_schedule's barrier test makes
    both fire for certain. Here the property is checked with real processes.)"""
    from digest.schedule import JOB_PREFIX, ScheduleService

    config, engine = make_site(tmp_path)
    with ScheduleService(config, engine) as service:
        service.add("friday", weekly="fri 09:00")
        service.scheduler.modify_job(JOB_PREFIX + "friday", next_run_time=datetime.now(UTC))
    daemons = [daemon_factory(tmp_path / "digest.toml", free_port()) for _ in range(2)]
    for daemon in daemons:
        daemon.wait_for("(waitress)")
    sessions = session_factory(engine)
    deadline = datetime.now(UTC) + timedelta(seconds=STARTUP_SECONDS)
    while True:  # wait for the firing to be recorded as done (a readiness wait, nothing timed)
        with sessions() as session:
            done = session.scalars(
                select(Firing).where(Firing.kind == "send", Firing.finished_at.is_not(None))
            ).all()
        if done or datetime.now(UTC) > deadline:
            break
        threading.Event().wait(0.2)
    assert all(daemon.stop() == 0 for daemon in daemons)
    assert [(f.schedule_name, f.outcome) for f in done] == [("friday", "sent")]
    assert len(digests_sent(config)) == len(READERS)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(SendRun)) == 1
    engine.dispose()
