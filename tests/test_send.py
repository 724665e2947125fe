"""The delivery ledger and the send engine: frozen recipients, nobody twice, nobody skipped,
retries that hold nobody up, rate limits, stops that record what was in flight."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker

from digest.db import session_factory
from digest.errors import PermanentError, RunBusyError, TemporaryError, UnknownOutcomeError
from digest.models import DeliveryStatus, Recipient
from digest.send import (
    Courier,
    Delivery,
    HandoverJournal,
    Prepared,
    RateLimits,
    RetryPolicy,
    RunReport,
    SendRun,
    abandon,
    open_run,
    reopen,
    run_totals,
    start_run,
)
from digest.transports.base import Outbound, Outcome, Result, SingleMessageTransport, Transport
from digest.transports.smtp import SmtpTransport
from subscribers import store

# Fixture db_engine: each test runs on SQLite, then on PostgreSQL when 127.0.0.1:5432 answers.
pytest_plugins = ("subscriber_fixtures",)

NO_WAIT = RetryPolicy(attempts=3, backoff=0.0)


class Crash(BaseException):
    """Stands for the process dying mid-run (not an Exception: nothing may swallow it)."""


class FakeClock:
    """Injected time: sleeping moves the clock on at once, and the test sees every sleep."""

    def __init__(self) -> None:
        # Started at the real now, so rows frozen a moment earlier (start_run's default time) are
        # already due, and times the test builds are relative to it: never a fixed calendar day.
        self.start = datetime.now(UTC)
        self.offset = 0.0
        self.sleeps: list[float] = []
        self.lock = threading.Lock()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.offset)

    def monotonic(self) -> float:
        return self.offset

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)
            self.offset += seconds


class ScriptedTransport(SingleMessageTransport):
    """Accepts messages, except where a script says to fail for an address."""

    name = "scripted"

    def __init__(
        self,
        script: dict[str, list[BaseException]] | None = None,
        crash_after: int | None = None,
        *,
        max_batch: int = 1,
        concurrency: int = 1,
    ) -> None:
        self.script = script or {}
        self.crash_after = crash_after
        self.max_batch = max_batch
        self.concurrency = concurrency
        self.delivered: list[str] = []
        self.keys: list[str] = []
        self.lock = threading.Lock()

    def deliver(self, envelope: Outbound) -> str:
        with self.lock:
            if self.crash_after is not None and len(self.delivered) >= self.crash_after:
                raise Crash()
            failures = self.script.get(envelope.recipient)
            if failures:
                raise failures.pop(0)
            self.delivered.append(envelope.recipient)
            self.keys.append(envelope.key)
        return "250 OK"


class BatchTransport(Transport):
    """A provider-like transport: whole batches, answers given per message."""

    name = "batchy"
    max_batch = 3

    def __init__(self, answers: dict[str, Outcome | None]) -> None:
        self.answers = answers  # address -> outcome (None: the provider says nothing of it)
        self.batches: list[list[str]] = []

    def send_batch(self, batch: Sequence[Outbound]) -> list[Outcome]:
        self.batches.append([o.recipient for o in batch])
        out = []
        for o in batch:
            answer = self.answers.get(o.recipient, Outcome("", Result.SENT, "ok", provider_id="p-1"))
            if answer is not None:
                out.append(
                    Outcome(o.key, answer.result, answer.detail, answer.provider_id, answer.retry_after)
                )
        return out


@pytest.fixture
def sessions(db_engine: Engine) -> sessionmaker:
    """The ledger on a migrated database: SQLite, and PostgreSQL where it answers."""
    return session_factory(db_engine)


def subscribe(sessions: sessionmaker, *emails: str) -> list[Recipient]:
    with sessions() as s:
        for e in emails:
            store.add_subscriber(s, e)
        s.commit()
        return store.active_recipients(s)


def prepare(recipient: Recipient, key: str) -> Prepared:
    data = f"To: {recipient.email}\r\nMessage-ID: <{key}@x.example>\r\n\r\nhi\r\n".encode()
    return Prepared(
        Outbound.from_bytes(data, key=key, envelope_sender="b@x.example", recipient=recipient.email)
    )


def nobody(_session: object, _ids: Sequence[int]) -> set[int]:
    return set()


def courier(transport: Transport, **kwargs: object) -> Courier:
    options: dict[str, object] = {
        "prepare": prepare,
        "unwanted": nobody,
        "retry": NO_WAIT,
        "clock": FakeClock(),
    }
    options.update(kwargs)
    return Courier(transport, **options)  # type: ignore[arg-type]


def run(sessions: sessionmaker, run_id: str, transport: Transport, **kwargs: object) -> RunReport:
    return courier(transport, **kwargs).run(sessions, run_id)


def statuses(sessions: sessionmaker, run_id: str) -> dict[str, DeliveryStatus]:
    with sessions() as s:
        return {d.email: d.status for d in s.scalars(select(Delivery).where(Delivery.run_id == run_id))}


def new_run(sessions: sessionmaker, *emails: str) -> str:
    recipients = subscribe(sessions, *emails)
    with sessions() as s:
        return start_run(s, recipients, issue="2026-12-04")


def test_addresses_are_deduplicated_case_insensitively(sessions: sessionmaker) -> None:
    recipients = [
        Recipient(1, "Ada@Example.org"),
        Recipient(2, "ada@example.org"),
        Recipient(3, "b@example.org"),
    ]
    with sessions() as s:
        run_id = start_run(s, iter(recipients), issue="2026-11-25")  # a generator is enough
    t = ScriptedTransport()
    report = run(sessions, run_id, t)
    assert t.delivered == ["Ada@Example.org", "b@example.org"]
    assert report.sent == 2 and not report.paused


def test_a_crash_mid_batch_makes_only_the_handed_over_message_unknown(
    sessions: sessionmaker, tmp_path: Path
) -> None:
    """A batch of 10 is claimed at once; the process dies inside the 5th hand-over. The journal
    says which rows reached the transport and what it answered: 4 sent, 1 unknown, and the
    other 5 still go out on the resume."""
    run_id = new_run(sessions, *(f"r{i}@example.org" for i in range(10)))
    first = ScriptedTransport(crash_after=4, max_batch=10)
    with pytest.raises(Crash):
        run(sessions, run_id, first, journal_dir=tmp_path)
    assert Counter(statuses(sessions, run_id).values()) == {DeliveryStatus.SENDING: 10}
    second = ScriptedTransport(max_batch=10)
    report = run(sessions, run_id, second, journal_dir=tmp_path)
    # The 5th may have reached the server: it is reported as unknown, not sent again.
    assert report.counts == {"sent": 5, "unknown": 1} and not report.paused
    assert report.totals == {"sent": 9, "unknown": 1}
    assert any("may have been delivered" in e for e in report.errors)
    assert not set(first.delivered) & set(second.delivered)
    assert len(first.delivered) + len(second.delivered) == 9
    assert list(tmp_path.glob("*.handover")) == []  # settled journals are removed
    with sessions() as s:
        assert s.get(SendRun, run_id).status == "finished"
    third = ScriptedTransport()
    with pytest.raises(RunBusyError, match="already finished"):
        run(sessions, run_id, third)
    assert third.delivered == []


def test_without_a_trusted_journal_every_claimed_row_is_unknown(
    sessions: sessionmaker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a reboot (another boot id) the journal may have lost its tail: trust none of it."""
    run_id = new_run(sessions, *(f"r{i}@example.org" for i in range(6)))
    with pytest.raises(Crash):
        run(sessions, run_id, ScriptedTransport(crash_after=2, max_batch=6), journal_dir=tmp_path)
    monkeypatch.setattr("digest.send.boot_id", lambda: "another-boot")
    second = ScriptedTransport(max_batch=6)
    report = run(sessions, run_id, second, journal_dir=tmp_path)
    if sessions.kw["bind"].dialect.name == "postgresql":
        # There the hand-overs are in the ledger (LedgerMarks), committed: no journal to lose.
        # The two answered keep their answer, the one being handed over is unknown, the rest go.
        assert second.delivered == [f"r{i}@example.org" for i in (3, 4, 5)]
        assert report.counts == {"unknown": 1, "sent": 3}
        return
    assert second.delivered == [] and report.counts == {"unknown": 6}


