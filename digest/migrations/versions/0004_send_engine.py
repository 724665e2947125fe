"""Ledger for batched, parallel sends: due times, message ids, run records staff can act on.

Revision ID: 0004_send_engine
Revises: 0003_signup_request
Create Date: 2026-12-01 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_send_engine"
down_revision = "0003_signup_request"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Columns with server defaults so runs already in the ledger read back complete.
    with op.batch_alter_table("send_runs") as batch:
        batch.add_column(sa.Column("paused_reason", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("transport", sa.String(length=40), nullable=False, server_default=""))
        batch.add_column(sa.Column("active_seconds", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("notes", sa.Text(), nullable=False, server_default="{}"))
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("message_id", sa.String(length=300), nullable=False, server_default=""))
        batch.add_column(sa.Column("provider_id", sa.String(length=300), nullable=False, server_default=""))
    # Pending rows of an older ledger are due at once.
    op.execute("UPDATE deliveries SET due_at = updated_at WHERE status = 'pending'")
    # The claim walks pending rows in id order (see digest/send.py: _claim_batch).
    op.create_index("ix_deliveries_run_status_id", "deliveries", ["run_id", "status", "id"])


def downgrade() -> None:
    op.drop_index("ix_deliveries_run_status_id", table_name="deliveries")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("provider_id")
        batch.drop_column("message_id")
        batch.drop_column("due_at")
    with op.batch_alter_table("send_runs") as batch:
        batch.drop_column("notes")
        batch.drop_column("active_seconds")
        batch.drop_column("transport")
        batch.drop_column("paused_reason")
