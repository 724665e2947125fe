"""`digest staff ...`: the console's accounts (add, list, remove, passwd, role) and their
sessions (sessions, end-sessions)."""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.table import Table
from sqlalchemy.orm import Session

from digest import terminal
from digest.config import load_config
from digest.db import make_engine, migrate, session_factory
from digest.web import staff_sessions, staff_store
from digest.web.staff_store import Role, StaffError

console = terminal.console(highlight=False)


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser(
        "staff",
        help="staff console accounts and sessions: add, list, remove, passwd, role, sessions, end-sessions",
    )
    cmds = group.add_subparsers(dest="staff_command", metavar="ACTION", required=True)

    add = cmds.add_parser("add", help="add a staff account")
    add.add_argument("email")
    add.add_argument(
        "--role",
        choices=[r.value for r in Role],
        default=Role.EDITOR.value,
        help="editor: curate, preview, test, approve; admin: also schedules, subscribers, staff "
        "(default: editor)",
    )
    add.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input (one line)"
    )
    add.set_defaults(func=cmd_add)

    lst = cmds.add_parser("list", help="list staff accounts")
    lst.set_defaults(func=cmd_list)

    remove = cmds.add_parser("remove", help="remove a staff account (its sessions end)")
    remove.add_argument("email")
    remove.set_defaults(func=cmd_remove)

    passwd = cmds.add_parser("passwd", help="set a new password (ends the account's sessions)")
    passwd.add_argument("email")
    passwd.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input (one line)"
    )
    passwd.set_defaults(func=cmd_passwd)

    role = cmds.add_parser("role", help="give an account another role (its sessions end)")
    role.add_argument("email")
    role.add_argument("role", choices=[r.value for r in Role])
    role.set_defaults(func=cmd_role)

    sessions = cmds.add_parser("sessions", help="list live console sessions (of one account, or all)")
    sessions.add_argument("email", nargs="?", help="only this account's sessions")
    sessions.set_defaults(func=cmd_sessions)

    reset = cmds.add_parser(
        "2fa-reset", help="turn off an account's second factor (a lost phone); its sessions end"
    )
    reset.add_argument("email")
    reset.set_defaults(func=cmd_2fa_reset)

    end = cmds.add_parser("end-sessions", help="end every console session of an account")
    end.add_argument("email")
    end.set_defaults(func=cmd_end_sessions)


@contextmanager
def _session(args: argparse.Namespace) -> Iterator[Session]:
    config = load_config(args.config)
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    try:
        migrate(engine)
        with session_factory(engine).begin() as session:
            yield session
    finally:
        engine.dispose()


def read_password(args: argparse.Namespace) -> str:
    """From standard input with --password-stdin, else typed twice at a prompt (not echoed)."""
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Password again: ") != password:
            raise StaffError("the two passwords differ; nothing changed")
    staff_store.check_password(password, email=args.email)
    return password


def cmd_add(args: argparse.Namespace) -> int:
    password = read_password(args)
    with _session(args) as session:
        account = staff_store.add_account(session, args.email, password, Role(args.role))
        console.print(f"added {account.email} ({account.role.value})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _session(args) as session:
        table = Table("email", "role", "second factor", "last login (UTC)")
        accounts = staff_store.list_accounts(session)
        for a in accounts:
            table.add_row(
                a.email,
                a.role.value,
                "on" if a.totp_secret else "off",
                a.last_login_at.strftime("%Y-%m-%d %H:%M") if a.last_login_at else "never",
            )
        console.print(table)
        console.print(f"{len(accounts)} staff account(s)")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    with _session(args) as session:
        staff_store.remove_account(session, args.email)
        console.print(f"removed {args.email}")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    with _session(args) as session:  # before asking for a password nobody will use
        if staff_store.get_by_email(session, args.email) is None:
            raise StaffError(f"{args.email!r} has no staff account")
    password = read_password(args)
    with _session(args) as session:
        account = staff_store.set_password(session, args.email, password)
        console.print(f"new password set for {account.email}; their sessions ended")
    return 0


def cmd_role(args: argparse.Namespace) -> int:
    with _session(args) as session:
        account = staff_store.set_role(session, args.email, Role(args.role))
        console.print(f"{account.email} is now {account.role.value}; their sessions ended")
    return 0


def cmd_sessions(args: argparse.Namespace) -> int:
    with _session(args) as session:
        accounts = {a.id: a.email for a in staff_store.list_accounts(session)}
        if args.email:
            account = staff_store.get_by_email(session, args.email)
            if account is None:
                raise StaffError(f"{args.email!r} has no staff account")
            rows = staff_sessions.of_account(session, account.id)
        else:
            rows = staff_sessions.everyone(session)
        table = Table("account", "since (UTC)", "last seen (UTC)", "address", "browser", "id")
        for row in rows:
            table.add_row(
                accounts.get(row.account_id, "?"),
                row.created_at.strftime("%Y-%m-%d %H:%M"),
                row.last_seen_at.strftime("%Y-%m-%d %H:%M"),
                row.address or "-",
                row.user_agent or "-",
                row.id[:12],
            )
        # Into a pipe or a file, the whole table rather than one folded to 80 columns.
        out = console if console.is_terminal else terminal.console(highlight=False, width=200)
        out.print(table)
        out.print(f"{len(rows)} session(s)")
    return 0


def cmd_end_sessions(args: argparse.Namespace) -> int:
    with _session(args) as session:
        account = staff_store.get_by_email(session, args.email)
        if account is None:
            raise StaffError(f"{args.email!r} has no staff account")
        ended = staff_sessions.end_all(session, account.id)
        console.print(f"ended {ended} session(s) of {account.email}")
    return 0


def cmd_2fa_reset(args: argparse.Namespace) -> int:
    with _session(args) as session:
        account = staff_store.reset_second_factor(session, args.email)
        console.print(f"second factor of {account.email} is off; they set it up again at /staff/account")
    return 0
