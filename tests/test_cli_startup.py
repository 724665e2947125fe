"""The CLI starts at once: guarded by what it imports, never by a timer.

`digest --version` and `digest --help` import no command module and nothing heavy; a command
imports its own module only. The figure (start-up against `python -c pass`) is in bench/.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from digest.cli import COMMAND_MODULES, COMMANDS, chosen_command, main

HEAVY = ("sqlalchemy", "flask", "mjml", "celery", "jinja2", "rich", "alembic", "apscheduler", "requests")


def imported_by(*args: str, cwd: Path | None = None) -> set[str]:
    """Module names a fresh `digest` process has imported when it exits, for these arguments."""
    program = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('\\n'.join(sys.modules), file=sys.stderr))\n"
        "from digest.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program, *args], capture_output=True, text=True, timeout=120, cwd=cwd
    )
    names = set(done.stderr.split())
    assert "digest.cli" in names, done.stderr
    return names


@pytest.mark.parametrize("args", [("--version",), ("--help",)])
def test_version_and_help_import_nothing_heavy(args: tuple[str, ...]) -> None:
    names = imported_by(*args)
    heavy = sorted(n for n in names if n.split(".")[0] in HEAVY)
    assert heavy == []
    assert not any(n.startswith("digest.commands") for n in names)


def test_a_command_imports_only_its_own_module() -> None:
    names = imported_by("worker", "--help")
    commands = {n for n in names if n.startswith("digest.commands.")}
    assert commands == {"digest.commands.worker"}
    assert not {n.split(".")[0] for n in names} & {"celery", "flask", "sqlalchemy", "mjml"}


def test_send_on_local_sources_imports_only_what_it_uses(tmp_path) -> None:  # noqa: ANN001
    """`digest send` on the embedded defaults (a local sample feed, no [dkim], default limits)
    fetches nothing, checks no address and reads no YAML: requests, email_validator, yaml and
    limits (about 70 ms of imports together) stay out."""
    names = {n.split(".")[0] for n in imported_by("send", "--dry-run", cwd=tmp_path)}
    assert {"sqlalchemy", "feedparser"} <= names  # it read the database and the feed
    assert names & {"requests", "urllib3", "email_validator", "yaml", "limits", "celery", "flask"} == set()


def test_subscribers_help_needs_no_web_or_render() -> None:
    names = imported_by("subscribers", "--help")
    assert not {n.split(".")[0] for n in names} & {"flask", "mjml", "celery", "jinja2"}


@pytest.mark.parametrize("module", COMMAND_MODULES)
def test_the_table_says_what_each_module_registers(module: str) -> None:
    """cli.COMMANDS repeats each command's help line so --help needs no import: keep them in step."""
    sub = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(module).register(sub)
    registered = {action.dest: action.help for action in sub._choices_actions}
    listed = {name: c.help for name, c in COMMANDS.items() if c.module == module}
    assert registered == listed


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["send", "--dry-run"], "send"),
        (["-c", "x.toml", "-v", "runs", "show", "1"], "runs"),
        (["--config", "send", "collect"], "collect"),
        (["--config=x.toml", "subscribers", "list"], "subscribers"),
        (["--version"], None),
        ([], None),
    ],
)
def test_the_command_is_found_past_the_global_options(argv: list[str], command: str | None) -> None:
    assert chosen_command(argv) == command


def test_unknown_command_is_refused_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["sendd"])
    assert exit_.value.code == 2
    assert "sendd" in capsys.readouterr().err


def test_send_needs_no_scheduler_migrations_or_web() -> None:
    """`digest send` starts for every issue: the scheduler, Alembic and the web stay out of it."""
    names = imported_by("send", "--help")
    assert "digest.commands.run" in names
    assert not {n.split(".")[0] for n in names} & {"apscheduler", "alembic", "flask", "celery"}
    assert "digest.operations" not in names


def test_staff_accounts_need_no_flask() -> None:
    names = imported_by("staff", "--help")
    assert "flask" not in {n.split(".")[0] for n in names}


def test_an_up_to_date_database_is_not_migrated_again(tmp_path) -> None:  # noqa: ANN001
    """Alembic's env.py imports every model (the web's too): a command on a current database skips it."""
    site = tmp_path / "digest.toml"
    site.write_text('[database]\nurl = "sqlite:///d.db"\n', encoding="utf-8")
    imported_by("-c", str(site), "subscribers", "count")  # creates and migrates the database
    names = imported_by("-c", str(site), "subscribers", "count")
    assert not {"flask", "digest.web.app", "digest.migrations.env"} & names
    assert "alembic" not in names  # the version is read with one SELECT (digest.db._is_at_head)
    assert "subscribers.store" in names


def test_bounces_classify_reads_files_without_the_database_or_the_pipeline(tmp_path) -> None:
    """A thousand reports read by hand start at once: no SQLAlchemy, no rendering, no HTTP."""
    report = tmp_path / "report.eml"
    report.write_bytes(b"From: MAILER-DAEMON@mx.example.net\r\nSubject: hello\r\n\r\nHello\r\n")
    names = imported_by("bounces", "classify", str(report))
    assert "subscribers.bounces" in names
    assert not {n.split(".")[0] for n in names} & {
        "sqlalchemy",
        "mjml",
        "jinja2",
        "requests",
        "flask",
        "celery",
    }
