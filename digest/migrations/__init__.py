"""Alembic migration environment for every table on `digest.db.Base` (run by `digest.db.migrate`)."""
