"""Outcomes are facts: a firing says what the ledger shows (failed, missed, held, sent), staff
are told, and what approve or run-now names is what goes out. Through the CLI where staff use
it; every time relative to the clock the test injects (or the system clock the CLI reads)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from schedule_helpers import READERS, Clock, add_readers, digests_sent
from sqlalchemy import select

from digest.cli import main
from digest.config import Config, load_config
from digest.db import make_engine, migrate, session_factory
from digest.schedule import Firing, ScheduleService, resume_interrupted
from digest.send import SendRun
from tests.smtp_servers import FaultySmtp, faulty_smtp


def smtp_site(folder: Path, server: FaultySmtp, extra: str = "") -> tuple[Config, str]:
    path = folder / "digest.toml"
    path.write_text(
        f"""
[newsletter]
name = "RS Weekly"
sender = "RS Weekly <news@rs.example>"
base_url = "https://news.rs.example"
timezone = "America/New_York"
[transport]
kind = "smtp"
attempts = 1
[transport.smtp]
host = "{server.host}"
port = {server.port}
[database]
url = "sqlite:///digest.db"
[web]
archive_dir = "archive"
{extra}
""",
        encoding="utf-8",
    )
    config = load_config(path)
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    migrate(engine)
    add_readers(engine)
    engine.dispose()
    return config, str(path)


def test_a_relay_that_refuses_everything_is_a_failed_firing_and_run_now_stays_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGEST_SECRET_KEY", "outcome-test")
    with faulty_smtp() as server:
        config, toml = smtp_site(tmp_path, server)
        server.rcpt_replies = {address: "554 5.7.1 relay refuses you" for address in READERS}
        assert main(["-c", toml, "schedule", "run-now", "weekly", "--by", "ed"]) == 1
        out = capsys.readouterr().out
        assert out.startswith("failed:") and "most deliveries failed" in out
        assert "--include failed" in out
        assert server.messages == []
        assert main(["-c", toml, "schedule", "history"]) == 0
        assert "failed" in capsys.readouterr().out
        engine = make_engine(config.database.url, base_dir=config.base_dir)
        with session_factory(engine)() as session:
            [run] = session.scalars(select(SendRun)).all()
            assert (run.status, run.paused_reason) == (
                "failed",
                f"{len(READERS)} of {len(READERS)} deliveries failed",
            )
        assert main(["-c", toml, "runs"]) == 0
        assert "failed" in capsys.readouterr().out

        # The relay is fixed: run-now is not refused as "nothing new since the last sent issue";
        # it sends again to the failed rows of that run, and each reader gets one copy.
        server.rcpt_replies = {}
        assert main(["-c", toml, "schedule", "run-now", "weekly", "--by", "ed"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("sent:") and f"sent again to the {len(READERS)} failed deliveries" in out
        assert sorted(server.recipients()) == sorted(READERS)
        with session_factory(engine)() as session:
            assert [r.status for r in session.scalars(select(SendRun))] == ["finished"]
        engine.dispose()


def test_a_firing_killed_while_collecting_and_not_resumed_in_time_is_missed(tmp_path: Path) -> None:
    from schedule_helpers import make_site

    config, engine = make_site(tmp_path)
    clock = Clock(datetime.now(UTC))
    with ScheduleService(config, engine, clock=clock) as service:
        fire_time = service.get("weekly").next_fire_utc
    assert fire_time is not None
    with session_factory(engine)() as session:  # claimed, then SIGKILLed while collecting
        session.add(
            Firing(schedule_name="weekly", fire_time=fire_time, kind="send", owner=f"{_host()}:999999")
        )
        session.commit()
    late = fire_time + timedelta(minutes=config.schedule.misfire_grace_minutes + 5)
    assert resume_interrupted(config, engine, late) is None
    assert digests_sent(config) == []
    with session_factory(engine)() as session:
        [row] = session.scalars(select(Firing)).all()
    assert row.outcome == "missed"
    assert "stopped before its run started" in row.detail
    assert "`digest schedule run-now weekly` sends it" in row.detail
    assert row.issue == fire_time.astimezone(config.tz).date().isoformat()


def _host() -> str:
    import socket

    return socket.gethostname()
