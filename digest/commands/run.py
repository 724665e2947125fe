"""`digest demo` and `digest send`: the weekly job itself."""

from __future__ import annotations

import argparse
import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from digest import terminal
from digest.archive import archive_path
from digest.commands.collect import print_dropped
from digest.commands.runs import deliver, exit_status, print_outcome
from digest.config import Config, DatabaseConfig, TransportConfig, load_config
from digest.db import make_engine, migrate, session_factory
from digest.personal import Links, fill
from digest.pipeline import (
    Issue,
    Variants,
    example_personal,
    list_headers,
    prepare_issue,
    send_test,
)
from digest.send import finished_run_for, last_send_window_end, open_run
from digest.transports import make_transport
from subscribers import store

console = terminal.console(highlight=False)

# (email, name, regions or None for all, status): a small list that shows every path.
DEMO_SUBSCRIBERS: tuple[tuple[str, str, frozenset[str] | None, store.Status], ...] = (
    ("ada@example.org", "Ada Lovelace", None, store.Status.ACTIVE),
    ("grace.hopper@example.com", "Grace Hopper", None, store.Status.ACTIVE),
    ("amina@example.net", "Amina Diallo", frozenset({"Africa"}), store.Status.ACTIVE),
    ("kenji@example.jp", "Kenji Sato", frozenset({"Asia-Pacific", "Middle East"}), store.Status.ACTIVE),
    ("zoe@example.fr", "Zoë Dubois", frozenset({"Europe"}), store.Status.ACTIVE),
    ("lucia@example.com.br", "Lúcia Souza", frozenset({"Americas", "Africa"}), store.Status.ACTIVE),
    ("sam@example.org", "Sam Global", frozenset({"Global"}), store.Status.ACTIVE),
    ("former@example.org", "Former Reader", None, store.Status.UNSUBSCRIBED),
    ("unconfirmed@example.org", "Not Yet Confirmed", None, store.Status.PENDING),
)


def register(sub: argparse._SubParsersAction) -> None:
    demo = sub.add_parser(
        "demo", help="run the whole weekly send on the bundled sample, into an outbox folder"
    )
    demo.add_argument(
        "--outbox", metavar="DIR", default="outbox", help="where .eml files go (default: ./outbox)"
    )
    demo.set_defaults(func=cmd_demo)

    send = sub.add_parser("send", help="send this week's digest to every active subscriber")
    send.add_argument("--dry-run", action="store_true", help="show who would get what; send nothing")
    send.add_argument(
        "--again",
        action="store_true",
        help="send this week's issue even though a finished run already sent it",
    )
    send.add_argument(
        "--resume-stale",
        action="store_true",
        help="resume an unfinished run older than [transport] resume_max_age_hours",
    )
    send.add_argument(
        "--abandon",
        action="store_true",
        help="close the unfinished run for good (its pending deliveries are skipped), then stop",
    )
    send.add_argument(
        "--test-to",
        metavar="ADDR",
        help="send one copy, subject marked [TEST], to this address only, outside the run's ledger",
    )
    send.add_argument(
        "--region",
        action="append",
        default=None,
        metavar="REGION",
        help="with --test-to: the variant of these regions (repeatable; default all)",
    )
    send.add_argument(
        "--workers",
        choices=["inprocess", "celery"],
        default=None,
        help="send in this process, or hand the rows to Celery workers (default: [send] workers)",
    )
    send.add_argument(
        "--detach",
        action="store_true",
        help="with celery workers: return once the rows are enqueued (watch with `digest runs show`)",
    )
    send.set_defaults(func=cmd_send)


def cmd_demo(args: argparse.Namespace) -> int:
    base = load_config(args.config) if args.config else Config()
    outbox = Path(args.outbox).resolve()
    outbox.mkdir(parents=True, exist_ok=True)
    # A demo run starts clean: earlier messages and the earlier demo database go.
    for old in outbox.glob("*.eml"):
        old.unlink()
    db_path = outbox / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    config = dataclasses.replace(
        base,
        transport=TransportConfig(kind="outbox", outbox_dir=str(outbox)),
        database=DatabaseConfig(url=f"sqlite:///{db_path}"),
        web=dataclasses.replace(base.web, archive_dir=str(outbox / "archive")),
    )
    engine = make_engine(config.database.url)
    migrate(engine)
    with session_factory(engine)() as session:
        for email, name, regions, status in DEMO_SUBSCRIBERS:
            store.add_subscriber(session, email, name=name, regions=regions, status=status, source="demo")
        session.commit()
    console.print(f"[bold]{config.newsletter.name}[/]: demo run on {config.path}")
    console.print(f"Subscriber database: {db_path} ({len(DEMO_SUBSCRIBERS)} sample subscribers)")

    issue = prepare_issue(config)
    _print_collect(issue)
    if not issue.should_send(config):
        console.print("[red]No articles this week: nothing sent.[/]")
        return 1
    outcome = deliver(config, engine, issue)
    preview = _write_preview(config, issue, outbox / "preview.html")
    print_outcome(outcome)
    console.print(f"\nE-mails (.eml): {outbox}")
    console.print(f"HTML preview:   {preview}")
    console.print(f"Web edition:    {archive_path(config, issue.digest.issue_date.isoformat())}")
    _print_console_help(outbox)
    return exit_status(outcome.report)


