"""Bounces: messages set aside in a POP3 mailbox (`mailbox_seen`), so they are not read again.

Revision ID: 0012_bounce_reasons
Revises: 0011_staff_sessions
Create Date: 2026-12-07 02:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_bounce_reasons"
down_revision = "0011_staff_sessions"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "mailbox_seen",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("mailbox", sa.String(300), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("why", sa.String(300), nullable=False, server_default=""),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("mailbox", "key"),
    )


def downgrade() -> None:
    op.drop_table("mailbox_seen")
