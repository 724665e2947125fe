"""Drop the index on region_preferences.subscriber_id: the unique (subscriber_id, region)
constraint's index already starts with that column, so every lookup by subscriber uses it,
and an import no longer maintains a second index per preference row (issue 23).

Revision ID: 0016_import_indexes
Revises: 0015_trust
Create Date: 2026-12-07 05:15:00
"""

from __future__ import annotations

from alembic import op

revision = "0016_import_indexes"
down_revision = "0015_trust"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_region_preferences_subscriber_id", table_name="region_preferences")


def downgrade() -> None:
    op.create_index("ix_region_preferences_subscriber_id", "region_preferences", ["subscriber_id"])
