"""The one database: engine creation and the declarative base every table registers on.

SQLite by default (WAL, foreign keys on), PostgreSQL by URL. Subscriber tables live in
`subscribers.store`, the delivery ledger in `digest.send`; both use `Base` so one migration
history (Alembic) and one `create_all` cover them.
"""

from __future__ import annotations

import importlib
import logging
import re
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    Connection,
    DateTime,
    Dialect,
    Engine,
    Table,
    TypeDecorator,
    bindparam,
    create_engine,
    event,
)
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

if TYPE_CHECKING:
    from alembic.config import Config as AlembicConfig


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
    if url.startswith("sqlite:///"):
        name = url.removeprefix("sqlite:///")
        if name and name != ":memory:" and "?" not in name:
            path = Path(name)
            if not path.is_absolute():
                path = (base_dir or Path.cwd()) / path
            # SQLite creates the file but not its folder: a fresh install must not fail on that.
            path.parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{path.resolve()}"
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            # FULL, not WAL's usual NORMAL: under NORMAL a power cut can undo the last commits,
            # and a row the server had accepted would come back as pending and be sent twice.
            # The ledger commits once per batch, so the fsync per commit costs little.
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

    return engine


# Modules whose import registers tables on `Base`. A module not written yet on this branch
# is skipped; any other import error is real and propagates.
MODEL_MODULES = (
    "subscribers.store",
    "digest.send",
    "subscribers.reports",
    "digest.schedule",
    "digest.drafts",
    "digest.web.staff_store",
    "digest.web.staff_sessions",
    "digest.web.login_throttle",
    "digest.web.staff_2fa",
    "digest.distributed",
    "digest.alerts",
    "digest.clicks",
)


def import_models() -> None:
    for name in MODEL_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise


# --- many rows at once ------------------------------------------------------------------


def _remembering(convert: Any) -> Any:
    """`convert`, answering a value it has seen from memory: a batch's rows share their times."""
    if convert is None:
        return None
    seen: dict[Any, Any] = {}

    def remembered(value: Any) -> Any:
        try:
            return seen[value]
        except KeyError:
            out = seen[value] = convert(value)
            return out
        except TypeError:  # not hashable
            return convert(value)

    return remembered


def _bind_processor(table: Table, name: str, dialect: Any) -> Any:
    """The column type's bind processor; on SQLite followed by the adapter sqlite3 would apply.

    sqlite3 turns a datetime into text with its registered adapter on every row; done here, a
    value shared by the batch (its `now`) is turned into text once, and the text is the same.
    """
    # The dialect's own variant of the type, as SQLAlchemy's statements use: a TypeDecorator's
    # plain bind_processor skips its implementation's (on SQLite, DateTime's text format), and
    # sqlite3 then wrote "+00:00" after the time, text that compares unlike SQLAlchemy's own.
    convert = table.c[name].type.dialect_impl(dialect).bind_processor(dialect)
    if convert is None or dialect.name != "sqlite":
        return convert

    def adapted(value: Any) -> Any:
        out = convert(value)
        adapt = sqlite3.adapters.get((type(out), sqlite3.PrepareProtocol))
        return out if adapt is None else adapt(out)

    return adapted


def insert_rows(
    session: Session, table: Table, rows: Sequence[dict[str, Any]], *, skip_duplicates_of: Sequence[str] = ()
) -> None:
    """Many rows, every one with the same keys, into `table` by the driver's `executemany`
    (COPY on PostgreSQL).

    Each value goes through its column type's own bind processor, so what is stored is what an
    ORM or Core insert stores; what is skipped is SQLAlchemy's bookkeeping per row, which costs
    an import or a freeze more than the database does. Python-side column defaults do not
    apply: give every value the table needs (a row that leaves one out is refused, naming it).

    `skip_duplicates_of` names the columns of a unique constraint: a row that would break it is
    left out (ON CONFLICT DO NOTHING). COPY cannot do that, so on PostgreSQL such rows go
    through SQLAlchemy's own batched INSERT.
    """
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    statement: Any = table.insert()
    if skip_duplicates_of:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            insert = pg_insert(table).on_conflict_do_nothing(index_elements=list(skip_duplicates_of))
            session.execute(insert, list(rows))
            return
        if dialect.name != "sqlite":
            raise NotImplementedError(f"skipping duplicates on {dialect.name}")
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        statement = sqlite_insert(table).on_conflict_do_nothing(index_elements=list(skip_duplicates_of))
    names = list(rows[0])
    compiled = statement.compile(dialect=dialect, column_keys=names)
    if set(compiled.binds) != set(names):
        missing = sorted(set(compiled.binds) - set(names))
        raise ValueError(f"insert_rows into {table.name}: give values for {', '.join(missing)}")
    order = list(compiled.positiontup or ()) if dialect.positional else names
    processors = [(name, _remembering(_bind_processor(table, name, dialect))) for name in order]
    values = (
        [row[name] if convert is None else convert(row[name]) for name, convert in processors] for row in rows
    )
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        # COPY: one stream for the whole batch instead of a protocol round per row.
        quote = dialect.identifier_preparer
        columns = ", ".join(quote.quote(name) for name in order)
        raw = connection.connection.dbapi_connection
        assert raw is not None
        with (
            raw.cursor() as cursor,
            cursor.copy(f"COPY {quote.format_table(table)} ({columns}) FROM STDIN") as copy,
        ):
            for row_values in values:
                copy.write_row(row_values)
        return
    if dialect.positional:
        connection.exec_driver_sql(str(compiled), [tuple(v) for v in values])
    else:
        connection.exec_driver_sql(str(compiled), [dict(zip(order, v, strict=True)) for v in values])


