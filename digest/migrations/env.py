"""Alembic environment, driven programmatically by `digest.db.migrate` (no alembic.ini needed).

The caller passes an open connection in `config.attributes["connection"]`; this file only
configures the migration context around it.
"""

from __future__ import annotations

from alembic import context

from digest.db import Base, import_models

import_models()
target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through digest.db.migrate(engine), which passes a connection")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; use digest.db.migrate(engine)")
run_migrations_online()