def test_a_journal_line_cut_short_by_a_kill_is_ignored(tmp_path: Path) -> None:
    """The journal is a memory map filled with zeros ahead: a line a kill cut short ("h 1" of
    "h 12") must not name row 1, and zeros inside it end what is read."""
    journal = HandoverJournal(tmp_path, "run1", "host:1:abc")
    journal.mark(7)
    end = journal._end
    journal._map[end : end + 3] = b"h 1"  # the kill came before "2\n"
    assert HandoverJournal.read(tmp_path, "run1")[0] == {7: None}
    journal._map[end : end + 5] = b"h 1\x002"  # bytes of the line landed out of order
    assert HandoverJournal.read(tmp_path, "run1")[0] == {7: None}
    journal._map[end : end + 5] = b"\0" * 5
    journal.mark(8)
    journal.close(remove=False)
    assert (tmp_path / "run1.host_1_abc.handover").read_bytes().endswith(b"h 8\n")  # no zeros kept
    assert HandoverJournal.read(tmp_path, "run1")[0] == {7: None, 8: None}


def test_journal_lines_are_what_the_transport_was_handed(tmp_path: Path) -> None:
    journal = HandoverJournal(tmp_path, "run1", "host:1:abc")
    journal.mark(7)
    journal.answer(7, Result.SENT)
    # The answer goes out with the next write: a crash now would leave row 7 unknown, only it.
    assert HandoverJournal.read(tmp_path, "run1")[0] == {7: None}
    journal.mark_many([8, 9])
    assert HandoverJournal.read(tmp_path, "run1")[0] == {7: Result.SENT, 8: None, 9: None}
    journal.answer(9, Result.DEFERRED)
    journal.close(remove=False)
    assert HandoverJournal.read(tmp_path, "run1")[0] == {7: Result.SENT, 8: None, 9: Result.DEFERRED}
    assert HandoverJournal.handed_over(tmp_path, "other") is None
    assert HandoverJournal.handed_over(None, "run1") is None


