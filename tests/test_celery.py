"""Celery mode against the real brokers and PostgreSQL on this machine.

Two `digest worker` processes share a 5,000-reader run; one is killed with SIGKILL while it
sends, a third joins. Every reader ends with exactly one accepted message at the SMTP sink,
except rows recorded as unknown, and those reached the sink at most once.
"""

from __future__ import annotations

import subprocess
import threading
from collections import Counter

import pytest
from celery_helpers import (
    BROKERS,
    CountingSink,
    Site,
    answers,
    drop_site,
    make_site,
)
from sqlalchemy import func, select

from digest.config import config_from_dict
from digest.errors import ConfigError
from digest.models import DeliveryStatus
from digest.send import Delivery, SendRun

pytest.importorskip("celery", reason="Celery is not installed (pip install 'digest[celery]')")

READERS = 2500
# Messages at the sink when the first worker is killed: at once (it has claimed rows but
# handed over few or none), mid-run (mid-batch, most likely), and late (between batches of its
# last tasks, likely).
KILL_POINTS = (1, 750, 1750)
# Each hand-over and its answer are marked in the ledger message by message, so a dead
# worker (one process, 4 SMTP connections) leaves at most one row per connection unknown.
UNKNOWN_PER_DEAD_WORKER = 4
# Rows one worker can hold `sending`: two hand-overs per SMTP connection (4) of [celery]
# handover_rows (20), and one claim of [celery] claim_rows (100) queued behind them.
IN_FLIGHT = 2 * 4 * 20 + 100
RUN_TIMEOUT = 240  # seconds the coordinator may take before the test gives up on it


def _needs(broker: str) -> str:
    url, address = BROKERS[broker]
    if not answers(("127.0.0.1", 5432)):
        pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432")
    if not answers(address):
        pytest.skip(f"{broker} does not answer on {address[0]}:{address[1]}")
    return url


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("broker", "kill_at"),
    [("rabbitmq", at) for at in KILL_POINTS] + [("redis", 750)],
)
def test_killed_worker_sends_nobody_twice(broker: str, kill_at: int, tmp_path, sink: CountingSink) -> None:
    url = _needs(broker)
    # max_errors = 0: the dead worker's unknown rows are no relay errors, so the run must not pause.
    site = make_site(tmp_path, broker_url=url, sink=sink, subscribers=READERS, max_errors=0)
    killed = threading.Event()

    def kill_first(total: int) -> None:
        if total >= kill_at and not killed.is_set():
            killed.set()
            site.kill("w1")  # from the sink's thread: w1 is mid-batch, mid-conversation perhaps

    sink.on_message = kill_first
    try:
        site.start_worker("w1")
        site.start_worker("w2")
        # The third worker (two processes) starts once the first is dead.
        coordinator = _send_with_third_worker(site, killed)
        output = coordinator.stdout + coordinator.stderr
        assert coordinator.returncode in (0, 3), output + site.logs()
        assert "paused" not in coordinator.stdout, output
        assert site.workers["w1"].wait(timeout=10) != 0  # it was killed, not finished
        _check_exactly_once(site, sink, output)
    finally:
        sink.on_message = None
        site.stop_workers()
        drop_site(site)


