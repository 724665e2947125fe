"""Subscribers: the name and regions of the newest sign-up request, applied on confirmation.

Revision ID: 0003_signup_request
Revises: 0002_ledger
Create Date: 2026-11-25 11:25:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_signup_request"
down_revision = "0002_ledger"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns with no default: a plain ADD COLUMN on SQLite and PostgreSQL alike.
    op.add_column("subscribers", sa.Column("requested_name", sa.String(length=200), nullable=True))
    op.add_column("subscribers", sa.Column("requested_regions", sa.Text(), nullable=True))


def downgrade() -> None:
    # batch mode: SQLite before 3.35 cannot DROP COLUMN; batch copies the table instead.
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("requested_regions")
        batch.drop_column("requested_name")