def test_temporary_errors_are_retried_later_while_the_others_go_on(sessions: sessionmaker) -> None:
    run_id = new_run(sessions, "a@example.org", "b@example.org", "c@example.org")
    t = ScriptedTransport({"a@example.org": [TemporaryError("421 busy"), TemporaryError("451 later")]})
    clock = FakeClock()
    report = run(sessions, run_id, t, retry=RetryPolicy(attempts=3, backoff=10.0), clock=clock)
    # a waited for its retries; b and c were not held up behind it.
    assert t.delivered == ["b@example.org", "c@example.org", "a@example.org"]
    assert report.sent == 3 and report.counts["deferred"] == 2
    assert 15.0 <= sum(clock.sleeps) <= 45.0  # 10 s then 20 s, each with jitter of +-50 %
    with sessions() as s:
        assert s.scalar(select(Delivery.attempts).where(Delivery.email == "a@example.org")) == 3


def test_retry_after_is_honoured(sessions: sessionmaker) -> None:
    run_id = new_run(sessions, "a@example.org")
    t = ScriptedTransport({"a@example.org": [TemporaryError("451", retry_after=120.0)]})
    clock = FakeClock()
    run(sessions, run_id, t, retry=RetryPolicy(attempts=3, backoff=1.0), clock=clock)
    assert t.delivered == ["a@example.org"] and sum(clock.sleeps) >= 120.0


def test_a_provider_rate_limit_holds_everyone_and_is_recorded(sessions: sessionmaker) -> None:
    run_id = new_run(sessions, "a@example.org", "b@example.org")
    limited = TemporaryError("429 too many", retry_after=30.0, rate_limited=True)
    t = ScriptedTransport({"a@example.org": [limited] * 5})  # more refusals than attempts
    clock = FakeClock()
    report = run(sessions, run_id, t, retry=RetryPolicy(attempts=2, backoff=1.0), clock=clock)
    # A rate limit uses up no attempt: a is sent in the end, not parked.
    assert sorted(t.delivered) == ["a@example.org", "b@example.org"] and not report.paused
    assert report.rate_limited == 5 and sum(clock.sleeps) >= 150.0
    with sessions() as s:
        notes = s.get(SendRun, run_id).notes_dict()
    assert notes["rate_limits"]["provider_refusals"] == 5


