"""Per-story click counts: the story table of each sent issue, and counts per minute.

No reader appears in either table: a click is an increment of (run, variant, story, minute).

Revision ID: 0014_click_counts
Revises: 0013_editor
Create Date: 2026-12-07 02:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014_click_counts"
down_revision = "0013_editor"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_stories",
        sa.Column(
            "run_id", sa.String(40), sa.ForeignKey("send_runs.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("region", sa.String(200), nullable=False),
    )
    op.create_table(
        "click_counts",
        sa.Column(
            "run_id", sa.String(40), sa.ForeignKey("send_runs.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column("variant", sa.String(16), primary_key=True),
        sa.Column("story", sa.Integer, primary_key=True),
        sa.Column("minute", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("human", sa.Integer, nullable=False),
        sa.Column("filtered", sa.Integer, nullable=False),
    )
    # Only with [analytics] per_reader; erased with the subscriber.
    op.create_table(
        "reader_clicks",
        sa.Column(
            "run_id", sa.String(40), sa.ForeignKey("send_runs.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "subscriber_id",
            sa.Integer,
            sa.ForeignKey("subscribers.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("story", sa.Integer, primary_key=True),
        sa.Column("human", sa.Integer, nullable=False),
        sa.Column("filtered", sa.Integer, nullable=False),
    )
    op.create_index("ix_reader_clicks_subscriber_id", "reader_clicks", ["subscriber_id"])


def downgrade() -> None:
    op.drop_table("reader_clicks")
    op.drop_table("click_counts")
    op.drop_table("run_stories")
