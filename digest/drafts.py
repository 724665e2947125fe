"""The staff's draft of an issue, stored beside the run records (one row per issue date).

`digest.curate` says what a draft means; this module only keeps it. The web console writes
it; `digest.pipeline.prepare_issue` reads it for the issue it builds.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Date, Engine, Integer, String, Text, inspect, make_url, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from digest.config import Config
from digest.curate import Draft
from digest.db import Base, UTCDateTime, make_engine, session_factory
from digest.models import Article


class IssueDraft(Base):
    __tablename__ = "issue_drafts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    issue_date: Mapped[date] = mapped_column(Date, unique=True)
    excluded: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of story keys
    lead: Mapped[str | None] = mapped_column(Text, nullable=True)
    region_order: Mapped[str] = mapped_column(Text, default="{}")  # JSON {region: [keys]}
    intro: Mapped[str] = mapped_column(Text, default="")
    subject: Mapped[str] = mapped_column(Text, default="", server_default="")  # "": the template's
    preheader: Mapped[str] = mapped_column(Text, default="", server_default="")
    edits: Mapped[str] = mapped_column(Text, default="{}", server_default="{}")  # JSON {key: {field: text}}
    added: Mapped[str] = mapped_column(Text, default="[]", server_default="[]")  # JSON [story]
    updated_by: Mapped[str] = mapped_column(String(320), default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    def to_draft(self) -> Draft:
        return Draft(
            issue_date=self.issue_date,
            excluded=frozenset(json.loads(self.excluded or "[]")),
            lead=self.lead,
            order={region: tuple(keys) for region, keys in json.loads(self.region_order or "{}").items()},
            intro=self.intro,
            subject=self.subject or "",
            preheader=self.preheader or "",
            edits=json.loads(self.edits or "{}"),
            added=tuple(article_from_json(a) for a in json.loads(self.added or "[]")),
            updated_by=self.updated_by,
            updated_at=self.updated_at,
        )


ADDED_FIELDS = ("guid", "url", "title", "lede", "region", "image_url", "image_alt", "image_credit", "author")


def article_to_json(article: Article) -> dict[str, Any]:
    """A story staff added, as stored with the draft."""
    data: dict[str, Any] = {f: getattr(article, f) for f in ADDED_FIELDS}
    data.update(
        published=article.published.isoformat(), source=article.source, format_label=article.format_label
    )
    return data


def article_from_json(data: dict[str, Any]) -> Article:
    return Article(
        **{f: data.get(f) for f in ADDED_FIELDS if f not in ("image_alt",)},
        image_alt=data.get("image_alt") or "",
        published=datetime.fromisoformat(data["published"]),
        source=data.get("source") or "",
        format_label=data.get("format_label") or "",
    )


def load_draft(session: Session, issue_date: date) -> Draft | None:
    row = session.scalar(select(IssueDraft).where(IssueDraft.issue_date == issue_date))
    return row.to_draft() if row is not None else None


def save_draft(session: Session, draft: Draft, *, by: str, at: datetime) -> Draft:
    """Insert or replace the draft of `draft.issue_date`; the caller commits."""
    row = session.scalar(select(IssueDraft).where(IssueDraft.issue_date == draft.issue_date))
    if row is None:
        row = IssueDraft(issue_date=draft.issue_date)
        session.add(row)
    row.excluded = json.dumps(sorted(draft.excluded))
    row.lead = draft.lead
    row.region_order = json.dumps({r: list(keys) for r, keys in draft.order.items()})
    row.intro = draft.intro
    row.subject = draft.subject
    row.preheader = draft.preheader
    row.edits = json.dumps({key: dict(fields) for key, fields in draft.edits.items()}, sort_keys=True)
    row.added = json.dumps([article_to_json(a) for a in draft.added])
    row.updated_by = by
    row.updated_at = at.astimezone(UTC)
    session.flush()
    return row.to_draft()


def stored_draft(config: Config, issue_date: date) -> Draft | None:
    """The draft for `issue_date` in [database] url, or None.

    Does not create a database that is not there (`digest collect` and `digest preview` call it
    through prepare_issue), nor read tables an older schema lacks. A database error propagates:
    an issue must not go out without the stories staff took out of it.
    """
    url = make_url(config.database.url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(url.database or "")
        if not (path if path.is_absolute() else config.base_dir / path).is_file():
            return None
    engine: Engine = make_engine(config.database.url, base_dir=config.base_dir)
    try:
        if not inspect(engine).has_table(IssueDraft.__tablename__):
            return None
        with session_factory(engine)() as session:
            return load_draft(session, issue_date)
    finally:
        engine.dispose()
