"""What the workers of a distributed run share, against the real PostgreSQL: the ledger's
outcomes across a pause, the run's hourly limit, a provider's "wait".

The broker is not under test here (tests/test_celery.py runs real Celery workers): the
coordinator's enqueue is replaced by a list, and each test runs `WorkerContext.send_rows`, the
body of the Celery task, itself, with its clock injected.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from celery_helpers import (
    CountingSink,
    Site,
    answers,
    drop_site,
    make_site,
)
from sqlalchemy import func, select

from digest.cli import main
from digest.config import load_config
from digest.db import session_factory
from digest.models import DeliveryStatus
from digest.send import Delivery, SendRun

pytestmark = pytest.mark.postgres

UNUSED_BROKER = "redis://127.0.0.1:6379/0"  # never contacted: enqueue is replaced below


class WorkerClock:
    """A worker's injected time: sleeping moves it on at once, and the test sees each sleep."""

    def __init__(self, on_sleep: Callable[[], None] | None = None) -> None:
        self.offset = 0.0
        self.sleeps: list[float] = []
        self.slept = threading.Event()
        self.on_sleep = on_sleep

    def now(self) -> datetime:
        return datetime.now(UTC) + timedelta(seconds=self.offset)

    def monotonic(self) -> float:
        return self.offset

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.offset += seconds
        self.slept.set()
        if self.on_sleep is not None:
            self.on_sleep()
        threading.Event().wait(0.005)  # yield to the other threads, not a timing device


@pytest.fixture
def site_for(tmp_path, sink, monkeypatch) -> Iterator:
    if not answers(("127.0.0.1", 5432)):
        pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432")
    made: list[Site] = []

    def make(subscribers: int, transport: str = "", smtp: str = "", max_errors: int = 1000) -> Site:
        site = make_site(
            tmp_path,
            broker_url=UNUSED_BROKER,
            sink=sink,
            subscribers=subscribers,
            transport=transport,
            smtp=smtp,
            max_errors=max_errors,
        )
        made.append(site)
        return site

    monkeypatch.setenv("DIGEST_SECRET_KEY", "Xr5Kq2Vw8Ln3Tz7Bc1Hm6Jd4Fg9Ps0YaQe7Wn2Rb5Mk-t3")
    yield make
    for site in made:
        drop_site(site)


def dispatch(site: Site, monkeypatch) -> tuple[str, list[tuple[int, int]]]:
    """`digest send --detach` as the coordinator runs it, the tasks kept in a list."""
    import digest.celery_app

    tasks: list[tuple[int, int]] = []
    monkeypatch.setattr(
        digest.celery_app, "enqueuer", lambda config: lambda run_id, ranges: tasks.extend(ranges)
    )
    assert main(["-c", str(site.config_path), "send", "--detach"]) == 0
    with site.engine.connect() as conn:
        run_id = conn.scalar(select(SendRun.id))
    return run_id, tasks


def a_worker(site: Site, clock: WorkerClock | None = None, *, app_name: str = ""):  # noqa: ANN201
    """A worker's context as `digest worker` builds it; `app_name` labels its database sessions."""
    from dataclasses import replace

    from digest.pipeline import worker_context

    config = load_config(site.config_path)
    if app_name:
        config = replace(
            config, database=replace(config.database, url=f"{site.url}&application_name={app_name}")
        )
    context = worker_context(config)
    context.clock = clock or WorkerClock()
    return context


def counts(site: Site, run_id: str) -> dict[str, int]:
    with site.engine.connect() as conn:
        rows = conn.execute(
            select(Delivery.status, func.count()).where(Delivery.run_id == run_id).group_by(Delivery.status)
        ).all()
    return {DeliveryStatus(s).value: n for s, n in rows}


def leave_claims_of(site: Site, worker: str, first: int) -> None:
    """Rows as a worker leaves them mid-batch: `first`..+19 handed over, the next 20 claimed only."""
    from sqlalchemy import update

    now = datetime.now(UTC)
    with site.engine.begin() as conn:
        for ids, handed in (((first, first + 19), now), ((first + 20, first + 39), None)):
            conn.execute(
                update(Delivery)
                .where(Delivery.id.between(*ids))
                .values(
                    status=DeliveryStatus.SENDING, claim_owner=worker, claimed_at=now, handed_over_at=handed
                )
            )


