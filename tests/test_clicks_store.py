"""Click counts in the database: one row per (issue, variant, story, minute), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select

from digest.build import build_digest
from digest.clicks import ClickCount, ClickRecorder, click_report, register_stories
from digest.config import DEFAULT_REGION_ORDER
from digest.db import session_factory
from digest.models import Recipient
from digest.send import start_run
from digest.sources.sample import synthetic_articles

pytest_plugins = ("subscriber_fixtures",)


def test_counts_aggregate_per_minute_and_add_up_across_flushes(db_engine) -> None:
    now = datetime.now(UTC)
    digest = build_digest(
        synthetic_articles(6, DEFAULT_REGION_ORDER, now),
        newsletter="N",
        issue_date=now.date(),
        region_order=DEFAULT_REGION_ORDER,
    )
    sessions = session_factory(db_engine)
    with sessions() as s:
        run_id = start_run(s, [Recipient(1, "a@example.org")], issue=now.date().isoformat())
    with sessions.begin() as s:
        stories = register_stories(s, run_id, digest)
    with sessions.begin() as s:  # registering again (a resumed run) keeps the indexes
        assert register_stories(s, run_id, digest) == stories
    minute = now.replace(second=0, microsecond=0)
    recorder = ClickRecorder(sessions, background=False)
    for _ in range(500):  # 500 clicks in one minute: one row
        recorder.add((run_id, "3f", 0, minute), human=1)
    recorder.add((run_id, "3f", 0, minute), human=-1, filtered=1)  # one re-counted as a scanner's
    assert recorder.flush() == 1
    recorder.add((run_id, "3f", 0, minute), human=1)
    recorder.add((run_id, "3f", 0, minute + timedelta(minutes=1)), filtered=2)
    recorder.close()
    with sessions() as s:
        assert s.scalar(select(func.count()).select_from(ClickCount)) == 2
        report = click_report(s, run_id)
    first = next(r for r in report["stories"] if r["url"] == stories[0].url)
    assert (first["human"], first["filtered"]) == (500, 3)
    assert report["opens"] is None
