"""`digest schedule ...`: when the issue goes out (see digest.schedule for the rules)."""

from __future__ import annotations

import argparse
import getpass
import re
from datetime import datetime

from rich.markup import escape
from rich.table import Table

from digest import operations, terminal
from digest.config import load_config
from digest.db import make_engine, migrate
from digest.schedule import FiringInfo, Outcome, ScheduleInfo, ScheduleService

console = terminal.console(highlight=False)


def register(sub: argparse._SubParsersAction) -> None:
    schedule = sub.add_parser("schedule", help="when the issue goes out: add, list, pause, skip, approve")
    actions = schedule.add_subparsers(dest="schedule_command", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="add a schedule (in [newsletter] timezone)")
    trigger = add.add_mutually_exclusive_group(required=True)
    trigger.add_argument("--weekly", metavar='"DAY HH:MM"', help='e.g. "fri 09:00" or "mon,thu 07:30"')
    trigger.add_argument(
        "--cron", metavar='"EXPR"', help="crontab: minute hour day month weekday (0 = Sunday)"
    )
    add.add_argument("--mode", choices=("send", "review"), default="send", help="default: send")
    add.add_argument("--name", help="default: made from the trigger, e.g. fri-09-00")
    add.set_defaults(func=cmd_add)

    listing = actions.add_parser("list", help="schedules, next fire time (local and UTC), last outcome")
    listing.set_defaults(func=cmd_list)

    history = actions.add_parser("history", help="what recent firings did")
    history.add_argument("name", nargs="?", help="one schedule (default: all)")
    history.add_argument("--limit", type=int, default=20)
    history.set_defaults(func=cmd_history)

    for action, text in (
        ("pause", "stop firing until resumed"),
        ("resume", "fire again, from the next time on (missed ones stay missed)"),
        ("skip-next", "skip the next firing only"),
        ("remove", "remove the schedule (its history stays)"),
        ("run-now", "fire now: collect, build, send (also when missed, held or paused)"),
    ):
        p = actions.add_parser(action, help=text)
        p.add_argument("name")
        if action in ("skip-next", "run-now"):
            p.add_argument("--by", default=_who(), help="who asks, for the record (default: your login)")
        p.set_defaults(func=cmd_action, action=action)

    approve = actions.add_parser(
        "approve", help="review mode: approve a schedule's upcoming issue (the held one first), or a date"
    )
    approve.add_argument("target", metavar="NAME|YYYY-MM-DD")
    approve.add_argument(
        "--issue",
        metavar="YYYY-MM-DD",
        help="the issue date to approve (default: the held issue, else the next)",
    )
    approve.add_argument("--by", default=_who(), help="who approves (default: your login)")
    approve.add_argument("--revoke", action="store_true", help="take the approval back")
    approve.set_defaults(func=cmd_approve)


def _who() -> str:
    try:
        return f"{getpass.getuser()} (cli)"
    except (KeyError, OSError):
        return "cli"


def _service(args: argparse.Namespace) -> ScheduleService:
    config = load_config(args.config)
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    migrate(engine)
    return ScheduleService(config, engine)


def _when(moment: datetime | None, fmt: str = "%a %Y-%m-%d %H:%M %Z") -> str:
    return moment.strftime(fmt) if moment else "-"


def _outcome(firing: FiringInfo | None) -> str:
    if firing is None:
        return "-"
    colour = {"sent": "green", "prepared": "green", "missed": "red", "failed": "red", "held": "yellow"}
    style = colour.get(firing.outcome, "")
    label = f"[{style}]{firing.outcome}[/]" if style else firing.outcome
    return f"{label} {_when(firing.fire_time, '%Y-%m-%d %H:%M')}: {escape(firing.detail)}"


def cmd_add(args: argparse.Namespace) -> int:
    expr = args.weekly if args.weekly is not None else args.cron
    name = args.name or ("" if args.weekly is not None else "cron-") + re.sub(
        r"[^a-z0-9]+", "-", expr.lower()
    ).strip("-")
    with _service(args) as service:
        info = service.add(name[:64], weekly=args.weekly, cron=args.cron, mode=args.mode)
    console.print(f"Added schedule {info.name!r}: {info.trigger}, mode {info.mode}.")
    _print_next(info)
    return 0