def pause(site: Site, run_id: str) -> None:
    from digest.distributed import pause_run

    with session_factory(site.engine)() as session:
        pause_run(session, run_id, "paused by staff (digest runs pause)")


def test_a_pause_keeps_every_outcome_recorded_before_it(site_for, sink: CountingSink, monkeypatch) -> None:
    """Outcomes are committed with the next claim; a pause seen there must not roll them back.

    It did: the batches answered just before the pause stayed `sending` though the sink had
    them, and the run could never be closed (the worker looked alive, so nobody settled them).
    One connection, claims of 20: the pause commits while the sink takes the first claim's last
    message, so the worker records that claim's outcomes and then, at its next claim, sees the
    pause.
    """
    site = site_for(300, smtp="connections = 1")
    run_id, tasks = dispatch(site, monkeypatch)
    assert len(tasks) == 2  # [celery] task_rows = 250
    sink.on_message = lambda total: pause(site, run_id) if total == 20 else None
    a_worker(site).send_rows(run_id, *tasks[0])
    sink.on_message = None
    left = counts(site, run_id)
    assert "sending" not in left, left
    assert left["sent"] == sink.total >= 20
    assert left["sent"] + left["pending"] == 300
    with site.engine.connect() as conn:
        assert conn.scalar(select(SendRun.status).where(SendRun.id == run_id)) == "paused"


def test_the_hourly_limit_holds_for_all_workers_together(site_for, sink: CountingSink, monkeypatch) -> None:
    """[transport] max_per_hour = 50 with two workers: 50 messages in all, not 50 each.

    Both workers wait on the run's one bucket in run_dispatch; the pause that ends the test is
    seen within a second of their (injected) waiting, not when the next token comes (72 s).
    """
    site = site_for(300, transport="max_per_hour = 50")
    run_id, tasks = dispatch(site, monkeypatch)
    clocks = [WorkerClock(), WorkerClock()]
    workers = [
        threading.Thread(target=a_worker(site, clock).send_rows, args=(run_id, *task))
        for clock, task in zip(clocks, tasks, strict=True)
    ]
    for w in workers:
        w.start()
    for clock in clocks:
        assert clock.slept.wait(timeout=60), "a worker never waited on the limit"
    waited_before_pause = [c.offset for c in clocks]
    pause(site, run_id)
    for w in workers:
        w.join(timeout=60)
        assert not w.is_alive()
    left = counts(site, run_id)
    # One more token may have come in the real seconds the test took (one per 72 s).
    assert 50 <= left["sent"] <= 51, left
    assert sink.total == left["sent"] and "sending" not in left
    for clock, before in zip(clocks, waited_before_pause, strict=True):
        assert clock.offset - before <= 2.0, clock.sleeps[-5:]


def test_a_providers_wait_holds_every_worker(site_for, sink: CountingSink, monkeypatch) -> None:
    """A rate-limit refusal seen by one worker is kept in run_dispatch: another worker, asking
    for its share of the run's limits, is told to wait too, and nothing is handed over."""
    from digest.distributed import take_tokens

    site = site_for(100)
    run_id, tasks = dispatch(site, monkeypatch)
    sink.refuse_with = "421 4.7.0 Too many messages, rate limited; try again later"
    other_grant: list = []

    def when_held() -> None:
        # On the first worker's wait: the other worker's share of the limits.
        if not other_grant:
            with session_factory(site.engine)() as other:
                other_grant.append(take_tokens(other, run_id, 20))
            pause(site, run_id)

    a_worker(site, WorkerClock(on_sleep=when_held)).send_rows(run_id, *tasks[0])
    grant = other_grant[0]
    assert grant.granted == 0 and grant.wait > 1.0, grant
    left = counts(site, run_id)
    assert sink.total == 0 and sink.refused >= 1
    assert left == {"pending": 100}, left  # deferred, due again later: no attempt wasted


