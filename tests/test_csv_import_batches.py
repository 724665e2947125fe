"""The batched import does exactly what row-by-row import does: same rows, events, suppressions.

Row-by-row (`import_csv(..., batched=False)`, every row through the store) is the reference;
the batched path runs on SQLite and PostgreSQL with batches small enough to cut the file at
every kind of row, and both databases must end up the same, with the same report.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session
from subscriber_helpers import REGIONS

from digest.db import make_engine, migrate, session_factory
from subscribers import csv_io, store
from subscribers.store import Event, Status, Suppression

pytest_plugins = ("subscriber_fixtures",)

ALIASES = {"Middle East": ("MENA", "Gulf"), "Americas": ("US",)}
HEADER = "Email Address,First Name,Last Name,ADDRESS,PHONE,REGION,CC,status,suppression,TAGS\n"
ROWS = [
    'new1@example.org,New,One,"1 Main St",555,CA,US,subscribed,,"""Africa"",""VIP"""',
    "new2@example.org,New,Two,,,NY,US,pending,,",
    "new3@example.org,,,,,,,unsubscribed,,",
    "new4@example.org,,,,,,,cleaned,,",
    "P1@example.org,,,,,,,subscribed,,",  # pending before: confirmed by the file
    "a1@example.org,,,,,,,unsubscribed,,",  # active before: unsubscribed by the file
    "u1@example.org,,,,,,,subscribed,,",  # unsubscribed before: stays so
    "erased@example.org,,,,,,,subscribed,,",  # erased before: never stored again
    "sup@example.org,,,,,,,subscribed,,",  # on the suppression list only: added unsubscribed
    "new1@example.org,,,,,,,unsubscribed,,",  # the same address again: an unsubscribe
    "not an address,,,,,,,subscribed,,",
    "x@example.org,,,,,,,suppressed,bounced",  # a suppression-only row
    "x@example.org,,,,,,,subscribed,,",  # ...then the address as a subscriber
    "new5@example.org,,,,,,,subscribed,complained,",
    'gulf@example.org,Gulf,Reader,,,TX,US,subscribed,,"""MENA"",""US"""',
    "new6@example.org,,,,,,,archived,,",  # an unknown status
    *(f"bulk{i}@Example.org,Bulk,{i},,,,,subscribed,,Europe" for i in range(25)),
]


def seed(session: Session) -> None:
    store.add_subscriber(session, "p1@example.org", status=Status.PENDING)
    store.add_subscriber(session, "a1@example.org")
    u1 = store.add_subscriber(session, "u1@example.org")
    store.unsubscribe(session, u1, source="test")
    gone = store.add_subscriber(session, "erased@example.org")
    store.unsubscribe(session, gone, source="test")
    store.delete_subscriber(session, gone, source="test")
    store.suppress(session, "sup@example.org", reason="manual", source="test")
    session.flush()


def snapshot(session: Session) -> dict:
    subscribers = {
        sub.email: (
            sub.name,
            sub.status,
            sub.paused,
            sub.source,
            sorted(sub.regions or ()),
            sub.confirmed_at is None,
            sorted((e.kind, e.source, e.detail) for e in store.events_for(session, sub)),
        )
        for sub in store.list_subscribers(session)
    }
    suppressions = sorted(
        session.execute(select(Suppression.email_key, Suppression.reason, Suppression.source))
    )
    events = session.scalar(select(Event.id).order_by(Event.id.desc()).limit(1))
    return {"subscribers": subscribers, "suppressions": suppressions, "has_events": events is not None}


def imported(engine: Engine, *, batched: bool) -> tuple[dict, csv_io.ImportReport]:
    with session_factory(engine).begin() as session:
        seed(session)
    with session_factory(engine).begin() as session:
        data = (HEADER + "\n".join(ROWS) + "\n").encode()
        report = csv_io.import_bytes(session, data, REGIONS, aliases=ALIASES, batched=batched)
    with session_factory(engine)() as session:
        return snapshot(session), report


@pytest.mark.parametrize("batch_rows", [1, 3, 7, 2000])
def test_batches_do_what_rows_one_by_one_do(
    db_engine: Engine, tmp_path: Path, batch_rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference_engine = make_engine(f"sqlite:///{tmp_path / 'reference.db'}")
    migrate(reference_engine)
    expected, expected_report = imported(reference_engine, batched=False)
    reference_engine.dispose()
    monkeypatch.setattr(csv_io, "BATCH_ROWS", batch_rows)
    got, report = imported(db_engine, batched=True)
    assert got == expected
    assert [str(e) for e in report.errors] == [str(e) for e in expected_report.errors]
    assert [str(w) for w in report.warnings] == [str(w) for w in expected_report.warnings]
    assert report == expected_report
    # What the rows say, checked once here, so the reference is not only equal but right.
    subs = got["subscribers"]
    assert subs["new1@example.org"][1] == Status.UNSUBSCRIBED and subs["new1@example.org"][4] == ["Africa"]
    assert subs["gulf@example.org"][4] == ["Americas", "Middle East"]  # by alias; REGION "TX" unused
    assert subs["p1@example.org"][1] == Status.ACTIVE and subs["a1@example.org"][1] == Status.UNSUBSCRIBED
    assert subs["u1@example.org"][1] == Status.UNSUBSCRIBED and "erased@example.org" not in subs
    assert (
        subs["sup@example.org"][1] == Status.UNSUBSCRIBED and subs["x@example.org"][1] == Status.UNSUBSCRIBED
    )
    assert subs["new5@example.org"][1] == Status.UNSUBSCRIBED  # its suppression wins over "subscribed"
    assert ("imported", "import", "active") in subs["bulk0@example.org"][6]
    with session_factory(db_engine)() as session:  # the event's time is the import's, in UTC
        bulk = store.get_by_email(session, "bulk0@example.org")
        (event,) = [e for e in store.events_for(session, bulk) if e.kind == "imported"]
        assert abs(store.as_utc(event.at) - store.as_utc(bulk.updated_at)) < timedelta(seconds=5)
    assert len(report.errors) == 2 and (report.created, report.updated, report.kept_unsubscribed) == (
        30,
        3,
        5,
    )


def test_mailchimp_address_columns_are_not_regions(session: Session) -> None:
    """Mailchimp's REGION holds a state from the postal address: it never fails a row now."""
    data = (
        b"Email Address,First Name,Last Name,Address,Phone Number,REGION,CC,TAGS\n"
        b'ana@example.org,Ana,Lima,"1 Main St, Austin",555-0100,TX,US,"""Africa"""\n'
        b"ben@example.org,Ben,Ode,,,Lagos,NG,\n"
    )
    report = csv_io.import_bytes(session, data, REGIONS)
    assert report.errors == [] and report.created == 2
    assert store.get_by_email(session, "ana@example.org").regions == {"Africa"}
    assert store.get_by_email(session, "ben@example.org").regions is None  # every region


