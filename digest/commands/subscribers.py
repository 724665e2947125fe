"""`digest subscribers ...`: staff commands on the subscriber store.

Every value a subscriber (or a file) brought is printed as text, never as rich markup:
`escape()` in f-strings, plain strings in tables (rich.table cells are markup too, so they go
in as `Text`). A name like `[link=https://evil.example]x[/link]` or `[/]` shows as typed.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rich.markup import escape
from rich.table import Table
from rich.text import Text
from sqlalchemy.orm import Session

from digest import terminal
from digest.config import Config, load_config
from digest.db import make_engine, migrate, session_factory
from digest.errors import DigestError
from subscribers import csv_io, reports, store
from subscribers.store import Status
from subscribers.validate import check_regions

console = terminal.console()
err_console = terminal.console(stderr=True)


SHOWN_PROBLEMS = 100  # warnings and errors printed of each kind; the counts cover them all


class SubscriberCommandError(DigestError):
    """A subscribers command could not do what was asked (unknown address, unreadable file)."""


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("subscribers", help="add, remove, list, import and export subscribers")
    cmds = group.add_subparsers(dest="subscribers_command", metavar="ACTION", required=True)

    add = cmds.add_parser("add", help="add an active subscriber (staff: no confirmation mail)")
    add.add_argument("email")
    add.add_argument("--name", default="")
    add.add_argument(
        "--region", action="append", default=[], metavar="REGION", help="repeat for several; none = all"
    )
    add.add_argument("--pending", action="store_true", help="add as pending (not mailed until confirmed)")
    add.set_defaults(func=cmd_add)

    remove = cmds.add_parser("remove", help="unsubscribe an address (it stays suppressed)")
    remove.add_argument("email")
    remove.add_argument(
        "--delete",
        action="store_true",
        help="also erase the record and its history (the address stays suppressed)",
    )
    remove.set_defaults(func=cmd_remove)

    lst = cmds.add_parser("list", help="list subscribers")
    lst.add_argument("--status", choices=[s.value for s in Status])
    lst.set_defaults(func=cmd_list)

    show = cmds.add_parser("show", help="one subscriber with preferences and history")
    show.add_argument("email")
    show.set_defaults(func=cmd_show)

    unsuppress = cmds.add_parser(
        "unsuppress", help="lift a bounce or complaint suppression (staff; the reason is recorded)"
    )
    unsuppress.add_argument("email")
    unsuppress.add_argument("--reason", required=True, help="why, for the subscriber's history")
    unsuppress.set_defaults(func=cmd_unsuppress)

    count = cmds.add_parser("count", help="how many subscribers in each status")
    count.set_defaults(func=cmd_count)

    export = cmds.add_parser("export", help="write every subscriber and suppression as CSV")
    export.add_argument("file", nargs="?", default="-", help="output file (default: standard output)")
    export.set_defaults(func=cmd_export)

    imp = cmds.add_parser("import", help="import a CSV file (ours, Mailchimp or listmonk columns)")
    imp.add_argument("file", help="CSV file, UTF-8 ('-' for standard input)")
    imp.add_argument(
        "--dry-run",
        action="store_true",
        help="show how each column is read and what would be added, updated or skipped; change nothing",
    )
    imp.add_argument(
        "--regions-column",
        metavar="COLUMN",
        action="append",
        help="a column whose values naming a region or alias set the regions (default: TAGS and GROUPS)",
    )
    imp.set_defaults(func=cmd_import)


@contextmanager
def _session(args: argparse.Namespace) -> Iterator[tuple[Config, Session]]:
    config = load_config(args.config)
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    try:
        migrate(engine)
        with session_factory(engine).begin() as session:
            yield config, session
    finally:
        engine.dispose()


def _find(session: Session, email: str) -> store.Subscriber:
    sub = store.get_by_email(session, email)
    if sub is None:
        raise SubscriberCommandError(f"{email!r} is not in the subscriber list")
    return sub


def cmd_add(args: argparse.Namespace) -> int:
    with _session(args) as (config, session):
        regions = check_regions(args.region, config.regions.order)
        existing = store.get_by_email(session, args.email)
        status = Status.PENDING if args.pending else Status.ACTIVE
        sub = store.add_subscriber(
            session, args.email, name=args.name, regions=regions, status=status, source="cli"
        )
        email = escape(sub.email)
        if existing is not None:
            console.print(f"{email} is already in the list ({sub.status.value}); nothing changed")
        elif sub.status != status:
            console.print(f"{email} is suppressed (unsubscribed before); added as {sub.status.value}")
        else:
            console.print(f"added {email} ({sub.status.value})")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    with _session(args) as (_config, session):
        sub = _find(session, args.email)
        changed = store.unsubscribe(session, sub, source="cli")
        email = escape(sub.email)
        if args.delete:
            store.delete_subscriber(session, sub, source="cli")
            console.print(f"erased {email}; the address stays suppressed (as a hash only)")
        elif changed:
            console.print(f"unsubscribed {email}")
        else:
            console.print(f"{email} was already {sub.status.value}; nothing changed")
    return 0


def _regions_text(sub: store.Subscriber) -> str:
    return ", ".join(sorted(sub.regions)) if sub.regions else "all"


def cmd_list(args: argparse.Namespace) -> int:
    with _session(args) as (_config, session):
        subs = store.list_subscribers(session, status=Status(args.status) if args.status else None)
        table = Table("email", "name", "status", "regions", "paused", "source", "since")
        for sub in subs:
            table.add_row(
                *(
                    Text(cell)
                    for cell in (
                        sub.email,
                        sub.name,
                        sub.status.value,
                        _regions_text(sub),
                        "yes" if sub.paused else "",
                        sub.source,
                        store.as_utc(sub.created_at).strftime("%Y-%m-%d"),
                    )
                )
            )
        console.print(table)
        console.print(f"{len(subs)} subscriber(s)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with _session(args) as (_config, session):
        sub = _find(session, args.email)
        console.print(Text(sub.email, style="bold"), highlight=False)
        for label, value in (
            ("name", sub.name or "-"),
            ("status", sub.status.value + (" (paused)" if sub.paused else "")),
            ("regions", _regions_text(sub)),
            ("source", sub.source or "-"),
            ("created", store.as_utc(sub.created_at).isoformat(timespec="seconds")),
            ("suppressed", _suppressed_text(session, sub)),
        ):
            console.print(Text(f"  {label:<11}{value}"), highlight=False)
        console.print("  history:")
        for ev in store.events_for(session, sub):
            detail = f" ({ev.detail})" if ev.detail else ""
            at = store.as_utc(ev.at).isoformat(timespec="seconds")
            console.print(Text(f"    {at}  {ev.kind}  via {ev.source}{detail}"), highlight=False)
    return 0


def _suppressed_text(session: Session, sub: store.Subscriber) -> str:
    """ "no", or why: the list's reason and, for a bounce or complaint, what the report said."""
    row = store.suppression_for(session, sub.email)
    if row is None:
        return "no"
    since = store.as_utc(row.created_at).strftime("%Y-%m-%d")
    text = f"yes: {row.reason} (via {row.source or '-'}, since {since})"
    if row.reason in ("bounced", "complained"):
        event = reports.last_event(session, sub.id)
        if event is not None:
            text += f"; {'hard ' if event.hard else ''}{event.kind} {event.detail}"
    return escape(text)  # the detail quotes a remote server: never rich markup


