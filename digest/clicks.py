"""Click counts per story: the issue's story table, counts per minute, and the per-issue report.

Nothing here names a reader. A click is one increment of a row keyed by (run, variant, story,
minute), `human` or `filtered` (digest.scanners decides which); a minute with no click has no
row, so storage grows with stories x variants x minutes that saw a click, not with clicks.

The web process adds clicks to a buffer in memory (`ClickRecorder`), written to the database
every `[analytics] flush_seconds` and when the app stops, so a redirect never waits for a
disk write; a process killed outright loses at most that many seconds of counts.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
from collections import Counter
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, Text, func, select
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from digest.db import Base, UTCDateTime
from digest.models import DeliveryStatus, Digest
from digest.send import Delivery
from digest.story_links import IssueStory, issue_regions, mask_regions, stories_of, variant_mask
from subscribers.store import Subscriber

log = logging.getLogger(__name__)

OPEN_STORY = -1  # the story number the open pixel's counts are kept under
OPENS_LABEL = "opens (includes privacy-proxy loads)"

CountKey = tuple[str, str, int, datetime]  # run id, variant mask, story index, minute (UTC)
ReaderKey = tuple[str, int, int]  # run id, subscriber id, story index: [analytics] per_reader only


class RunStory(Base):
    """One story of a sent issue: what a redirect token's story index stands for."""

    __tablename__ = "run_stories"

    run_id: Mapped[str] = mapped_column(ForeignKey("send_runs.id", ondelete="CASCADE"), primary_key=True)
    idx: Mapped[int] = mapped_column(Integer, primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text, default="")
    region: Mapped[str] = mapped_column(String(200), default="")


class ClickCount(Base):
    """Clicks on one story of one variant of one issue in one minute: never one row per click."""

    __tablename__ = "click_counts"

    run_id: Mapped[str] = mapped_column(ForeignKey("send_runs.id", ondelete="CASCADE"), primary_key=True)
    variant: Mapped[str] = mapped_column(String(16), primary_key=True)
    story: Mapped[int] = mapped_column(Integer, primary_key=True)  # OPEN_STORY for the pixel
    minute: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    human: Mapped[int] = mapped_column(Integer, default=0)
    filtered: Mapped[int] = mapped_column(Integer, default=0)


