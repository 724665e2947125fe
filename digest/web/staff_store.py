"""Staff accounts: who may log in to the console, with which role, and their lock-out state.

Passwords are hashed with Argon2id (argon2-cffi's defaults, RFC 9106's second recommended
profile); a hash made with older parameters is replaced on the next good login. After
`max_failures` wrong passwords in a row an account is locked for a while; the count and the
lock live in the database, so they hold across processes and restarts.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Enum, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from digest.db import Base, UTCDateTime
from digest.errors import DigestError
from subscribers.validate import email_key, normalize_email

_hasher = PasswordHasher()

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # Argon2 takes any length; this bounds the work an attacker can ask for


class Role(enum.StrEnum):
    EDITOR = "editor"  # curate, preview, send tests, approve
    ADMIN = "admin"  # also schedules, subscribers and staff


class StaffError(DigestError, ValueError):
    """A staff account change that cannot be made (unknown account, short password, duplicate)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


class StaffAccount(Base):
    __tablename__ = "staff_accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320), unique=True, index=True)
    role: Mapped[Role] = mapped_column(
        Enum(Role, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])
    )
    password_hash: Mapped[str] = mapped_column(String(200))
    # Bumped when the password changes: a session cookie carries it, so older sessions end.
    password_version: Mapped[int] = mapped_column(Integer, default=1)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)  # wrong passwords in a row
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The addresses of this member's last test send, one a line (the preview page offers them).
    test_addresses: Mapped[str] = mapped_column(Text, default="", server_default="")

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise StaffError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise StaffError(f"the password must be at most {MAX_PASSWORD_LENGTH} characters long")


def get_by_email(session: Session, email: str) -> StaffAccount | None:
    return session.scalar(select(StaffAccount).where(StaffAccount.email_key == email_key(email)))


def get(session: Session, account_id: int) -> StaffAccount | None:
    return session.get(StaffAccount, account_id)


def list_accounts(session: Session) -> list[StaffAccount]:
    return list(session.scalars(select(StaffAccount).order_by(StaffAccount.email_key)))


def add_account(session: Session, email: str, password: str, role: Role = Role.EDITOR) -> StaffAccount:
    address = normalize_email(email)  # raises InvalidAddressError naming the address
    if get_by_email(session, address) is not None:
        raise StaffError(f"{address} already has a staff account")
    check_password(password)
    account = StaffAccount(
        email=address, email_key=email_key(address), role=role, password_hash=_hasher.hash(password)
    )
    session.add(account)
    session.flush()
    return account


def remove_account(session: Session, email: str) -> None:
    account = _find(session, email)
    session.delete(account)
    session.flush()


def set_password(session: Session, email: str, password: str) -> StaffAccount:
    """A new password; it also lifts a lock-out and ends the account's other sessions."""
    account = _find(session, email)
    check_password(password)
    account.password_hash = _hasher.hash(password)
    account.password_version += 1
    account.failed_logins = 0
    account.locked_until = None
    session.flush()
    return account


def _find(session: Session, email: str) -> StaffAccount:
    account = get_by_email(session, email)
    if account is None:
        raise StaffError(f"{email!r} has no staff account")
    return account


class LoginOutcome(enum.StrEnum):
    OK = "ok"
    WRONG = "wrong"  # unknown address or wrong password: one answer for both
    LOCKED = "locked"


@dataclass(frozen=True)
class LoginResult:
    outcome: LoginOutcome
    account: StaffAccount | None = None
    locked_until: datetime | None = None


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the address is unknown, so that answer takes as long as a
    wrong password for a real account. Made on first use: every `digest` command imports this
    module (the models), and an Argon2 hash costs half a second."""
    return _hasher.hash("not a password of anyone")


def authenticate(
    session: Session,
    email: str,
    password: str,
    *,
    now: datetime,
    max_failures: int,
    lock_for: timedelta,
) -> LoginResult:
    """Check a login; counts failures and locks the account after `max_failures` in a row.

    While locked, even the right password is refused. The caller commits.
    """
    account = get_by_email(session, email)
    if account is None or len(password) > MAX_PASSWORD_LENGTH:
        _verify(_dummy_hash(), password[:MAX_PASSWORD_LENGTH])
        return LoginResult(LoginOutcome.WRONG)
    if account.locked_until is not None and account.locked_until > now:
        return LoginResult(LoginOutcome.LOCKED, account, account.locked_until)
    if not _verify(account.password_hash, password):
        account.failed_logins += 1
        if account.failed_logins >= max_failures:
            account.locked_until = now + lock_for
            account.failed_logins = 0
            return LoginResult(LoginOutcome.LOCKED, account, account.locked_until)
        return LoginResult(LoginOutcome.WRONG, account)
    account.failed_logins = 0
    account.locked_until = None
    account.last_login_at = now
    if _hasher.check_needs_rehash(account.password_hash):
        account.password_hash = _hasher.hash(password)
    return LoginResult(LoginOutcome.OK, account)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
