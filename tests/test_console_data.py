"""What the dashboard reads (the next send, from the scheduler or [schedule]) and the console's
background jobs, with no Flask around them."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from digest.config import config_from_dict
from digest.db import make_engine, migrate
from digest.errors import ConsoleBusyError
from digest.schedule import ScheduleService
from digest.web.console import BackgroundJobs, awaiting_approval, next_send, weekly_after

NEW_YORK = ZoneInfo("America/New_York")


@pytest.mark.parametrize(
    "now,expected",
    [
        # Wednesday -> this Friday 09:00.
        (datetime(2026, 11, 18, 15, tzinfo=UTC), datetime(2026, 11, 20, 9, tzinfo=NEW_YORK)),
        # Friday 09:00 exactly has gone: the next Friday.
        (datetime(2026, 11, 20, 14, tzinfo=UTC), datetime(2026, 11, 27, 9, tzinfo=NEW_YORK)),
        # Friday 08:59 local.
        (datetime(2026, 11, 20, 13, 59, tzinfo=UTC), datetime(2026, 11, 20, 9, tzinfo=NEW_YORK)),
        # Across the end of daylight saving time (1 November 2026): still 09:00 local.
        (datetime(2026, 10, 31, 12, tzinfo=UTC), datetime(2026, 11, 6, 9, tzinfo=NEW_YORK)),
    ],
)
def test_weekly_after_is_wall_clock_time(now, expected):
    got = weekly_after("fri", "09:00", NEW_YORK, now)
    assert got == expected and (got.hour, got.minute) == (9, 0)


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


NOW = datetime(2026, 11, 18, 15, tzinfo=UTC)  # a Wednesday, 10:00 in New York


@pytest.fixture
def service(engine):
    config = config_from_dict({})
    with ScheduleService(config, engine, clock=lambda: NOW) as service:
        yield config, service


def test_a_new_database_sends_by_the_seeded_weekly_schedule(service):
    config, svc = service
    upcoming = next_send(config, lambda: svc, NOW)
    assert (upcoming.source, upcoming.name, upcoming.mode) == ("scheduler", "weekly", "send")
    assert upcoming.at == datetime(2026, 11, 20, 9, tzinfo=NEW_YORK)
    assert upcoming.schedule.next_fire_utc == datetime(2026, 11, 20, 14, tzinfo=UTC)


def test_the_next_unpaused_schedule_is_the_next_send(service):
    config, svc = service
    svc.add("wednesday", weekly="wed 16:00")  # sooner, but paused below
    svc.pause("wednesday")
    svc.add("thursday-review", weekly="thu 10:00", mode="review")
    upcoming = next_send(config, lambda: svc, NOW)
    assert (upcoming.source, upcoming.name, upcoming.mode) == ("scheduler", "thursday-review", "review")
    assert upcoming.at == datetime(2026, 11, 19, 10, tzinfo=NEW_YORK) and upcoming.at.tzinfo == NEW_YORK
    assert [r.name for r in awaiting_approval(svc.list())] == ["thursday-review"]


def test_with_every_schedule_paused_nothing_is_sent_by_itself(service):
    config, svc = service
    svc.pause("weekly")
    upcoming = next_send(config, lambda: svc, NOW)
    assert (upcoming.source, upcoming.note, upcoming.mode) == ("config", "every schedule is paused", "")
    assert upcoming.at == datetime(2026, 11, 20, 9, tzinfo=NEW_YORK)  # [schedule] day and time
    svc.remove("weekly")
    assert next_send(config, lambda: svc, NOW).note == "no schedule"


def test_a_broken_scheduler_does_not_take_the_dashboard_down():
    def broken():
        raise RuntimeError("job store unreadable")

    upcoming = next_send(config_from_dict({}), broken, NOW)
    assert upcoming.source == "config" and "job store unreadable" in upcoming.note


def test_console_jobs_run_one_at_a_time_and_keep_their_outcome():
    gate = threading.Event()
    jobs = BackgroundJobs(lambda: NOW)
    first = jobs.start("first", "ed@example.org", lambda: gate.wait() and "all sent")
    with pytest.raises(ConsoleBusyError, match="“first” \\(started by ed@example.org\\) is still running"):
        jobs.start("second", "al@example.org", lambda: "never")
    assert jobs.running() is first
    gate.set()
    jobs.join()
    assert (first.ok, first.result, jobs.running()) == (True, "all sent", None)

    def fails() -> str:
        raise OSError("connection refused")

    failed = jobs.start("third", "al@example.org", fails)
    jobs.join()
    assert (failed.ok, failed.result) == (False, "OSError: connection refused")
    assert [j.label for j in jobs.recent()] == ["third", "first"]


@pytest.mark.parametrize(
    ("web", "expected"),
    [
        (
            {"staff_login_limit": "lots"},
            "[web] staff_login_limit: 'lots' is not a limit like '10 per minute'",
        ),
        ({"staff_login_free_failures": 0}, "[web] staff_login_free_failures: must be a positive number"),
        ({"staff_login_max_delay_seconds": -5}, "[web] staff_login_max_delay_seconds: must be a positive"),
        # The lock-out's keys are gone (issue 19): an old digest.toml is told what replaced them.
        ({"staff_max_failed_logins": 5}, "was replaced by staff_login_free_failures"),
        ({"staff_lockout_minutes": 15}, "was replaced by staff_login_max_delay_seconds"),
        ({"staff_session_hours": 0}, "[web] staff_session_hours: must be a positive number"),
        ({"limiter_url": "sqlite:///x.db"}, "[web] limiter_url: must be '' (memory)"),
    ],
)
def test_bad_staff_settings_name_the_key(web, expected):
    from digest.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        config_from_dict({"web": web})
    assert expected in str(info.value)


def test_webhook_failure_limit_is_checked_like_the_login_limit():
    from digest.errors import ConfigError

    with pytest.raises(ConfigError, match=r"\[bounces\] webhook_failure_limit: 'x' is not a limit"):
        config_from_dict({"bounces": {"webhook_failure_limit": "x"}})
    assert config_from_dict({}).bounces.webhook_failure_limit == "10 per 10 minutes"


def test_the_default_limits_skipped_by_the_check_are_the_defaults_and_parse():
    """config skips `limits` for the shipped defaults (its import costs every command): they
    must be exactly the defaults, and valid."""
    from limits import parse_many

    from digest.config import DEFAULT_LIMITS, BouncesConfig, WebConfig

    assert {WebConfig().staff_login_limit, BouncesConfig().webhook_failure_limit} == DEFAULT_LIMITS
    for value in DEFAULT_LIMITS:
        assert parse_many(value)


def test_staff_settings_load():
    web = config_from_dict(
        {
            "web": {
                "staff_login_limit": "5 per minute; 50 per day",
                "limiter_url": "redis://127.0.0.1:6379",
            }
        }
    ).web
    assert (web.staff_login_limit, web.limiter_url) == (
        "5 per minute; 50 per day",
        "redis://127.0.0.1:6379",
    )