def _send_with_third_worker(site: Site, killed: threading.Event) -> subprocess.CompletedProcess[str]:
    proc = subprocess.Popen(
        site.command("send"),
        env=site.env(),
        cwd=site.folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: dict[str, str] = {}

    def read() -> None:
        out["stdout"], out["stderr"] = proc.communicate(timeout=RUN_TIMEOUT)

    reader = threading.Thread(target=read)
    reader.start()
    if killed.wait(timeout=RUN_TIMEOUT):
        # Two tasks at once in one worker (Celery's prefork pool): each child process its own
        # connections and claims.
        site.start_worker("w3", "--concurrency", "2")
    reader.join()
    return subprocess.CompletedProcess(
        proc.args, proc.returncode, out.get("stdout", ""), out.get("stderr", "")
    )


def _check_exactly_once(site: Site, sink: CountingSink, output: str) -> None:
    from digest.distributed import RunVariantRow, RunWorker

    with site.engine.connect() as conn:
        (run_id, status) = conn.execute(select(SendRun.id, SendRun.status)).one()
        rows = conn.execute(select(Delivery.email, Delivery.status).where(Delivery.run_id == run_id)).all()
        workers = conn.execute(
            select(RunWorker.worker, RunWorker.sent).where(RunWorker.run_id == run_id)
        ).all()
        variants = conn.scalar(select(func.count()).select_from(RunVariantRow))
    assert status == "finished", output
    assert len(rows) == READERS
    by_status = Counter(DeliveryStatus(s).value for _e, s in rows)
    assert set(by_status) <= {"sent", "unknown"}, by_status
    for email, status_value in rows:
        got = sink.per_recipient[email]
        if DeliveryStatus(status_value) is DeliveryStatus.SENT:
            assert got == 1, (email, got)
        else:
            assert got <= 1, (email, got)  # unknown: handed over at most once, never re-sent
    assert set(sink.per_recipient) <= {e for e, _s in rows}  # nobody outside the run
    # Only the message each connection of the killed worker was handing over can be unknown;
    # what it had answered kept its answer, what it had not handed over was sent by another.
    assert by_status["unknown"] <= UNKNOWN_PER_DEAD_WORKER, by_status
    # Per-worker counts are added every second: a killed worker's last second is missing there
    # (the ledger is what counts), the live workers' counts are all in.
    assert by_status["sent"] - 1000 < sum(n for _w, n in workers) <= by_status["sent"]
    assert len(workers) >= 2  # the run was shared
    assert variants == 1  # rendered once for the run, not per worker or batch


def test_celery_mode_refuses_sqlite() -> None:
    with pytest.raises(ConfigError, match=r"\[database\] url.*PostgreSQL"):
        config_from_dict(
            {
                "send": {"workers": "celery"},
                "celery": {"broker_url": "redis://127.0.0.1:6379/0"},
                "database": {"url": "sqlite:///digest.db"},
            }
        )


def test_celery_mode_needs_a_broker(monkeypatch) -> None:
    monkeypatch.delenv("DIGEST_CELERY_BROKER_URL", raising=False)
    with pytest.raises(ConfigError, match=r"\[celery\] broker_url"):
        config_from_dict(
            {"send": {"workers": "celery"}, "database": {"url": "postgresql+psycopg://u@127.0.0.1/db"}}
        )


def test_broker_url_must_be_amqp_or_redis() -> None:
    with pytest.raises(ConfigError, match=r"\[celery\] broker_url"):
        config_from_dict({"celery": {"broker_url": "http://127.0.0.1:5672"}})


@pytest.mark.postgres
def test_pause_stops_every_worker_and_resume_finishes(tmp_path, sink: CountingSink) -> None:
    url = _needs("rabbitmq")
    site = make_site(tmp_path, broker_url=url, sink=sink, subscribers=1200)
    paused = threading.Event()

    def pause_from_the_cli(total: int) -> None:
        # `digest runs pause` runs while the sink holds the 300th message: every connection
        # waits meanwhile, so the run cannot finish before the pause (it did, now and then).
        if total == 300:
            _pause_run(site)
            paused.set()

    sink.on_message = pause_from_the_cli
    try:
        site.start_worker("w1")
        site.start_worker("w2")
        detached = subprocess.run(
            site.command("send", "--detach"), env=site.env(), cwd=tmp_path, capture_output=True, text=True
        )
        assert detached.returncode == 0, detached.stdout + detached.stderr
        assert "digest runs pause" in detached.stdout
        run_id = _only_run(site)
        assert paused.wait(timeout=RUN_TIMEOUT), site.logs()  # `digest runs pause` committed it
        # The coordinator is gone (detached): the workers alone must notice and stop.
        _wait_until(lambda: _count(site, run_id, "sending") == 0 and _tasks_idle(site), site)
        with site.engine.connect() as conn:
            status = conn.scalar(select(SendRun.status).where(SendRun.id == run_id))
        assert status == "paused"
        sent, pending = _count(site, run_id, "sent"), _count(site, run_id, "pending")
        assert pending > 0 and sent + pending == 1200
        assert sink.total == sent  # stopped at a row boundary: nothing handed over unrecorded
        sink.on_message = None
        resumed = subprocess.run(
            site.command("resume", run_id), env=site.env(), cwd=tmp_path, capture_output=True, text=True
        )
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr + site.logs()
        assert _count(site, run_id, "sent") == 1200
        assert sink.total == 1200 and set(sink.per_recipient.values()) == {1}
        shown = subprocess.run(
            site.command("runs", "show", run_id), env=site.env(), cwd=tmp_path, capture_output=True, text=True
        )
        assert "Workers (celery mode)" in shown.stdout
    finally:
        sink.on_message = None
        site.stop_workers()
        drop_site(site)


def _send(site: Site) -> subprocess.CompletedProcess[str]:
    """`digest send` as staff run it, waiting for the run (bounded by RUN_TIMEOUT)."""
    return subprocess.run(
        site.command("send"),
        env=site.env(),
        cwd=site.folder,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def _pause_run(site: Site) -> None:
    subprocess.run(
        site.command("runs", "pause", _only_run(site)), env=site.env(), cwd=site.folder, check=True
    )


def _only_run(site: Site) -> str:
    with site.engine.connect() as conn:
        return conn.scalar(select(SendRun.id))


def _count(site: Site, run_id: str, status: str) -> int:
    with site.engine.connect() as conn:
        return conn.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.run_id == run_id, Delivery.status == status)
        )


