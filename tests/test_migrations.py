"""Alembic: the migrations build exactly the tables the models declare, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from digest.db import Base, create_schema, current_revision, import_models, make_engine, migrate

# Fixtures db_engine, pg_schema_engine and session.
pytest_plugins = ("subscriber_fixtures",)

SUBSCRIBER_TABLES = {"subscribers", "region_preferences", "suppressions", "subscriber_events"}
LEDGER_TABLES = {"send_runs", "deliveries"}


def test_migrated_schema_matches_models(db_engine):
    import_models()
    assert current_revision(db_engine) is not None
    assert set(inspect(db_engine).get_table_names()) >= SUBSCRIBER_TABLES | LEDGER_TABLES
    with db_engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_migrate_twice_is_harmless(db_engine):
    revision = current_revision(db_engine)
    migrate(db_engine)
    assert current_revision(db_engine) == revision


def test_the_head_read_from_the_files_is_alembics():
    """`migrate` skips Alembic when the database is at the head it reads from the files' text."""
    from alembic.script import ScriptDirectory

    from digest.db import _head_of_files, alembic_config

    assert [_head_of_files()] == list(ScriptDirectory.from_config(alembic_config()).get_heads())


def test_a_database_one_migration_behind_is_still_migrated(tmp_path):
    """The quick up-to-date check says no for an older database, and Alembic brings it up."""
    from alembic.script import ScriptDirectory

    from digest.db import _is_at_head, alembic_config

    script = ScriptDirectory.from_config(alembic_config())
    head = script.get_current_head()
    previous = script.get_revision(head).down_revision
    engine = make_engine(f"sqlite:///{tmp_path / 'behind.db'}")
    assert not _is_at_head(engine)  # no version table at all
    migrate(engine, previous)
    assert current_revision(engine) == previous
    assert not _is_at_head(engine)
    migrate(engine)
    assert current_revision(engine) == head
    assert _is_at_head(engine)
    engine.dispose()


def test_create_schema_then_migrate(tmp_path):
    """The demo builds its database with create_schema; the CLI then migrates the same file."""
    engine = make_engine(f"sqlite:///{tmp_path / 'demo.db'}")
    create_schema(engine)
    assert current_revision(engine) is not None
    migrate(engine)  # must not try to create the tables again
    legacy = make_engine(f"sqlite:///{tmp_path / 'legacy.db'}")
    import_models()
    Base.metadata.create_all(legacy)  # an unversioned database from before
    migrate(legacy)
    assert current_revision(legacy) == current_revision(engine)
    engine.dispose()
    legacy.dispose()


def test_0003_keeps_existing_subscribers(tmp_path):
    """A database at 0002 with subscribers in it upgrades, and nobody has a pending request."""
    from sqlalchemy import text

    from digest.db import session_factory
    from subscribers import store

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate(engine, "0002_ledger")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO subscribers (email, email_key, name, status, paused, source, created_at,"
                " updated_at) VALUES ('a@example.org', 'a@example.org', 'A', 'pending', 0, 'web',"
                " '2026-01-01 00:00:00', '2026-01-01 00:00:00')"
            )
        )
    migrate(engine)
    with session_factory(engine)() as s:
        sub = store.get_by_email(s, "a@example.org")
        assert (sub.name, sub.requested_name, sub.requested_regions) == ("A", None, None)
    engine.dispose()