def _print_console_help(outbox: Path) -> None:
    """Write a digest.toml for the demo data and say how to open the staff console on it."""
    demo_toml = outbox / "demo.toml"
    demo_toml.write_text(
        "# Written by `digest demo`: the staff console and the commands on the demo data.\n"
        '[newsletter]\nbase_url = "http://127.0.0.1:8080"\n'
        '[database]\nurl = "sqlite:///demo.db"\n'
        '[transport]\nkind = "outbox"\noutbox_dir = "."\n'
        '[web]\narchive_dir = "archive"\n',
        encoding="utf-8",
    )
    digest_cmd = ".venv/bin/digest" if Path(".venv/bin/digest").exists() else "digest"
    console.print("\nStaff console on the demo data:", markup=False)
    console.print(
        f"  {digest_cmd} -c {demo_toml} staff add admin@example.org --role admin   (asks for a password)",
        markup=False,
        soft_wrap=True,
    )
    console.print(f"  {digest_cmd} -c {demo_toml} serve --dev-secret", markup=False, soft_wrap=True)
    console.print("  then open http://127.0.0.1:8080/staff/ and log in", markup=False)
    console.print(f"Send runs of the demo: {digest_cmd} -c {demo_toml} runs", markup=False, soft_wrap=True)


def cmd_send(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if args.test_to:
        return _test_send(config, args.test_to, args.region)
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    migrate(engine)
    with session_factory(engine)() as session:
        unfinished = open_run(session)
        since = last_send_window_end(session)  # for [collect] window = "since_last_send"
        if args.abandon:
            if unfinished is None:
                console.print("No unfinished run to abandon.")
                return 0
            from digest.operations import abandon

            console.print(escape(abandon(session, unfinished.id)[1]))
            return 0
    if unfinished is not None and not args.dry_run and not args.resume_stale:
        age = datetime.now(UTC) - unfinished.created_at
        if age > timedelta(hours=config.transport.resume_max_age_hours):
            # Resuming would mail an old issue to whoever is left: staff decide.
            console.print(
                f"[red]Run {unfinished.id} (issue {unfinished.issue}) is unfinished and "
                f"{age.total_seconds() / 3600:.0f} hours old; nothing sent.[/] Finish it with "
                "--resume-stale, or close it with --abandon."
            )
            return 1
    resume = None if args.dry_run or unfinished is None else unfinished.id
    if unfinished is not None and resume:
        # An interrupted run is finished first, over the same week window, to the same frozen list.
        console.print(
            f"Resuming run {unfinished.id} (issue {unfinished.issue}), started {unfinished.created_at:%c}"
        )
        issue = prepare_issue(config, unfinished.window_end.astimezone(config.tz), since=since)
    else:
        issue = prepare_issue(config, since=since)
    _print_collect(issue)
    if not issue.should_send(config):
        console.print("[red]No articles this week: nothing sent.[/]")
        if resume:
            console.print(f"Run {resume} stays unfinished; close it with --abandon if it should not go out.")
        return 1
    if args.dry_run:
        return _dry_run(config, engine, issue)
    if not resume and not args.again:
        with session_factory(engine)() as session:
            done = finished_run_for(session, issue.digest.issue_date.isoformat())
        if done is not None:
            console.print(
                f"[red]The issue of {done.issue} was already sent (run {done.id}); nothing sent.[/] "
                "Use --again to send it once more."
            )
            return 1
    outcome = deliver(config, engine, issue, resume_run=resume, workers=args.workers, detach=args.detach)
    print_outcome(outcome)
    return exit_status(outcome.report)


def _test_send(config: Config, to: str, regions: list[str] | None) -> int:
    from subscribers.validate import normalize_email

    address = normalize_email(to)
    unknown = [r for r in regions or () if r not in config.regions.order]
    if unknown:
        console.print(
            f"[red]Unknown region {escape(unknown[0])!r}; known: {escape(', '.join(config.regions.order))}[/]"
        )
        return 2
    issue = prepare_issue(config)
    _print_collect(issue)
    reply = send_test(
        config, issue, address, make_transport(config), regions=frozenset(regions) if regions else None
    )
    console.print(f"Test copy sent to {escape(address)} (not recorded in any run): {escape(reply)}")
    return 0


def _dry_run(config: Config, engine, issue: Issue) -> int:  # type: ignore[no-untyped-def]
    from digest.send import dedupe

    with session_factory(engine)() as session:
        recipients = dedupe(store.active_recipients(session))
    variants = Variants(issue.digest, issue.renderer, list_headers(config), date=issue.now)
    table = Table(title=f"Dry run: {len(recipients)} recipients, nothing sent")
    for col in ("Recipient", "Chose", "Gets", "Subject"):
        table.add_column(col)
    for r in recipients:
        key = variants.key_for(r.regions)
        chose = ", ".join(sorted(r.regions)) if r.regions else "all regions"
        if not key:
            nothing = "[yellow]nothing (no articles in these regions)[/]"
            table.add_row(escape(r.email), escape(chose), nothing, "")
            continue
        rendered, _template = variants.get(key)
        table.add_row(escape(r.email), escape(chose), escape(", ".join(key)), escape(rendered.subject))
    console.print(table)
    console.print(f"{len(variants.rendered)} distinct variants would be rendered.")
    return 0


def _print_collect(issue: Issue) -> None:
    for warning in issue.collected.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    print_dropped(console, issue.collected)
    table = Table(title=f"Articles for the issue of {issue.digest.issue_date:%Y-%m-%d}")
    table.add_column("Region")
    table.add_column("Articles", justify="right")
    for section in issue.digest.sections:
        table.add_row(escape(section.region), str(len(section.teasers)))
    console.print(table)
    for note in issue.digest.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")


def _write_preview(config: Config, issue: Issue, path: Path) -> Path:
    rendered = issue.renderer.render(issue.digest)
    path.write_text(
        fill(rendered.html, example_personal(Links(config.newsletter.base_url))), encoding="utf-8"
    )
    return path
