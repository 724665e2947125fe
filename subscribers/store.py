"""Subscriber tables and the queries the rest of the project needs.

A subscriber with no region preferences gets every region. Anyone unsubscribed, bounced or
complained is also written to `suppressions`, keyed by address, so they stay suppressed even
if their subscriber row is deleted or re-imported; `active_recipients` never returns a
suppressed address.

An erased subscriber (`delete_subscriber`) leaves only a hash on that list: the `email_key`
column then holds `sha256:<hex>` (see `subscribers.validate.erased_key`), and every lookup
compares an address by its key and by that hash.

Sign-up requests wait in `signup_jobs` until the web app's worker has handled them, and each
confirmation mail is counted in `confirmation_mails` per mailbox (`mailbox_key`), so both
survive restarts and hold across processes.
"""

from __future__ import annotations

import enum
import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Enum,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    bindparam,
    delete,
    func,
    select,
    text,
)
from sqlalchemy.orm import Mapped, Session, mapped_column, relationship

from digest.db import Base, UTCDateTime
from digest.db import insert_rows as _db_insert_rows
from digest.models import Recipient
from subscribers.validate import (
    ERASED_PREFIX,
    clean_name,
    email_key,
    erased_key,
    legacy_email_key,
    mailbox_key,
    normalize_email,
)

