"""The subscriber store on SQLite and PostgreSQL: statuses, suppression, preferences, confirmation."""

from __future__ import annotations

from datetime import timedelta

import pytest

from digest.errors import InvalidAddressError
from subscribers import store
from subscribers.store import ConfirmOutcome, Status
from subscribers.validate import InputError

# Fixtures db_engine, pg_schema_engine and session.
pytest_plugins = ("subscriber_fixtures",)


def test_add_normalises_and_dedupes_case_insensitively(session):
    a = store.add_subscriber(session, " Reader@Example.ORG ", name="Reader", regions={"Africa"})
    b = store.add_subscriber(session, "reader@example.org", name="Someone else")
    assert a.id == b.id
    assert a.email == "Reader@example.org"
    assert b.name == "Reader"
    assert store.get_by_email(session, "READER@EXAMPLE.ORG").id == a.id
    kinds = [e.kind for e in store.events_for(session, a)]
    assert kinds == ["subscribed"]


def test_add_refuses_bad_input_and_changes_nothing(session):
    with pytest.raises(InvalidAddressError, match="not-an-address"):
        store.add_subscriber(session, "not-an-address")
    with pytest.raises(InputError, match="single line"):
        store.add_subscriber(session, "x@example.org", name="X\r\nBcc: y@example.org")
    assert store.list_subscribers(session) == []


def test_active_recipients_excludes_pending_paused_unsubscribed_and_suppressed(session):
    keep = store.add_subscriber(session, "keep@example.org", regions={"Africa", "Europe"})
    store.add_subscriber(session, "pending@example.org", status=Status.PENDING)
    paused = store.add_subscriber(session, "paused@example.org")
    store.set_paused(session, paused, True, source="test")
    gone = store.add_subscriber(session, "gone@example.org")
    store.unsubscribe(session, gone, source="test")
    # Active in its row but on the suppression list (e.g. a bounce recorded by address only).
    sup = store.add_subscriber(session, "suppressed@example.org")
    store.suppress(session, "SUPPRESSED@example.org", reason="bounced", source="test")
    session.flush()

    recipients = store.active_recipients(session)
    assert [r.email for r in recipients] == ["keep@example.org"]
    assert recipients[0].regions == {"Africa", "Europe"}
    assert store.is_active(session, keep.id)
    for sub in (paused, gone, sup):
        assert not store.is_active(session, sub.id)
    assert not store.is_active(session, 999_999)


def test_the_send_path_holds_off_an_erased_address_as_active_recipients_does(session):
    """Freezing a run (`iter_active_recipients`) and the per-batch check (`inactive_among`) apply
    the same test as `active_recipients` and `is_active`, erased addresses (known by hash) too."""
    from subscribers.store import Suppression
    from subscribers.validate import email_key, erased_key

    keep = store.add_subscriber(session, "keep@example.org")
    back = store.add_subscriber(session, "back@example.org")  # active in its row...
    session.add(Suppression(email_key=erased_key(email_key("back@example.org")), reason="erased"))
    session.flush()  # ...but erased before, so on the list by hash only

    assert [r.email for r in store.active_recipients(session)] == ["keep@example.org"]
    assert [r.email for r in store.iter_active_recipients(session, chunk=1)] == ["keep@example.org"]
    assert store.inactive_among(session, [keep.id, back.id, 999_999]) == {back.id, 999_999}
    assert not store.is_active(session, back.id)


def test_all_regions_when_none_chosen(session):
    sub = store.add_subscriber(session, "all@example.org")
    assert sub.to_recipient().regions is None
    assert store.set_regions(session, sub, ["Asia-Pacific"], source="test")
    assert not store.set_regions(session, sub, ["Asia-Pacific"], source="test")
    assert sub.to_recipient().regions == {"Asia-Pacific"}
    store.set_regions(session, sub, ["Asia-Pacific", "Africa"], source="test")  # overlapping change
    session.flush()
    assert sub.to_recipient().regions == {"Asia-Pacific", "Africa"}
    store.set_regions(session, sub, [], source="test")
    session.flush()
    assert store.active_recipients(session)[0].regions is None


def test_unsubscribe_suppresses_and_is_idempotent(session):
    sub = store.add_subscriber(session, "bye@example.org")
    assert store.unsubscribe(session, sub, source="web")
    assert not store.unsubscribe(session, sub, source="web")
    assert store.is_suppressed(session, "Bye@example.org")
    kinds = [e.kind for e in store.events_for(session, sub)]
    assert kinds == ["subscribed", "unsubscribed"]


def test_bounce_and_complaint_stay_when_unsubscribing(session):
    sub = store.add_subscriber(session, "bounce@example.org")
    store.set_status(session, sub, Status.BOUNCED, source="bounce", detail="5.1.1")
    assert not store.unsubscribe(session, sub, source="web")
    assert sub.status == Status.BOUNCED
    assert store.is_suppressed(session, sub.email)