def _tasks_idle(site: Site) -> bool:
    """Every worker's log says its last task ended (succeeded) after it was received."""
    for path in site.folder.glob("w*.log"):
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if "digest.send_rows[" in ln]
        if lines and "received" in lines[-1]:
            return False
    return True


def _wait_until(condition, site: Site, limit: float = RUN_TIMEOUT) -> None:  # noqa: ANN001
    """Polls a condition on other processes (not a timing assertion): fails after `limit` s."""
    import time

    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, site.logs()
        time.sleep(0.2)


def test_workers_flag_on_sqlite_is_refused_before_any_run(tmp_path, monkeypatch) -> None:
    """`digest send --workers celery` on a SQLite ledger: a ConfigError, and no run is frozen."""
    from digest.cli import main
    from digest.db import make_engine, migrate, session_factory
    from digest.send import list_runs

    config = tmp_path / "digest.toml"
    config.write_text(
        '[database]\nurl = "sqlite:///d.db"\n[celery]\nbroker_url = "redis://127.0.0.1:6379/0"\n'
    )
    assert main(["-c", str(config), "send", "--workers", "celery"]) == 2
    engine = make_engine(f"sqlite:///{tmp_path / 'd.db'}")
    migrate(engine)
    with session_factory(engine)() as s:
        assert list_runs(s) == []
    engine.dispose()


@pytest.mark.postgres
def test_error_threshold_pauses_the_run_for_every_worker(tmp_path, sink: CountingSink) -> None:
    """[transport] max_errors counts the failures of all workers together, in the database."""
    url = _needs("rabbitmq")
    sink.refuse_with = "550 5.1.1 no such user"
    site = make_site(tmp_path, broker_url=url, sink=sink, subscribers=1000, extra="", max_errors=30)
    try:
        site.start_worker("w1")
        site.start_worker("w2")
        done = _send(site)
        assert done.returncode == 1, done.stdout + done.stderr + site.logs()  # paused
        run_id = _only_run(site)
        with site.engine.connect() as conn:
            status, reason = conn.execute(
                select(SendRun.status, SendRun.paused_reason).where(SendRun.id == run_id)
            ).one()
        assert status == "paused" and "over all workers" in reason, reason
        # The coordinator returns as the run pauses; the workers finish recording what they hold.
        _wait_until(lambda: _count(site, run_id, "sending") == 0 and _tasks_idle(site), site)
        failed = _count(site, run_id, "failed")
        # Past 30 failures no worker claims again; each finishes what it had claimed by then.
        assert 30 < failed <= 30 + 2 * IN_FLIGHT, failed
        assert _count(site, run_id, "pending") == 1000 - failed
        assert sink.total == 0 and sink.refused == failed
    finally:
        site.stop_workers()
        drop_site(site)