__all__ = [
    "ConfirmOutcome",
    "Event",
    "RegionPreference",
    "Status",
    "Subscriber",
    "Suppression",
    "active_recipients",
    "add_subscriber",
    "confirm",
    "email_key",
    "get_by_email",
    "inactive_among",
    "is_active",
    "iter_active_recipients",
    "is_suppressed",
    "set_status",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """SQLite hands back naive datetimes even for timezone=True columns; they were stored as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Status(enum.StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


# Statuses that put the address on the suppression list.
SUPPRESSING = frozenset({Status.UNSUBSCRIBED, Status.BOUNCED, Status.COMPLAINED})


def _enum(cls: type[enum.Enum], length: int = 20) -> Enum:
    # Stored as plain strings (no native ENUM type) so migrations never need ALTER TYPE.
    return Enum(cls, native_enum=False, length=length, values_callable=lambda e: [m.value for m in e])


class Subscriber(Base):
    __tablename__ = "subscribers"
    # AUTOINCREMENT on SQLite: ids are never reused, so a token for a deleted row can never
    # act on someone who joins later.
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Stored normalised, as typed otherwise; `email_key` (subscribers.validate) is the lower-cased
    # form used for uniqueness: "Straße@" and "strasse@" stay two subscribers.
    email: Mapped[str] = mapped_column(String(320))
    email_key: Mapped[str] = mapped_column(String(320), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[Status] = mapped_column(_enum(Status), default=Status.PENDING)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str] = mapped_column(String(50), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When the newest confirmation mail went out; cleared once confirmed, which makes every
    # earlier confirm link single-use.
    confirm_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The name and regions (JSON list; [] = every region) of the newest sign-up request. They
    # are applied only when its confirm link is used: anyone can type someone else's address
    # into the form, and must not change that person's record by doing so. NULL: none pending.
    requested_name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    requested_regions: Mapped[str | None] = mapped_column(Text, nullable=True)

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
    # Its index starts with subscriber_id and serves lookups by subscriber: a second index on
    # that column alone would only cost every insert (dropped in migration 0016).
    __table_args__ = (UniqueConstraint("subscriber_id", "region"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    region: Mapped[str] = mapped_column(String(100))

    subscriber: Mapped[Subscriber] = relationship(back_populates="preferences")


class Suppression(Base):
    """An address that must never be mailed, whatever its subscriber row says."""

    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The address's email_key, or for an erased address only `sha256:<hex of its key>`.
    email_key: Mapped[str] = mapped_column(String(320), unique=True, index=True)
    reason: Mapped[str] = mapped_column(String(30))  # unsubscribed | bounced | complained | manual
    source: Mapped[str] = mapped_column(String(50), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Event(Base):
    """What happened to a subscriber, when, and through what (web, import, cli, bounce)."""

    __tablename__ = "subscriber_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(30))
    source: Mapped[str] = mapped_column(String(50), default="")
    detail: Mapped[str] = mapped_column(String(500), default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class SignupJob(Base):
    """A sign-up request from the web form, waiting for the background worker.

    POST /subscribe only inserts this row and answers; the worker (digest.web.queue) does the
    rest. A row whose process died mid-way is claimed again once its claim is stale.
    """

    __tablename__ = "signup_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(200), default="")
    regions: Mapped[str] = mapped_column(Text, default="[]")  # JSON list; [] = every region
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    last_error: Mapped[str] = mapped_column(String(500), default="")


class ConfirmationMail(Base):
    """One confirmation mail sent, by mailbox (`+tag` and case removed), for the per-mailbox limit.

    The mailbox is kept as a hash (`mailbox_hash`): counting needs no address, and an erased
    subscriber's address must not linger here.
    """

    __tablename__ = "confirmation_mails"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_key: Mapped[str] = mapped_column(String(80), index=True)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


# --- queries -------------------------------------------------------------------------------


def mailbox_hash(email: str) -> str:
    return erased_key(mailbox_key(email))


def forget_confirmations_before(session: Session, before: datetime) -> None:
    """Drop counts older than any window still in use (housekeeping for the web worker)."""
    session.execute(delete(ConfirmationMail).where(ConfirmationMail.sent_at < before))


def suppression_keys(email: str) -> tuple[str, ...]:
    """Every form under which `email` may be on the suppression list.

    Its key; the hash of its key (erased); and the hash of the key as it was before migration
    0008 (whole address case-folded), which erasures made before then left behind. That last
    one errs on the side of not mailing: an old erasure of `straße@` also holds off `strasse@`.
    """
    key = email_key(email)
    return tuple(dict.fromkeys((key, erased_key(key), erased_key(legacy_email_key(email)))))


def suppression_of(session: Session, email: str) -> Suppression | None:
    return session.scalar(
        select(Suppression).where(Suppression.email_key.in_(suppression_keys(email))).limit(1)
    )


def is_erased(session: Session, email: str) -> bool:
    """True if `email` was erased (only its hash is on the suppression list)."""
    hashed = suppression_keys(email)[1:]
    return (
        session.scalar(select(Suppression.id).where(Suppression.email_key.in_(hashed)).limit(1)) is not None
    )


def list_suppressions(session: Session) -> list[Suppression]:
    return list(session.scalars(select(Suppression).order_by(Suppression.id)))


def get_by_email(session: Session, email: str) -> Subscriber | None:
    return session.scalar(select(Subscriber).where(Subscriber.email_key == email_key(email)))


def get(session: Session, subscriber_id: int) -> Subscriber | None:
    return session.get(Subscriber, subscriber_id)


def is_suppressed(session: Session, email: str) -> bool:
    return suppression_of(session, email) is not None


def suppression_for(session: Session, email: str) -> Suppression | None:
    return session.scalar(select(Suppression).where(Suppression.email_key == email_key(email)))


def _receiving() -> tuple[Any, ...]:
    """The SQL half of "should get mail now": active, not paused, its key not suppressed."""
    suppressed = select(Suppression.email_key).where(Suppression.email_key.not_like(f"{ERASED_PREFIX}%"))
    return (
        Subscriber.status == Status.ACTIVE,
        Subscriber.paused.is_(False),
        Subscriber.email_key.not_in(suppressed),
    )


def _erased(session: Session) -> set[str]:
    """The other half: erased addresses are known by hash only; there are few, so they are
    compared in Python (`_not_erased`) rather than in SQL."""
    return set(
        session.scalars(select(Suppression.email_key).where(Suppression.email_key.like(f"{ERASED_PREFIX}%")))
    )


def _not_erased(email: str, erased: set[str]) -> bool:
    return not erased or erased.isdisjoint(suppression_keys(email)[1:])


def active_recipients(session: Session) -> list[Recipient]:
    """Everyone who should get the next issue, in id order: active, not paused, not suppressed."""
    return list(iter_active_recipients(session))


def iter_active_recipients(session: Session, *, chunk: int = 5000) -> Iterator[Recipient]:
    """`active_recipients` as a stream, by id ranges: a million subscribers never sit in memory
    as ORM objects at once (freezing a run reads them this way)."""
    erased = _erased(session)
    last = 0
    while True:
        rows = session.execute(
            select(Subscriber.id, Subscriber.email, Subscriber.name)
            .where(Subscriber.id > last, *_receiving())
            .order_by(Subscriber.id)
            .limit(chunk)
        ).all()
        if not rows:
            return
        regions: dict[int, set[str]] = {}
        for sid, region in session.execute(
            select(RegionPreference.subscriber_id, RegionPreference.region).where(
                RegionPreference.subscriber_id.between(rows[0].id, rows[-1].id)
            )
        ):
            regions.setdefault(sid, set()).add(region)
        for r in rows:
            if not _not_erased(r.email, erased):
                continue
            chosen = regions.get(r.id)
            yield Recipient(
                subscriber_id=r.id, email=r.email, name=r.name, regions=frozenset(chosen) if chosen else None
            )
        last = rows[-1].id


def inactive_among(session: Session, subscriber_ids: Sequence[int]) -> set[int]:
    """Which of these subscribers should get no mail now (left, paused, suppressed or erased).

    One query for a whole batch: the send stage asks this just before it claims each batch.
    """
    ids = set(subscriber_ids)
    if not ids:
        return set()
    erased = _erased(session)
    rows = session.execute(
        select(Subscriber.id, Subscriber.email).where(Subscriber.id.in_(ids), *_receiving())
    )
    return ids - {r.id for r in rows if _not_erased(r.email, erased)}


def is_active(session: Session, subscriber_id: int) -> bool:
    """True if the subscriber should get mail now (the send stage re-checks just before sending)."""
    row = session.execute(
        select(Subscriber.status, Subscriber.paused, Subscriber.email_key).where(
            Subscriber.id == subscriber_id
        )
    ).first()
    if row is None or row.status != Status.ACTIVE or row.paused:
        return False
    return not is_suppressed(session, row.email_key)


def count_by_status(session: Session) -> dict[Status, int]:
    counts = dict.fromkeys(Status, 0)
    for status, n in session.execute(select(Subscriber.status, func.count()).group_by(Subscriber.status)):
        counts[Status(status)] = n
    return counts


def list_subscribers(session: Session, *, status: Status | None = None) -> list[Subscriber]:
    query = select(Subscriber).order_by(Subscriber.id)
    if status is not None:
        query = query.where(Subscriber.status == status)
    return list(session.scalars(query))


def events_for(session: Session, sub: Subscriber) -> list[Event]:
    return list(session.scalars(select(Event).where(Event.subscriber_id == sub.id).order_by(Event.id)))


def lock_mailbox(session: Session, sub: Subscriber) -> None:
    """Serialise sign-ups for one mailbox until the transaction ends, so that two processes
    cannot both count 1 and both send.

    PostgreSQL: a transaction-scoped advisory lock on the mailbox. SQLite: a write to the
    subscriber's row, which takes the database's one write lock before the count is read (the
    driver runs plain SELECTs outside a transaction, so reading first would not).
    """
    if session.get_bind().dialect.name == "postgresql":
        digest = hashlib.sha256(mailbox_key(sub.email).encode()).digest()
        session.execute(
            text("SELECT pg_advisory_xact_lock(:id)"), {"id": int.from_bytes(digest[:8], "big", signed=True)}
        )
    else:
        session.execute(text("UPDATE subscribers SET updated_at = updated_at WHERE id = :id"), {"id": sub.id})


def confirmations_since(session: Session, email: str, since: datetime) -> int:
    """Confirmation mails sent since `since` to the mailbox of `email`, whatever its +tag or case."""
    return session.scalar(
        select(func.count()).where(
            ConfirmationMail.mailbox_key == mailbox_hash(email), ConfirmationMail.sent_at >= since
        )
    )


def count_events_since(session: Session, sub: Subscriber, kind: str, since: datetime) -> int:
    return session.scalar(
        select(func.count()).where(Event.subscriber_id == sub.id, Event.kind == kind, Event.at >= since)
    )


def one_of(session: Session, column: Any, values: Sequence[str]) -> Any:
    """`column IN values` for a long list, passed as one parameter where the database allows it.

    An import asks about thousands of keys per batch; as an ordinary IN list each is a bind
    parameter SQLAlchemy renders and converts. SQLite reads them from one JSON array
    (`json_each`), PostgreSQL too (`json_array_elements_text`); others get the plain IN list.
    """
    dialect = session.get_bind().dialect.name
    if dialect == "sqlite":
        listed = func.json_each(json.dumps(list(values))).table_valued("value")
        return column.in_(select(listed.c.value))
    if dialect == "postgresql":
        # As JSON text, not a text[] parameter: psycopg quotes an array element by element
        # with a regular expression each (400,000 of them in a 100,000-row import).
        from sqlalchemy import bindparam, cast
        from sqlalchemy.dialects.postgresql import JSON

        array = cast(bindparam(None, json.dumps(list(values)), type_=String), JSON)
        elements = func.json_array_elements_text(array).table_valued("value")
        return column.in_(select(elements.c.value))
    return column.in_(list(values))


# `insert_rows` lives in digest.db, beside the engine; imports call it through this module.
insert_rows = _db_insert_rows


def reserve_ids(session: Session, table: Table, count: int) -> list[int]:
    """PostgreSQL: `count` new ids from `table`'s id sequence, in increasing order, in one query.

    Rows written by COPY with these ids need no query afterwards to learn them. A rollback
    leaves the numbers unused, as a rolled-back INSERT would.
    """
    name = f"{table.schema}.{table.name}" if table.schema else table.name
    # The sequence is looked up once: written inside nextval(), pg_get_serial_sequence runs
    # per row, which made this query ten times slower.
    found = session.execute(
        text(
            "WITH s AS MATERIALIZED (SELECT CAST(pg_get_serial_sequence(:table, 'id') AS regclass) AS seq)"
            " SELECT nextval(s.seq) FROM s, generate_series(1, :count)"
        ),
        {"table": name, "count": count},
    )
    return sorted(found.scalars())


def insert_json_rows(
    session: Session, table: Table, names: Sequence[str], rows: Sequence[Sequence[Any]], same: dict[str, Any]
) -> None:
    """PostgreSQL: rows into `table` as one INSERT ... SELECT over a JSON array, one array per row.

    For narrow rows the server spreads the JSON itself: one `json.dumps` here instead of a
    COPY row formatted in Python per row. `rows` hold JSON-able values for `names`, in that
    order (each cast to its column's type); `same` holds values every row shares, bound once
    through their column types.
    """
    if not rows:
        return
    dialect = session.get_bind().dialect
    quote = dialect.identifier_preparer
    spread = [f"CAST(e->>{i} AS {table.c[name].type.compile(dialect)})" for i, name in enumerate(names)]
    shared = [f":{name}" for name in same]
    statement = text(
        f"INSERT INTO {quote.format_table(table)} ({', '.join(quote.quote(n) for n in (*names, *same))}) "
        f"SELECT {', '.join((*spread, *shared))} FROM json_array_elements(CAST(:rows AS json)) AS e"
    ).bindparams(*(bindparam(name, type_=table.c[name].type) for name in same))
    session.execute(statement, {"rows": json.dumps(rows), **same})


# --- changes -------------------------------------------------------------------------------


def log(session: Session, sub: Subscriber, kind: str, *, source: str, detail: str = "") -> None:
    session.add(Event(subscriber_id=sub.id, kind=kind, source=source, detail=detail[:500], at=utcnow()))


def add_subscriber(
    session: Session,
    email: str,
    *,
    name: str = "",
    regions: frozenset[str] | set[str] | None = None,
    status: Status = Status.ACTIVE,
    source: str = "cli",
    created_at: datetime | None = None,
) -> Subscriber:
    """Add a subscriber, or return the existing one unchanged (an add never resubscribes).

    The address is validated and normalised (`InvalidAddressError`), the name checked
    (`InputError`). A new row for a suppressed address is stored as unsubscribed, never active.
    Region names are not checked here: callers check them against the configuration.
    """
    normalized = normalize_email(email)
    name = clean_name(name)
    existing = get_by_email(session, normalized)
    if existing is not None:
        return existing
    if status not in SUPPRESSING and is_suppressed(session, normalized):
        status = Status.UNSUBSCRIBED
    now = utcnow()
    sub = Subscriber(
        email=normalized,
        email_key=email_key(normalized),
        name=name,
        status=status,
        paused=False,
        source=source,
        created_at=created_at or now,
        updated_at=now,
        confirmed_at=now if status == Status.ACTIVE else None,
    )
    sub.preferences = [RegionPreference(region=r) for r in sorted(regions or ())]
    session.add(sub)
    session.flush()
    log(session, sub, "imported" if source == "import" else "subscribed", source=source, detail=status.value)
    if status in SUPPRESSING:
        suppress(session, normalized, reason=status.value, source=source)
    return sub


def suppress(session: Session, email: str, *, reason: str, source: str) -> None:
    """Put an address on the suppression list (keeps the first reason if already there)."""
    if suppression_of(session, email) is None:
        session.add(
            Suppression(email_key=email_key(email), reason=reason, source=source, created_at=utcnow())
        )
        session.flush()


def suppress_key(
    session: Session, key: str, *, reason: str, source: str, created_at: datetime | None = None
) -> bool:
    """Put a key as stored (an address's email_key, or an erased `sha256:` hash) on the list;
    True if it was not there yet. For import, which carries erased addresses as hashes."""
    if session.scalar(select(Suppression.id).where(Suppression.email_key == key)) is not None:
        return False
    session.add(Suppression(email_key=key, reason=reason, source=source, created_at=created_at or utcnow()))
    session.flush()
    return True


def lift_suppression(session: Session, email: str) -> None:
    session.execute(delete(Suppression).where(Suppression.email_key.in_(suppression_keys(email))))


def set_status(session: Session, sub: Subscriber, status: Status, *, source: str, detail: str = "") -> None:
    """Change a status, log it, and keep the suppression list in step.

    Unsubscribed, bounced and complained suppress the address; becoming active again (a
    confirmed re-subscription, or staff) lifts the suppression.
    """
    if sub.status == status:
        return
    sub.status = status
    sub.updated_at = utcnow()
    if status == Status.ACTIVE:
        sub.confirmed_at = sub.updated_at
        sub.confirm_requested_at = None
        _clear_sign_up_request(sub)  # its confirm link is spent now, so is what it asked for
        lift_suppression(session, sub.email)
    elif status in SUPPRESSING:
        suppress(session, sub.email, reason=status.value, source=source)
    kind = {Status.ACTIVE: "confirmed"}.get(status, status.value)
    log(session, sub, kind, source=source, detail=detail)


def unsubscribe(session: Session, sub: Subscriber, *, source: str, detail: str = "") -> bool:
    """Unsubscribe; True if this changed anything. Bounced/complained stay as they are."""
    if sub.status in SUPPRESSING:
        suppress(session, sub.email, reason=sub.status.value, source=source)
        return False
    set_status(session, sub, Status.UNSUBSCRIBED, source=source, detail=detail)
    return True


def set_regions(session: Session, sub: Subscriber, regions: Iterable[str], *, source: str) -> bool:
    """Replace the region preferences (empty: every region); True if they changed."""
    wanted = frozenset(regions)
    if wanted == frozenset(p.region for p in sub.preferences):
        return False
    # Keep rows that stay: the unit of work inserts before it deletes, so re-adding a region
    # that is also being removed would trip the (subscriber_id, region) unique constraint.
    have = {p.region for p in sub.preferences}
    sub.preferences = [p for p in sub.preferences if p.region in wanted] + [
        RegionPreference(region=r) for r in sorted(wanted - have)
    ]
    sub.updated_at = utcnow()
    log(session, sub, "preferences", source=source, detail=", ".join(sorted(wanted)) or "all regions")
    return True


def set_paused(session: Session, sub: Subscriber, paused: bool, *, source: str) -> bool:
    if sub.paused == paused:
        return False
    sub.paused = paused
    sub.updated_at = utcnow()
    log(session, sub, "paused" if paused else "resumed", source=source)
    return True


def set_name(session: Session, sub: Subscriber, name: str, *, source: str) -> bool:
    name = clean_name(name)
    if sub.name == name:
        return False
    sub.name = name
    sub.updated_at = utcnow()
    log(session, sub, "renamed", source=source)
    return True


def note_sign_up_request(sub: Subscriber, *, name: str, regions: Iterable[str]) -> None:
    """Keep a sign-up request's name and regions until its confirm link is used (see `confirm`)."""
    sub.requested_name = clean_name(name)
    sub.requested_regions = json.dumps(sorted(frozenset(regions)))


def _apply_sign_up_request(session: Session, sub: Subscriber, *, source: str) -> None:
    if sub.requested_name is not None:
        set_name(session, sub, sub.requested_name, source=source)
    if sub.requested_regions is not None:
        set_regions(session, sub, json.loads(sub.requested_regions), source=source)
    _clear_sign_up_request(sub)


def _clear_sign_up_request(sub: Subscriber) -> None:
    sub.requested_name = None
    sub.requested_regions = None


def note_confirmation_sent(
    session: Session, sub: Subscriber, *, source: str, at: datetime | None = None
) -> None:
    """Record that a confirmation mail went out; the newest request is the one that counts."""
    at = at or utcnow()
    sub.confirm_requested_at = at
    session.add(Event(subscriber_id=sub.id, kind="confirmation_sent", source=source, at=at))
    session.add(ConfirmationMail(mailbox_key=mailbox_hash(sub.email), sent_at=at))


class ConfirmOutcome(enum.StrEnum):
    CONFIRMED = "confirmed"
    ALREADY_ACTIVE = "already_active"
    USED = "used"  # the link was used already, or a newer confirmation mail replaced it
    REFUSED = "refused"  # bounced or complained: only staff can reactivate


def confirm(session: Session, sub: Subscriber, *, issued_at: datetime, source: str) -> ConfirmOutcome:
    """Activate `sub` from a confirm link issued at `issued_at`.

    A link works once: confirming clears `confirm_requested_at`, and a link older than the
    newest request (to the second, the precision of the token's timestamp) is stale.
    """
    if sub.status == Status.ACTIVE:
        return ConfirmOutcome.ALREADY_ACTIVE
    if sub.status in (Status.BOUNCED, Status.COMPLAINED):
        return ConfirmOutcome.REFUSED
    requested = sub.confirm_requested_at
    if requested is None or as_utc(issued_at).timestamp() < int(as_utc(requested).timestamp()):
        return ConfirmOutcome.USED
    sub.paused = False
    # The newest request's name and regions: this link is that request's (older ones are stale).
    _apply_sign_up_request(session, sub, source=source)
    set_status(session, sub, Status.ACTIVE, source=source)
    return ConfirmOutcome.CONFIRMED


def delete_subscriber(session: Session, sub: Subscriber, *, source: str) -> None:
    """Erase a subscriber and their history (data-protection requests); the address stays suppressed
    so a later import cannot bring it back, but only as a hash of its key: the address itself is
    gone from the database (its confirmation counts, by mailbox, age out on their own)."""
    existing = suppression_of(session, sub.email)
    reason = existing.reason if existing is not None else "manual"
    created = existing.created_at if existing is not None else utcnow()
    session.execute(delete(Suppression).where(Suppression.email_key.in_(suppression_keys(sub.email))))
    session.add(
        Suppression(
            email_key=erased_key(email_key(sub.email)), reason=reason, source=source, created_at=created
        )
    )
    session.delete(sub)
    session.flush()
