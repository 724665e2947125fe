"""The `digest` command. Each subcommand lives in `digest.commands.<module>`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from rich.markup import escape

from digest import __version__, terminal
from digest.errors import ConfigError, DigestError

# Add a module here to add its subcommands.
COMMAND_MODULES = (
    "digest.commands.run",
    "digest.commands.runs",
    "digest.commands.collect",
    "digest.commands.subscribers",
    "digest.commands.serve",
    "digest.commands.preview",
    "digest.commands.bounces",
    "digest.commands.schedule",
    "digest.commands.daemon",
    "digest.commands.staff",
    "digest.commands.worker",
)

err_console = terminal.console(stderr=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="digest", description="Newsletter digest generator and mailer.")
    parser.add_argument("--version", action="version", version=f"digest {__version__}")
    parser.add_argument(
        "-c", "--config", metavar="FILE", help="digest.toml to use (default: $DIGEST_CONFIG or ./digest.toml)"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _error(err: Exception) -> None:
    # Config keys look like [section] key: never let rich read them as markup.
    err_console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
        err_console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