def update_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]], *, key: str = "id") -> None:
    """Many rows of `table`, each found by its `key` column, set to the other values given, by
    the driver's `executemany`: as `insert_rows`, each value through its column type's own bind
    processor, without SQLAlchemy's bookkeeping per row. Every row gives the same columns."""
    if not rows:
        return
    connection = session.connection()
    dialect = connection.dialect
    names = [name for name in rows[0] if name != key]
    # Parameters are named apart from the columns (SQLAlchemy keeps a column's own name for
    # its SET clause).
    statement = (
        table.update()
        .where(table.c[key] == bindparam(f"p_{key}"))
        .values({name: bindparam(f"p_{name}") for name in names})
    )
    compiled = statement.compile(dialect=dialect)
    params = list(compiled.positiontup or ()) if dialect.positional else list(compiled.binds)
    if missing := [p for p in params if not p.startswith("p_")]:  # a column's onupdate default
        raise ValueError(f"update_rows of {table.name}: give values for {', '.join(missing)}")
    processors = [(p[2:], _remembering(_bind_processor(table, p[2:], dialect))) for p in params]
    values = (
        [row[name] if convert is None else convert(row[name]) for name, convert in processors] for row in rows
    )
    if dialect.positional:
        connection.exec_driver_sql(str(compiled), [tuple(v) for v in values])
    else:
        connection.exec_driver_sql(str(compiled), [dict(zip(params, v, strict=True)) for v in values])


def create_schema(engine: Engine) -> None:
    """Create every table that is not there yet (import the modules that define them first).

    The database is then stamped with the newest migration, so a later `migrate` sees it as
    up to date instead of trying to create the tables again.
    """
    import_models()
    Base.metadata.create_all(engine)
    if current_revision(engine) is None:
        _stamp_head(engine)


def alembic_config(connection: Connection | None = None) -> AlembicConfig:
    """Alembic configuration pointing at the bundled migrations (no alembic.ini needed)."""
    from alembic.config import Config as AlembicConfig

    import digest.migrations

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(Path(digest.migrations.__file__).parent))
    cfg.attributes["connection"] = connection
    return cfg


def migrate(engine: Engine, revision: str = "head") -> None:
    """Bring the database schema up to `revision` with Alembic (idempotent).

    A database made by `create_schema` before it stamped versions (tables, no version) is
    adopted: stamped as current, since create_all built it from the same models.
    """
    if revision == "head" and _is_at_head(engine):
        return  # up to date: every command starts here, and Alembic's import alone costs 0.1 s

    from alembic import command
    from alembic.script import ScriptDirectory
    from sqlalchemy import inspect

    current = current_revision(engine)
    if revision == "head" and current in ScriptDirectory.from_config(alembic_config()).get_heads():
        return  # up to date: env.py would import every model
    if current is None and inspect(engine).has_table("subscribers"):
        logging.getLogger(__name__).warning(
            "database has tables but no migration version; stamping it as current"
        )
        _stamp_head(engine)
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)


# `revision = "..."` and `down_revision = "..."` as every file in migrations/versions writes them
_REVISION_LINE = re.compile(r'^(down_revision|revision) = (?:"([^"]+)"|None)$', re.MULTILINE)


def _head_of_files() -> str | None:
    """The newest revision, read from the migration files' text without importing Alembic.

    None when the history is not one plain line (a merge, two heads, a line written another
    way): `migrate` then asks Alembic itself.
    """
    import digest.migrations

    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (Path(digest.migrations.__file__).parent / "versions").glob("*.py"):
        if path.name == "__init__.py":
            continue
        found = dict((m.group(1), m.group(2)) for m in _REVISION_LINE.finditer(path.read_text("utf-8")))
        if "revision" not in found or "down_revision" not in found or found["revision"] is None:
            return None
        revisions.add(found["revision"])
        if found["down_revision"] is not None:
            parents.add(found["down_revision"])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def _is_at_head(engine: Engine) -> bool:
    """Whether the database is stamped with the newest migration, asked with one plain SELECT
    (no Alembic import). False whenever in doubt: `migrate` then takes Alembic's own path."""
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    try:
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except DBAPIError:  # no version table yet
        return False
    return len(stored) == 1 and stored[0] == _head_of_files()


def _stamp_head(engine: Engine) -> None:
    from alembic import command

    with engine.begin() as connection:
        command.stamp(alembic_config(connection), "head")


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def session_factory(engine: Engine) -> sessionmaker:
    return sessionmaker(engine, expire_on_commit=False, future=True)
