"""Staff sessions as server-side records (the cookie only names one).

Revision ID: 0012_staff_sessions
Revises: 0010_handed_over
Create Date: 2026-12-07 02:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_staff_sessions"
down_revision = "0010_handed_over"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "staff_sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_agent", sa.String(length=300), nullable=False),
        sa.Column("address", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["staff_accounts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_staff_sessions_account_id"), "staff_sessions", ["account_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_staff_sessions_account_id"), table_name="staff_sessions")
    op.drop_table("staff_sessions")
