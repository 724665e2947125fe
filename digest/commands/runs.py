"""`digest runs`, `digest runs show ID` and `digest resume ID`: the run records staff act on."""

from __future__ import annotations

import argparse
import json
import threading
from typing import Any

from rich.markup import escape
from rich.table import Table
from sqlalchemy import Engine

from digest import terminal
from digest.config import Config, load_config
from digest.db import make_engine, migrate, session_factory
from digest.models import STATUSES, DeliveryStatus
from digest.pipeline import SendOutcome, send_issue
from digest.send import (
    RunReport,
    SystemClock,
    list_runs,
)
from digest.transports import make_transport

console = terminal.console(highlight=False, soft_wrap=True)  # long lines stay whole in logs (grep)

# Exit statuses of `digest send` and `digest resume` (the README lists them).
EXIT_OK = 0
EXIT_PAUSED = 1  # deliveries still pending (paused, error threshold, nothing sent)
EXIT_UNKNOWN = 3  # finished, but some deliveries have an unknown outcome: staff decide
EXIT_FAILED = 4  # closed, but most deliveries failed: the issue did not go out (run status failed)
EXIT_STOPPED = 130  # stopped by Ctrl-C or SIGTERM; resumable


def register(sub: argparse._SubParsersAction) -> None:
    runs = sub.add_parser("runs", help="the send runs: a table, or one run's record")
    runs_sub = runs.add_subparsers(dest="runs_command", metavar="ACTION")
    runs.set_defaults(func=cmd_runs)
    runs.add_argument("--limit", type=int, default=30, help="newest runs shown (default 30)")
    show = runs_sub.add_parser("show", help="one run: totals, every failed and unknown row")
    show.add_argument("run_id", metavar="ID")
    show.add_argument("--json", action="store_true", help="the record as JSON")
    show.set_defaults(func=cmd_runs_show)
    pause = runs_sub.add_parser(
        "pause", help="pause a run: every worker (or the sending process) stops at its next row"
    )
    pause.add_argument("run_id", metavar="ID")
    pause.set_defaults(func=cmd_runs_pause)

    resume = sub.add_parser("resume", help="go on with a run, or send again to chosen rows of it")
    resume.add_argument("run_id", metavar="ID")
    resume.add_argument(
        "--include",
        action="append",
        choices=["failed", "unknown"],
        default=[],
        help="send again to rows with this outcome (repeatable); without it, only pending rows",
    )
    resume.add_argument(
        "--only", action="append", default=[], metavar="ADDR", help="only these addresses (repeatable)"
    )
    resume.add_argument(
        "--workers",
        choices=["inprocess", "celery"],
        default=None,
        help="send in this process or on Celery workers (default: [send] workers)",
    )
    resume.add_argument(
        "--detach", action="store_true", help="with celery workers: return once the rows are enqueued"
    )
    resume.set_defaults(func=cmd_resume)


# _operations_late: `digest send` imports this module for `deliver` and `print_outcome`; the
# operations module (the scheduler, APScheduler, the console's run record) is imported by the
# commands that use it, not by every send's start-up.


def _engine(config: Config) -> Engine:
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    migrate(engine)
    return engine


def cmd_runs(args: argparse.Namespace) -> int:
    from digest import operations  # see _operations_late

    config = load_config(args.config)
    engine = _engine(config)
    with session_factory(engine)() as session:
        runs = list_runs(session, limit=args.limit)
    if not runs:
        console.print("No send runs yet.")
        return 0
    table = Table(title="Send runs, newest first")
    numbers = {s.capitalize() for s in STATUSES}
    for col in ("Run", "Issue", "Started", "Status", *(s.capitalize() for s in STATUSES), "Rate"):
        # Ids and dates whole, however narrow the terminal: staff copy them into `runs show`.
        table.add_column(col, justify="right" if col in numbers else "left", no_wrap=col != "Status")
    for run, totals in runs:
        started = run.created_at.astimezone(config.tz).strftime("%Y-%m-%d %H:%M")
        pending = totals["pending"] + totals["sending"]
        table.add_row(
            escape(run.id),
            escape(run.issue),
            started,
            escape(run.status),
            *(str(totals[s]) if s != "pending" else str(pending) for s in STATUSES),
            f"{operations.rate_of(run, totals):.0f}/s",
        )
    # Into a pipe or a file, the whole table rather than one folded to 80 columns.
    out = console if console.is_terminal else terminal.console(highlight=False, width=160)
    out.print(table)
    return 0


