"""What the dashboard reads: the next send (scheduler or [schedule]), with no Flask around it."""

from __future__ import annotations

import sys
import types
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from digest.config import config_from_dict
from digest.db import make_engine, migrate
from digest.web.console import next_send, weekly_after

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


def test_with_every_schedule_paused_the_dashboard_says_so(engine):
    from digest.schedule import ScheduleService

    config = config_from_dict({})
    now = datetime(2026, 11, 18, 15, tzinfo=UTC)
    with ScheduleService(config, engine, clock=lambda: now) as service:
        service.list()  # seeds "weekly" from [schedule]
        service.pause("weekly")
    upcoming = next_send(config, engine, now)
    assert (upcoming.source, upcoming.note, upcoming.mode) == ("config", "every schedule is paused", "")
    assert upcoming.at == datetime(2026, 11, 20, 9, tzinfo=NEW_YORK)


def test_the_scheduler_s_next_unpaused_schedule_is_the_next_send(engine):
    from digest.schedule import ScheduleService

    config = config_from_dict({})
    now = datetime(2026, 11, 18, 15, tzinfo=UTC)  # a Wednesday
    with ScheduleService(config, engine, clock=lambda: now) as service:
        service.list()
        service.add("thursday", weekly="thu 09:00")
        service.pause("thursday")
        service.add("friday-review", weekly="fri 08:00", mode="review")
    upcoming = next_send(config, engine, now)
    assert (upcoming.source, upcoming.name, upcoming.mode) == ("scheduler", "friday-review", "review")
    assert upcoming.at == datetime(2026, 11, 20, 8, tzinfo=NEW_YORK) and upcoming.at.tzinfo == NEW_YORK


def test_a_broken_scheduler_does_not_take_the_dashboard_down(engine, monkeypatch):
    class ScheduleService:
        def __init__(self, config, engine, **kwargs):
            raise RuntimeError("job store unreadable")

    fake = types.ModuleType("digest.schedule")
    fake.ScheduleService = ScheduleService
    monkeypatch.setitem(sys.modules, "digest.schedule", fake)
    upcoming = next_send(config_from_dict({}), engine, datetime(2026, 11, 18, 15, tzinfo=UTC))
    assert upcoming.source == "config" and "job store unreadable" in upcoming.note


@pytest.mark.parametrize(
    ("web", "expected"),
    [
        (
            {"staff_login_limit": "lots"},
            "[web] staff_login_limit: 'lots' is not a limit like '10 per minute'",
        ),
        ({"staff_max_failed_logins": 0}, "[web] staff_max_failed_logins: must be a positive number"),
        ({"staff_lockout_minutes": -5}, "[web] staff_lockout_minutes: must be a positive number"),
        ({"staff_session_hours": 0}, "[web] staff_session_hours: must be a positive number"),
        ({"limiter_url": "sqlite:///x.db"}, "[web] limiter_url: must be '' (memory)"),
    ],
)
def test_bad_staff_settings_name_the_key(web, expected):
    from digest.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        config_from_dict({"web": web})
    assert expected in str(info.value)


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
