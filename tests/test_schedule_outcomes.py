"""Outcomes are facts: a firing says what the ledger shows (failed, missed, held, sent), staff
are told, and what approve or run-now names is what goes out. Through the CLI where staff use
it; every time relative to the clock the test injects (or the system clock the CLI reads)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery_helpers import SECRET
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
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    with faulty_smtp() as server:
        config, toml = smtp_site(tmp_path, server)
        server.rcpt_replies = {address: "554 5.7.1 relay refuses you" for address in READERS}
        assert main(["-c", toml, "schedule", "run-now", "weekly", "--by", "ed"]) == 1
        out = capsys.readouterr().out
        assert out.startswith("failed:") and "most deliveries failed" in out
        assert "--include failed" in out
        # No reader got it; staff were told (no review_to, no staff account: the sender's address).
        [alert] = server.messages
        assert alert.rcpt_tos == ["news@rs.example"] and b"[failed] RS Weekly: The issue of" in alert.data
        server.messages.clear()
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
        assert sorted(server.recipients()) == sorted(READERS)  # one copy each, no alert
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
    # Staff were told: a banner until acknowledged, and a mail.
    from schedule_helpers import alert_mails

    from digest.alerts import open_alerts

    with session_factory(engine)() as session:
        [alert] = open_alerts(session)
    assert alert.kind == "missed" and "run-now weekly" in alert.detail
    assert len(alert_mails(config)) == 1


def _host() -> str:
    import socket

    return socket.gethostname()


# --- the issue approved is the issue sent --------------------------------------------------


def review_site(tmp_path: Path) -> tuple[Config, object, str, datetime]:
    """A review-mode schedule whose firing of a week ago was held (not approved)."""
    from schedule_helpers import make_site

    from digest.schedule import fire

    config, engine = make_site(tmp_path, '[schedule]\nreview_to = ["editor@rs.example"]')
    with ScheduleService(config, engine, clock=Clock(datetime.now(UTC))) as service:
        service.add("friday", weekly="fri 09:00", mode="review")
        following = service.get("friday").next_fire_utc
    assert following is not None
    held_at = following - timedelta(days=7)
    held = fire(config, engine, "friday", held_at + timedelta(seconds=5), scheduled_for=held_at)
    assert held is not None and held.outcome == "held" and "approve friday --issue" in held.detail
    return config, engine, str(tmp_path / "digest.toml"), held_at


def save_curation(engine, issue_date, intro: str, excluded: frozenset[str] = frozenset()) -> None:  # noqa: ANN001
    from digest.curate import Draft
    from digest.drafts import save_draft

    with session_factory(engine)() as session:
        draft = Draft(issue_date=issue_date, intro=intro, excluded=excluded)
        save_draft(session, draft, by="curator@rs.example", at=datetime.now(UTC))
        session.commit()


def plain_text(path: Path) -> str:
    from email import message_from_bytes, policy

    return message_from_bytes(path.read_bytes(), policy=policy.default).get_body(("plain",)).get_content()


def test_approve_by_name_approves_the_held_issue_and_run_now_sends_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from schedule_helpers import alert_mails

    config, engine, toml, held_at = review_site(tmp_path)
    held_issue = held_at.astimezone(config.tz).date()
    [alert] = alert_mails(config)  # staff were told it is held
    assert "is held" in alert.read_text(encoding="utf-8")
    save_curation(engine, held_issue, "Held, then approved.")
    assert main(["-c", toml, "schedule", "list"]) == 0
    assert f"{held_issue.isoformat()} not sent" in capsys.readouterr().out
    assert main(["-c", toml, "schedule", "approve", "friday", "--by", "ed"]) == 0
    said = capsys.readouterr().out
    assert f"The issue of {held_issue.isoformat()} (held since" in said and "as curated now" in said
    assert main(["-c", toml, "schedule", "run-now", "friday", "--by", "ed"]) == 0
    assert "sent: " in capsys.readouterr().out
    with session_factory(engine)() as session:
        manual = session.scalar(select(Firing).where(Firing.kind == "manual"))
        assert manual is not None and manual.issue == held_issue.isoformat()
    sent = digests_sent(config)
    assert len(sent) == len(READERS) and "Held, then approved." in plain_text(sent[0])


def test_approve_takes_an_issue_date_and_says_which(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, engine, toml, held_at = review_site(tmp_path)
    other = (held_at + timedelta(days=14)).astimezone(config.tz).date().isoformat()
    assert main(["-c", toml, "schedule", "approve", "friday", "--issue", other, "--by", "ed"]) == 0
    assert f"The issue of {other} is approved by ed" in capsys.readouterr().out
    assert main(["-c", toml, "schedule", "approve", "friday", "--issue", "next week"]) == 1
    assert "'next week': write the issue date as YYYY-MM-DD" in capsys.readouterr().err


def test_editing_the_curation_after_approval_withdraws_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, engine, toml, held_at = review_site(tmp_path)
    held_issue = held_at.astimezone(config.tz).date()
    save_curation(engine, held_issue, "The version approved.")
    assert main(["-c", toml, "schedule", "approve", "friday", "--by", "ed"]) == 0
    capsys.readouterr()
    save_curation(engine, held_issue, "Changed after the approval.")
    with ScheduleService(config, engine) as service:
        approval = service.approval_for(held_issue.isoformat())
        assert approval is not None and not approval.holds
        assert "curation was edited by curator@rs.example" in approval.withdrawn
    assert main(["-c", toml, "schedule", "list"]) == 0
    assert "approval withdrawn" in capsys.readouterr().out
    assert main(["-c", toml, "schedule", "run-now", "friday", "--by", "ed"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("held:") and "is not approved any more" in out
    assert digests_sent(config) == []
    # Approved again, the version staff see now goes out.
    assert main(["-c", toml, "schedule", "approve", "friday", "--by", "ed"]) == 0
    assert main(["-c", toml, "schedule", "run-now", "friday", "--by", "ed"]) == 0
    sent = digests_sent(config)
    assert len(sent) == len(READERS) and "Changed after the approval." in plain_text(sent[0])


def test_run_now_sends_the_upcoming_issue_as_curated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from schedule_helpers import make_site

    from digest.pipeline import prepare_issue

    config, engine = make_site(tmp_path)
    toml = str(tmp_path / "digest.toml")
    with ScheduleService(config, engine) as service:
        service.add("thursday", weekly="thu 09:00")
        upcoming = service.get("thursday").next_fire
    assert upcoming is not None
    issue = prepare_issue(config, upcoming, draft=None)
    stories = [t for section in issue.digest.sections for t in section.teasers]
    left_out = stories[0]
    save_curation(engine, upcoming.date(), "Curated for Thursday.", frozenset({left_out.url}))
    assert main(["-c", toml, "schedule", "run-now", "thursday", "--by", "ed"]) == 0
    capsys.readouterr()
    with session_factory(engine)() as session:
        manual = session.scalar(select(Firing).where(Firing.kind == "manual"))
    assert manual is not None and manual.issue == upcoming.date().isoformat()
    sent = digests_sent(config)
    assert len(sent) == len(READERS)
    text = plain_text(sent[0])
    assert "Curated for Thursday." in text and left_out.title not in text


# --- takeover, as `digest run`'s look every few seconds does it ----------------------------


def test_a_run_whose_owner_went_silent_is_taken_over_once_and_staff_are_told(tmp_path: Path) -> None:
    from schedule_helpers import alert_mails, make_site

    from digest.alerts import open_alerts
    from digest.schedule import take_over
    from digest.send import start_run
    from subscribers import store

    config, engine = make_site(tmp_path)
    now = datetime.now(UTC)
    lease = timedelta(seconds=config.send.lease_seconds)
    with ScheduleService(config, engine) as service:
        service.add("friday", weekly="fri 09:00")
    with session_factory(engine)() as session:
        run_id = start_run(
            session, store.active_recipients(session), issue=now.date().isoformat(), window_end=now
        )
        # Another machine's process: it fired, took the run, and then was not heard from.
        session.add(
            Firing(schedule_name="friday", fire_time=now, kind="send", owner="machine-a:4242", started_at=now)
        )
        # Heard from a lease and a second ago (the send engine takes the lease by the system clock).
        heard = now - lease - timedelta(seconds=1)
        session.execute(SendRun.__table__.update().values(owner="machine-a:4242:abcd", heartbeat_at=heard))
        session.commit()
    assert take_over(config, engine, heard + lease - timedelta(seconds=1)) is None  # its lease holds
    record = take_over(config, engine, now)
    assert record is not None and (record.kind, record.outcome) == ("takeover", "sent")
    assert f"resumed run {run_id}" in record.detail
    assert len(digests_sent(config)) == len(READERS)
    assert take_over(config, engine, now + timedelta(seconds=1)) is None  # finished: once
    with session_factory(engine)() as session:
        dead = session.scalar(select(Firing).where(Firing.owner == "machine-a:4242"))
        assert dead.outcome == "interrupted" and "taken over" in dead.detail
        assert session.get(SendRun, run_id).status == "finished"
        [alert] = open_alerts(session)
    assert alert.kind == "takeover" and "machine-a:4242:abcd" in alert.subject
    assert len(alert_mails(config)) == 1