def test_confirm_link_works_once(session):
    sub = store.add_subscriber(session, "new@example.org", status=Status.PENDING, source="web")
    store.note_confirmation_sent(session, sub, source="web")
    issued = store.as_utc(sub.confirm_requested_at)
    assert store.confirm(session, sub, issued_at=issued, source="web") == ConfirmOutcome.CONFIRMED
    assert sub.status == Status.ACTIVE
    assert store.confirm(session, sub, issued_at=issued, source="web") == ConfirmOutcome.ALREADY_ACTIVE
    # After leaving, the old confirm link must not bring them back.
    store.unsubscribe(session, sub, source="web")
    assert store.confirm(session, sub, issued_at=issued, source="web") == ConfirmOutcome.USED
    assert sub.status == Status.UNSUBSCRIBED


def test_confirm_link_superseded_by_a_newer_request(session):
    sub = store.add_subscriber(session, "twice@example.org", status=Status.PENDING, source="web")
    first = store.utcnow() - timedelta(hours=1)
    store.note_confirmation_sent(session, sub, source="web", at=first)
    store.note_confirmation_sent(session, sub, source="web", at=first + timedelta(minutes=30))
    assert store.confirm(session, sub, issued_at=first, source="web") == ConfirmOutcome.USED
    assert sub.status == Status.PENDING


def test_resubscribe_after_unsubscribe_lifts_suppression(session):
    sub = store.add_subscriber(session, "back@example.org")
    store.unsubscribe(session, sub, source="web")
    store.note_confirmation_sent(session, sub, source="web")
    outcome = store.confirm(session, sub, issued_at=store.as_utc(sub.confirm_requested_at), source="web")
    assert outcome == ConfirmOutcome.CONFIRMED
    assert not store.is_suppressed(session, sub.email)
    assert [r.email for r in store.active_recipients(session)] == ["back@example.org"]


def test_complained_cannot_confirm(session):
    sub = store.add_subscriber(session, "angry@example.org")
    store.set_status(session, sub, Status.COMPLAINED, source="fbl")
    store.note_confirmation_sent(session, sub, source="web")
    outcome = store.confirm(session, sub, issued_at=store.as_utc(sub.confirm_requested_at), source="web")
    assert outcome == ConfirmOutcome.REFUSED


def test_new_row_for_suppressed_address_is_not_active(session):
    sub = store.add_subscriber(session, "erased@example.org")
    store.delete_subscriber(session, sub, source="cli")
    session.flush()
    again = store.add_subscriber(session, "erased@example.org", source="cli")
    assert again.status == Status.UNSUBSCRIBED
    assert again.id != sub.id  # ids are never reused, so old tokens cannot reach the new row
    assert store.active_recipients(session) == []


def test_count_by_status(session):
    store.add_subscriber(session, "a@example.org")
    store.add_subscriber(session, "b@example.org", status=Status.PENDING)
    counts = store.count_by_status(session)
    assert counts[Status.ACTIVE] == 1 and counts[Status.PENDING] == 1 and counts[Status.BOUNCED] == 0


def test_rows_written_through_the_driver_read_as_sqlalchemy_writes_them(db_engine) -> None:  # noqa: ANN001
    """insert_rows and update_rows (imports, freezes, outcomes) store the same text as SQLAlchemy's
    own statements: on SQLite a time compares as text, so "+00:00" after one would put it after
    the same instant written without."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    from digest.db import insert_rows, session_factory, update_rows
    from digest.send import Delivery, SendRun

    at = datetime.now(UTC)
    table = Delivery.__table__
    row = {"run_id": "r1", "subscriber_id": 1, "email": "a@example.org", "email_key": "a@example.org"}
    row |= {"name": "", "regions": "", "status": "pending", "attempts": 0, "detail": "", "updated_at": at}
    row |= {"due_at": at, "message_id": "", "provider_id": ""}
    with session_factory(db_engine)() as session:
        session.add(SendRun(id="r1", issue="i", created_at=at, window_end=at, notes="{}", transport=""))
        session.flush()
        session.execute(table.insert(), [{**row, "email": "b@example.org", "email_key": "b@example.org"}])
        insert_rows(session, table, [row])
        stored = session.execute(text("SELECT CAST(due_at AS TEXT) FROM deliveries ORDER BY email")).scalars()
        by_driver, by_sqlalchemy = list(stored)
        assert by_driver == by_sqlalchemy
        update_rows(
            session,
            table,
            [{"id": 1, "due_at": at, "updated_at": at}, {"id": 2, "due_at": at, "updated_at": at}],
        )
        assert len(set(session.execute(text("SELECT CAST(due_at AS TEXT) FROM deliveries")).scalars())) == 1
        session.rollback()
