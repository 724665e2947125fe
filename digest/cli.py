"""The `digest` command. Each subcommand lives in `digest.commands.<module>`.

Starting fast is part of the interface: `digest --version` and `digest --help` import no command
module, and `digest COMMAND` imports only the module that owns COMMAND. So this file names every
command with its owning module and its one-line help (tests/test_cli_startup.py checks the table
against what each module registers), and everything heavy (rich included) is imported late.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import NamedTuple

from digest import __version__


class Command(NamedTuple):
    module: str
    help: str


# Add a command here, in the order `digest --help` lists them; its module's register() adds it.
COMMANDS: dict[str, Command] = {
    "demo": Command(
        "digest.commands.run", "run the whole weekly send on the bundled sample, into an outbox folder"
    ),
    "send": Command("digest.commands.run", "send this week's digest to every active subscriber"),
    "runs": Command("digest.commands.runs", "the send runs: a table, or one run's record"),
    "resume": Command("digest.commands.runs", "go on with a run, or send again to chosen rows of it"),
    "collect": Command("digest.commands.collect", "show this week's articles per region"),
    "subscribers": Command("digest.commands.subscribers", "add, remove, list, import and export subscribers"),
    "serve": Command(
        "digest.commands.serve", "serve the subscribe, confirm, preferences and unsubscribe pages"
    ),
    "preview": Command(
        "digest.commands.preview",
        "write this week's digest as HTML (and a PNG screenshot where Chromium is installed)",
    ),
    "bounces": Command("digest.commands.bounces", "bounce and complaint reports"),
    "schedule": Command(
        "digest.commands.schedule", "when the issue goes out: add, list, pause, skip, approve"
    ),
    "run": Command(
        "digest.commands.daemon", "run the scheduler and serve every web page (waitress), until stopped"
    ),
    "staff": Command(
        "digest.commands.staff",
        "staff console accounts and sessions: add, list, remove, passwd, role, sessions, end-sessions",
    ),
    "worker": Command(
        "digest.commands.worker", 'send rows of runs started with [send] workers = "celery" (a Celery worker)'
    ),
}

# Every module that registers commands, once each (tests walk them; `build_parser` never does).
COMMAND_MODULES: tuple[str, ...] = tuple(dict.fromkeys(c.module for c in COMMANDS.values()))

# Top-level options that take a value: the word after them is not the command.
_OPTIONS_WITH_VALUE = ("-c", "--config")


def chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named in argv (the first word that is not an option or an option's value)."""
    words = iter(argv)
    for word in words:
        if word == "--":
            return next(words, None)
        if word in _OPTIONS_WITH_VALUE:
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported, every other command is its help line."""
    parser = argparse.ArgumentParser(prog="digest", description="Newsletter digest generator and mailer.")
    parser.add_argument("--version", action="version", version=f"digest {__version__}")
    parser.add_argument(
        "-c", "--config", metavar="FILE", help="digest.toml to use (default: $DIGEST_CONFIG or ./digest.toml)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    if command in COMMANDS:
        importlib.import_module(COMMANDS[command].module).register(sub)
    for name, entry in COMMANDS.items():
        if name not in sub.choices:
            sub.add_parser(name, help=entry.help)
    return parser


def _error(err: Exception) -> None:
    from rich.markup import escape

    from digest import terminal

    # Config keys look like [section] key: never let rich read them as markup.
    terminal.console(stderr=True).print(
        f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(chosen_command(argv)).parse_args(argv)
    import logging

    from digest import terminal
    from digest.errors import ConfigError, DigestError

    handler = logging.StreamHandler()
    # Log lines may quote an SMTP reply or a webhook's text: no control sequences reach stderr.
    handler.setFormatter(terminal.LogFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, handlers=[handler])
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        _error(err)
        return 2
    except DigestError as err:
        _error(err)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