class ReaderClick(Base):
    """Who clicked which story: kept only with [analytics] per_reader (off by default).

    Personal data: erased with the subscriber (ON DELETE CASCADE, `digest subscribers delete`).
    """

    __tablename__ = "reader_clicks"

    run_id: Mapped[str] = mapped_column(ForeignKey("send_runs.id", ondelete="CASCADE"), primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(
        ForeignKey("subscribers.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    story: Mapped[int] = mapped_column(Integer, primary_key=True)
    human: Mapped[int] = mapped_column(Integer, default=0)
    filtered: Mapped[int] = mapped_column(Integer, default=0)


# --- the story table ---------------------------------------------------------------------


def load_stories(session: Session, run_id: str) -> list[IssueStory]:
    rows = session.scalars(select(RunStory).where(RunStory.run_id == run_id).order_by(RunStory.idx))
    return [IssueStory(r.idx, r.url, r.title, r.region) for r in rows]


def register_stories(session: Session, run_id: str, digest: Digest) -> list[IssueStory]:
    """The run's story table, with the digest's stories added that it lacks (the caller commits).

    A resumed run may rebuild a slightly different issue: stories already there keep their
    index (links already sent stay valid), new ones are appended.
    """
    stories = load_stories(session, run_id)
    known = {s.url for s in stories}
    next_index = max((s.index for s in stories), default=-1) + 1
    for url, title, region in stories_of(digest):
        if url in known:
            continue
        session.add(RunStory(run_id=run_id, idx=next_index, url=url, title=title, region=region))
        stories.append(IssueStory(next_index, url, title, region))
        known.add(url)
        next_index += 1
    session.flush()
    return stories


# --- counting ----------------------------------------------------------------------------


def minute_of(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def add_counts(session: Session, deltas: dict[Any, list[int]]) -> None:
    """Add (human, filtered) deltas to their rows, creating rows as needed.

    Keys are `CountKey`s (per story) or, with [analytics] per_reader, `ReaderKey`s; a reader
    erased meanwhile (`delete_subscriber`) is skipped, never re-created.
    """
    counts = {k: v for k, v in deltas.items() if len(k) == 4}
    readers = {k: v for k, v in deltas.items() if len(k) == 3}
    if readers:
        wanted = {sid for _run, sid, _story in readers}
        present = set(session.scalars(select(Subscriber.id).where(Subscriber.id.in_(wanted))))
        readers = {k: v for k, v in readers.items() if k[1] in present}
    _upsert(session, ClickCount.__table__, ("run_id", "variant", "story", "minute"), counts)
    _upsert(session, ReaderClick.__table__, ("run_id", "subscriber_id", "story"), readers)


def _upsert(session: Session, table: Any, key: tuple[str, ...], deltas: dict[Any, list[int]]) -> None:
    """One INSERT ... ON CONFLICT DO UPDATE adding to `human` and `filtered`, for all rows."""
    if not deltas:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    else:
        raise NotImplementedError(f"click counts support SQLite and PostgreSQL, not {dialect}")
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(key),
        set_={
            "human": table.c.human + stmt.excluded.human,
            "filtered": table.c.filtered + stmt.excluded.filtered,
        },
    )
    rows = [{**dict(zip(key, k, strict=True)), "human": h, "filtered": f} for k, (h, f) in deltas.items()]
    session.execute(stmt, rows)


class ClickRecorder:
    """Counts in memory, written by one background thread every `flush_seconds` and on `close`.

    `add` takes a lock and updates a dict: the redirect's whole cost. A failed write keeps the
    counts for the next one.
    """

    def __init__(
        self, sessions: sessionmaker, *, flush_seconds: float = 5.0, background: bool = True
    ) -> None:
        self.sessions = sessions
        self.flush_seconds = flush_seconds
        self._pending: dict[Any, list[int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.background = background

    def add(self, key: CountKey | ReaderKey, human: int = 0, filtered: int = 0) -> None:
        with self._lock:
            if self.background and self._thread is None and not self._stop.is_set():
                # Started by the first click: an app that never redirects runs no thread.
                self._thread = threading.Thread(target=self._loop, name="digest-click-flush", daemon=True)
                self._thread.start()
            row = self._pending.get(key)
            if row is None:
                self._pending[key] = [human, filtered]
            else:
                row[0] += human
                row[1] += filtered

    def flush(self) -> int:
        """Write what is pending; returns the rows written."""
        with self._lock:
            pending, self._pending = self._pending, {}
        pending = {k: v for k, v in pending.items() if v != [0, 0]}
        if not pending:
            return 0
        try:
            with self.sessions.begin() as session:
                add_counts(session, pending)
        except Exception:
            log.exception("click counts not written; kept for the next try")
            with self._lock:
                for key, (h, f) in pending.items():
                    row = self._pending.setdefault(key, [0, 0])
                    row[0] += h
                    row[1] += f
            return 0
        return len(pending)

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.flush_seconds + 5)
        self.flush()


# --- the report --------------------------------------------------------------------------


def _sent_preferences(session: Session, run_id: str) -> Counter[str]:
    """Messages sent, by the recipients' region preferences ("" = every region)."""
    rows = session.execute(
        select(Delivery.regions, func.count())
        .where(Delivery.run_id == run_id, Delivery.status == DeliveryStatus.SENT)
        .group_by(Delivery.regions)
    )
    return Counter({prefs or "": n for prefs, n in rows})


def click_report(session: Session, run_id: str) -> dict[str, Any]:
    """Clicks of one issue: per story link, per region, per variant, and opens when counted.

    Variants are the sets of regions a message carried; clicks per 100 recipients of a variant
    count human clicks against the messages of that variant that were sent.
    """
    stories = load_stories(session, run_id)
    regions = issue_regions(stories)
    counts = session.execute(
        select(
            ClickCount.variant, ClickCount.story, func.sum(ClickCount.human), func.sum(ClickCount.filtered)
        )
        .where(ClickCount.run_id == run_id)
        .group_by(ClickCount.variant, ClickCount.story)
    ).all()
    by_story: dict[int, list[int]] = {}
    by_variant: dict[str, list[int]] = {}
    opens = [0, 0]
    for variant, story, human, filtered in counts:
        if story == OPEN_STORY:
            opens[0] += int(human)
            opens[1] += int(filtered)
            continue
        for table, key in ((by_story, story), (by_variant, variant)):
            row = table.setdefault(key, [0, 0])
            row[0] += int(human)
            row[1] += int(filtered)
    recipients: Counter[str] = Counter()
    for prefs, n in _sent_preferences(session, run_id).items():
        wanted = set(prefs.split("\n")) if prefs else set(regions)
        recipients[variant_mask(regions, [r for r in regions if r in wanted])] += n
    story_rows = [
        {
            "url": s.url,
            "title": s.title,
            "region": s.region,
            "human": by_story.get(s.index, [0, 0])[0],
            "filtered": by_story.get(s.index, [0, 0])[1],
        }
        for s in stories
    ]
    story_rows.sort(key=lambda r: -r["human"])  # stable: issue order among equals
    region_rows = []
    for region in regions:
        in_region = [r for r in story_rows if r["region"] == region]
        region_rows.append(
            {
                "region": region,
                "human": sum(r["human"] for r in in_region),
                "filtered": sum(r["filtered"] for r in in_region),
                "recipients": sum(n for m, n in recipients.items() if region in mask_regions(regions, m)),
            }
        )
    variant_rows = []
    for mask in sorted(set(recipients) | set(by_variant), key=lambda m: int(m, 16), reverse=True):
        human, filtered = by_variant.get(mask, [0, 0])
        sent = recipients.get(mask, 0)
        variant_rows.append(
            {
                "variant": mask,
                "regions": mask_regions(regions, mask),
                "recipients": sent,
                "human": human,
                "filtered": filtered,
                "per_100_recipients": round(100 * human / sent, 1) if sent else None,
            }
        )
    return {
        "human": sum(r["human"] for r in story_rows),
        "filtered": sum(r["filtered"] for r in story_rows),
        "stories": story_rows,
        "regions": region_rows,
        "variants": variant_rows,
        "opens": {"label": OPENS_LABEL, "counted": opens[0], "filtered": opens[1]} if any(opens) else None,
    }


def clicks_csv(report: dict[str, Any]) -> str:
    """The story rows of `click_report` as CSV (a spreadsheet's first line names the columns)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["url", "title", "region", "human", "filtered"])
    for row in report["stories"]:
        writer.writerow([_cell(row[k]) for k in ("url", "title", "region", "human", "filtered")])
    return out.getvalue()


def _cell(value: object) -> object:
    """A text cell a spreadsheet would run as a formula is written with a leading apostrophe."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
