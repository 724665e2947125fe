"""`digest staff ...` end to end through `digest.cli.main`, on a SQLite file."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from staff_helpers import cheap_password_hashes  # noqa: F401  (autouse fixture)

from digest import cli
from digest.config import load_config
from digest.db import make_engine, session_factory
from digest.web import staff_store
from digest.web.staff_store import LoginOutcome, Role


@pytest.fixture
def staff_cmd(tmp_path, monkeypatch, capsys):
    config = tmp_path / "digest.toml"
    config.write_text('[database]\nurl = "sqlite:///staff.db"\n', encoding="utf-8")

    def run(*args: str, stdin: str = "") -> tuple[int, str, str]:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        code = cli.main(["-c", str(config), "staff", *args])
        out, err = capsys.readouterr()
        return code, out, err

    run.config = config  # type: ignore[attr-defined]
    return run


def account(staff_cmd, email):
    config = load_config(staff_cmd.config)
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    with session_factory(engine)() as s:
        found = staff_store.get_by_email(s, email)
    engine.dispose()
    return found


def test_add_list_passwd_remove(staff_cmd):
    code, out, _ = staff_cmd(
        "add", "Chief@Example.org", "--role", "admin", "--password-stdin", stdin="first password 1\n"
    )
    assert code == 0 and "added Chief@example.org (admin)" in out
    code, out, _ = staff_cmd("add", "ed@example.org", "--password-stdin", stdin="second password\n")
    assert code == 0 and "(editor)" in out
    chief = account(staff_cmd, "chief@example.org")
    assert chief.role == Role.ADMIN and chief.password_hash.startswith("$argon2id$")
    assert "first password" not in chief.password_hash
    code, out, _ = staff_cmd("list")
    assert "Chief@example.org" in out and "ed@example.org" in out and "2 staff account(s)" in out

    code, out, _ = staff_cmd("passwd", "chief@example.org", "--password-stdin", stdin="a newer password\n")
    assert code == 0 and "lock-out is lifted" in " ".join(out.split())
    config = load_config(staff_cmd.config)
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    now = datetime.now(UTC)
    with session_factory(engine)() as s:
        check = staff_store.authenticate
        old = check(
            s, "chief@example.org", "first password 1", now=now, max_failures=5, lock_for=timedelta(1)
        )
        new = check(
            s, "chief@example.org", "a newer password", now=now, max_failures=5, lock_for=timedelta(1)
        )
        assert (old.outcome, new.outcome) == (LoginOutcome.WRONG, LoginOutcome.OK)
    engine.dispose()

    assert staff_cmd("remove", "ed@example.org")[0] == 0
    assert account(staff_cmd, "ed@example.org") is None


@pytest.mark.parametrize(
    "args,stdin,message",
    [
        (("add", "x@example.org", "--password-stdin"), "short\n", "at least 12 characters"),
        (
            ("add", "not an address", "--password-stdin"),
            "long enough password\n",
            "not a valid e-mail address",
        ),
        (
            ("passwd", "nobody@example.org", "--password-stdin"),
            "long enough password\n",
            "has no staff account",
        ),
        (("remove", "nobody@example.org"), "", "has no staff account"),
    ],
)
def test_bad_input_is_refused_with_a_clear_error(staff_cmd, args, stdin, message):
    code, _out, err = staff_cmd(*args, stdin=stdin)
    assert code == 1 and message in err.replace("\n", " ")


def test_duplicate_account_and_prompted_passwords(staff_cmd, monkeypatch):
    answers = iter(["typed password 12", "typed password 12", "one password 123", "another one 1234"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert staff_cmd("add", "typed@example.org")[0] == 0  # prompted twice, not echoed
    code, _out, err = staff_cmd("add", "other@example.org")
    assert code == 1 and "differ" in err
    assert account(staff_cmd, "other@example.org") is None
    code, _out, err = staff_cmd("add", "TYPED@example.org", "--password-stdin", stdin="typed password 12\n")
    assert code == 1 and "already has a staff account" in err