def _print_next(info: ScheduleInfo) -> None:
    if info.next_fire is None:
        console.print("It is paused: it will not fire until resumed.")
        return
    console.print(f"Next: {_when(info.next_fire)} ({_when(info.next_fire_utc, '%Y-%m-%d %H:%M UTC')}).")


def cmd_list(args: argparse.Namespace) -> int:
    with _service(args) as service:
        schedules = service.list()
        zone = service.config.newsletter.timezone
    if not schedules:
        console.print('No schedules. Add one with: digest schedule add --weekly "fri 09:00"')
        return 0
    table = Table(title=f"Schedules (times in {zone} and UTC)")
    for column in ("Name", "Trigger", "Mode", "State", "Next", "Next (UTC)", "Last outcome"):
        table.add_column(column)
    for info in schedules:
        state = "[yellow]paused[/]" if info.paused else "active"
        if info.held_issue:
            state += f", [red]{info.held_issue} not sent[/]"
        if info.mode == "review" and info.upcoming_issue:
            if info.approval is None:
                state += ", not approved yet"
            else:
                state += (
                    ", approved"
                    if info.approval.holds
                    else ", [yellow]approval withdrawn[/] (curation edited)"
                )
        table.add_row(
            escape(info.name),
            escape(info.trigger),
            info.mode,
            state,
            _when(info.next_fire),
            _when(info.next_fire_utc, "%Y-%m-%d %H:%M"),
            _outcome(info.last),
        )
    # Into a pipe or a file, the whole table rather than one folded to 80 columns.
    out = console if console.is_terminal else terminal.console(highlight=False, width=200)
    out.print(table)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    with _service(args) as service:
        if args.name:
            service.get(args.name)  # a clear error for a name that does not exist
        firings = service.firings(args.name, limit=args.limit)
    if not firings:
        console.print("No firings yet.")
        return 0
    table = Table(title="Firings, newest first")
    for column in ("Schedule", "Fire time", "Kind", "Outcome", "Issue", "By", "Detail"):
        table.add_column(column)
    for f in firings:
        table.add_row(
            escape(f.schedule),
            _when(f.fire_time, "%Y-%m-%d %H:%M %Z"),
            f.kind,
            f.outcome,
            f.issue or "-",
            escape(f.by) or "-",
            escape(f.detail),
        )
    console.print(table)
    return 0


def cmd_action(args: argparse.Namespace) -> int:
    with _service(args) as service:
        if args.action == "pause":
            info = service.pause(args.name)
            console.print(f"Paused {info.name!r}.")
        elif args.action == "resume":
            info = service.resume(args.name)
            console.print(f"Resumed {info.name!r}.")
            _print_next(info)
        elif args.action == "skip-next":
            before = service.get(args.name).next_fire
            info = service.skip_next(args.name, by=args.by)
            console.print(f"Skipped {info.name!r} at {_when(before)}.")
            _print_next(info)
        elif args.action == "remove":
            service.remove(args.name)
            console.print(f"Removed {args.name!r}; its history stays (digest schedule history).")
        else:
            firing = operations.run_now(service, args.name, args.by)
            console.print(f"{firing.outcome}: {escape(firing.detail)}")
            return 0 if firing.outcome == Outcome.SENT else 1
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    with _service(args) as service:
        if args.revoke:
            target = args.issue or args.target
            if operations.revoke(service, target):
                console.print(f"Approval of {target} taken back.")
                return 0
            console.print(f"{target} was not approved.")
            return 1
        which = ""
        if args.issue is None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", args.target):
            send_time, held = service.upcoming(args.target)
            local = send_time.astimezone(service.config.tz)
            which = f" (held since {_when(local)})" if held else f" (goes out {_when(local)})"
        approval = operations.approve(service, args.target, args.by, issue=args.issue)
    curation = "as curated now" if approval.curation else "with no curation"
    console.print(
        f"The issue of {approval.issue}{which} is approved by {escape(approval.approved_by)}, {curation}; "
        "editing its curation withdraws the approval."
    )
    return 0
