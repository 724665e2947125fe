"""`digest runs`, `digest runs show`, `digest resume`, `digest send --test-to`, the exit statuses,
the progress lines, and SIGTERM on a real `digest send`."""

from __future__ import annotations

import email
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from email import policy
from pathlib import Path

import pytest
from site_helpers import make_site

from digest.cli import main

READERS = {f"r{i}@example.org": {} for i in range(6)}


@pytest.fixture
def site(tmp_path: Path, smtp_server, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: ANN001
    monkeypatch.setenv("DIGEST_SECRET_KEY", "Xr5Kq2Vw8Ln3Tz7Bc1Hm6Jd4Fg9Ps0YaQe7Wn2Rb5Mk-t3")
    path = make_site(tmp_path, smtp_server, READERS)
    path.write_text(
        path.read_text().replace('kind = "smtp"', 'kind = "smtp"\nbackoff_seconds = 0.0'), encoding="utf-8"
    )
    return path


def received(sink) -> Counter[str]:  # noqa: ANN001
    return Counter(rcpts[0] for _f, rcpts, _d in sink.messages)


def run_json(site: Path, run_id: str, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert main(["-c", str(site), "runs", "show", run_id, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def only_run_id(site: Path, capsys: pytest.CaptureFixture[str]) -> str:
    from digest.config import load_config
    from digest.db import make_engine, session_factory
    from digest.send import list_runs

    config = load_config(site)
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    with session_factory(engine)() as s:
        (run, _totals), *rest = list_runs(s)
    engine.dispose()
    assert not rest
    return run.id


def test_failed_and_unknown_rows_are_listed_and_sent_again_only_to_those_chosen(
    site: Path, smtp_server, capsys: pytest.CaptureFixture[str]
) -> None:  # noqa: ANN001
    smtp_server.rcpt_replies["r1@example.org"] = "550 5.1.1 no such user"
    smtp_server.rcpt_replies["r2@example.org"] = "550 5.1.1 no such user"
    assert main(["-c", str(site), "send"]) == 0  # failures are outcomes, not a pause
    out = capsys.readouterr().out
    assert "Whole run: 4 sent, 2 failed, 0 unknown, 0 skipped, 0 pending" in out
    run_id = only_run_id(site, capsys)

    record = run_json(site, run_id, capsys)
    assert record["status"] == "finished" and record["totals"]["failed"] == 2
    problems = {p["email"]: p for p in record["problems"]}
    assert set(problems) == {"r1@example.org", "r2@example.org"}
    assert "5.1.1" in problems["r1@example.org"]["error"]
    assert problems["r1@example.org"]["message_id"].startswith(f"<{run_id}.")
    assert record["notes"]["articles"] > 0 and "dropped" in record["notes"]

    assert main(["-c", str(site), "runs"]) == 0
    table = capsys.readouterr().out
    assert run_id in table and "finished" in table

    # The mailbox was fixed: send again to r1 alone.
    del smtp_server.rcpt_replies["r1@example.org"]
    before = len(smtp_server.messages)
    assert main(["-c", str(site), "resume", run_id, "--include", "failed", "--only", "R1@example.org"]) == 0
    assert [m[1] for m in smtp_server.messages[before:]] == [["r1@example.org"]]
    record = run_json(site, run_id, capsys)
    assert record["totals"]["sent"] == 5 and record["totals"]["failed"] == 1
    assert record["status"] == "finished"
    # An address not in the run is named, and nothing is sent.
    assert main(["-c", str(site), "resume", run_id, "--include", "failed", "--only", "x@example.org"]) == 1
    assert "x@example.org" in capsys.readouterr().err
    assert max(received(smtp_server).values()) == 1


def test_a_run_ending_with_unknown_rows_exits_3_and_says_what_to_do(
    site: Path, smtp_server, capsys: pytest.CaptureFixture[str]
) -> None:  # noqa: ANN001
    from smtp_servers import faulty_smtp

    with faulty_smtp() as faulty:
        site.write_text(site.read_text().replace(f"port = {smtp_server.port}", f"port = {faulty.port}"))
        faulty.drop_after_dot.add("r3@example.org")  # accepted, but we never hear it
        assert main(["-c", str(site), "send"]) == 3
        out = capsys.readouterr().out
        run_id = only_run_id(site, capsys)
        assert (
            "1 deliveries have an unknown outcome" in out
            and f"digest resume {run_id} --include unknown" in out
        )
        assert main(["-c", str(site), "runs", "show", run_id]) == 0
        assert "r3@example.org" in capsys.readouterr().out
        assert Counter(faulty.recipients()) == dict.fromkeys(READERS, 1)  # each handed over once
        faulty.drop_after_dot.clear()
        assert main(["-c", str(site), "resume", run_id, "--include", "unknown"]) == 0
        assert faulty.recipients().count("r3@example.org") == 2  # staff chose to send it again


def test_test_send_goes_to_one_address_outside_every_run(
    site: Path, smtp_server, capsys: pytest.CaptureFixture[str]
) -> None:  # noqa: ANN001
    assert main(["-c", str(site), "send", "--test-to", "editor@rs.example", "--region", "Africa"]) == 0
    ((_f, rcpts, data),) = smtp_server.messages
    assert rcpts == ["editor@rs.example"]
    msg = email.message_from_bytes(data, policy=policy.default)
    assert msg["Subject"].startswith("[TEST] ")
    assert "TEST-COPY" in msg["List-Unsubscribe"]  # no subscriber's real token
    text = msg.get_body(("plain",)).get_content()
    assert "Sudan" in text and "Iraq" not in text  # the Africa variant
    capsys.readouterr()
    assert main(["-c", str(site), "runs"]) == 0
    assert "No send runs yet" in capsys.readouterr().out
    assert main(["-c", str(site), "send", "--test-to", "editor@rs.example", "--region", "Atlantis"]) == 2


def test_progress_lines_off_a_terminal() -> None:
    from collections import Counter as C

    from rich.console import Console

    from digest.commands.progress import LineProgress

    now = [0.0]
    console = Console(record=True, width=200, force_terminal=False)
    progress = LineProgress(console, monotonic=lambda: now[0], every=5.0)
    progress.started("run1", 100, 10)
    progress.advanced(C({"sent": 3}), 40.0)  # too soon: no line
    now[0] = 6.0
    progress.advanced(C({"sent": 20, "failed": 1, "deferred": 2}), 40.0)
    progress.note("rate limit hit; waiting 2.0 s")
    lines = console.export_text().splitlines()
    assert lines == [
        "run run1: 90 of 100 deliveries to go",
        "run run1: 31/100 done (sent 20, failed 1, unknown 0, skipped 0, retrying 2), 40 msg/s",
        "run run1: note: rate limit hit; waiting 2.0 s",
    ]


def test_sigterm_lets_in_flight_messages_finish_then_resume_sends_the_rest(
    tmp_path: Path, smtp_server, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    """A real `digest send`, stopped with SIGTERM while the server holds a message."""
    monkeypatch.setenv("DIGEST_SECRET_KEY", "Xr5Kq2Vw8Ln3Tz7Bc1Hm6Jd4Fg9Ps0YaQe7Wn2Rb5Mk-t3")
    readers = {f"reader{i}@example.org": {} for i in range(40)}
    config_path = make_site(tmp_path, smtp_server, readers)
    # Batches of 10 over one connection: the stop comes while the first is out.
    config_path.write_text(
        config_path.read_text()
        .replace('kind = "smtp"', 'kind = "smtp"\nbatch_size = 10')
        .replace("[transport.smtp]", "[transport.smtp]\nconnections = 1"),
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "digest.cli", "-c", str(config_path), "send"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "DIGEST_SECRET_KEY": "Xr5Kq2Vw8Ln3Tz7Bc1Hm6Jd4Fg9Ps0YaQe7Wn2Rb5Mk-t3"},
        text=True,
    )

    def stop_on_fifth(count: int) -> None:
        if count == 5:
            proc.send_signal(signal.SIGTERM)

    smtp_server.on_message = stop_on_fifth
    out, _ = proc.communicate(timeout=60)
    smtp_server.on_message = None
    assert proc.returncode == 130, out
    assert "SIGTERM: letting the messages in flight finish" in out
    assert "stopped by staff" in out and "digest resume" in out
    first = len(smtp_server.messages)
    assert 5 <= first <= 20  # the batch in flight (and, at most, the one queued behind it)
    assert main(["-c", str(config_path), "send"]) == 0  # resumes the paused run
    got = received(smtp_server)
    assert set(got) == set(readers) and max(got.values()) == 1
