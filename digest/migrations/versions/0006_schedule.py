"""Schedules: APScheduler's job store, our schedules, the record of each firing, approvals.

Revision ID: 0006_schedule
Revises: 0005_staff
Create Date: 2026-12-01 22:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_schedule"
down_revision = "0005_staff"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Exactly the table APScheduler's SQLAlchemyJobStore creates (it then finds it there).
    op.create_table(
        "apscheduler_jobs",
        sa.Column("id", sa.Unicode(length=191), nullable=False),
        sa.Column("next_run_time", sa.Float(precision=25), nullable=True),
        sa.Column("job_state", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_apscheduler_jobs_next_run_time", "apscheduler_jobs", ["next_run_time"])
    op.create_table(
        "schedules",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("trigger_kind", sa.String(length=10), nullable=False),
        sa.Column("trigger_expr", sa.String(length=200), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "schedule_firings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule_name", sa.String(length=64), nullable=False),
        sa.Column("fire_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("issue", sa.String(length=40), nullable=True),
        sa.Column("run_id", sa.String(length=40), nullable=True),
        sa.Column("by", sa.String(length=200), nullable=False),
        sa.Column("owner", sa.String(length=100), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        # The claim: one firing per (schedule, fire time, kind), whichever process gets there first.
        sa.UniqueConstraint("schedule_name", "fire_time", "kind"),
    )
    op.create_index("ix_schedule_firings_schedule_name", "schedule_firings", ["schedule_name"])
    op.create_table(
        "issue_approvals",
        sa.Column("issue", sa.String(length=40), nullable=False),
        sa.Column("schedule_name", sa.String(length=64), nullable=False),
        sa.Column("approved_by", sa.String(length=200), nullable=False),
        sa.Column("approved_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("issue"),
    )


def downgrade() -> None:
    op.drop_table("issue_approvals")
    op.drop_index("ix_schedule_firings_schedule_name", table_name="schedule_firings")
    op.drop_table("schedule_firings")
    op.drop_table("schedules")
    op.drop_index("ix_apscheduler_jobs_next_run_time", table_name="apscheduler_jobs")
    op.drop_table("apscheduler_jobs")