def cmd_unsuppress(args: argparse.Namespace) -> int:
    reason = args.reason.strip()
    if not reason:
        raise SubscriberCommandError("--reason must say why the suppression is lifted")
    with _session(args) as (_config, session):
        sub = _find(session, args.email)
        if not store.is_suppressed(session, sub.email):
            console.print(f"{sub.email} is not suppressed; nothing changed", highlight=False)
            return 0
        try:
            reports.unsuppress(session, sub, reason=reason, source="cli")
        except ValueError as err:
            raise SubscriberCommandError(str(err)) from None
        console.print(f"lifted the suppression of {sub.email}; now {sub.status.value}", highlight=False)
    return 0


def cmd_count(args: argparse.Namespace) -> int:
    with _session(args) as (_config, session):
        counts = store.count_by_status(session)
        for status, n in counts.items():
            console.print(f"{status.value:<13}{n}", highlight=False)
        console.print(f"{'total':<13}{sum(counts.values())}", highlight=False)
        console.print(f"{'will receive':<13}{len(store.active_recipients(session))}", highlight=False)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    with _session(args) as (_config, session):
        if args.file == "-":
            n = csv_io.export_csv(session, sys.stdout)
        else:
            with open(args.file, "w", encoding="utf-8", newline="") as fh:
                n = csv_io.export_csv(session, fh)
        err_console.print(f"exported {n} row(s) (subscribers and suppressions)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    # Bytes, decoded by the importer record by record: a row that is not UTF-8 is an error
    # on its line, and the BOM Excel writes is handled there too.
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except FileNotFoundError:
        raise SubscriberCommandError(f"{args.file}: file not found") from None
    options = {"aliases": config.regions.aliases}
    if args.regions_column:
        options["tag_columns"] = tuple(args.regions_column)
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    try:
        migrate(engine)
        with session_factory(engine)() as session, _import_progress() as progress:
            if args.dry_run:
                plan = csv_io.plan_import(session, data, config.regions.order, progress=progress, **options)
                report = plan.report
            else:
                report = csv_io.import_bytes(
                    session, data, config.regions.order, progress=progress, **options
                )
                session.commit()
    finally:
        engine.dispose()
    file = escape(args.file)
    if args.dry_run:
        _print_plan(plan, file)
        return 1 if report.errors else 0
    for label, problems in (("[yellow]warning:[/]", report.warnings), ("[red]error:[/]", report.errors)):
        for problem in problems[:SHOWN_PROBLEMS]:
            err_console.print(f"{label} {file}: {escape(str(problem))}", highlight=False, soft_wrap=True)
        if len(problems) > SHOWN_PROBLEMS:  # a 200,000-row export can have a warning on every row
            err_console.print(f"{label} {file}: and {len(problems) - SHOWN_PROBLEMS} more", highlight=False)
    console.print(_counts(report), highlight=False, soft_wrap=True)
    # Non-zero when rows were skipped, so a scripted migration notices.
    return 1 if report.errors else 0


def _counts(report: csv_io.ImportReport, *, would: bool = False) -> str:
    verb = "would be " if would else ""
    return (
        f"{report.created} {verb}added, {report.updated} {verb}updated, {report.unchanged} unchanged, "
        f"{report.kept_unsubscribed} kept unsubscribed, {report.suppressions} suppression(s) {verb}added, "
        f"{len(report.errors)} error(s)"
    )


def _print_plan(plan: csv_io.ImportPlan, file: str) -> None:
    table = Table("column", "read as", title=f"{file}: how each column is read (dry run: nothing changed)")
    for use in plan.columns:
        table.add_row(Text(use.column), Text(use.meaning))
    console.print(table)
    console.print(_counts(plan.report, would=True), highlight=False, soft_wrap=True)
    problems = len(plan.report.errors) + len(plan.report.warnings)
    if problems:
        console.print(f"first of {problems} problem(s):", highlight=False)
        for reason in plan.reasons():
            console.print(Text("  " + reason), soft_wrap=True)


@contextmanager
def _import_progress() -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr (rich) while an import runs; nothing when stderr is no terminal."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    if not err_console.is_terminal:
        yield lambda _done, _total: None
        return
    with Progress(
        TextColumn("importing"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("import", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield advance