def test_a_dead_workers_rows_unknown_only_if_handed_over(site_for, sink: CountingSink, monkeypatch) -> None:
    """What a worker killed mid-batch leaves (set here in the ledger as it leaves it; the real
    kill is in test_celery.py): rows marked as handed over become unknown and are not sent
    again; rows it had claimed but not yet handed over go back and are sent by the next task."""

    site = site_for(300)
    run_id, tasks = dispatch(site, monkeypatch)
    first, last = tasks[0]
    leave_claims_of(site, "worker:mail-9:4242:0badf00d", first)  # never heard from: dead
    with site.engine.connect() as conn:
        handed_emails = set(
            conn.scalars(select(Delivery.email).where(Delivery.id.between(first, first + 19)))
        )
    a_worker(site).send_rows(run_id, first, last)
    left = counts(site, run_id)
    assert left == {"unknown": 20, "sent": 230, "pending": 50}, left  # the second task's 50 wait
    assert sink.total == 230 and not handed_emails & set(sink.per_recipient)
    assert set(sink.per_recipient.values()) == {1}


def test_a_dead_workers_answers_are_kept_and_its_unknowns_are_no_relay_errors(
    site_for, sink: CountingSink, monkeypatch
) -> None:
    """What a worker killed mid-batch leaves in the ledger since hand-overs are marked one by
    one (digest.send.LedgerMarks): 19 messages handed over and answered, the 20th handed over
    with no answer yet, 20 more claimed only. The answered keep their answer (not sent again),
    only the 20th is unknown, and that does not count toward max_errors (0 here): the run goes
    on and finishes instead of pausing for every worker."""
    from sqlalchemy import update

    from digest.distributed import RunDispatch

    site = site_for(300, max_errors=0)
    run_id, tasks = dispatch(site, monkeypatch)
    first, last = tasks[0]
    now = datetime.now(UTC)
    with site.engine.begin() as conn:
        claimed = Delivery.id.between(first, first + 39)
        conn.execute(
            update(Delivery)
            .where(claimed)
            .values(status=DeliveryStatus.SENDING, claim_owner="worker:mail-9:4242:0badf00d", claimed_at=now)
        )
        conn.execute(
            update(Delivery).where(Delivery.id.between(first, first + 19)).values(handed_over_at=now)
        )
        conn.execute(
            update(Delivery).where(Delivery.id.between(first, first + 18)).values(handover_answer="s")
        )
        answered = set(conn.scalars(select(Delivery.email).where(Delivery.id.between(first, first + 19))))
    a_worker(site).send_rows(run_id, first, last)
    for second_first, second_last in tasks[1:]:
        a_worker(site).send_rows(run_id, second_first, second_last)
    assert counts(site, run_id) == {"sent": 299, "unknown": 1}
    assert sink.total == 280 and not answered & set(sink.per_recipient)
    with site.engine.connect() as conn:
        assert conn.scalar(select(SendRun.status).where(SendRun.id == run_id)) == "finished"
        assert conn.scalar(select(RunDispatch.failures).where(RunDispatch.run_id == run_id)) == 0
        detail = conn.scalar(select(Delivery.detail).where(Delivery.id == first + 19))
    assert "died" in detail and "digest resume RUN --include unknown" in detail


