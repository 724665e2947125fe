"""List safety: queued sign-ups, confirmation counts per mailbox, address keys without case folding.

- `signup_jobs`: sign-up requests waiting for the web worker (they survive a restart).
- `confirmation_mails`: one row per confirmation mail, by a hash of the mailbox, for the limit.
- Address keys are recomputed with the rule of `subscribers.validate.email_key` (local part
  `str.lower()`, domain lower-cased) instead of `str.casefold()`, which merged `straße@` into
  `strasse@`. If two rows would end up with one key, neither is changed and the collision is
  logged with the subscriber ids (never merged): staff look at them with `digest subscribers show`.
- A suppression whose subscriber row is gone (erased before this revision) keeps only
  `sha256:<hex>` of its old key: the address is no longer stored anywhere.

Revision ID: 0008_list_safety
Revises: 0007_bounces
Create Date: 2026-12-01 23:00:00
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

revision = "0008_list_safety"
down_revision = "0007_bounces"
branch_labels = None
depends_on = None

log = logging.getLogger("digest.migrations")


def _key(email: str) -> str:
    # Frozen copy of subscribers.validate.email_key as of this revision: a migration must not
    # change meaning when the application code does.
    local, at, domain = email.strip().rpartition("@")
    return f"{local.lower()}@{domain.lower()}" if at else domain.lower()


def _hashed(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode("utf-8")).hexdigest()


def _mailbox_hash(email: str) -> str:
    local, at, domain = _key(email).rpartition("@")
    base = (local.split("+", 1)[0] or local) if at else local
    return _hashed(f"{base}@{domain}" if at else domain)


def upgrade() -> None:
    op.create_table(
        "signup_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("regions", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.String(length=500), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_signup_jobs_created_at"), "signup_jobs", ["created_at"], unique=False)
    op.create_index(op.f("ix_signup_jobs_done_at"), "signup_jobs", ["done_at"], unique=False)
    op.create_table(
        "confirmation_mails",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("mailbox_key", sa.String(length=80), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_confirmation_mails_mailbox_key"), "confirmation_mails", ["mailbox_key"], unique=False
    )
    op.create_index(op.f("ix_confirmation_mails_sent_at"), "confirmation_mails", ["sent_at"], unique=False)

    conn = op.get_bind()
    subscribers = sa.table(
        "subscribers", sa.column("id", sa.Integer), sa.column("email", sa.String), sa.column("email_key")
    )
    suppressions = sa.table("suppressions", sa.column("id", sa.Integer), sa.column("email_key", sa.String))
    deliveries = sa.table(
        "deliveries",
        sa.column("id", sa.Integer),
        sa.column("run_id", sa.String),
        sa.column("email", sa.String),
        sa.column("email_key", sa.String),
    )
    events = sa.table(
        "subscriber_events",
        sa.column("subscriber_id", sa.Integer),
        sa.column("kind", sa.String),
        sa.column("at", sa.DateTime(timezone=True)),
    )
    mails = sa.table(
        "confirmation_mails",
        sa.column("mailbox_key", sa.String),
        sa.column("sent_at", sa.DateTime(timezone=True)),
    )

    # Subscribers: new key per row; a key two rows would share is left alone on both and reported.
    rows = conn.execute(sa.select(subscribers.c.id, subscribers.c.email, subscribers.c.email_key)).all()
    wanted: dict[str, list[int]] = defaultdict(list)
    for row in rows:
        wanted[_key(row.email)].append(row.id)
    new_key_of_old: dict[str, str] = {}
    for row in rows:
        new = _key(row.email)
        if len(wanted[new]) > 1:
            log.warning(
                "0008: subscribers %s would share the address key %r; left unchanged, not merged: "
                "check them with `digest subscribers show`",
                wanted[new],
                new,
            )
            continue
        new_key_of_old[row.email_key] = new
        if new != row.email_key:
            conn.execute(subscribers.update().where(subscribers.c.id == row.id).values(email_key=new))

    # Suppressions: follow their subscriber's new key; with no subscriber row, keep a hash only.
    for sid, old in conn.execute(sa.select(suppressions.c.id, suppressions.c.email_key)).all():
        if old.startswith("sha256:"):
            continue
        new = new_key_of_old.get(old) or (old if old in wanted else _hashed(old))
        if new != old:
            taken = conn.execute(sa.select(suppressions.c.id).where(suppressions.c.email_key == new)).first()
            if taken is None:
                conn.execute(suppressions.update().where(suppressions.c.id == sid).values(email_key=new))

    # Ledger rows: the same rule within each run, collisions left alone and reported.
    drows = conn.execute(
        sa.select(deliveries.c.id, deliveries.c.run_id, deliveries.c.email, deliveries.c.email_key)
    ).all()
    per_run: dict[tuple[str, str], list[int]] = defaultdict(list)
    for row in drows:
        per_run[(row.run_id, _key(row.email))].append(row.id)
    for row in drows:
        new = _key(row.email)
        if new == row.email_key:
            continue
        if len(per_run[(row.run_id, new)]) > 1:
            log.warning(
                "0008: deliveries %s of run %s share key %r; left unchanged",
                per_run[(row.run_id, new)],
                row.run_id,
                new,
            )
            continue
        conn.execute(deliveries.update().where(deliveries.c.id == row.id).values(email_key=new))

    # Confirmation counts: carry the last week's mails over, so the new limit starts where the old one was.
    since = datetime.now(UTC) - timedelta(days=7)
    recent = conn.execute(
        sa.select(subscribers.c.email, events.c.at)
        .select_from(events.join(subscribers, subscribers.c.id == events.c.subscriber_id))
        .where(events.c.kind == "confirmation_sent", events.c.at >= since)
    ).all()
    if recent:
        conn.execute(mails.insert(), [{"mailbox_key": _mailbox_hash(e), "sent_at": at} for e, at in recent])


def downgrade() -> None:
    # Keys stay as recomputed and erased addresses stay hashed: both are still safe under the old code.
    op.drop_index(op.f("ix_confirmation_mails_sent_at"), table_name="confirmation_mails")
    op.drop_index(op.f("ix_confirmation_mails_mailbox_key"), table_name="confirmation_mails")
    op.drop_table("confirmation_mails")
    op.drop_index(op.f("ix_signup_jobs_done_at"), table_name="signup_jobs")
    op.drop_index(op.f("ix_signup_jobs_created_at"), table_name="signup_jobs")
    op.drop_table("signup_jobs")