def print_clicks(clicks: dict[str, Any]) -> None:
    """The issue's clicks in a line, and its five most-clicked stories (all of them: --json)."""
    if not clicks["stories"]:
        return
    line = f"Clicks: {clicks['human']} by people, {clicks['filtered']} filtered as mail scanners'"
    opens = clicks["opens"]
    if opens:
        line += f"; {opens['counted']} {opens['label']}"
    console.print(line)
    for story in clicks["stories"][:5]:
        if story["human"]:
            console.print(f"  {story['human']:>6}  {escape(story['title'])} ({escape(story['region'])})")


def cmd_runs_show(args: argparse.Namespace) -> int:
    from digest import operations  # see _operations_late

    config = load_config(args.config)
    engine = _engine(config)
    with session_factory(engine)() as session:
        record = operations.run_record(session, operations.get_run(session, args.run_id), config)
    if args.json:
        # json escapes C0 characters but not C1 (0x9b is a CSI): the one filter for outside text.
        print(terminal.safe_text(json.dumps(record, indent=2, ensure_ascii=False)))
        return 0
    t = record["totals"]
    console.print(
        f"[bold]Run {escape(record['id'])}[/] — issue {escape(record['issue'])}, {record['status']}"
    )
    if record["reason"]:
        console.print(f"Why: {escape(record['reason'])}")
    console.print(
        f"Started {record['started']}, transport {escape(record['transport'] or '?')}, "
        f"{record['active_seconds']:.1f} s sending, {record['rate_per_second']:.0f} msg/s"
    )
    console.print(
        f"{record['recipients']} recipients: "
        + ", ".join(f"{t[s]} {s}" for s in STATUSES)
        + "".join(f", {record[k]} {k}" for k in ("bounced", "complained", "refused") if k in record)
    )
    print_clicks(record["clicks"])
    for alarm in record.get("alarms", []):
        console.print(f"[bold red]Alarm:[/] {escape(alarm['text'])}")
        console.print(f"  e.g. {escape(alarm['example'][:200])}", highlight=False)
    notes = record["notes"]
    dropped = notes.get("dropped") or []
    if dropped:
        console.print(f"[yellow]{len(dropped)} articles of the week were left out:[/]")
        for item in dropped:
            console.print(f"  {escape(str(item.get('title')))} — {escape(str(item.get('reason')))}")
    limits = notes.get("rate_limits")
    if limits:
        console.print(
            f"Rate limits: {limits.get('provider_refusals', 0)} provider refusals, "
            f"{limits.get('hourly_waits', 0)} waits for the hourly limit"
        )
    if record["skipped_reasons"]:
        console.print("[yellow]Skipped readers, and why:[/]")
        for reason, n in record["skipped_reasons"].items():
            console.print(f"  {n} — {escape(reason)}")
        shown = record["skipped"][:20]
        console.print(
            "  " + ", ".join(escape(r["email"]) for r in shown) + (" …" if t["skipped"] > len(shown) else "")
        )
    if record["workers"]:
        table = Table(title="Workers (celery mode)")
        for col in ("Worker", "Host", "Sent", "Failed", "Unknown", "Skipped", "Rate", "Last seen"):
            table.add_column(col)
        for w in record["workers"]:
            table.add_row(
                escape(w["worker"]),
                escape(w["host"]),
                str(w["sent"]),
                str(w["failed"]),
                str(w["unknown"]),
                str(w["skipped"]),
                f"{w['rate_per_second']:.0f}/s",
                w["last_seen"],
            )
        console.print(table)
    if record["problems"]:
        table = Table(title="Failed and unknown deliveries")
        for col in ("Address", "Outcome", "Error", "Message-ID"):
            table.add_column(col)
        for p in record["problems"]:
            table.add_row(escape(p["email"]), p["status"], escape(p["error"][:300]), escape(p["message_id"]))
        console.print(table)
        if t["unknown"]:
            console.print(
                f"Unknown rows may have been delivered. To send them again: "
                f"digest resume {record['id']} --include unknown [--only ADDR]"
            )
    return 0


