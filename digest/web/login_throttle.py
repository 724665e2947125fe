"""Failed staff log-ins slow the attacker and never lock the owner out.

Failures are counted per (account, client address) and per account, in the database (so they
hold across processes), with the app's injected clock. After `free` wrong passwords for an
account from one address, each further try from that address for that account waits 1 s,
2 s, 4 s, ... up to `max_delay`; the account's failures from every address count too (a third
each), so guesses spread over many addresses also slow down, but only for the addresses that
made them: the owner, trying from elsewhere, is never held up, and a wait never outlasts
`max_delay`. A good log-in clears the counts.

Known and unknown addresses are treated alike (the keys are hashes of what was typed), so the
answer, its status and the work behind it say nothing about which staff addresses exist.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timedelta

from sqlalchemy import Integer, String, delete
from sqlalchemy.orm import Mapped, Session, mapped_column

from digest.db import Base, UTCDateTime
from subscribers.validate import email_key

ACCOUNT_SHARE = 3  # an account's failures from all addresses weigh a third of one address's
FORGET_AFTER = timedelta(hours=1)  # counts of failures older than this start again from zero


class LoginFailures(Base):
    __tablename__ = "staff_login_failures"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)  # "a:<sha256>" or "p:<sha256>"
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failed_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    wait_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


def _keys(email: str, address: str) -> tuple[str, str]:
    account = hashlib.sha256(email_key(email).encode("utf-8", "replace")).hexdigest()
    pair = hashlib.sha256(f"{account}|{address}".encode("utf-8", "replace")).hexdigest()
    return f"a:{account}", f"p:{pair}"


def wait_seconds(db: Session, email: str, address: str, *, now: datetime) -> int:
    """Whole seconds this address must still wait before trying this account again (0: now)."""
    row = db.get(LoginFailures, _keys(email, address)[1])
    if row is None or row.wait_until is None or row.wait_until <= now:
        return 0
    return math.ceil((row.wait_until - now).total_seconds())


def failed(db: Session, email: str, address: str, *, now: datetime, free: int, max_delay: int) -> int:
    """Count a wrong password; the seconds this address must now wait for this account."""
    db.execute(delete(LoginFailures).where(LoginFailures.last_failed_at < now - FORGET_AFTER))
    account_key, pair_key = _keys(email, address)
    account, pair = _bump(db, account_key, now), _bump(db, pair_key, now)
    level = max(pair.failures, math.ceil(account.failures / ACCOUNT_SHARE)) - free
    delay = 0 if level <= 0 else min(max_delay, 2 ** (level - 1))
    pair.wait_until = now + timedelta(seconds=delay)
    db.flush()
    return delay


def succeeded(db: Session, email: str, address: str) -> None:
    """The right password: this account's counts start again."""
    db.execute(delete(LoginFailures).where(LoginFailures.key.in_(_keys(email, address))))


def _bump(db: Session, key: str, now: datetime) -> LoginFailures:
    row = db.get(LoginFailures, key)
    if row is None:
        row = LoginFailures(key=key, failures=0, last_failed_at=now)
        db.add(row)
    row.failures += 1
    row.last_failed_at = now
    return row
