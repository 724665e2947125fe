"""The editor's week: a pause staff ask for, the issue's own subject, preheader and teaser edits,
stories added by URL, and the test addresses each staff member last used.

- send_runs.pause_requested: who asked to pause a run sent in one process (the sending loop
  reads it at each batch and stops there); cleared when the loop lets the run go.
- issue_drafts.subject / preheader: "" means the templates' own.
- issue_drafts.edits: JSON {story key: {title, lede, image_url, image_credit}}, this issue only.
- issue_drafts.added: JSON list of stories added by URL, with the region the editor chose.
- staff_accounts.test_addresses: the addresses of the last test send, one a line.

Revision ID: 0013_editor
Revises: 0012_bounce_reasons
Create Date: 2026-12-07 02:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_editor"
down_revision = "0012_bounce_reasons"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("send_runs") as batch:
        batch.add_column(sa.Column("pause_requested", sa.Text(), nullable=True))
    with op.batch_alter_table("issue_drafts") as batch:
        batch.add_column(sa.Column("subject", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("preheader", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("edits", sa.Text(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("added", sa.Text(), nullable=False, server_default="[]"))
    with op.batch_alter_table("staff_accounts") as batch:
        batch.add_column(sa.Column("test_addresses", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("staff_accounts") as batch:
        batch.drop_column("test_addresses")
    with op.batch_alter_table("issue_drafts") as batch:
        for column in ("added", "edits", "preheader", "subject"):
            batch.drop_column(column)
    with op.batch_alter_table("send_runs") as batch:
        batch.drop_column("pause_requested")