def test_a_worker_that_dies_mid_task_is_settled_and_its_rows_sent_by_the_same_task(
    site_for, sink: CountingSink, monkeypatch
) -> None:
    """The other worker is alive when the task starts and stops beating meanwhile: the task
    sends the rest of its range, waits out the lease, settles, and sends the given-back rows
    in a second pass, counting each message once in its run_workers row."""

    from digest.distributed import RunWorker, register_worker

    site = site_for(300)
    run_id, tasks = dispatch(site, monkeypatch)
    first, last = tasks[0]
    other = "worker:mail-9:4242:0badf00d"
    with session_factory(site.engine)() as db:
        register_worker(db, run_id, other)  # heard from just now: alive, for [celery] lease 5 s
    leave_claims_of(site, other, first)

    def other_beats_once_more() -> None:
        # The other is heard from when this worker starts waiting for it (however long the
        # sending took in real time), then never again: its lease runs out on this clock.
        if len(clock.sleeps) == 1:
            with session_factory(site.engine)() as db:
                register_worker(db, run_id, other)

    clock = WorkerClock(on_sleep=other_beats_once_more)
    worker = a_worker(site, clock)  # its clock moves on as it waits: the other's lease runs out
    worker.send_rows(run_id, first, last)
    assert counts(site, run_id) == {"unknown": 20, "sent": 230, "pending": 50}
    assert sink.total == 230 and set(sink.per_recipient.values()) == {1}
    assert worker.clock.offset >= 5.0  # it did wait out the lease
    with site.engine.connect() as conn:
        mine = conn.scalar(
            select(RunWorker.sent).where(RunWorker.run_id == run_id, RunWorker.worker == worker.worker)
        )
    assert mine == 230


def test_a_worker_the_database_drops_goes_on_as_a_new_worker(
    site_for, sink: CountingSink, monkeypatch
) -> None:
    """The database ends every session of the worker mid-send (a restart, a failover): the task
    starts again as a new worker, settles what the old one held once its lease lapses, and
    every row of the range ends sent or unknown, none sent twice."""
    from sqlalchemy import text

    site = site_for(300, smtp="connections = 1")
    run_id, tasks = dispatch(site, monkeypatch)
    first, last = tasks[0]

    def drop_the_worker(total: int) -> None:
        if total == 40:  # while the sink holds this message
            with site.engine.begin() as conn:
                dropped = conn.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'digest-dropped-worker'"
                    )
                ).all()
            assert dropped

    sink.on_message = drop_the_worker
    a_worker(site, app_name="digest-dropped-worker").send_rows(run_id, first, last)
    sink.on_message = None
    _check_the_range_after_a_drop(site, run_id, sink)


def test_a_worker_dropped_mid_transaction_starts_again_as_a_new_worker(
    site_for, sink: CountingSink, monkeypatch
) -> None:
    """The same, with the drop at a known point: the worker's session is ended right after it
    wrote a batch's outcomes, before they were committed. Those are lost with the session, so
    the task starts again as a new worker; the old one's rows (that batch, and those handed over
    before it noticed) become unknown once its lease lapses, the rest are sent."""
    from sqlalchemy import event, text

    site = site_for(300, smtp="connections = 1")
    run_id, tasks = dispatch(site, monkeypatch)
    worker = a_worker(site)
    old_identity = worker.worker
    dropped: list[int] = []

    @event.listens_for(worker.engine, "after_cursor_execute")
    def drop_once(conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if executemany and statement.startswith("UPDATE deliveries SET status") and not dropped:
            dropped.append(conn.connection.dbapi_connection.info.backend_pid)
            with site.engine.begin() as admin:
                admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": dropped[0]})

    worker.send_rows(run_id, *tasks[0])
    assert dropped and worker.worker != old_identity  # it went on under a new identity
    _check_the_range_after_a_drop(site, run_id, sink)


def _check_the_range_after_a_drop(site: Site, run_id: str, sink: CountingSink) -> None:
    left = counts(site, run_id)
    assert left["pending"] == 50 and "sending" not in left, left  # the other task's rows wait
    assert left["sent"] + left.get("unknown", 0) == 250, left
    # At most the batches whose outcomes died with the session: the one just written, and the
    # two (one connection) handed over before the worker noticed. 20 rows each.
    assert left.get("unknown", 0) <= 60, left
    assert sink.total == left["sent"] + sum(
        sink.per_recipient[e] for e in _emails(site, run_id, "unknown")
    ), (left, sink.total)
    assert set(sink.per_recipient.values()) == {1}


def _emails(site: Site, run_id: str, status: str) -> list[str]:
    with site.engine.connect() as conn:
        return list(
            conn.scalars(select(Delivery.email).where(Delivery.run_id == run_id, Delivery.status == status))
        )
