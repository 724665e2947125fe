"""Database fixtures for the subscriber tests; load with `pytest_plugins = ("subscriber_fixtures",)`.

`db_engine` runs each test on SQLite and, where 127.0.0.1:5432 answers, on PostgreSQL in a
schema of its own that is dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session
from subscriber_helpers import POSTGRES_URL, engine_in_schema, postgres_answers

from digest.db import make_engine, migrate, session_factory


def _sqlite_engine(tmp_path: Path) -> Engine:
    return make_engine(f"sqlite:///{tmp_path / 'subscribers.db'}")


@pytest.fixture
def pg_schema_engine() -> Iterator[Engine]:
    """A PostgreSQL engine whose search_path is a fresh schema, dropped at the end."""
    if not postgres_answers():
        pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = make_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as err:  # wrong credentials or database: say so and skip
        admin.dispose()
        pytest.skip(f"PostgreSQL at {POSTGRES_URL} refused: {err}")
    engine = engine_in_schema(POSTGRES_URL, schema)
    try:
        yield engine
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated, empty database: SQLite, then PostgreSQL when it answers."""
    if request.param == "sqlite":
        engine = _sqlite_engine(tmp_path)
        migrate(engine)
        yield engine
        engine.dispose()
    else:
        engine = request.getfixturevalue("pg_schema_engine")
        migrate(engine)
        yield engine


@pytest.fixture
def session(db_engine: Engine) -> Iterator[Session]:
    with session_factory(db_engine)() as s:
        yield s
        s.rollback()
