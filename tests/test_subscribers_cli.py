"""`digest subscribers ...` end to end through `digest.cli.main`, on a SQLite file."""

from __future__ import annotations

import pytest

from digest import cli


@pytest.fixture
def digest_cmd(tmp_path, monkeypatch, capsys):
    config = tmp_path / "digest.toml"
    config.write_text('[database]\nurl = "sqlite:///data/subs.db"\n', encoding="utf-8")

    def run(*args: str) -> tuple[int, str, str]:
        code = cli.main(["-c", str(config), "subscribers", *args])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_add_list_show_count_remove(digest_cmd, tmp_path):
    assert digest_cmd("add", "Ana@Example.org", "--name", "Ana", "--region", "africa")[0] == 0
    assert (tmp_path / "data" / "subs.db").is_file()  # relative URL resolved against the config file
    code, out, _ = digest_cmd("add", "ana@example.org")
    assert code == 0 and "already in the list" in out
    code, out, _ = digest_cmd("list")
    assert "Ana@example.org" in out and "Africa" in out and "1 subscriber(s)" in out
    code, out, _ = digest_cmd("count")
    assert "active       1" in out and "will receive 1" in out
    assert digest_cmd("remove", "ana@example.org")[0] == 0
    code, out, _ = digest_cmd("show", "ana@example.org")
    assert "unsubscribed" in out and "suppressed yes" in out.replace("  ", " ").replace("  ", " ")
    assert "unsubscribed  via cli" in out
    code, out, _ = digest_cmd("count")
    assert "will receive 0" in out


def test_bad_input_is_a_clear_error(digest_cmd):
    code, _, err = digest_cmd("add", "nobody")
    assert code == 1 and "'nobody' is not a valid e-mail address" in err
    code, _, err = digest_cmd("add", "x@example.org", "--region", "Atlantis")
    assert code == 1 and "Unknown region 'Atlantis'" in err
    code, _, err = digest_cmd("show", "x@example.org")
    assert code == 1 and "'x@example.org' is not in the subscriber list" in err
    code, _, err = digest_cmd("import", "/nonexistent.csv")
    assert code == 1 and "file not found" in err


def test_import_export_round_trip(digest_cmd, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text(
        "\ufeffEmail Address,First Name,Last Name,TAGS\n"
        "ana@example.org,Ana,Lima,Africa\n"
        "broken,Bad,Row,\n"
        "ben@example.org,Ben,,\n",
        encoding="utf-8",
    )
    code, out, err = digest_cmd("import", str(src))
    assert code == 1  # a row was skipped
    assert "line 3:" in err and "'broken'" in err
    assert "2 added" in out and "1 error(s)" in out
    code, out, _ = digest_cmd("import", str(src))
    assert "0 added, 0 updated, 2 unchanged" in out

    first = tmp_path / "a.csv"
    assert digest_cmd("export", str(first))[0] == 0
    text = first.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "email,name,status,regions,paused,source,created_at,suppression"
    assert "ana@example.org,Ana Lima,active,Africa,false,import," in text
    assert digest_cmd("remove", "ana@example.org", "--delete")[0] == 0
    assert digest_cmd("remove", "ben@example.org", "--delete")[0] == 0
    code, out, _ = digest_cmd("import", str(first))
    assert "2 kept unsubscribed" in out  # erased addresses stay suppressed


def test_import_from_standard_input_with_a_bom_and_quoted_header(digest_cmd, monkeypatch):
    """Excel's UTF-8 CSV: a byte-order mark, then a quoted header; by path it always worked."""
    import io
    import sys

    data = '\ufeff"Email Address","First Name"\r\n"ana@example.org","Ana"\r\n'.encode()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    code, out, err = digest_cmd("import", "-")
    assert (code, err) == (0, "")
    assert "1 added" in out
    assert "ana@example.org" in digest_cmd("list")[1]


HOSTILE_NAMES = ("[/]", "[link=https://evil.example]x[/link]", "[bold red]loud")


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_names_are_never_markup_in_staff_output(digest_cmd, tmp_path, monkeypatch, name):
    """A name typed on the form once crashed `list` and `show` (`[/]`) or printed a clickable
    link in the staff terminal (`[link=...]`); every value is shown as typed, on a real terminal."""
    import io
    import re

    from rich.console import Console

    from digest.commands import subscribers as cmd

    terminal = io.StringIO()
    monkeypatch.setattr(cmd, "console", Console(file=terminal, force_terminal=True, width=250))
    email = "hostile@example.org"
    for args in (
        ("add", email, "--name", name),
        ("list",),
        ("show", email),
        ("remove", email),
        ("show", email),
    ):
        code, _out, err = digest_cmd(*args)
        assert code == 0, err
    raw = terminal.getvalue()
    assert "\x1b]8;" not in raw  # no OSC 8 hyperlink
    shown = re.sub(r"\x1b\[[0-9;]*m", "", raw)
    assert shown.count(name) == 3  # list, and show twice
    assert "added hostile@example.org" in shown and "unsubscribed hostile@example.org" in shown


def test_import_errors_show_cell_values_as_typed(digest_cmd, tmp_path):
    src = tmp_path / "bad.csv"
    src.write_text("email,status\nx@example.org,[link=https://evil.example]on[/link]\n", encoding="utf-8")
    code, _out, err = digest_cmd("import", str(src))
    assert code == 1 and "unknown status '[link=https://evil.example]on[/link]'" in err


def test_import_dry_run_shows_the_plan_and_changes_nothing(digest_cmd, tmp_path):
    src = tmp_path / "mailchimp.csv"
    src.write_text(
        "Email Address,First Name,Last Name,ADDRESS,REGION,TAGS\n"
        'ana@example.org,Ana,Lima,"1 Main St",TX,"""MENA"",""VIP"""\n'
        "ben@example.org,Ben,,,CA,\n",
        encoding="utf-8",
    )
    code, out, _err = digest_cmd("import", str(src), "--dry-run")
    assert code == 0
    assert "REGION" in out and "not used" in out and "state or province" in out
    assert "2 would be added" in out and "line 2: tags that are not regions were ignored: VIP" in out
    assert "total        0" in digest_cmd("count")[1]
    code, out, _err = digest_cmd("import", str(src))
    assert code == 0 and "2 added" in out
    assert "Middle East" in digest_cmd("show", "ana@example.org")[1]  # MENA: an alias