def test_messages_per_second_are_capped(sessions: sessionmaker) -> None:
    run_id = new_run(sessions, *(f"r{i}@example.org" for i in range(25)))
    clock = FakeClock()
    t = ScriptedTransport(max_batch=5)
    report = run(sessions, run_id, t, limits=RateLimits(per_second=5), clock=clock)
    assert report.sent == 25
    # 5 go at once, then 5 a second: 20 more take about 4 seconds of (fake) waiting.
    assert 3.5 <= sum(clock.sleeps) <= 5.0


def test_messages_per_hour_count_earlier_sends(sessions: sessionmaker) -> None:
    first = new_run(sessions, "a@example.org", "b@example.org")
    run(sessions, first, ScriptedTransport())
    with sessions() as s:
        second = start_run(s, store.active_recipients(s), issue="later")
    clock = FakeClock()  # started after the first run's sends: they are within the hour
    t = ScriptedTransport()
    report = run(sessions, second, t, limits=RateLimits(per_hour=3), clock=clock)
    # 2 of the hour's 3 were used: one goes now, the next waits for the bucket to refill.
    assert report.sent == 2 and sum(clock.sleeps) >= 1000.0


def test_exhausted_temporary_errors_leave_row_pending_and_pause(sessions: sessionmaker) -> None:
    run_id = new_run(sessions, "a@example.org", "b@example.org")
    t = ScriptedTransport({"a@example.org": [TemporaryError("451 later")] * 3})
    report = run(sessions, run_id, t)
    assert report.paused and t.delivered == ["b@example.org"]
    assert "1 deliveries still pending" in report.reason
    assert statuses(sessions, run_id)["a@example.org"] == DeliveryStatus.PENDING
    with sessions() as s:
        run_row = s.get(SendRun, run_id)
        assert run_row.status == "paused" and "pending" in run_row.paused_reason
    later = ScriptedTransport()
    assert not run(sessions, run_id, later).paused
    assert later.delivered == ["a@example.org"]


def test_permanent_and_unknown_outcomes_are_never_resent(sessions: sessionmaker) -> None:
    run_id = new_run(sessions, "gone@example.org", "maybe@example.org", "ok@example.org")
    t = ScriptedTransport(
        {
            "gone@example.org": [PermanentError("550 no such user")],
            "maybe@example.org": [UnknownOutcomeError("lost")],
        }
    )
    report = run(sessions, run_id, t)
    assert statuses(sessions, run_id) == {
        "gone@example.org": DeliveryStatus.FAILED,
        "maybe@example.org": DeliveryStatus.UNKNOWN,
        "ok@example.org": DeliveryStatus.SENT,
    }
    assert report.totals == {"sent": 1, "failed": 1, "unknown": 1}
    again = ScriptedTransport()
    with pytest.raises(RunBusyError):
        run(sessions, run_id, again)
    assert again.delivered == []


def test_staff_send_again_to_exactly_the_rows_they_choose(sessions: sessionmaker) -> None:
    run_id = new_run(sessions, "gone@example.org", "maybe@example.org", "m2@example.org", "ok@example.org")
    t = ScriptedTransport(
        {
            "gone@example.org": [PermanentError("550")],
            "maybe@example.org": [UnknownOutcomeError("lost")],
            "m2@example.org": [UnknownOutcomeError("lost")],
        }
    )
    run(sessions, run_id, t)
    with sessions() as s:
        with pytest.raises(RunBusyError, match="nobody@example.org"):
            reopen(s, run_id, include=[DeliveryStatus.UNKNOWN], only=["nobody@example.org"])
        assert reopen(s, run_id, include=[DeliveryStatus.UNKNOWN], only=["MAYBE@example.org"]) == 1
    again = ScriptedTransport()
    report = courier(again).run(sessions, run_id, unpark=False)
    assert again.delivered == ["maybe@example.org"] and not report.paused
    with sessions() as s:
        assert reopen(s, run_id, include=[DeliveryStatus.UNKNOWN, DeliveryStatus.FAILED]) == 2
    last = ScriptedTransport()
    courier(last).run(sessions, run_id, unpark=False)
    assert sorted(last.delivered) == ["gone@example.org", "m2@example.org"]