def cmd_runs_pause(args: argparse.Namespace) -> int:
    from digest import operations  # see _operations_late

    config = load_config(args.config)
    engine = _engine(config)
    with session_factory(engine)() as session:
        paused, said = operations.pause(session, args.run_id, "staff (digest runs pause)")
    console.print(escape(said))
    return EXIT_OK if paused else EXIT_PAUSED


def cmd_resume(args: argparse.Namespace) -> int:
    from digest import operations  # see _operations_late

    config = load_config(args.config)
    engine = _engine(config)
    include = [DeliveryStatus(s) for s in dict.fromkeys(args.include)]
    with session_factory(engine)() as session:
        plan = operations.plan_resume(session, args.run_id, include=include, only=args.only)
    if plan.nothing_pending:
        console.print(
            f"Run {plan.run_id} is {plan.status}: nothing pending. To send again to some of its rows, "
            "add --include failed or --include unknown (and --only ADDR)."
        )
        return EXIT_PAUSED
    if plan.selected:
        if not plan.chosen:
            console.print("No row of the run matches; nothing to send.")
            return EXIT_OK
        console.print(f"Sending again to {plan.chosen} deliveries of run {plan.run_id}, and no one else.")
    outcome = operations.send_resumed(
        config,
        plan,
        lambda issue, **kw: deliver(config, engine, issue, workers=args.workers, detach=args.detach, **kw),
    )
    print_outcome(outcome)
    return exit_status(outcome.report)


def deliver(config: Config, engine: Engine, issue: Any, **kwargs: Any) -> SendOutcome:
    """send_issue with what a person at the command line expects: progress, clean Ctrl-C."""
    from digest.commands.progress import make_progress, stop_on_signals

    clock = SystemClock()
    stop = threading.Event()
    with stop_on_signals(stop, console), make_progress(console, monotonic=clock.monotonic) as bar:
        return send_issue(
            config,
            engine,
            make_transport(config),
            issue=issue,
            console=console,
            progress=bar,
            stop=stop,
            clock=clock,
            **kwargs,
        )


def exit_status(report: RunReport) -> int:
    if report.detached:
        return EXIT_OK
    if report.stopped and report.paused:
        return EXIT_STOPPED
    if report.paused:
        return EXIT_PAUSED
    failed = report.totals["failed"]
    if failed * 2 > failed + report.totals["sent"] + report.totals["unknown"]:
        return EXIT_FAILED  # the same rule as digest.send.closing_status
    if report.totals["unknown"]:
        return EXIT_UNKNOWN
    return EXIT_OK


def print_outcome(outcome: SendOutcome) -> None:
    report = outcome.report
    t = report.totals
    this_time = ", ".join(f"{report.counts[s]} {s}" for s in ("sent", "failed", "unknown", "skipped"))
    console.print(
        f"Run {report.run_id}: {outcome.recipients} recipients, {len(outcome.variants)} variants. "
        f"This time: {this_time} in {report.seconds:.1f} s ({report.rate:.0f} msg/s)."
    )
    pending = t["pending"] + t["sending"]
    console.print("Whole run: " + ", ".join(f"{t[s]} {s}" for s in STATUSES[:-1]) + f", {pending} pending.")
    for error in report.errors[:20]:
        console.print(f"[red]problem:[/] {escape(error)}")
    if len(report.errors) > 20:
        console.print(f"... and {len(report.errors) - 20} more: digest runs show {report.run_id}")
    if report.rate_limited:
        console.print(
            f"[yellow]The provider's rate limit refused {report.rate_limited} hand-overs (retried).[/]"
        )
    if t["unknown"]:
        console.print(
            f"[yellow]{t['unknown']} deliveries have an unknown outcome:[/] the connection ended after the "
            "message was handed over, so they may have been delivered and are not re-sent blindly. "
            f"Check them with `digest runs show {report.run_id}`; to send them again: "
            f"`digest resume {report.run_id} --include unknown`."
        )
    if report.detached:
        console.print(
            f"Run {report.run_id} is in the hands of the Celery workers. Watch it with "
            f"`digest runs show {report.run_id}`; stop it with `digest runs pause {report.run_id}`."
        )
    elif report.paused:
        console.print(
            f"[yellow]The run is paused: {escape(report.reason)}.[/] "
            f"Resume it with `digest resume {report.run_id}` (or `digest send`)."
        )
