"""The one database: engine creation and the declarative base every table registers on.

SQLite by default (WAL, foreign keys on), PostgreSQL by URL. Subscriber tables live in
`subscribers.store`, the delivery ledger in `digest.send`; both use `Base` so one migration
history (Alembic) and one `create_all` cover them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import DateTime, Dialect, Engine, TypeDecorator, create_engine, event
from sqlalchemy.orm import DeclarativeBase, sessionmaker


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime on every backend: stored in UTC, read back as UTC.

    SQLite keeps no offset and returns naive values; comparing those with aware ones fails,
    and `.astimezone()` on them would assume the machine's local zone.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware one")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


def make_engine(url: str, *, base_dir: Path | None = None) -> Engine:
    """An engine for `url`; a relative SQLite path resolves against `base_dir`."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////") and base_dir is not None:
        rel = url.removeprefix("sqlite:///")
        if rel and rel != ":memory:":
            path = (base_dir / rel).resolve()
            path.parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{path}"
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # With WAL, NORMAL survives a crash of the process (what the ledger guards against) and
            # spares an fsync per commit; only a power cut can lose the last commits.
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

    return engine


def create_schema(engine: Engine) -> None:
    """Create every table that is not there yet (import the modules that define them first)."""
    import digest.send  # noqa: F401  registers the ledger tables
    import subscribers.store  # noqa: F401  registers the subscriber tables

    Base.metadata.create_all(engine)


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False, future=True)
