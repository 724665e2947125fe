"""CSV import and export: Mailchimp and listmonk columns, per-row errors, idempotence, round trip."""

from __future__ import annotations

import io
import textwrap

from subscriber_helpers import REGIONS

from subscribers import csv_io, store
from subscribers.store import Status

# Fixtures db_engine, pg_schema_engine and session.
pytest_plugins = ("subscriber_fixtures",)


def run(session, text: str) -> csv_io.ImportReport:
    return csv_io.import_csv(session, io.StringIO(textwrap.dedent(text).lstrip()), REGIONS)


# Mailchimp writes each tag quoted inside the TAGS cell.
MAILCHIMP = (
    "Email Address,First Name,Last Name,MEMBER_RATING,OPTIN_TIME,TAGS\n"
    'ana@example.org,Ana,Lima,2,2024-01-05 10:00:00,"""Africa"",""VIP"""\n'
    "BEN@Example.org,Ben,,3,2024-02-01 09:30:00,\n"
)


def test_mailchimp_columns(session):
    report = run(session, MAILCHIMP)
    assert (report.created, report.errors) == (2, [])
    ana = store.get_by_email(session, "ana@example.org")
    assert (ana.name, ana.status, ana.regions) == ("Ana Lima", Status.ACTIVE, {"Africa"})
    assert store.as_utc(ana.created_at).isoformat() == "2024-01-05T10:00:00+00:00"
    assert [str(w) for w in report.warnings] == ["line 2: tags that are not regions were ignored: VIP"]
    assert store.get_by_email(session, "ben@example.org").regions is None


def test_mailchimp_unsubscribed_and_cleaned_exports(session):
    run(session, "Email Address,First Name,UNSUB_TIME\nu@example.org,U,2024-03-01 00:00:00\n")
    run(session, "Email Address,CLEAN_TIME\nc@example.org,2024-03-02 00:00:00\n")
    assert store.get_by_email(session, "u@example.org").status == Status.UNSUBSCRIBED
    assert store.get_by_email(session, "c@example.org").status == Status.BOUNCED
    assert store.is_suppressed(session, "u@example.org") and store.is_suppressed(session, "c@example.org")
    assert store.active_recipients(session) == []


def test_listmonk_columns(session):
    attrs = '"{""regions"": [""Asia-Pacific"", ""Europe""]}"'
    report = run(
        session,
        f"""
        uuid,email,name,attributes,status,created_at,updated_at
        6a1c,li@example.org,Li Wei,{attrs},enabled,2023-05-01T12:00:00Z,
        6a1d,bl@example.org,Block,{{}},blocklisted,2023-05-01T12:00:00Z,
        """,
    )
    assert report.errors == []
    li = store.get_by_email(session, "li@example.org")
    assert (li.name, li.status, li.regions) == ("Li Wei", Status.ACTIVE, {"Asia-Pacific", "Europe"})
    assert store.get_by_email(session, "bl@example.org").status == Status.UNSUBSCRIBED


def test_bad_rows_are_reported_with_line_numbers_and_skipped(session):
    report = run(
        session,
        """
        email,name,status,regions
        good@example.org,Good,,Africa
        not-an-address,Bad,,

        evil@example.org,"Evil
        Bcc: x@example.org",,
        who@example.org,Who,archived,
        where@example.org,Where,,Atlantis
        last@example.org,Last,subscribed,Europe; Africa
        """,
    )
    assert report.created == 2
    lines = {e.line: e.message for e in report.errors}
    assert sorted(lines) == [3, 5, 7, 8]
    assert "not-an-address" in lines[3]
    assert "single line" in lines[5]
    assert "unknown status 'archived'" in lines[7]
    assert "Unknown region 'Atlantis'" in lines[8]
    assert store.get_by_email(session, "where@example.org") is None
    assert store.get_by_email(session, "last@example.org").regions == {"Europe", "Africa"}


def test_import_never_resubscribes_and_is_idempotent(session):
    sub = store.add_subscriber(session, "left@example.org", source="web")
    store.unsubscribe(session, sub, source="web")
    text = """
        email,name,status,regions
        left@example.org,Left,subscribed,
        new@example.org,New,subscribed,Africa
        stays@example.org,Stays,,
        """
    first = run(session, text)
    assert (first.created, first.kept_unsubscribed) == (2, 1)
    assert store.get_by_email(session, "left@example.org").status == Status.UNSUBSCRIBED
    before = csv_io.export_text(session)
    events_before = len(store.events_for(session, sub))
    second = run(session, text)
    assert (second.created, second.updated, second.unchanged, second.kept_unsubscribed) == (0, 0, 1 + 1, 1)
    assert csv_io.export_text(session) == before
    assert len(store.events_for(session, sub)) == events_before


