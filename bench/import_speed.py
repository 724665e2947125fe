"""`digest subscribers import` speed for a Mailchimp export, against a bare csv read + executemany.

    python -m bench.import_speed [--rows 100000] [--postgres URL | --no-postgres]

Lines printed (`NAME: ours X rows/s, reference Y rows/s, ratio Z`), each reference measured in
the same run on the same file:
  * import_sqlite: `csv_io.import_bytes` of a 100,000-row Mailchimp export (every column Mailchimp
    writes, REGION and ADDRESS included; TAGS naming regions, aliases and others) into an empty
    SQLite file with the project's schema, committed; reference: `csv.reader` over the same file
    and one sqlite3 `executemany` of (email, name) into a bare table, committed;
  * import_sqlite_dry_run: `csv_io.plan_import` of the same file (the import, rolled back);
  * import_postgres, import_postgres_dry_run: the same into PostgreSQL (a schema of its own),
    against `csv.reader` + psycopg `executemany` into a bare table.
The goal is at least 10,000 rows a second.
"""

from __future__ import annotations

import argparse
import csv
import io
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, event, text

from digest.config import Config
from digest.db import make_engine, migrate, session_factory
from subscribers import csv_io

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
HEADER = (
    "Email Address,First Name,Last Name,Address,Phone Number,Birthday,MEMBER_RATING,OPTIN_TIME,"
    "OPTIN_IP,CONFIRM_TIME,CONFIRM_IP,LATITUDE,LONGITUDE,GMTOFF,DSTOFF,TIMEZONE,CC,REGION,"
    "LAST_CHANGED,LEID,EUID,NOTES,TAGS"
)
STATES = ("CA", "NY", "TX", "WA", "IL")
TAGS = ('"Africa"', '"Europe","VIP"', '"MENA"', '"Asia-Pacific","Donor"', "", '"US"')


def mailchimp_export(rows: int) -> bytes:
    """A subscribed-members export as Mailchimp writes it, `rows` readers over 50 domains."""
    out = io.StringIO()
    out.write(HEADER + "\n")
    writer = csv.writer(out, lineterminator="\n")
    for i in range(rows):
        writer.writerow(
            [
                f"Reader.{i}@mail{i % 50}.example.org",
                "Reader",
                str(i),
                f"{i} Main St, Springfield",
                "555-0100",
                "",
                "2",
                "2024-01-05 10:00:00",
                "192.0.2.1",
                "2024-01-05 10:01:00",
                "192.0.2.1",
                "39.78",
                "-89.65",
                "-6",
                "-5",
                "America/Chicago",
                "US",
                STATES[i % len(STATES)],
                "2024-06-01 12:00:00",
                str(100000 + i),
                f"e{i:08x}",
                "",
                TAGS[i % len(TAGS)],
            ]
        )
    return out.getvalue().encode()


def seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def figure(name: str, rows: int, ours: float, reference: float, extra: str) -> None:
    print(
        f"{name}: ours {rows / ours:.0f} rows/s, reference {rows / reference:.0f} rows/s, "
        f"ratio {reference / ours:.2f} ({extra})"
    )


def ours_into(engine: Engine, data: bytes, *, dry_run: bool) -> csv_io.ImportReport:
    config = Config()
    options = {"aliases": config.regions.aliases}
    with session_factory(engine)() as session:
        if dry_run:
            return csv_io.plan_import(session, data, config.regions.order, **options).report
        report = csv_io.import_bytes(session, data, config.regions.order, **options)
        session.commit()
        return report


def bare_rows(data: bytes) -> list[tuple[str, str]]:
    reader = csv.reader(io.StringIO(data.decode(), newline=""))
    next(reader)
    return [(r[0], f"{r[1]} {r[2]}") for r in reader]


def sqlite_figures(data: bytes, rows: int, folder: Path) -> None:
    engine = make_engine(f"sqlite:///{folder}/dry.db")
    migrate(engine)
    dry = seconds(lambda: ours_into(engine, data, dry_run=True))
    engine.dispose()
    engine = make_engine(f"sqlite:///{folder}/digest.db")
    migrate(engine)
    report: list[csv_io.ImportReport] = []
    ours = seconds(lambda: report.append(ours_into(engine, data, dry_run=False)))
    engine.dispose()
    assert report[0].created == rows and not report[0].errors, report[0].errors[:3]

    def bare() -> None:
        db = sqlite3.connect(folder / "bare.db")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE s (email TEXT UNIQUE, name TEXT)")
        db.executemany("INSERT INTO s VALUES (?, ?)", bare_rows(data))
        db.commit()
        db.close()

    reference = seconds(bare)
    figure("import_sqlite", rows, ours, reference, f"{rows} Mailchimp rows in {ours:.1f} s")
    figure("import_sqlite_dry_run", rows, dry, reference, f"plan of the same file in {dry:.1f} s")


def postgres_figures(data: bytes, rows: int, url: str) -> None:
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = make_engine(url)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as err:  # noqa: BLE001  no server: say so, go on
        print(f"import_postgres: skipped, PostgreSQL at {url} refused: {err.__class__.__name__}")
        admin.dispose()
        return
    engine = make_engine(url)

    @event.listens_for(engine, "connect")
    def _search_path(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        with dbapi_conn.cursor() as cur:
            cur.execute(f'SET search_path TO "{schema}"')
        dbapi_conn.commit()

    try:
        migrate(engine)
        dry = seconds(lambda: ours_into(engine, data, dry_run=True))
        report: list[csv_io.ImportReport] = []
        ours = seconds(lambda: report.append(ours_into(engine, data, dry_run=False)))
        assert report[0].created == rows and not report[0].errors, report[0].errors[:3]

        def bare() -> None:
            with engine.connect() as conn:
                raw = conn.connection.dbapi_connection
                with raw.cursor() as cur:
                    cur.execute("CREATE TABLE bare_s (email TEXT UNIQUE, name TEXT)")
                    cur.executemany("INSERT INTO bare_s VALUES (%s, %s)", bare_rows(data))
                raw.commit()

        reference = seconds(bare)
        figure("import_postgres", rows, ours, reference, f"{rows} Mailchimp rows in {ours:.1f} s")
        figure("import_postgres_dry_run", rows, dry, reference, f"plan of the same file in {dry:.1f} s")
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.import_speed", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--postgres", default=POSTGRES_URL, help=f"database URL (default {POSTGRES_URL})")
    parser.add_argument("--no-postgres", action="store_true")
    args = parser.parse_args(argv)
    data = mailchimp_export(args.rows)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_figures(data, args.rows, Path(tmp))
    if not args.no_postgres:
        postgres_figures(data, args.rows, args.postgres)


if __name__ == "__main__":
    main()
