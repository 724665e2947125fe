"""The delivery ledger: frozen recipients, nobody twice, nobody skipped, resumable."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from digest.db import session_factory
from digest.errors import PermanentError, RunBusyError, TemporaryError, UnknownOutcomeError
from digest.models import DeliveryStatus, Recipient
from digest.send import (
    Courier,
    Delivery,
    Prepared,
    RetryPolicy,
    RunReport,
    SendRun,
    abandon,
    open_run,
    start_run,
)
from digest.transports.base import Outbound, SingleMessageTransport, Transport
from digest.transports.smtp import SmtpTransport
from subscribers import store

# Fixture db_engine: each test runs on SQLite, then on PostgreSQL when 127.0.0.1:5432 answers.
pytest_plugins = ("subscriber_fixtures",)

NO_WAIT = RetryPolicy(attempts=3, backoff=0.0)


class Crash(BaseException):
    """Stands for the process dying mid-run (not an Exception: nothing may swallow it)."""


class ScriptedTransport(SingleMessageTransport):
    """Accepts messages, except where a script says to fail for an address."""

    name = "scripted"

    def __init__(
        self, script: dict[str, list[Exception]] | None = None, crash_after: int | None = None
    ) -> None:
        self.script = script or {}
        self.crash_after = crash_after
        self.delivered: list[str] = []
        self.keys: list[str] = []

    def deliver(self, envelope: Outbound) -> str:
        if self.crash_after is not None and len(self.delivered) >= self.crash_after:
            raise Crash()
        failures = self.script.get(envelope.recipient)
        if failures:
            raise failures.pop(0)
        self.delivered.append(envelope.recipient)
        self.keys.append(envelope.key)
        return "250 OK"


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
    data = f"To: {recipient.email}\r\n\r\nhi\r\n".encode()
    return Prepared(
        Outbound.from_bytes(data, key=key, envelope_sender="b@x.example", recipient=recipient.email)
    )


def always(_session: Session, _recipient: Recipient) -> bool:
    return True


def run(
    sessions: sessionmaker, run_id: str, transport: Transport, still_wanted: Callable = always
) -> RunReport:
    courier = Courier(
        transport,
        prepare=prepare,
        still_wanted=still_wanted,
        envelope_sender="b@rs.example",
        retry=NO_WAIT,
        sleep=lambda _s: None,
    )
    return courier.run(sessions, run_id)


def statuses(sessions: sessionmaker, run_id: str) -> dict[str, DeliveryStatus]:
    with sessions() as s:
        return {d.email: d.status for d in s.scalars(select(Delivery).where(Delivery.run_id == run_id))}


def test_addresses_are_deduplicated_case_insensitively(sessions: sessionmaker) -> None:
    recipients = [
        Recipient(1, "Ada@Example.org"),
        Recipient(2, "ada@example.org"),
        Recipient(3, "b@example.org"),
    ]
    with sessions() as s:
        run_id = start_run(s, recipients, issue="2026-11-25")
    t = ScriptedTransport()
    report = run(sessions, run_id, t)
    assert t.delivered == ["Ada@Example.org", "b@example.org"]
    assert report.sent == 2 and not report.paused


def test_crash_mid_run_then_resume_sends_each_at_most_once(sessions: sessionmaker) -> None:
    recipients = subscribe(sessions, *(f"r{i}@example.org" for i in range(10)))
    with sessions() as s:
        run_id = start_run(s, recipients, issue="2026-11-25")
    first = ScriptedTransport(crash_after=4)
    with pytest.raises(Crash):  # the process "dies" inside the 5th hand-over
        run(sessions, run_id, first)
    counts = Counter(statuses(sessions, run_id).values())
    assert counts == {DeliveryStatus.SENT: 4, DeliveryStatus.SENDING: 1, DeliveryStatus.PENDING: 5}
    second = ScriptedTransport()
    report = run(sessions, run_id, second)
    # The 5th may have reached the server: it is reported as unknown, not sent again.
    assert report.counts == {"sent": 5, "unknown": 1} and not report.paused
    assert any("may have been delivered" in e for e in report.errors)
    assert not set(first.delivered) & set(second.delivered)
    assert len(first.delivered) + len(second.delivered) == 9
    with sessions() as s:
        assert s.get(SendRun, run_id).status == "finished"
    # A finished run cannot be run again.
    third = ScriptedTransport()
    with pytest.raises(RunBusyError, match="already finished"):
        run(sessions, run_id, third)
    assert third.delivered == []


def test_temporary_errors_are_retried(sessions: sessionmaker) -> None:
    recipients = subscribe(sessions, "a@example.org")
    with sessions() as s:
        run_id = start_run(s, recipients, issue="x")
    t = ScriptedTransport({"a@example.org": [TemporaryError("421 busy"), TemporaryError("429 slow down")]})
    report = run(sessions, run_id, t)
    assert t.delivered == ["a@example.org"] and report.sent == 1
    with sessions() as s:
        assert s.scalar(select(Delivery.attempts)) == 3


def test_exhausted_temporary_errors_leave_row_pending_and_pause(sessions: sessionmaker) -> None:
    recipients = subscribe(sessions, "a@example.org", "b@example.org")
    with sessions() as s:
        run_id = start_run(s, recipients, issue="x")
    t = ScriptedTransport({"a@example.org": [TemporaryError("451 later")] * 3})
    report = run(sessions, run_id, t)
    assert report.paused and t.delivered == ["b@example.org"]
    assert statuses(sessions, run_id)["a@example.org"] == DeliveryStatus.PENDING
    later = ScriptedTransport()
    assert not run(sessions, run_id, later).paused
    assert later.delivered == ["a@example.org"]


def test_permanent_and_unknown_outcomes_are_never_resent(sessions: sessionmaker) -> None:
    recipients = subscribe(sessions, "gone@example.org", "maybe@example.org", "ok@example.org")
    with sessions() as s:
        run_id = start_run(s, recipients, issue="x")
    t = ScriptedTransport(
        {
            "gone@example.org": [PermanentError("550 no such user")],
            "maybe@example.org": [UnknownOutcomeError("lost")],
        }
    )
    run(sessions, run_id, t)
    assert statuses(sessions, run_id) == {
        "gone@example.org": DeliveryStatus.FAILED,
        "maybe@example.org": DeliveryStatus.UNKNOWN,
        "ok@example.org": DeliveryStatus.SENT,
    }
    # Failed and unknown are final: the run is finished and nothing is tried again.
    again = ScriptedTransport()
    with pytest.raises(RunBusyError):
        run(sessions, run_id, again)
    assert again.delivered == []


def test_unsubscribed_after_freeze_is_skipped(sessions: sessionmaker) -> None:
    recipients = subscribe(sessions, "stay@example.org", "leave@example.org")
    with sessions() as s:
        run_id = start_run(s, recipients, issue="x")
        leaver = store.get_by_email(s, "leave@example.org")
        store.set_status(s, leaver, store.Status.UNSUBSCRIBED, source="test")
        s.commit()

    def still_wanted(session: Session, recipient: Recipient) -> bool:
        return store.is_active(session, recipient.subscriber_id)

    t = ScriptedTransport()
    run(sessions, run_id, t, still_wanted)
    assert t.delivered == ["stay@example.org"]
    assert statuses(sessions, run_id)["leave@example.org"] == DeliveryStatus.SKIPPED


def test_idempotency_keys_are_stable_per_run_and_subscriber(sessions: sessionmaker) -> None:
    recipients = subscribe(sessions, "a@example.org", "b@example.org")
    with sessions() as s:
        run_id = start_run(s, recipients, issue="x")
    t = ScriptedTransport()
    run(sessions, run_id, t)
    assert len(set(t.keys)) == 2 and all(k.startswith(run_id) for k in t.keys)


def test_send_through_real_smtp_server(sessions: sessionmaker, smtp_server) -> None:  # noqa: ANN001
    smtp_server.rcpt_replies["bad@example.org"] = "550 5.1.1 unknown"
    recipients = subscribe(sessions, "a@example.org", "bad@example.org", "c@example.org")
    with sessions() as s:
        run_id = start_run(s, recipients, issue="x")
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
    recipients = subscribe(sessions, *(f"r{i}@example.org" for i in range(6)))
    with sessions() as s:
        run_id = start_run(s, recipients, issue="x")
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
    assert sorted(first.delivered) == sorted(r.email for r in recipients)


def test_an_unexpected_transport_error_is_unknown_not_a_crash(sessions: sessionmaker) -> None:
    recipients = subscribe(sessions, "odd@example.org", "ok@example.org")
    with sessions() as s:
        run_id = start_run(s, recipients, issue="x")
    report = run(sessions, run_id, ScriptedTransport({"odd@example.org": [RuntimeError("bug")]}))
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
