"""Issue 19, finding 11: escape sequences from outside (an SMTP reply, a subscriber's name, a
webhook's text) reached staff terminals raw through `digest send`, `digest runs show` and
`digest subscribers show`. Every CLI output goes through `digest.terminal.safe_text`."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest
from rich.table import Table
from site_helpers import make_site

from digest.cli import main
from digest.terminal import LogFormatter, console, safe_text

OSC8 = "\x1b]8;;https://evil.example/\x1b\\click here\x1b]8;;\x1b\\"
NASTY = f"{OSC8} \x1b[2J\x1b[31mred\x1b[0m \x9b31m \x07\x08\r\u202etxt.exe"
RAW = ("\x1b", "\x07", "\x08", "\r", "\x9b", "\u202e")


def clean(text: str, *, json: bool = False) -> bool:
    """No control character; and, but in JSON (where "\\u001b" is inert text), no remains of one."""
    return not any(c in text for c in RAW + (() if json else ("]8;;", "[2J")))


def test_safe_text_removes_sequences_whole_and_keeps_text():
    assert safe_text(NASTY) == "click here red  txt.exe"
    kept = "Zoë's ☕ 東京\tcolumn\nnext line"
    assert safe_text(kept) == kept


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "pipe"])
def test_console_strips_what_it_is_given_but_keeps_its_own_colours(terminal):
    out = io.StringIO()
    shown = console(file=out, force_terminal=terminal, width=200)
    table = Table("name")
    table.add_row(NASTY)
    shown.print(f"[bold]reply:[/] {NASTY}")
    shown.print(table)
    text = out.getvalue()
    assert "click here" in text and "]8;;" not in text and "\x9b" not in text and "\u202e" not in text
    if terminal:
        assert "\x1b[1m" in text  # our own bold survives
        assert "\x1b[2J" not in text and "\x1b]" not in text and "\x1b[31m" not in text
    else:
        assert "\x1b" not in text


def test_log_lines_are_stripped():
    record = logging.LogRecord("digest", logging.WARNING, __file__, 1, "webhook refused: %s", (NASTY,), None)
    assert clean(LogFormatter("%(message)s").format(record))


@pytest.fixture
def site(tmp_path: Path, smtp_server, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: ANN001
    monkeypatch.setenv("DIGEST_SECRET_KEY", "Xr5Kq2Vw8Ln3Tz7Bc1Hm6Jd4Fg9Ps0YaQe7Wn2Rb5Mk-t3")
    readers = {"ok@example.org": {}, "gone@example.org": {}}
    path = make_site(tmp_path, smtp_server, readers)
    path.write_text(
        path.read_text().replace('kind = "smtp"', 'kind = "smtp"\nbackoff_seconds = 0.0'), encoding="utf-8"
    )
    smtp_server.rcpt_replies["gone@example.org"] = f"550 5.1.1 {NASTY} no such user"
    return path


def _only_run(site: Path) -> str:
    from digest.config import load_config
    from digest.db import make_engine, session_factory
    from digest.send import list_runs

    config = load_config(site)
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    with session_factory(engine)() as s:
        ((run, _totals),) = list_runs(s)
    engine.dispose()
    return run.id


def test_send_runs_show_and_subscribers_show_print_no_control_sequences(site, capsys):
    assert main(["-c", str(site), "send"]) == 0
    sent = capsys.readouterr()
    assert clean(sent.out + sent.err)
    run_id = _only_run(site)
    for args in (
        ["runs"],
        ["runs", "show", run_id],
        ["runs", "show", run_id, "--json"],
        ["subscribers", "show", "gone@example.org"],
        ["subscribers", "list"],
    ):
        assert main(["-c", str(site), *args]) == 0, args
        out = capsys.readouterr()
        assert clean(out.out + out.err, json="--json" in args), (args, out.out)
    # What the reply said is still shown, only without its sequences.
    assert main(["-c", str(site), "runs", "show", run_id]) == 0
    assert "click here" in capsys.readouterr().out