def test_reopening_waits_for_another_unfinished_run(sessions: sessionmaker) -> None:
    run_id = new_run(sessions, "a@example.org")
    run(sessions, run_id, ScriptedTransport({"a@example.org": [PermanentError("550")]}))
    with sessions() as s:
        start_run(s, store.active_recipients(s), issue="next")
        with pytest.raises(RunBusyError, match="unfinished"):
            reopen(s, run_id, include=[DeliveryStatus.FAILED])


def test_unsubscribed_after_freeze_is_skipped(sessions: sessionmaker) -> None:
    run_id = new_run(sessions, "stay@example.org", "leave@example.org")
    with sessions() as s:
        leaver = store.get_by_email(s, "leave@example.org")
        store.set_status(s, leaver, store.Status.UNSUBSCRIBED, source="test")
        s.commit()
    t = ScriptedTransport()
    report = run(sessions, run_id, t, unwanted=store.inactive_among)
    assert t.delivered == ["stay@example.org"]
    assert statuses(sessions, run_id)["leave@example.org"] == DeliveryStatus.SKIPPED
    assert report.counts["skipped"] == 1


def test_an_unsubscribe_during_the_run_is_honoured_within_a_batch(sessions: sessionmaker) -> None:
    """The check runs once per batch: someone who leaves while batch 1 is out gets nothing."""
    emails = [f"r{i}@example.org" for i in range(6)]
    run_id = new_run(sessions, *emails)

    class Leaving(ScriptedTransport):
        def deliver(self, envelope: Outbound) -> str:
            if envelope.recipient == "r0@example.org":
                with sessions() as s:
                    store.set_status(
                        s, store.get_by_email(s, "r5@example.org"), store.Status.UNSUBSCRIBED, source="test"
                    )
                    s.commit()
            return super().deliver(envelope)

    t = Leaving()
    run(sessions, run_id, t, unwanted=store.inactive_among, batch_size=2)
    assert t.delivered == emails[:5]


def test_idempotency_keys_are_stable_per_run_and_subscriber(sessions: sessionmaker) -> None:
    run_id = new_run(sessions, "a@example.org", "b@example.org")
    t = ScriptedTransport()
    run(sessions, run_id, t)
    assert len(set(t.keys)) == 2 and all(k.startswith(run_id) for k in t.keys)
    with sessions() as s:
        ids = set(s.scalars(select(Delivery.message_id)))
    assert ids == {f"<{k}@x.example>" for k in t.keys}  # the Message-ID is kept per row


def test_batch_transport_outcomes_per_message(sessions: sessionmaker) -> None:
    """Partial success: each message's answer lands on its own row; silence is unknown."""
    run_id = new_run(sessions, *(f"r{i}@example.org" for i in range(5)))
    t = BatchTransport(
        {
            "r1@example.org": Outcome("", Result.FAILED, "invalid address"),
            "r3@example.org": None,
        }
    )
    report = run(sessions, run_id, t)
    assert [len(b) for b in t.batches] == [3, 2]
    assert statuses(sessions, run_id) == {
        "r0@example.org": DeliveryStatus.SENT,
        "r1@example.org": DeliveryStatus.FAILED,
        "r2@example.org": DeliveryStatus.SENT,
        "r3@example.org": DeliveryStatus.UNKNOWN,
        "r4@example.org": DeliveryStatus.SENT,
    }
    assert report.totals["unknown"] == 1
    with sessions() as s:
        assert s.scalar(select(Delivery.provider_id).where(Delivery.email == "r0@example.org")) == "p-1"


def test_a_batch_that_raises_applies_to_the_whole_batch(sessions: sessionmaker) -> None:
    run_id = new_run(sessions, "a@example.org", "b@example.org")

    class Refusing(BatchTransport):
        def send_batch(self, batch: Sequence[Outbound]) -> list[Outcome]:
            raise PermanentError("401 bad API key", transport="batchy")

    run(sessions, run_id, Refusing({}))
    assert set(statuses(sessions, run_id).values()) == {DeliveryStatus.FAILED}


def test_parallel_batches_send_everyone_exactly_once(sessions: sessionmaker) -> None:
    emails = [f"r{i}@example.org" for i in range(300)]
    run_id = new_run(sessions, *emails)
    t = ScriptedTransport(max_batch=7, concurrency=4)
    report = run(sessions, run_id, t, batch_size=50)
    assert sorted(t.delivered) == sorted(emails) and report.sent == 300