def test_the_plan_says_how_columns_are_read_and_what_would_happen(session: Session) -> None:
    store.add_subscriber(session, "known@example.org")
    session.commit()
    data = (
        b"Email Address,First Name,Last Name,ADDRESS,REGION,TAGS,MEMBER_RATING\n"
        b'ana@example.org,Ana,Lima,"1 Main St",TX,"""MENA"",""VIP"""\n'
        b"known@example.org,,,,,\n"
        b"bad address,,,,,\n"
    )
    plan = csv_io.plan_import(session, data, REGIONS, aliases=ALIASES)
    columns = {use.column: use.meaning for use in plan.columns}
    assert columns["Email Address"].startswith("address")
    assert columns["REGION"].startswith("not used") and columns["ADDRESS"].startswith("not used")
    assert columns["TAGS"].startswith("regions")
    assert (plan.report.created, plan.report.unchanged, len(plan.report.errors)) == (1, 1, 1)
    assert plan.reasons()[0].startswith("line 4: ")
    assert "tags that are not regions were ignored: VIP" in plan.reasons()[1]
    assert store.get_by_email(session, "ana@example.org") is None  # nothing was kept
    assert store.get_by_email(session, "known@example.org") is not None


def test_a_named_column_maps_to_regions_instead_of_tags(session: Session) -> None:
    data = b'email,Interests,TAGS\nana@example.org,"Europe, Gulf",Africa\n'
    report = csv_io.import_bytes(session, data, REGIONS, aliases=ALIASES, tag_columns=("Interests",))
    assert report.errors == []
    assert store.get_by_email(session, "ana@example.org").regions == {"Europe", "Middle East"}


def test_a_batch_that_fails_fails_the_import(db_engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL batches are written from a thread of their own: an error there is still the
    import's, raised to the caller, and the session is free to roll back once it returns."""
    monkeypatch.setattr(csv_io, "BATCH_ROWS", 3)
    real = store.insert_rows
    calls: list[str] = []

    def failing(session: Session, table: object, rows: object) -> None:
        calls.append(table.name)  # type: ignore[attr-defined]
        if calls.count("subscribers") == 2:
            raise RuntimeError("the database went away")
        real(session, table, rows)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "insert_rows", failing)
    data = (HEADER + "\n".join(f"r{i}@example.org,,,,,,,subscribed,," for i in range(12)) + "\n").encode()
    with session_factory(db_engine)() as session:
        with pytest.raises(RuntimeError, match="went away"):
            csv_io.import_bytes(session, data, REGIONS)
        session.rollback()
        assert sum(store.count_by_status(session).values()) == 0
    assert calls.count("subscribers") == 2  # nothing written after the failed batch
