"""Subscriber tables and the queries the rest of the project needs.

A subscriber with no region preferences gets every region.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime

from sqlalchemy import Enum, ForeignKey, Integer, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from digest.db import Base, UTCDateTime
from digest.models import Recipient


def utcnow() -> datetime:
    return datetime.now(UTC)


class Status(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class Subscriber(Base):
    __tablename__ = "subscribers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Stored normalised (domain lower-cased); `email_key` is the case-folded form used for uniqueness.
    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[Status] = mapped_column(
        Enum(Status, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e]),
        default=Status.PENDING,
    )
    source: Mapped[str] = mapped_column(String(50), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    preferences: Mapped[list[RegionPreference]] = relationship(
        back_populates="subscriber", cascade="all, delete-orphan", lazy="selectin"
    )

    @property
    def regions(self) -> frozenset[str] | None:
        return frozenset(p.region for p in self.preferences) or None

    def to_recipient(self) -> Recipient:
        return Recipient(subscriber_id=self.id, email=self.email, name=self.name, regions=self.regions)


class RegionPreference(Base):
    __tablename__ = "region_preferences"
    __table_args__ = (UniqueConstraint("subscriber_id", "region"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), index=True)
    region: Mapped[str] = mapped_column(String(100))

    subscriber: Mapped[Subscriber] = relationship(back_populates="preferences")


class Event(Base):
    """What happened to a subscriber, when, and through what (web, import, cli, bounce)."""

    __tablename__ = "subscriber_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(30))
    source: Mapped[str] = mapped_column(String(50), default="")
    detail: Mapped[str] = mapped_column(String(500), default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


def email_key(email: str) -> str:
    return email.strip().casefold()


def get_by_email(session: Session, email: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.email_key == email_key(email)))


def add_subscriber(
    session: Session,
    email: str,
    *,
    name: str = "",
    regions: frozenset[str] | set[str] | None = None,
    status: Status = Status.ACTIVE,
    source: str = "cli",
) -> Subscriber:
    """Add a subscriber, or return the existing one unchanged (an add never resubscribes)."""
    existing = get_by_email(session, email)
    if existing is not None:
        return existing
    sub = Subscriber(email=email.strip(), email_key=email_key(email), name=name, status=status, source=source)
    sub.preferences = [RegionPreference(region=r) for r in sorted(regions or ())]
    session.add(sub)
    session.flush()
    session.add(Event(subscriber_id=sub.id, kind="subscribed", source=source))
    return sub


def set_status(session: Session, sub: Subscriber, status: Status, *, source: str, detail: str = "") -> None:
    if sub.status == status:
        return
    sub.status = status
    sub.updated_at = utcnow()
    kind = {Status.ACTIVE: "confirmed"}.get(status, status.value)
    session.add(Event(subscriber_id=sub.id, kind=kind, source=source, detail=detail))


def active_recipients(session: Session) -> list[Recipient]:
    """Everyone who should get the next issue, in id order."""
    subs = session.scalars(
        select(Subscriber).where(Subscriber.status == Status.ACTIVE).order_by(Subscriber.id)
    )
    return [s.to_recipient() for s in subs]


def is_active(session: Session, subscriber_id: int) -> bool:
    status = session.scalar(select(Subscriber.status).where(Subscriber.id == subscriber_id))
    return status == Status.ACTIVE
