"""`digest send` from a digest.toml: dry run, then a real send over SMTP to aiosmtpd."""

from __future__ import annotations

import email
from email import policy
from pathlib import Path

import pytest
from site_helpers import make_site

from digest.cli import main


@pytest.fixture
def site(tmp_path: Path, smtp_server, monkeypatch: pytest.MonkeyPatch) -> Path:  # noqa: ANN001
    monkeypatch.setenv("DIGEST_SECRET_KEY", "Xr5Kq2Vw8Ln3Tz7Bc1Hm6Jd4Fg9Ps0YaQe7Wn2Rb5Mk-t3")
    readers = {
        "all@example.org": {"name": "All Regions"},
        "africa@example.org": {"regions": {"Africa"}},
        "ALL@example.org": {},  # the same address again: ignored
    }
    return make_site(tmp_path, smtp_server, readers)


def test_dry_run_sends_nothing(site: Path, smtp_server, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    assert main(["-c", str(site), "send", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "all@example.org" in out and "africa@example.org" in out
    assert "2 distinct variants" in out
    assert smtp_server.messages == []


def test_send_over_smtp(site: Path, smtp_server) -> None:  # noqa: ANN001
    assert main(["-c", str(site), "send"]) == 0
    received = {
        rcpts[0]: email.message_from_bytes(data, policy=policy.default)
        for _f, rcpts, data in smtp_server.messages
    }
    assert set(received) == {"all@example.org", "africa@example.org"}
    assert received["all@example.org"]["List-Unsubscribe"].startswith("<https://news.rs.example/unsubscribe/")
    africa_text = received["africa@example.org"].get_body(("plain",)).get_content()
    assert "Sudan's bloody war" in africa_text and "Iraq faces" not in africa_text
    assert all(f == "news@rs.example" for f, _r, _d in smtp_server.messages)


def test_send_needs_a_secret_for_real_mail(site: Path, monkeypatch, capsys) -> None:  # noqa: ANN001
    monkeypatch.delenv("DIGEST_SECRET_KEY")
    assert main(["-c", str(site), "send"]) == 2
    assert "DIGEST_SECRET_KEY" in capsys.readouterr().err


def no_backoff(site: Path) -> None:
    site.write_text(
        site.read_text().replace('kind = "smtp"', 'kind = "smtp"\nbackoff_seconds = 0.0'), encoding="utf-8"
    )


def test_paused_run_is_resumed_not_restarted(site: Path, smtp_server) -> None:  # noqa: ANN001
    no_backoff(site)
    smtp_server.rcpt_replies["africa@example.org"] = "451 4.3.0 greylisted"
    assert main(["-c", str(site), "send"]) == 1  # paused: one delivery still pending
    assert [r for _f, r, _d in smtp_server.messages] == [["all@example.org"]]
    del smtp_server.rcpt_replies["africa@example.org"]
    assert main(["-c", str(site), "send"]) == 0  # resumes the same run
    assert sorted(r[0] for _f, r, _d in smtp_server.messages) == ["africa@example.org", "all@example.org"]


def test_finished_issue_is_not_sent_twice(site: Path, smtp_server, capsys) -> None:  # noqa: ANN001
    assert main(["-c", str(site), "send"]) == 0
    assert main(["-c", str(site), "send"]) == 1
    assert "already sent" in capsys.readouterr().out
    assert len(smtp_server.messages) == 2
    assert main(["-c", str(site), "send", "--again"]) == 0
    assert len(smtp_server.messages) == 4


def test_since_last_send_window_starts_at_the_last_finished_run(site: Path, smtp_server, capsys) -> None:  # noqa: ANN001
    site.write_text(site.read_text() + '\n[collect]\nwindow = "since_last_send"\n', encoding="utf-8")
    assert main(["-c", str(site), "send"]) == 0  # no earlier send: the 7-day window, with a warning
    assert len(smtp_server.messages) == 2
    # Nothing was published since that run collected: the next one finds no articles and sends nothing.
    assert main(["-c", str(site), "send", "--again"]) == 1
    assert "No articles this week" in capsys.readouterr().out
    assert len(smtp_server.messages) == 2


def test_empty_week_sends_nothing_unless_configured(site: Path, smtp_server, tmp_path: Path) -> None:  # noqa: ANN001
    empty = tmp_path / "empty.xml"
    empty.write_text('<rss version="2.0"><channel><title>t</title></channel></rss>', encoding="utf-8")
    base = site.read_text() + f'\n[[sources]]\nkind = "rss"\npath = "{empty}"\n'
    site.write_text(base, encoding="utf-8")
    assert main(["-c", str(site), "send"]) == 1
    assert smtp_server.messages == []
    site.write_text(base + "\n[collect]\nsend_when_empty = true\n", encoding="utf-8")
    assert main(["-c", str(site), "send"]) == 0
    assert len(smtp_server.messages) == 2


def test_stale_unfinished_run_waits_for_staff(site: Path, smtp_server, capsys) -> None:  # noqa: ANN001
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from digest.config import load_config
    from digest.db import make_engine, session_factory
    from digest.send import SendRun, start_run
    from subscribers import store

    config = load_config(site)
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    with session_factory(engine)() as s:
        old = datetime.now(UTC) - timedelta(days=55)
        run_id = start_run(s, store.active_recipients(s), issue="2026-10-01", window_end=old)
        s.execute(update(SendRun).where(SendRun.id == run_id).values(created_at=old))
        s.commit()
    assert main(["-c", str(site), "send"]) == 1
    assert "1320 hours old; nothing sent" in " ".join(capsys.readouterr().out.split())
    assert smtp_server.messages == []
    assert main(["-c", str(site), "send", "--abandon"]) == 0
    assert "abandoned; 2 deliveries skipped" in " ".join(capsys.readouterr().out.split())
    assert main(["-c", str(site), "send"]) == 0  # this week's issue, as a new run
    assert len(smtp_server.messages) == 2