def test_stop_lets_in_flight_messages_finish_and_pauses(sessions: sessionmaker) -> None:
    run_id = new_run(sessions, *(f"r{i}@example.org" for i in range(20)))
    stop = threading.Event()

    class Stopping(ScriptedTransport):
        def deliver(self, envelope: Outbound) -> str:
            if len(self.delivered) == 2:
                stop.set()  # Ctrl-C arrives while a batch is out
            return super().deliver(envelope)

    t = Stopping(max_batch=5)
    report = run(sessions, run_id, t, stop=stop)
    assert report.stopped and report.paused and "stopped by staff" in report.reason
    assert len(t.delivered) == 5  # the batch in flight finished and was recorded
    with sessions() as s:
        assert run_totals(s, run_id) == {"sent": 5, "pending": 15}


def test_error_threshold_pauses_the_run_with_its_reason(sessions: sessionmaker) -> None:
    emails = [f"r{i}@example.org" for i in range(10)]
    run_id = new_run(sessions, *emails)
    t = ScriptedTransport({e: [PermanentError("550")] for e in emails})
    report = run(sessions, run_id, t, retry=RetryPolicy(attempts=1, backoff=0, max_errors=3), batch_size=2)
    assert report.paused and "error threshold" in report.reason
    assert report.counts["failed"] == 4


def test_send_through_real_smtp_server(sessions: sessionmaker, smtp_server) -> None:  # noqa: ANN001
    smtp_server.rcpt_replies["bad@example.org"] = "550 5.1.1 unknown"
    run_id = new_run(sessions, "a@example.org", "bad@example.org", "c@example.org")
    report = run(sessions, run_id, SmtpTransport(host=smtp_server.host, port=smtp_server.port, timeout=5))
    assert [m[1] for m in smtp_server.messages] == [["a@example.org"], ["c@example.org"]]
    assert report.counts == {"sent": 2, "failed": 1}


def test_a_second_unfinished_run_is_refused_by_the_database(sessions: sessionmaker) -> None:
    recipients = subscribe(sessions, "a@example.org")
    with sessions() as s:
        first = start_run(s, recipients, issue="x")
        with pytest.raises(RunBusyError, match="another run is unfinished"):
            start_run(s, recipients, issue="x")
        assert open_run(s).id == first


def test_a_run_held_by_a_live_process_is_not_sent_twice(sessions: sessionmaker) -> None:
    """Two senders on one run at once: the second is refused while the first still sends."""
    run_id = new_run(sessions, *(f"r{i}@example.org" for i in range(6)))
    halfway, go_on = threading.Event(), threading.Event()

    class Held(ScriptedTransport):
        def deliver(self, envelope: Outbound) -> str:
            if len(self.delivered) == 3:
                halfway.set()
                go_on.wait(10)
            return super().deliver(envelope)

    first = Held()
    worker = threading.Thread(target=run, args=(sessions, run_id, first))
    worker.start()
    assert halfway.wait(10)
    second = ScriptedTransport()
    with pytest.raises(RunBusyError, match="another process"):
        run(sessions, run_id, second)
    go_on.set()
    worker.join(10)
    assert second.delivered == []
    assert len(first.delivered) == 6


def test_an_unexpected_transport_error_is_unknown_not_a_crash(sessions: sessionmaker) -> None:
    run_id = new_run(sessions, "odd@example.org", "ok@example.org")
    report = run(sessions, run_id, ScriptedTransport({"odd@example.org": [RuntimeError("bug")]}, max_batch=2))
    assert statuses(sessions, run_id) == {
        "odd@example.org": DeliveryStatus.UNKNOWN,
        "ok@example.org": DeliveryStatus.SENT,
    }
    assert "unexpected error" in report.errors[0]


def test_abandon_closes_the_run(sessions: sessionmaker) -> None:
    recipients = subscribe(sessions, "a@example.org", "b@example.org")
    with sessions() as s:
        run_id = start_run(s, recipients, issue="x")
        assert abandon(s, run_id) == 2
        assert open_run(s) is None
        start_run(s, recipients, issue="y")  # a new run may start now
