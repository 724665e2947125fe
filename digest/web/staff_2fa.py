"""A second factor for staff: TOTP (RFC 6238, 30 s steps, 6 digits, with `pyotp`) and
single-use recovery codes.

Enrolment: a secret is drawn and kept aside (`totp_pending`) while the staff member scans it as
a QR code; the first good code from their app turns it on and gives ten recovery codes, shown
once and stored as SHA-256 hashes (each carries 80 random bits, so a hash reveals nothing). A
code is accepted one step either side of now, and never twice (the last step used is kept).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Protocol

import pyotp
from sqlalchemy import ForeignKey, Integer, String, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from digest.db import Base, UTCDateTime


class StaffAccount(Protocol):
    """What this module reads and writes of a `staff_store.StaffAccount` (which imports this
    module to end a removed account's codes, so it cannot import that one)."""

    id: int
    email: str
    totp_secret: str | None
    totp_pending: str | None
    totp_last_step: int | None


ISSUER = "digest"
STEP_SECONDS = 30
RECOVERY_CODES = 10
_CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"  # no 0/o, 1/l/i: read off paper


class RecoveryCode(Base):
    __tablename__ = "staff_recovery_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("staff_accounts.id", ondelete="CASCADE"), index=True
    )
    code_hash: Mapped[str] = mapped_column(String(64))
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


def enabled(account: StaffAccount) -> bool:
    return bool(account.totp_secret)


def begin(account: StaffAccount) -> str:
    """The secret being enrolled (a new one unless enrolment is under way); the caller commits."""
    if not account.totp_pending:
        account.totp_pending = pyotp.random_base32()
    return account.totp_pending


def provisioning_uri(account: StaffAccount, newsletter: str) -> str:
    return pyotp.TOTP(account.totp_pending or "").provisioning_uri(
        name=account.email, issuer_name=f"{newsletter} ({ISSUER})"
    )


def _good_step(secret: str, code: str, now: datetime, after: int | None) -> int | None:
    """The step `code` belongs to (now, or one either side), if it is later than `after`."""
    code = "".join(code.split())
    if not (len(code) == 6 and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    step = int(now.timestamp()) // STEP_SECONDS
    for candidate in (step - 1, step, step + 1):
        if (after is None or candidate > after) and hmac.compare_digest(
            totp.at(candidate * STEP_SECONDS), code
        ):
            return candidate
    return None


def confirm(db: Session, account: StaffAccount, code: str, *, now: datetime) -> list[str] | None:
    """Turn the pending secret on if `code` is good: the recovery codes (shown once), or None."""
    step = _good_step(account.totp_pending or "", code, now, None) if account.totp_pending else None
    if step is None:
        return None
    account.totp_secret, account.totp_pending, account.totp_last_step = account.totp_pending, None, step
    return new_recovery_codes(db, account)


def new_recovery_codes(db: Session, account: StaffAccount) -> list[str]:
    db.execute(delete(RecoveryCode).where(RecoveryCode.account_id == account.id))
    codes = ["".join(secrets.choice(_CODE_ALPHABET) for _ in range(16)) for _ in range(RECOVERY_CODES)]
    db.add_all(RecoveryCode(account_id=account.id, code_hash=_hash(c)) for c in codes)
    db.flush()
    return [f"{c[:4]}-{c[4:8]}-{c[8:12]}-{c[12:]}" for c in codes]


def verify(db: Session, account: StaffAccount, code: str, *, now: datetime) -> bool:
    """A TOTP code not used before, or an unused recovery code (then used up)."""
    if not account.totp_secret:
        return False
    step = _good_step(account.totp_secret, code, now, account.totp_last_step)
    if step is not None:
        account.totp_last_step = step
        return True
    plain = "".join(c for c in code.lower() if c.isalnum())
    if len(plain) != 16:
        return False
    row = db.scalar(
        select(RecoveryCode).where(
            RecoveryCode.account_id == account.id,
            RecoveryCode.code_hash == _hash(plain),
            RecoveryCode.used_at.is_(None),
        )
    )
    if row is None:
        return False
    row.used_at = now
    return True


def recovery_codes_left(db: Session, account: StaffAccount) -> int:
    query = select(RecoveryCode).where(RecoveryCode.account_id == account.id, RecoveryCode.used_at.is_(None))
    return len(db.scalars(query).all())


def turn_off(db: Session, account: StaffAccount) -> None:
    account.totp_secret = account.totp_pending = None
    account.totp_last_step = None
    db.execute(delete(RecoveryCode).where(RecoveryCode.account_id == account.id))


def _hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()
