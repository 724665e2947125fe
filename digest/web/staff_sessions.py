"""Staff sessions as server-side records: the cookie only names one.

A log-in creates a row (random id, account, created, last seen, user agent, address); the
cookie carries the id's token, the row keeps only its SHA-256, so a copy of the database opens
no session. A session ends when its row is gone: log-out, a new password, a role change, the
account's removal (rows go with the account, so an account id used again finds none), an
admin ending it, or `[web] staff_session_hours` after it began.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ForeignKey, Integer, String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from digest.db import Base, UTCDateTime

TOUCH_EVERY = timedelta(minutes=1)  # last_seen_at is written at most this often per session
MAX_USER_AGENT = 300


class StaffSession(Base):
    __tablename__ = "staff_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 hex of the cookie's token
    account_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("staff_accounts.id", ondelete="CASCADE"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    user_agent: Mapped[str] = mapped_column(String(MAX_USER_AGENT), default="")
    address: Mapped[str] = mapped_column(String(64), default="")


def session_id(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def start(db: Session, account_id: int, *, now: datetime, user_agent: str, address: str) -> str:
    """A new session for the account; the token for the cookie (never stored)."""
    token = secrets.token_urlsafe(32)
    db.add(
        StaffSession(
            id=session_id(token),
            account_id=account_id,
            created_at=now,
            last_seen_at=now,
            user_agent=user_agent[:MAX_USER_AGENT],
            address=address[:64],
        )
    )
    db.flush()
    return token


@dataclass(frozen=True)
class Found:
    id: str
    account_id: int


def find(db: Session, token: str, *, now: datetime, length: timedelta) -> Found | None:
    """The live session the token names; a session past `length` is ended here. Marks it seen."""
    if not token:
        return None
    row = db.get(StaffSession, session_id(token))
    if row is None:
        return None
    if now - row.created_at > length:
        db.delete(row)
        return None
    if now - row.last_seen_at >= TOUCH_EVERY:
        row.last_seen_at = now
    return Found(row.id, row.account_id)


def end(db: Session, sid: str) -> bool:
    """End one session by its id (the stored hash); whether there was one."""
    return db.execute(delete(StaffSession).where(StaffSession.id == sid)).rowcount > 0


def end_token(db: Session, token: str) -> None:
    end(db, session_id(token))


def end_all(db: Session, account_id: int) -> int:
    """End every session of the account; how many there were."""
    return db.execute(delete(StaffSession).where(StaffSession.account_id == account_id)).rowcount


def of_account(db: Session, account_id: int) -> list[StaffSession]:
    query = select(StaffSession).where(StaffSession.account_id == account_id)
    return list(db.scalars(query.order_by(StaffSession.last_seen_at.desc())))


def everyone(db: Session) -> list[StaffSession]:
    return list(db.scalars(select(StaffSession).order_by(StaffSession.last_seen_at.desc())))
