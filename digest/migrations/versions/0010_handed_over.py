"""Celery mode: when a worker began to hand a claimed row to the transport.

A dead worker's rows with no hand-over mark never reached the mail server: they go back to
pending instead of becoming unknown (digest.distributed.settle_dead_claims).

Revision ID: 0010_handed_over
Revises: 0009_celery
Create Date: 2026-12-02 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010_handed_over"
down_revision = "0009_celery"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("handed_over_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("handed_over_at")
