"""Suppressions survive every path: export, import, erasure, migration; and address keys keep ß."""

from __future__ import annotations

import hashlib
import io
from datetime import UTC, datetime, timedelta

import pytest

from digest import cli
from digest.db import make_engine, migrate, session_factory
from digest.models import Recipient
from digest.send import dedupe
from subscribers import csv_io, store
from subscribers.store import Status, Suppression
from subscribers.validate import email_key, mailbox_key

pytest_plugins = ("subscriber_fixtures",)

REGIONS = ("Middle East", "Africa", "Asia-Pacific", "Europe", "Americas", "Global")


def sha(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
def digest_cmd(tmp_path, monkeypatch, capsys):
    """`digest subscribers ...` on a database named by `db` (one config file per database)."""

    def run(db: str, *args: str) -> tuple[int, str, str]:
        config = tmp_path / f"{db}.toml"
        config.write_text(f'[database]\nurl = "sqlite:///{db}.db"\n', encoding="utf-8")
        code = cli.main(["-c", str(config), "subscribers", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_erased_address_stays_suppressed_through_export_and_import(digest_cmd, tmp_path):
    """The issue's scenario: erase, export, import into a fresh database, import a file that
    lists the address as subscribed: still suppressed, and the address is nowhere in clear."""
    assert digest_cmd("old", "add", "Gone@Example.org", "--name", "Gone")[0] == 0
    assert digest_cmd("old", "add", "stays@example.org")[0] == 0
    assert digest_cmd("old", "remove", "gone@example.org", "--delete")[0] == 0
    export = tmp_path / "export.csv"
    assert digest_cmd("old", "export", str(export))[0] == 0
    text = export.read_text(encoding="utf-8")
    assert "gone@" not in text.lower()
    assert f"{sha('gone@example.org')},,suppressed," in text
    assert text.splitlines()[-1].endswith(",unsubscribed")  # the reason it had before erasure

    code, out, _ = digest_cmd("new", "import", str(export))
    assert code == 0 and "1 added" in out and "1 suppression(s) added" in out
    again = tmp_path / "again.csv"
    again.write_text("email,name,status\ngone@example.org,Gone,subscribed\nGONE@example.org,,active\n")
    code, out, _ = digest_cmd("new", "import", str(again))
    assert code == 0 and "0 added" in out and "2 kept unsubscribed" in out
    code, out, _ = digest_cmd("new", "count")
    assert "will receive 1" in out
    assert digest_cmd("new", "show", "gone@example.org")[0] == 1  # never stored again
    second = tmp_path / "second.csv"
    assert digest_cmd("new", "export", str(second))[0] == 0
    assert second.read_text(encoding="utf-8") == text  # the round trip changes nothing


def test_import_brings_suppressions_of_subscribers_and_plain_addresses(session):
    data = (
        "email,name,status,suppression\n"
        "ana@example.org,Ana,active,complained\n"  # suppressed although the row says active
        "bounced@example.org,,suppressed,bounced\n"  # a suppression with no subscriber
        "SHA256:" + "ab" * 32 + ",,suppressed,\n"  # an erased one, hash in capitals: still a hash
        "sha256:nothex,,suppressed,\n"
    )
    report = csv_io.import_csv(session, io.StringIO(data), REGIONS)
    assert [str(e) for e in report.errors] == ["line 5: 'sha256:nothex' is not sha256: and 64 hex digits"]
    assert (report.kept_unsubscribed, report.suppressions) == (1, 2)
    assert store.get_by_email(session, "ana@example.org").status == Status.UNSUBSCRIBED
    assert store.is_suppressed(session, "ana@example.org")
    assert store.suppression_of(session, "bounced@example.org").reason == "bounced"
    assert store.get_by_email(session, "bounced@example.org") is None
    assert store.suppression_of(session, "x@example.org") is None
    keys = {s.email_key: s.reason for s in store.list_suppressions(session)}
    assert keys["sha256:" + "ab" * 32] == "manual"
    assert store.active_recipients(session) == []


def test_import_never_activates_a_pending_but_suppressed_address(session):
    store.add_subscriber(session, "p@example.org", status=Status.PENDING)
    store.suppress(session, "p@example.org", reason="bounced", source="test")
    report = csv_io.import_csv(session, io.StringIO("email,status\np@example.org,subscribed\n"), REGIONS)
    assert report.kept_unsubscribed == 1
    assert store.get_by_email(session, "p@example.org").status == Status.PENDING
    assert store.is_suppressed(session, "p@example.org")


def test_erasure_keeps_only_the_hash(session):
    sub = store.add_subscriber(session, "Erase.Me@Example.org", name="E")
    store.unsubscribe(session, sub, source="test")
    store.delete_subscriber(session, sub, source="test")
    session.flush()
    (entry,) = session.query(Suppression).all()
    assert entry.email_key == sha("erase.me@example.org") and entry.reason == "unsubscribed"
    assert store.is_suppressed(session, "erase.me@EXAMPLE.org")
    assert store.is_erased(session, "erase.me@example.org")
    # Signing up again (the owner may): a record that starts unsubscribed, never active.
    again = store.add_subscriber(session, "erase.me@example.org")
    assert again.status == Status.UNSUBSCRIBED
    store.set_status(session, again, Status.ACTIVE, source="confirm")  # the owner confirmed
    assert not store.is_suppressed(session, "erase.me@example.org")  # lifted, hash and all
    assert [r.email for r in store.active_recipients(session)] == ["erase.me@example.org"]


def test_active_recipients_leave_out_a_subscriber_whose_hash_is_erased(session):
    store.add_subscriber(session, "kept@example.org")
    store.add_subscriber(session, "hashed@example.org")
    store.suppress_key(session, sha("hashed@example.org"), reason="manual", source="import")
    assert [r.email for r in store.active_recipients(session)] == ["kept@example.org"]
    hashed = store.get_by_email(session, "hashed@example.org")
    assert not store.is_active(session, hashed.id)


# --- invalid UTF-8 ---------------------------------------------------------------------------


def test_a_row_that_is_not_utf8_is_an_error_on_its_line_and_the_others_import(session):
    data = (
        "\ufeffemail,name\n".encode()
        + b"ana@example.org,Ana\n"
        + b"latin1@example.org,Jos\xe9\n"
        + '"quoted@example.org","Zoë, the second"\n'.encode()
        + b"\xff\xfe@example.org,\n"
    )
    report = csv_io.import_bytes(session, data, REGIONS)
    assert [str(e) for e in report.errors] == [
        "line 3: not valid UTF-8 (byte 0xe9 in column 'name'); this row was skipped",
        "line 5: not valid UTF-8 (byte 0xff in column 'email'); this row was skipped",
    ]
    assert report.created == 2
    assert store.get_by_email(session, "quoted@example.org").name == "Zoë, the second"
    assert store.get_by_email(session, "latin1@example.org") is None


def test_a_header_that_is_not_utf8_imports_nothing(session):
    report = csv_io.import_bytes(session, b"e\xe9mail\nana@example.org\n", REGIONS)
    assert [str(e) for e in report.errors] == [
        "line 1: the header is not valid UTF-8 (byte 0xe9 in column 1) (nothing imported)"
    ]
    assert report.created == 0


def test_cli_import_reports_the_line_of_bad_utf8(digest_cmd, tmp_path):
    src = tmp_path / "mixed.csv"
    src.write_bytes(b'\xef\xbb\xbf"email","name"\r\nok@example.org,Ok\r\nbad@example.org,M\xfcller\r\n')
    code, out, err = digest_cmd("db", "import", str(src))
    assert code == 1
    assert "line 3: not valid UTF-8 (byte 0xfc in column 'name')" in err
    assert "1 added" in out


# --- strasse@ and straße@ ------------------------------------------------------------------


def test_strasse_and_strasse_with_sharp_s_are_two_mailboxes(session):
    assert email_key("Straße@Example.org") == "straße@example.org" != email_key("strasse@example.org")
    assert email_key("STRASSE@example.org") == "strasse@example.org"
    a = store.add_subscriber(session, "straße@example.org", name="Eszett")
    b = store.add_subscriber(session, "strasse@example.org", name="Double s")
    assert a.id != b.id
    assert store.get_by_email(session, "STRAßE@example.org").id == a.id
    store.unsubscribe(session, b, source="test")
    assert not store.is_suppressed(session, "straße@example.org")
    assert [r.email for r in store.active_recipients(session)] == ["straße@example.org"]
    report = csv_io.import_csv(
        session, io.StringIO("email\nstraße@example.org\nstrasse@example.org\n"), REGIONS
    )
    assert report.warnings == []  # not one address twice
    assert (report.unchanged, report.kept_unsubscribed) == (1, 1)


def test_send_dedupe_keeps_both_spellings():
    got = dedupe(
        [
            Recipient(1, "straße@example.org", "", None),
            Recipient(2, "strasse@example.org", "", None),
            Recipient(3, "Strasse@Example.org", "", None),
        ]
    )
    assert [r.subscriber_id for r in got] == [1, 2]


def test_mailbox_key_drops_tags_and_case_only_for_limits():
    assert mailbox_key("Victim+1@Example.org") == mailbox_key("victim+2@example.org") == "victim@example.org"
    assert mailbox_key("+only@example.org") == "+only@example.org"
    assert mailbox_key("straße+x@example.org") != mailbox_key("strasse@example.org")
    # Providers known to ignore dots, and Gmail's two domains: one table in subscribers.validate.
    assert mailbox_key("J.Doe+x@GoogleMail.com") == mailbox_key("jdoe@gmail.com") == "jdoe@gmail.com"
    assert mailbox_key("j.doe@example.org") != mailbox_key("jdoe@example.org")


# --- migration 0008 --------------------------------------------------------------------------


def _insert_subscriber(conn, sid: int, email: str, key: str) -> None:
    from sqlalchemy import text

    conn.execute(
        text(
            "INSERT INTO subscribers (id, email, email_key, name, status, paused, source, created_at,"
            " updated_at) VALUES (:id, :e, :k, '', 'active', :paused, 'web', '2026-01-01 00:00:00',"
            " '2026-01-01 00:00:00')"
        ),
        {"id": sid, "e": email, "k": key, "paused": False},
    )


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def unmigrated_engine(request, tmp_path):
    """An empty database with no tables yet: SQLite, then PostgreSQL when it answers."""
    if request.param == "postgresql":
        yield request.getfixturevalue("pg_schema_engine")
        return
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    yield engine
    engine.dispose()


def test_0008_recomputes_keys_hashes_erased_addresses_and_reports_collisions(unmigrated_engine, caplog):
    from sqlalchemy import text

    engine = unmigrated_engine
    migrate(engine, "0003_signup_request")
    with engine.begin() as conn:
        _insert_subscriber(conn, 1, "Straße@example.org", "strasse@example.org")  # casefolded before
        _insert_subscriber(conn, 2, "plain@example.org", "plain@example.org")
        # Two rows the new rule would give one key (only possible through hand-edited data).
        _insert_subscriber(conn, 3, "Dup@example.org", "dup-a")
        _insert_subscriber(conn, 4, "dup@example.org", "dup-b")
        for key, reason in (("strasse@example.org", "unsubscribed"), ("erased@example.org", "manual")):
            conn.execute(
                text(
                    "INSERT INTO suppressions (email_key, reason, source, created_at)"
                    " VALUES (:k, :r, 'cli', '2026-01-01 00:00:00')"
                ),
                {"k": key, "r": reason},
            )
        # A confirmation mail sent an hour ago counts towards the new per-mailbox limit.
        conn.execute(
            text(
                "INSERT INTO subscriber_events (subscriber_id, kind, source, detail, at)"
                " VALUES (2, 'confirmation_sent', 'web', '', :at)"
            ),
            {"at": datetime.now(UTC) - timedelta(hours=1)},
        )
    with caplog.at_level("WARNING", logger="digest.migrations"):
        migrate(engine)
    assert "subscribers [3, 4] would share the address key 'dup@example.org'" in caplog.text
    with engine.connect() as conn:
        keys = dict(conn.execute(text("SELECT id, email_key FROM subscribers")).all())
        suppressions = set(conn.execute(text("SELECT email_key FROM suppressions")).scalars())
    assert keys == {1: "straße@example.org", 2: "plain@example.org", 3: "dup-a", 4: "dup-b"}
    assert suppressions == {"straße@example.org", sha("erased@example.org")}
    with session_factory(engine)() as s:
        assert store.is_suppressed(s, "STRAßE@example.org")
        assert not store.is_suppressed(s, "strasse@example.org")
        assert store.is_erased(s, "Erased@Example.org")
        assert (
            store.confirmations_since(s, "Plain+tag@example.org", datetime.now(UTC) - timedelta(hours=2)) == 1
        )


def test_0008_erasures_from_before_hold_off_both_spellings(tmp_path):
    """An address erased before 0008 was kept case-folded: its hash cannot tell ß from ss, so
    both spellings stay suppressed (the safe side)."""
    from sqlalchemy import text

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate(engine, "0003_signup_request")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO suppressions (email_key, reason, source, created_at)"
                " VALUES ('strasse@example.org', 'manual', 'cli', '2026-01-01 00:00:00')"
            )
        )
    migrate(engine)
    with session_factory(engine)() as s:
        assert store.is_erased(s, "straße@example.org") and store.is_erased(s, "strasse@example.org")
    engine.dispose()
