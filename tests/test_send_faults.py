"""A whole send run through the SMTP pool into a misbehaving aiosmtpd: 421 mid-run, 451 on one
recipient, 550 5.1.1 on one, a drop after the final dot, a server that hangs after the dot.
Everyone else gets exactly one copy; each fault lands on its own row, and only there."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from smtp_servers import FaultySmtp, faulty_smtp
from sqlalchemy import select

from digest.config import Config
from digest.db import create_schema, make_engine, session_factory
from digest.message import MessageTemplate
from digest.models import DeliveryStatus, Recipient
from digest.personal import Links
from digest.pipeline import Personaliser, Variants, list_headers, prepare_issue
from digest.send import Courier, Delivery, Prepared, RetryPolicy, start_run
from digest.transports.smtp import SmtpTransport
from subscribers.tokens import Tokens


class RecoveringClock:
    """Injected time; the relay's greylisting of `greylisted` ends once the run waits."""

    def __init__(self, server: FaultySmtp, greylisted: str) -> None:
        self.server, self.greylisted = server, greylisted
        self.offset = 0.0
        self.start = datetime.now(UTC)

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.offset)

    def monotonic(self) -> float:
        return self.offset

    def sleep(self, seconds: float) -> None:
        self.offset += seconds
        self.server.rcpt_replies.pop(self.greylisted, None)


def template() -> MessageTemplate:
    config = Config()
    now = datetime.now(UTC)
    issue = prepare_issue(config, now)
    variants = Variants(issue.digest, issue.renderer, list_headers(config), date=now)
    return variants.get(variants.key_for(None))[1]


def test_a_run_through_every_fault_sends_everyone_else_exactly_once(tmp_path: Path) -> None:
    readers = [f"r{i}@example.org" for i in range(30)]
    greylisted, gone, dropped, hung = readers[4], readers[9], readers[14], readers[21]
    engine = make_engine(f"sqlite:///{tmp_path / 'ledger.db'}")
    create_schema(engine)
    sessions = session_factory(engine)
    with sessions() as s:
        run_id = start_run(s, [Recipient(i + 1, a) for i, a in enumerate(readers)], issue="faults")
    tmpl = template()
    personalise = Personaliser(Tokens("k"), Links("https://news.example"), run_id=run_id, domain="rs.example")

    def prepare(r: Recipient, key: str) -> Prepared:
        return Prepared(tmpl.outbound(r, personalise(r), key=key, envelope_sender="bounces@rs.example"))

    def nobody(_s: object, _ids: Sequence[int]) -> set[int]:
        return set()

    with faulty_smtp() as server:
        server.close_421_after = 6  # the relay restarts mid-run
        server.rcpt_replies[greylisted] = "451 4.7.1 greylisted, try again later"
        server.rcpt_replies[gone] = "550 5.1.1 no such user"
        server.drop_after_dot.add(dropped)
        server.hang_after_dot.add(hung)
        transport = SmtpTransport(host=server.host, port=server.port, connections=2, timeout=1.0)
        transport.max_batch = 5
        courier = Courier(
            transport,
            prepare=prepare,
            unwanted=nobody,
            retry=RetryPolicy(attempts=3, backoff=1.0),
            clock=RecoveringClock(server, greylisted),
            batch_size=10,
            journal_dir=tmp_path / "journal",
        )
        try:
            report = courier.run(sessions, run_id)
        finally:
            server.release.set()
        got = Counter(server.recipients())

    with sessions() as s:
        rows = {d.email: d for d in s.scalars(select(Delivery).where(Delivery.run_id == run_id))}
    assert rows[gone].status == DeliveryStatus.FAILED and "5.1.1" in rows[gone].detail
    assert rows[dropped].status == DeliveryStatus.UNKNOWN
    assert rows[hung].status == DeliveryStatus.UNKNOWN
    assert rows[greylisted].status == DeliveryStatus.SENT and rows[greylisted].attempts == 2
    sent = {a for a, d in rows.items() if d.status == DeliveryStatus.SENT}
    assert sent == set(readers) - {gone, dropped, hung}
    # Nobody twice; the unknown ones were handed over exactly once, and never sent again.
    assert max(got.values()) == 1 and got[dropped] == 1 and got[hung] == 1 and gone not in got
    assert set(got) == sent | {dropped, hung}
    assert report.totals == {"sent": 27, "failed": 1, "unknown": 2} and not report.paused
    assert report.counts["deferred"] >= 2  # the 451, and the 421's message at least
    assert list((tmp_path / "journal").glob("*.handover")) == []
    engine.dispose()
