"""Staff accounts: who may log in to the console, and with which role.

Passwords are hashed with Argon2id (argon2-cffi's defaults, RFC 9106's second recommended
profile); a hash made with older parameters is replaced on the next good login. Wrong
passwords are slowed down per address (`login_throttle`); no account is ever locked.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Enum, Integer, String, Text, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from digest.db import Base, UTCDateTime
from digest.errors import DigestError
from digest.web import staff_2fa, staff_sessions
from subscribers.validate import email_key, normalize_email

_hasher = PasswordHasher()

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024  # Argon2 takes any length; this bounds the work an attacker can ask for
# zxcvbn's score (0-4) a password needs: 3 is "safely unguessable: moderate protection from an
# offline slow-hash scenario" (about 10^10 guesses), which Argon2id hashes are.
MIN_PASSWORD_SCORE = 3
# zxcvbn's time grows with the square of the length; the first 100 characters decide.
SCORED_LENGTH = 100


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
    password_version: Mapped[int] = mapped_column(Integer, default=1)  # bumped by each new password
    # The second factor (staff_2fa): the TOTP secret when on, one being enrolled, the last step used.
    totp_secret: Mapped[str | None] = mapped_column(String(64), nullable=True)
    totp_pending: Mapped[str | None] = mapped_column(String(64), nullable=True)
    totp_last_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The addresses of this member's last test send, one a line (the preview page offers them).
    test_addresses: Mapped[str] = mapped_column(Text, default="", server_default="")

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN


def check_password(password: str, *, email: str = "") -> None:
    """Refuse a password that is short or guessable (zxcvbn, offline: common passwords, words,
    names, keyboard patterns, repeats, dates, and the account's own address); the error says why
    and how to do better."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise StaffError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise StaffError(f"the password must be at most {MAX_PASSWORD_LENGTH} characters long")
    from zxcvbn import zxcvbn  # imported here: its word lists take a moment, and only this needs them

    local, _, domain = email.partition("@")
    inputs = [w for w in (email, local, domain.split(".")[0], "digest", "staff", "newsletter") if w]
    result = zxcvbn(password[:SCORED_LENGTH], user_inputs=inputs)
    if result["score"] < MIN_PASSWORD_SCORE:
        feedback = result["feedback"]
        why = (feedback.get("warning") or "It would be found by a guessing program.").rstrip(".")
        tips = " ".join(feedback.get("suggestions") or [])
        raise StaffError(
            f"the password is too easy to guess: {why}. "
            f"{tips + ' ' if tips else ''}A few unrelated words or a password manager's password work."
        )


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
    check_password(password, email=address)
    account = StaffAccount(
        email=address, email_key=email_key(address), role=role, password_hash=_hasher.hash(password)
    )
    session.add(account)
    session.flush()
    return account


def remove_account(session: Session, email: str) -> None:
    """Remove the account and end its sessions (explicitly: SQLite may not enforce the cascade,
    and a new account may get the same id)."""
    account = _find(session, email)
    staff_sessions.end_all(session, account.id)
    staff_2fa.turn_off(session, account)  # its recovery codes go too
    session.delete(account)
    session.flush()


def set_password(session: Session, email: str, password: str) -> StaffAccount:
    """A new password; it ends every session of the account."""
    account = _find(session, email)
    check_password(password, email=account.email)
    account.password_hash = _hasher.hash(password)
    account.password_version += 1
    staff_sessions.end_all(session, account.id)
    session.flush()
    return account


def reset_second_factor(session: Session, email: str) -> StaffAccount:
    """Turn the account's second factor off (a lost phone); its sessions end."""
    account = _find(session, email)
    staff_2fa.turn_off(session, account)
    staff_sessions.end_all(session, account.id)
    session.flush()
    return account


def set_role(session: Session, email: str, role: Role) -> StaffAccount:
    """A new role; the account's sessions end, so none goes on with the rights it had."""
    account = _find(session, email)
    if account.role != role:
        account.role = role
        staff_sessions.end_all(session, account.id)
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


@dataclass(frozen=True)
class LoginResult:
    outcome: LoginOutcome
    account: StaffAccount | None = None


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against when the address is unknown, so that answer takes as long as a
    wrong password for a real account. Made on first use: every `digest` command imports this
    module (the models), and an Argon2 hash costs half a second."""
    return _hasher.hash("not a password of anyone")


def authenticate(session: Session, email: str, password: str, *, now: datetime) -> LoginResult:
    """Check a login: one Argon2 verification whether or not the address has an account, so
    the answer and the time it takes are the same. The caller commits."""
    account = get_by_email(session, email)
    if account is None or len(password) > MAX_PASSWORD_LENGTH:
        _verify(_dummy_hash(), password[:MAX_PASSWORD_LENGTH])
        return LoginResult(LoginOutcome.WRONG)
    if not _verify(account.password_hash, password):
        return LoginResult(LoginOutcome.WRONG, account)
    account.last_login_at = now
    if _hasher.check_needs_rehash(account.password_hash):
        account.password_hash = _hasher.hash(password)
    return LoginResult(LoginOutcome.OK, account)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