def test_import_applies_an_unsubscribe_it_brings(session):
    store.add_subscriber(session, "was@example.org")
    report = run(session, "email,status\nwas@example.org,unsubscribed\n")
    assert report.updated == 1
    assert store.is_suppressed(session, "was@example.org")


def test_export_round_trips(session, tmp_path):
    store.add_subscriber(session, "a@example.org", name="=HYPERLINK(evil)", regions={"Africa", "Europe"})
    p = store.add_subscriber(session, "p@example.org", name="Zoë", source="web")
    store.set_paused(session, p, True, source="web")
    b = store.add_subscriber(session, "b@example.org")
    store.set_status(session, b, Status.BOUNCED, source="bounce")
    session.flush()
    exported = csv_io.export_text(session)
    assert "'=HYPERLINK" in exported  # a spreadsheet will not run it

    session.rollback()  # empty store again (nothing was committed)
    assert store.list_subscribers(session) == []
    report = csv_io.import_csv(session, io.StringIO(exported), REGIONS)
    assert report.errors == [] and report.created == 3
    assert csv_io.export_text(session) == exported
    assert store.get_by_email(session, "a@example.org").name == "=HYPERLINK(evil)"


def test_export_round_trips_addresses_and_names_that_look_like_formulas(session):
    """The stored values survive, not just the file text: the apostrophe goes on every such cell
    on export and comes off every such cell on import."""
    people = {
        "-news@example.com": "-5 degrees",
        "=x@example.com": "+1 555 0100",
        "+a@example.com": "@handle",
        "'-odd@example.com": "'s-Gravesande",
        "o'brien@example.com": "'Bob'",
    }
    for email, name in people.items():
        store.add_subscriber(session, email, name=name)
    session.flush()
    exported = csv_io.export_text(session)
    assert "\n'-news@example.com," in exported and "\n'=x@example.com," in exported

    session.rollback()
    report = csv_io.import_csv(session, io.StringIO(exported), REGIONS)
    assert (report.errors, report.created) == ([], len(people))
    assert {s.email: s.name for s in store.list_subscribers(session)} == people
    assert csv_io.export_text(session) == exported


def test_file_without_email_column(session):
    report = run(session, "name,status\nAna,subscribed\n")
    assert [str(e) for e in report.errors] == [
        "line 1: no e-mail column (expected one of: email, Email Address)"
    ]


def test_semicolon_separated_file_gets_a_hint(session):
    report = run(session, "Email Address;First Name\nana@example.org;Ana\n")
    assert [str(e) for e in report.errors] == [
        "line 1: no e-mail column (expected one of: email, Email Address); "
        "the file looks semicolon-separated: save it comma-separated"
    ]
    assert store.list_subscribers(session) == []


def test_unparseable_file_names_the_line_and_imports_nothing(session):
    report = run(session, "email,name\na@example.org,A\nb@example.org," + "x" * 200_000 + "\n")
    assert [e.line for e in report.errors] == [3]
    assert "cannot read this record" in report.errors[0].message
    assert store.list_subscribers(session) == []


def test_repeated_tag_cells_warn_on_every_line_and_short_records_read_by_their_own_columns(session):
    # Tag cells and the column layout are remembered per file: neither may hide a later row's outcome.
    report = run(
        session,
        "Email Address,First Name,Last Name,TAGS\n"
        'a@example.org,A,One,"""Africa"",""VIP"""\n'
        'b@example.org,B,Two,"""Africa"",""VIP"""\n'
        "c@example.org,C\n",
    )
    assert (report.created, report.errors) == (3, [])
    assert [str(w) for w in report.warnings] == [
        "line 2: tags that are not regions were ignored: VIP",
        "line 3: tags that are not regions were ignored: VIP",
    ]
    assert store.get_by_email(session, "b@example.org").regions == {"Africa"}
    c = store.get_by_email(session, "c@example.org")
    assert (c.name, c.regions) == ("C", None)


def test_import_leaves_the_cycle_collector_as_it_found_it(session):
    import gc

    assert gc.isenabled()
    run(session, MAILCHIMP)
    assert gc.isenabled()
    gc.disable()
    try:
        run(session, "email\nz@example.org\n")
        assert not gc.isenabled()
    finally:
        gc.enable()