@pytest.mark.postgres
def test_a_scheduled_firing_hands_its_run_to_the_workers(tmp_path, sink: CountingSink) -> None:
    """The scheduler starts a distributed run as `digest send` does: workers send it, the
    firing waits for the run and records its outcome (here through `digest schedule run-now`,
    the same firing the weekly trigger makes)."""
    from digest.distributed import RunWorker

    url = _needs("redis")
    site = make_site(tmp_path, broker_url=url, sink=sink, subscribers=600)
    try:
        site.start_worker("w1")
        site.start_worker("w2")
        for args in (
            ("schedule", "add", "--weekly", "fri 09:00", "--name", "friday"),
            ("schedule", "run-now", "friday"),
        ):
            done = subprocess.run(
                site.command(*args),
                env=site.env(),
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=RUN_TIMEOUT,
            )
            assert done.returncode == 0, done.stdout + done.stderr + site.logs()
        assert done.stdout.startswith("sent: run "), done.stdout
        run_id = _only_run(site)
        assert _count(site, run_id, "sent") == 600
        assert sink.total == 600 and set(sink.per_recipient.values()) == {1}
        with site.engine.connect() as conn:
            assert conn.scalar(select(SendRun.status).where(SendRun.id == run_id)) == "finished"

        def workers_sent() -> int:
            with site.engine.connect() as conn:
                return conn.scalar(select(func.sum(RunWorker.sent)).where(RunWorker.run_id == run_id)) or 0

        # The workers sent it, not the scheduler's process (their counts land within a second).
        _wait_until(lambda: workers_sent() == 600, site)
        history = subprocess.run(
            site.command("schedule", "history", "friday"),
            env={**site.env(), "COLUMNS": "250"},  # the run id whole
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert run_id in history.stdout and "sent" in history.stdout, history.stdout
    finally:
        site.stop_workers()
        drop_site(site)


@pytest.mark.postgres
def test_abandon_stops_every_worker_and_skips_the_rest(tmp_path, sink: CountingSink) -> None:
    """`digest send --abandon` while two workers send: both stop at a row boundary, what they
    handed over is recorded, and every row not yet claimed is skipped, for good."""
    url = _needs("redis")
    site = make_site(tmp_path, broker_url=url, sink=sink, subscribers=1200)
    abandoned: list[subprocess.CompletedProcess[str]] = []

    def abandon_from_the_cli(total: int) -> None:
        if total == 300:  # while the sink holds this message, so the run cannot end first
            abandoned.append(
                subprocess.run(
                    site.command("send", "--abandon"),
                    env=site.env(),
                    cwd=site.folder,
                    capture_output=True,
                    text=True,
                )
            )

    sink.on_message = abandon_from_the_cli
    try:
        site.start_worker("w1")
        site.start_worker("w2")
        done = _send(site)
        assert abandoned and "abandoned;" in abandoned[0].stdout, abandoned
        run_id = _only_run(site)
        _wait_until(lambda: _count(site, run_id, "sending") == 0 and _tasks_idle(site), site)
        with site.engine.connect() as conn:
            status = conn.scalar(select(SendRun.status).where(SendRun.id == run_id))
        assert status == "abandoned", done.stdout + done.stderr
        sent, skipped = _count(site, run_id, "sent"), _count(site, run_id, "skipped")
        assert sent + skipped == 1200 and skipped > 0
        assert sink.total == sent and set(sink.per_recipient.values()) == {1}
    finally:
        sink.on_message = None
        site.stop_workers()
        drop_site(site)
