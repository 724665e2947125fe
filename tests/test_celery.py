"""Celery mode against the real brokers and PostgreSQL on this machine.

Two `digest worker` processes share a 5,000-reader run; one is killed with SIGKILL while it
sends, a third joins. Every reader ends with exactly one accepted message at the SMTP sink,
except rows recorded as unknown, and those reached the sink at most once.
"""

from __future__ import annotations

import subprocess
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from celery_helpers import BROKERS, CountingSink, Site, answers, drop_site, make_site
from sqlalchemy import func, select

from digest.config import config_from_dict
from digest.errors import ConfigError
from digest.models import DeliveryStatus
from digest.send import Delivery, SendRun

pytest.importorskip("celery", reason="Celery is not installed (pip install 'digest[celery]')")

READERS = 5000
KILL_AT = 1500  # messages at the sink when the first worker is killed
RUN_TIMEOUT = 240  # seconds the coordinator may take before the test gives up on it


def _needs(broker: str) -> str:
    url, address = BROKERS[broker]
    if not answers(("127.0.0.1", 5432)):
        pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432")
    if not answers(address):
        pytest.skip(f"{broker} does not answer on {address[0]}:{address[1]}")
    return url


@pytest.fixture
def sink() -> Iterator[CountingSink]:
    s = CountingSink()
    s.start()
    yield s
    s.stop()


@pytest.mark.postgres
@pytest.mark.parametrize("broker", ["rabbitmq", "redis"])
def test_killed_worker_sends_nobody_twice(broker: str, tmp_path, sink: CountingSink) -> None:
    url = _needs(broker)
    site = make_site(tmp_path, broker_url=url, sink=sink, subscribers=READERS)
    killed = threading.Event()

    def kill_first(total: int) -> None:
        if total >= KILL_AT and not killed.is_set():
            killed.set()
            site.kill("w1")  # from the sink's thread: w1 is mid-batch, mid-conversation perhaps

    sink.on_message = kill_first
    try:
        site.start_worker("w1")
        site.start_worker("w2")
        # The third worker starts once the first is dead.
        coordinator = _send_with_third_worker(site, killed)
        output = coordinator.stdout + coordinator.stderr
        assert coordinator.returncode in (0, 3), output + site.logs()
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
        site.start_worker("w3")
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
    # Only the killed worker's claim can be unknown, and a claim is at most [celery] claim_rows.
    assert by_status["unknown"] <= 20, by_status
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
