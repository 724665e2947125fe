"""Trust at the edges: hand-over answers in the ledger; an approval names one version of the
curation; staff alerts.

`deliveries.handover_answer` is the answer a hand-over got, written by the sending thread
before the next message on its connection (digest.send.LedgerMarks), so another machine can
settle a dead process's rows.

`issue_approvals.curation` is the stamp of the draft approved (digest.curate.curation_stamp;
"" when the issue had no draft): editing the draft afterwards withdraws the approval.
`staff_alerts` holds what staff must hear about (an issue held, missed, failed, paused or taken
over) until someone acknowledges it on the console's dashboard.

Revision ID: 0015_trust
Revises: 0014_click_counts
Create Date: 2026-12-07 02:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_trust"
down_revision = "0014_click_counts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("deliveries") as batch:
        batch.add_column(sa.Column("handover_answer", sa.String(1), nullable=True))
    with op.batch_alter_table("issue_approvals") as batch:
        batch.add_column(sa.Column("curation", sa.String(64), nullable=False, server_default=""))
    op.create_table(
        "staff_alerts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
        sa.Column("issue", sa.String(40), nullable=True),
        sa.Column("run_id", sa.String(40), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_by", sa.String(320), nullable=True),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_staff_alerts_open", "staff_alerts", ["acknowledged_at"])


def downgrade() -> None:
    op.drop_index("ix_staff_alerts_open", table_name="staff_alerts")
    op.drop_table("staff_alerts")
    with op.batch_alter_table("issue_approvals") as batch:
        batch.drop_column("curation")
    with op.batch_alter_table("deliveries") as batch:
        batch.drop_column("handover_answer")
