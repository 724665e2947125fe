"""Celery mode: who claimed each ledger row, the run's rendered variants, shared limits, workers.

Revision ID: 0009_celery
Revises: 0008_list_safety
Create Date: 2026-12-01 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_celery"
down_revision = "0008_list_safety"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("claim_owner", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "run_variants",
        sa.Column("run_id", sa.String(length=40), sa.ForeignKey("send_runs.id", ondelete="CASCADE")),
        sa.Column("variant_key", sa.String(length=1000)),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("preheader", sa.Text(), nullable=False),
        sa.Column("html", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "variant_key"),
    )
    op.create_table(
        "run_dispatch",
        sa.Column(
            "run_id",
            sa.String(length=40),
            sa.ForeignKey("send_runs.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("variant_of", sa.Text(), nullable=False),
        sa.Column("tasks", sa.Integer(), nullable=False),
        sa.Column("per_second", sa.Float(), nullable=False),
        sa.Column("per_hour", sa.Integer(), nullable=False),
        sa.Column("second_tokens", sa.Float(), nullable=False),
        sa.Column("hour_tokens", sa.Float(), nullable=False),
        sa.Column("stamp", sa.Float(), nullable=False),
        sa.Column("hold_until", sa.Float(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("max_errors", sa.Integer(), nullable=False),
    )
    op.create_table(
        "run_workers",
        sa.Column("run_id", sa.String(length=40), sa.ForeignKey("send_runs.id", ondelete="CASCADE")),
        sa.Column("worker", sa.String(length=100)),
        sa.Column("host", sa.String(length=200), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("unknown", sa.Integer(), nullable=False),
        sa.Column("skipped", sa.Integer(), nullable=False),
        sa.Column("deferred", sa.Integer(), nullable=False),
        sa.Column("rate_limited", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("run_id", "worker"),
    )


def downgrade() -> None:
    op.drop_table("run_workers")
    op.drop_table("run_dispatch")
    op.drop_table("run_variants")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("claimed_at")
        batch.drop_column("claim_owner")
