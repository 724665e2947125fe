"""digest.schedule: triggers across DST, the job store across restarts, misfires, review mode,
one send per firing across schedulers; time injected, no sleeping."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED
from schedule_helpers import READERS, Clock, add_readers, digests_sent, make_config, make_site, review_mails
from sqlalchemy import func, select

from digest.cli import main
from digest.db import make_engine, migrate, session_factory
from digest.errors import ScheduleError
from digest.schedule import (
    JOB_PREFIX,
    Firing,
    FiringContext,
    ScheduleService,
    _run_job,
    crontab_weekdays,
    fire,
    make_trigger,
    parse_weekly,
    resume_interrupted,
)
from digest.send import SendRun, start_run
from subscribers import store

pytest_plugins = ("subscriber_fixtures",)

NY = ZoneInfo("America/New_York")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def fires(trigger, start: datetime, n: int) -> list[datetime]:  # noqa: ANN001
    """The next n fire times, computed as APScheduler does after each firing."""
    out, previous, now = [], None, start
    for _ in range(n):
        previous = trigger.get_next_fire_time(previous, now)
        out.append(previous.astimezone(UTC))
        now = previous
    return out


# --- triggers ---------------------------------------------------------------------------


def test_weekly_fires_at_nine_local_across_spring_forward() -> None:
    trigger = make_trigger("weekly", "fri 09:00", NY)
    # DST starts Sunday 14 March 2027: 09:00 EST is 14:00 UTC, 09:00 EDT is 13:00 UTC.
    assert fires(trigger, datetime(2027, 3, 5, 10, tzinfo=NY), 3) == [
        utc(2027, 3, 12, 14),
        utc(2027, 3, 19, 13),
        utc(2027, 3, 26, 13),
    ]


def test_weekly_fires_at_nine_local_across_fall_back() -> None:
    trigger = make_trigger("weekly", "fri 09:00", NY)
    # DST ends Sunday 7 November 2027.
    assert fires(trigger, datetime(2027, 10, 29, 10, tzinfo=NY), 3) == [
        utc(2027, 11, 5, 13),
        utc(2027, 11, 12, 14),
        utc(2027, 11, 19, 14),
    ]


def test_a_time_in_the_repeated_hour_fires_once() -> None:
    # 01:30 happens twice on 7 November 2027 (EDT, then EST); APScheduler's own trigger fires twice.
    trigger = make_trigger("weekly", "sun 01:30", NY)
    assert fires(trigger, datetime(2027, 11, 1, tzinfo=NY), 2) == [
        utc(2027, 11, 7, 5, 30),
        utc(2027, 11, 14, 6, 30),
    ]
    hourly = make_trigger("cron", "30 * * * *", NY)
    night = fires(hourly, datetime(2027, 11, 7, 0, 45, tzinfo=NY), 3)
    assert [t.astimezone(NY).strftime("%H:%M") for t in night] == ["01:30", "02:30", "03:30"]


def test_a_time_that_does_not_exist_fires_when_it_would_have_been() -> None:
    # 02:30 does not exist on 14 March 2027; it fires at 03:30 EDT (07:30 UTC), once.
    trigger = make_trigger("weekly", "sun 02:30", NY)
    assert fires(trigger, datetime(2027, 3, 8, tzinfo=NY), 2) == [
        utc(2027, 3, 14, 7, 30),
        utc(2027, 3, 21, 6, 30),
    ]


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("5", "fri"),
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("*/2", "sun,tue,thu,sat"),
        ("1,3,5", "mon,wed,fri"),
        ("mon-fri", "mon-fri"),
        ("*", "*"),
    ],
)
def test_crontab_weekday_numbers_mean_what_crontab_means(field: str, expected: str) -> None:
    assert crontab_weekdays(field) == expected


def test_cron_friday_is_friday() -> None:
    trigger = make_trigger("cron", "0 9 * * 5", NY)
    first = trigger.get_next_fire_time(None, datetime(2027, 3, 1, tzinfo=NY))
    assert first.astimezone(NY) == datetime(2027, 3, 5, 9, tzinfo=NY)
    assert first.astimezone(NY).strftime("%a") == "Fri"


@pytest.mark.parametrize(
    ("kind", "text", "message"),
    [
        ("weekly", "fri", "DAY HH:MM"),
        ("weekly", "funday 09:00", "'funday' is not a day"),
        ("weekly", "fri 24:00", "not a time of day"),
        ("cron", "0 9 * *", "needs 5 fields"),
        ("cron", "0 9 * * 8", "not a day range"),
        ("cron", "61 9 * * *", "higher than the maximum value"),
    ],
)
def test_bad_trigger_text_is_refused_naming_it(kind: str, text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=message):
        make_trigger(kind, text, NY)


def test_weekly_text_forms() -> None:
    assert parse_weekly("Friday 9:05") == (("fri",), 9, 5)
    assert parse_weekly("mon,thu 07:30") == (("mon", "thu"), 7, 30)


# --- the service and the job store ------------------------------------------------------


def test_restart_between_scheduling_and_firing_loses_nothing(tmp_path: Path) -> None:
    config, engine = make_site(tmp_path)
    clock = Clock(datetime(2027, 3, 8, 12, tzinfo=NY))
    with ScheduleService(config, engine, clock=clock) as first:
        first.add("friday", weekly="fri 09:00", mode="review")
    engine.dispose()

    # A new process: new engine, new scheduler, on the same SQLite file.
    engine2 = make_engine(config.database.url, base_dir=config.base_dir)
    with ScheduleService(config, engine2, clock=clock) as second:
        info = second.get("friday")
        assert (info.trigger, info.mode, info.paused) == ("weekly fri 09:00", "review", False)
        assert info.next_fire_utc == utc(2027, 3, 12, 14)
        assert info.next_fire == datetime(2027, 3, 12, 9, tzinfo=NY)
        job = second.scheduler.get_job(JOB_PREFIX + "friday")
        assert job.coalesce is True and job.max_instances == 1
        assert job.misfire_grace_time == config.schedule.misfire_grace_minutes * 60
    engine2.dispose()


def test_edit_keeps_name_history_and_paused_state_and_refuses_bad_text(tmp_path: Path) -> None:
    config, engine = make_site(tmp_path)
    clock = Clock(datetime(2027, 3, 8, 12, tzinfo=NY))  # a Monday
    with ScheduleService(config, engine, clock=clock) as service:
        service.add("friday", weekly="fri 09:00")
        service.skip_next("friday", by="ed")
        info = service.edit("friday", weekly="Wednesday 7:30", mode="review")
        assert (info.trigger, info.mode, info.paused) == ("weekly wed 07:30", "review", False)
        assert info.next_fire == datetime(2027, 3, 10, 7, 30, tzinfo=NY)
        assert [f.outcome for f in service.firings("friday")] == ["skipped"]
        service.pause("friday")
        info = service.edit("friday", cron="0 6 * * 1", mode="send")
        assert (info.trigger, info.paused, info.next_fire) == ("cron 0 6 * * 1", True, None)
        with pytest.raises(ScheduleError, match="not a crontab"):
            service.edit("friday", cron="not a crontab")
        with pytest.raises(ScheduleError, match="mode 'often'"):
            service.edit("friday", weekly="fri 09:00", mode="often")
        with pytest.raises(ScheduleError, match="no schedule named 'nobody'"):
            service.edit("nobody", weekly="fri 09:00")
        assert service.get("friday").trigger == "cron 0 6 * * 1"
    # A new process sees the edit: the job store and the table agree.
    with ScheduleService(config, engine, clock=clock) as again:
        assert again.get("friday").trigger == "cron 0 6 * * 1"
        assert again.resume("friday").next_fire == datetime(2027, 3, 15, 6, tzinfo=NY)


def test_a_firing_driven_as_apscheduler_does_sends_then_moves_a_week_on(tmp_path: Path) -> None:
    config, engine = make_site(tmp_path)
    clock = Clock(datetime(2027, 3, 8, 12, tzinfo=NY))
    with ScheduleService(config, engine, clock=clock) as service:
        service.add("friday", weekly="fri 09:00")
        job = service.scheduler.get_job(JOB_PREFIX + "friday")
        run_time = job.next_run_time
        assert run_time == utc(2027, 3, 12, 14)
        clock.now = run_time + timedelta(seconds=3)  # the scheduler woke up a little late
        events = _run_job(job, "default", [run_time], service.context)
        assert [e.code for e in events] == [EVENT_JOB_EXECUTED]
        record = events[0].retval
        assert (record.outcome, record.issue, record.kind) == ("sent", "2027-03-12", "send")
        assert record.fire_time == datetime(2027, 3, 12, 9, tzinfo=NY)
        assert len(digests_sent(config)) == len(READERS)
        # What APScheduler stores next: the following Friday at 09:00 EDT, not 10:00.
        assert job.trigger.get_next_fire_time(run_time, clock.now) == utc(2027, 3, 19, 13)
        # The same firing again (a second process, a retry): claimed already, nothing sent.
        assert fire(config, engine, "friday", clock.now, scheduled_for=run_time) is None
        assert len(digests_sent(config)) == len(READERS)


def test_misfire_past_grace_is_not_sent_and_is_recorded(tmp_path: Path) -> None:
    """The real scheduler and job store: a firing due three days ago (server down)."""
    config, engine = make_site(tmp_path)
    missed = threading.Event()
    with ScheduleService(config, engine) as service:
        service.add("friday", weekly="fri 09:00")
        due = datetime.now(UTC) - timedelta(days=3)
        service.scheduler.modify_job(JOB_PREFIX + "friday", next_run_time=due)
        service.scheduler.add_listener(lambda _e: missed.set(), EVENT_JOB_MISSED)
        service.start()
        assert missed.wait(30), "the scheduler never reported the missed firing"
        service.close()
        assert digests_sent(config) == []
        info = service.get("friday")
        assert info.last is not None and info.last.outcome == "missed"
        assert "not sent late" in info.last.detail and "run-now friday" in info.last.detail
        assert info.next_fire_utc > datetime.now(UTC)  # the next one is ahead, as usual
    # Staff decide to send it late after all.
    with ScheduleService(config, engine) as service:
        record = service.run_now("friday", by="editor@rs.example")
        assert (record.outcome, record.kind, record.by) == ("sent", "manual", "editor@rs.example")
    assert len(digests_sent(config)) == len(READERS)


def test_fire_itself_refuses_a_late_firing(tmp_path: Path) -> None:
    config, engine = make_site(tmp_path, "[schedule]\nmisfire_grace_minutes = 30")
    with ScheduleService(config, engine, clock=Clock(datetime(2027, 3, 8, tzinfo=NY))) as service:
        service.add("friday", weekly="fri 09:00")
    record = fire(config, engine, "friday", utc(2027, 3, 12, 14, 31), scheduled_for=utc(2027, 3, 12, 14))
    assert record.outcome == "missed" and "grace 30 minutes" in record.detail
    on_time = fire(config, engine, "friday", utc(2027, 3, 19, 13, 29), scheduled_for=utc(2027, 3, 19, 13))
    assert on_time.outcome == "sent"


def test_review_mode_holds_without_approval_and_sends_with_it(tmp_path: Path) -> None:
    config, engine = make_site(tmp_path, '[schedule]\nreview_to = ["editor@rs.example"]')
    clock = Clock(datetime(2027, 3, 10, 12, tzinfo=NY))
    with ScheduleService(config, engine, clock=clock) as service:
        service.add("friday", weekly="fri 09:00", mode="review")
        assert service.due_reviews() == []  # Wednesday noon: more than 24 hours ahead
        clock.now = datetime(2027, 3, 11, 10, tzinfo=NY)  # Thursday 10:00, 23 hours ahead
        [prepared] = service.due_reviews()
        assert (prepared.outcome, prepared.kind, prepared.issue) == ("prepared", "review", "2027-03-12")
        assert service.due_reviews() == []  # once per issue
        [mail] = review_mails(config)
        text = mail.read_text(encoding="utf-8")
        assert "To: editor@rs.example" in text
        assert "https://news.rs.example/staff/issue" in text
        assert "digest schedule approve friday" in text
        assert digests_sent(config) == []

        # Friday 09:00, not approved: held, nothing sent.
        held = fire(config, engine, "friday", utc(2027, 3, 12, 14, 0, 5), scheduled_for=utc(2027, 3, 12, 14))
        assert held.outcome == "held" and "not approved" in held.detail
        assert digests_sent(config) == []

        # Next week's issue is approved beforehand: it goes out at its time.
        approval = service.approve("2027-03-19", by="editor@rs.example")
        assert (approval.issue, approval.approved_by) == ("2027-03-19", "editor@rs.example")
        sent = fire(config, engine, "friday", utc(2027, 3, 19, 13, 0, 5), scheduled_for=utc(2027, 3, 19, 13))
        assert sent.outcome == "sent" and "approved by editor@rs.example" in sent.detail
        assert len(digests_sent(config)) == len(READERS)


def test_without_review_to_the_review_mail_goes_to_the_staff(tmp_path: Path) -> None:
    from digest.db import session_factory
    from digest.schedule import review_recipients
    from digest.web.staff_store import Role, add_account

    config, engine = make_site(tmp_path)
    assert review_recipients(config, engine) == ("news@rs.example",)  # no staff yet: the sender
    with session_factory(engine)() as session:
        add_account(session, "editor@rs.example", "a long enough password", Role.EDITOR)
        add_account(session, "admin@rs.example", "a long enough password", Role.ADMIN)
        session.commit()
    assert sorted(review_recipients(config, engine)) == ["admin@rs.example", "editor@rs.example"]


def test_a_scheduled_send_sends_the_issue_staff_curated(tmp_path: Path) -> None:
    """The draft saved in the console for the issue's date is what the firing sends."""
    from email import message_from_bytes, policy

    from digest.curate import Draft
    from digest.db import session_factory
    from digest.drafts import save_draft
    from digest.pipeline import prepare_issue

    config, engine = make_site(tmp_path)
    fire_at = utc(2027, 3, 12, 14)
    issue = prepare_issue(config, fire_at.astimezone(config.tz), draft=None)
    stories = [t for section in issue.digest.sections for t in section.teasers]
    left_out, lead = stories[0], stories[-1]
    draft = Draft(
        issue_date=fire_at.astimezone(config.tz).date(),
        excluded=frozenset({left_out.url}),
        lead=lead.url,
        intro="A quiet week in the Gulf; a loud one in the Sahel.",
    )
    with session_factory(engine)() as session:
        save_draft(session, draft, by="editor@rs.example", at=fire_at)
        session.commit()
    with ScheduleService(config, engine, clock=Clock(datetime(2027, 3, 8, tzinfo=NY))) as service:
        service.add("friday", weekly="fri 09:00")
    record = fire(config, engine, "friday", fire_at + timedelta(seconds=5), scheduled_for=fire_at)
    assert record.outcome == "sent"
    [first, *_] = digests_sent(config)
    text = message_from_bytes(first.read_bytes(), policy=policy.default).get_body(("plain",)).get_content()
    assert "A quiet week in the Gulf" in text
    assert left_out.title not in text
    assert text.index(lead.title) < min(text.index(t.title) for t in stories if t not in (lead, left_out))


def test_approve_by_name_approves_the_next_issue(tmp_path: Path) -> None:
    config, engine = make_site(tmp_path)
    clock = Clock(datetime(2027, 3, 8, tzinfo=NY))
    with ScheduleService(config, engine, clock=clock) as service:
        service.add("friday", weekly="fri 09:00", mode="review")
        approval = service.approve("friday", by="ed")
        assert approval.issue == "2027-03-12"
        assert service.get("friday").approval == approval
        assert service.revoke_approval("2027-03-12") is True
        assert service.get("friday").approval is None
        with pytest.raises(ScheduleError, match="who approves"):
            service.approve("friday", by=" ")


def test_nothing_new_since_the_last_issue_skips_and_says_why(tmp_path: Path) -> None:
    config, engine = make_site(tmp_path)
    clock = Clock(datetime(2027, 3, 8, tzinfo=NY))
    with ScheduleService(config, engine, clock=clock) as service:
        service.add("friday", weekly="fri 09:00")
        first = fire(config, engine, "friday", utc(2027, 3, 12, 14, 1), scheduled_for=utc(2027, 3, 12, 14))
        assert first.outcome == "sent"
        # An hour later (the sample feed's newest story is 20 hours old): nothing new.
        clock.now = datetime(2027, 3, 12, 10, tzinfo=NY)
        again = service.run_now("friday")
        assert again.outcome == "skipped" and "nothing new since the last sent issue" in again.detail
    assert len(digests_sent(config)) == len(READERS)


def test_an_issue_already_sent_is_not_sent_again(tmp_path: Path) -> None:
    # send_when_empty turns the nothing-new check off; the issue date still guards.
    config, engine = make_site(tmp_path, "[collect]\nsend_when_empty = true")
    with ScheduleService(config, engine, clock=Clock(datetime(2027, 3, 8, tzinfo=NY))) as service:
        service.add("friday", weekly="fri 09:00")
    assert (
        fire(config, engine, "friday", utc(2027, 3, 12, 14), scheduled_for=utc(2027, 3, 12, 14)).outcome
        == "sent"
    )
    record = fire(config, engine, "friday", utc(2027, 3, 12, 16))
    assert record.outcome == "skipped" and "already sent" in record.detail
    assert len(digests_sent(config)) == len(READERS)


def test_an_unfinished_run_is_resumed_not_doubled(tmp_path: Path) -> None:
    config, engine = make_site(tmp_path)
    with ScheduleService(config, engine, clock=Clock(datetime(2027, 3, 8, tzinfo=NY))) as service:
        service.add("friday", weekly="fri 09:00")
    window_end = utc(2027, 3, 12, 14)
    with session_factory(engine)() as session:
        # Started on the scheduler's clock at 09:00, then crashed: its rows are due since then.
        run_id = start_run(
            session,
            store.active_recipients(session),
            issue="2027-03-12",
            window_end=window_end,
            now=window_end,
        )
    record = fire(config, engine, "friday", window_end + timedelta(minutes=5), scheduled_for=window_end)
    assert record.outcome == "sent" and f"resumed run {run_id}" in record.detail
    assert record.run_id == run_id
    with session_factory(engine)() as session:
        assert session.scalar(select(func.count()).select_from(SendRun)) == 1
    assert len(digests_sent(config)) == len(READERS)


def test_a_stale_unfinished_run_is_held_for_staff(tmp_path: Path) -> None:
    config, engine = make_site(tmp_path)
    with ScheduleService(config, engine, clock=Clock(datetime(2027, 3, 1, tzinfo=NY))) as service:
        service.add("friday", weekly="fri 09:00")
    with session_factory(engine)() as session:
        start_run(
            session,
            store.active_recipients(session),
            issue="2027-03-05",
            window_end=utc(2027, 3, 5, 14),
            now=utc(2027, 3, 5, 14),
        )
    record = fire(config, engine, "friday", utc(2027, 3, 12, 14), scheduled_for=utc(2027, 3, 12, 14))
    assert record.outcome == "held" and "--resume-stale" in record.detail
    assert digests_sent(config) == []


def test_start_up_resumes_what_a_dead_process_left(tmp_path: Path) -> None:
    config, engine = make_site(tmp_path)
    now = datetime.now(UTC)
    with ScheduleService(config, engine) as service:
        service.add("friday", weekly="fri 09:00")
    with session_factory(engine)() as session:
        run_id = start_run(
            session, store.active_recipients(session), issue=now.date().isoformat(), window_end=now
        )
        # The process that claimed the firing and started the run is gone (no such pid).
        session.add(
            Firing(schedule_name="friday", fire_time=now, kind="send", owner="nohost-here:1", started_at=now)
        )
        session.add(
            Firing(
                schedule_name="friday",
                fire_time=now,
                kind="manual",
                owner=f"{_host()}:999999",
                started_at=now,
            )
        )
        session.execute(SendRun.__table__.update().values(owner=f"{_host()}:999999:abc", heartbeat_at=now))
        session.commit()
    record = resume_interrupted(config, engine, now + timedelta(minutes=1))
    assert record is not None and record.kind == "resume" and record.outcome == "sent"
    assert f"resumed run {run_id}" in record.detail
    assert len(digests_sent(config)) == len(READERS)
    with session_factory(engine)() as session:
        outcomes = dict(session.execute(select(Firing.owner, Firing.outcome)).all())
    assert outcomes[f"{_host()}:999999"] == "interrupted"
    assert outcomes["nohost-here:1"] == "running"  # another machine's: only it knows
    assert resume_interrupted(config, engine, now + timedelta(minutes=2)) is None  # nothing left


def _host() -> str:
    import socket

    return socket.gethostname()


def test_skip_next_skips_once(tmp_path: Path) -> None:
    config, engine = make_site(tmp_path)
    clock = Clock(datetime(2027, 3, 8, tzinfo=NY))
    with ScheduleService(config, engine, clock=clock) as service:
        service.add("friday", weekly="fri 09:00")
        info = service.skip_next("friday", by="ed")
        assert info.next_fire_utc == utc(2027, 3, 19, 13)
        assert (info.last.outcome, info.last.by, info.last.issue) == ("skipped", "ed", "2027-03-12")
        # A scheduler that still fires the skipped time finds its claim taken.
        assert (
            fire(config, engine, "friday", utc(2027, 3, 12, 14), scheduled_for=utc(2027, 3, 12, 14)) is None
        )
    assert digests_sent(config) == []


def test_pause_resume_remove(tmp_path: Path) -> None:
    config, engine = make_site(tmp_path)
    clock = Clock(datetime(2027, 3, 8, tzinfo=NY))
    with ScheduleService(config, engine, clock=clock) as service:
        service.add("friday", weekly="fri 09:00")
        paused = service.pause("friday")
        assert paused.paused and paused.next_fire is None
        with pytest.raises(ScheduleError, match="paused"):
            service.skip_next("friday")
        clock.now = datetime(2027, 3, 20, tzinfo=NY)
        resumed = service.resume("friday")
        assert not resumed.paused and resumed.next_fire_utc == utc(2027, 3, 26, 13)
        with pytest.raises(ScheduleError, match="exists already"):
            service.add("friday", cron="0 9 * * 5")
        service.remove("friday")
        assert [i.name for i in service.list()] == ["weekly"]
        with pytest.raises(ScheduleError, match="no schedule named 'friday'"):
            service.get("friday")
        assert service.scheduler.get_job(JOB_PREFIX + "friday") is None


def test_config_seeds_one_weekly_schedule_once(tmp_path: Path) -> None:
    extra = '[schedule]\nday = "mon"\ntime = "07:30"\nenabled = false\nmode = "review"'
    config, engine = make_site(tmp_path, extra)
    with ScheduleService(config, engine) as service:
        [seeded] = service.list()
        assert (seeded.name, seeded.trigger, seeded.mode, seeded.paused) == (
            "weekly",
            "weekly mon 07:30",
            "review",
            True,
        )
        service.remove("weekly")
    with ScheduleService(config, engine) as service:
        assert service.list() == []  # removed by staff: not planted again


def test_bad_names_and_modes_are_refused(tmp_path: Path) -> None:
    config, engine = make_site(tmp_path)
    with ScheduleService(config, engine) as service:
        with pytest.raises(ScheduleError, match="schedule name 'Big Friday'"):
            service.add("Big Friday", weekly="fri 09:00")
        with pytest.raises(ScheduleError, match="mode 'later'"):
            service.add("friday", weekly="fri 09:00", mode="later")
        with pytest.raises(ScheduleError, match="either weekly or cron"):
            service.add("friday")


# --- one send per firing, whatever the number of processes ---------------------------------


def test_two_firings_of_one_time_send_once(db_engine, tmp_path: Path) -> None:  # noqa: ANN001
    """Two processes (two engines) fire the same (schedule, time) at the same moment."""
    config = make_config(tmp_path)
    add_readers(db_engine)
    with ScheduleService(config, db_engine, clock=Clock(datetime(2027, 3, 8, tzinfo=NY))) as service:
        service.add("friday", weekly="fri 09:00")
    engines = [db_engine, make_engine(str(db_engine.url.render_as_string(hide_password=False)))]
    if db_engine.dialect.name == "postgresql":
        engines[1] = (
            db_engine  # the schema is set per connection by the fixture; its pool serves both threads
        )
    barrier = threading.Barrier(2, timeout=30)
    results: list[object] = [None, None]

    def one(i: int) -> None:
        barrier.wait()
        results[i] = fire(
            config, engines[i], "friday", utc(2027, 3, 12, 14, 1), scheduled_for=utc(2027, 3, 12, 14)
        )

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(r is None for r in results) == [False, True]
    [record] = [r for r in results if r is not None]
    assert record.outcome == "sent"
    assert len(digests_sent(config)) == len(READERS)
    with session_factory(db_engine)() as session:
        assert session.scalar(select(func.count()).select_from(Firing)) == 1


def test_two_schedulers_on_one_job_store_send_once(tmp_path: Path) -> None:
    """Two running schedulers on one SQLite file both pick up the due job: one sends."""
    config, engine = make_site(tmp_path)
    with ScheduleService(config, engine) as setup:
        setup.add("friday", weekly="fri 09:00")
        due = datetime.now(UTC) - timedelta(minutes=1)
        setup.scheduler.modify_job(JOB_PREFIX + "friday", next_run_time=due)
        assert setup.list()  # also seeds "weekly", so neither scheduler below writes at start

    both_read = threading.Barrier(2, timeout=30)
    executed: list[threading.Event] = []
    services = []
    for _ in range(2):
        service = ScheduleService(config, make_engine(config.database.url, base_dir=config.base_dir))
        service.list()
        # Test instrumentation on the real job store: neither scheduler goes on to store the next
        # fire time until both have read the due job, so both really fire it.
        store_ = service.scheduler._lookup_jobstore("default")
        read = store_.get_due_jobs
        waited = threading.Event()

        def synced(now, read=read, waited=waited):  # noqa: ANN001, ANN202
            jobs = read(now)
            if jobs and not waited.is_set():
                waited.set()
                both_read.wait()
            return jobs

        store_.get_due_jobs = synced
        done = threading.Event()
        service.scheduler.add_listener(
            lambda e, done=done: done.set() if e.job_id == JOB_PREFIX + "friday" else None,
            EVENT_JOB_EXECUTED | EVENT_JOB_ERROR,
        )
        executed.append(done)
        services.append(service)
    try:
        for service in services:
            service.start()
        assert all(done.wait(60) for done in executed), "both schedulers should have fired the job"
    finally:
        for service in services:
            service.close()
    assert len(digests_sent(config)) == len(READERS)
    with session_factory(engine)() as session:
        firings = session.scalars(select(Firing).where(Firing.kind == "send")).all()
        runs = session.scalar(select(func.count()).select_from(SendRun))
    assert [(f.schedule_name, f.outcome) for f in firings] == [("friday", "sent")]
    assert runs == 1


# --- the CLI ------------------------------------------------------------------------------


def test_schedule_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config, engine = make_site(tmp_path)
    toml = str(tmp_path / "digest.toml")
    assert (
        main(["-c", toml, "schedule", "add", "--weekly", "fri 09:00", "--mode", "review", "--name", "fri"])
        == 0
    )
    assert "Next: Fri" in capsys.readouterr().out
    assert main(["-c", toml, "schedule", "add", "--cron", "30 7 * * 1-5"]) == 0
    assert "cron-30-7-1-5" in capsys.readouterr().out
    assert main(["-c", toml, "schedule", "list"]) == 0
    out = capsys.readouterr().out
    assert "fri" in out and "review" in out and "weekly" in out and "America/New_York and UTC" in out
    assert main(["-c", toml, "schedule", "pause", "fri"]) == 0
    assert main(["-c", toml, "schedule", "resume", "fri"]) == 0
    assert main(["-c", toml, "schedule", "skip-next", "fri", "--by", "ed"]) == 0
    assert "Skipped 'fri'" in capsys.readouterr().out
    assert main(["-c", toml, "schedule", "approve", "fri", "--by", "ed"]) == 0
    assert "approved by ed" in capsys.readouterr().out
    assert main(["-c", toml, "schedule", "run-now", "weekly", "--by", "ed"]) == 0
    assert "sent: run" in capsys.readouterr().out
    assert len(digests_sent(config)) == len(READERS)
    assert main(["-c", toml, "schedule", "history"]) == 0
    assert "manual" in capsys.readouterr().out
    assert main(["-c", toml, "schedule", "remove", "cron-30-7-1-5"]) == 0
    assert main(["-c", toml, "schedule", "add", "--weekly", "someday 09:00"]) == 1
    assert "'someday' is not a day" in capsys.readouterr().err
    assert main(["-c", toml, "schedule", "pause", "nope"]) == 1
    assert "no schedule named 'nope'" in capsys.readouterr().err


def test_context_is_what_jobs_get(tmp_path: Path) -> None:
    """A job function called without our executor says so instead of guessing."""
    from digest.schedule import scheduled_send

    config = make_config(tmp_path)
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    migrate(engine)
    with pytest.raises(TypeError, match="FiringExecutor"):
        scheduled_send("friday")
    assert FiringContext(config, engine, lambda: datetime.now(UTC)).transport() is None


def test_the_job_store_works_on_either_database(db_engine, tmp_path: Path) -> None:  # noqa: ANN001
    """SQLite and PostgreSQL: a schedule written by one service is read back by the next."""
    config = make_config(tmp_path)
    clock = Clock(datetime(2027, 10, 29, 10, tzinfo=NY))
    with ScheduleService(config, db_engine, clock=clock) as first:
        first.add("friday", weekly="fri 09:00")
        first.skip_next("friday")
    with ScheduleService(config, db_engine, clock=clock) as second:
        info = second.get("friday")
        assert info.next_fire_utc == utc(2027, 11, 12, 14)  # the 5th skipped; EST from then on
        assert info.last is not None and info.last.outcome == "skipped"
        assert [i.name for i in second.list()] == ["friday", "weekly"]


def test_a_new_time_zone_in_digest_toml_moves_the_schedules(tmp_path: Path) -> None:
    config, engine = make_site(tmp_path)
    clock = Clock(datetime(2027, 3, 8, tzinfo=NY))
    with ScheduleService(config, engine, clock=clock) as service:
        service.add("friday", weekly="fri 09:00")
    moved = make_config(tmp_path, "")
    import dataclasses

    berlin = dataclasses.replace(
        moved, newsletter=dataclasses.replace(moved.newsletter, timezone="Europe/Berlin")
    )
    with ScheduleService(berlin, engine, clock=clock) as service:
        info = service.get("friday")
        assert info.next_fire_utc == utc(2027, 3, 12, 8)  # 09:00 CET
        assert info.next_fire.strftime("%H:%M %Z") == "09:00 CET"


def test_a_firing_killed_before_its_run_started_is_fired_again_at_start_up(tmp_path: Path) -> None:
    config, engine = make_site(tmp_path)
    fire_time = utc(2027, 3, 12, 14)
    with ScheduleService(config, engine, clock=Clock(datetime(2027, 3, 8, tzinfo=NY))) as service:
        service.add("friday", weekly="fri 09:00")
    with session_factory(engine)() as session:  # claimed, then killed while collecting: no run yet
        session.add(
            Firing(schedule_name="friday", fire_time=fire_time, kind="send", owner=f"{_host()}:999999")
        )
        session.commit()
    record = resume_interrupted(config, engine, fire_time + timedelta(minutes=10))
    assert record is not None and (record.kind, record.outcome, record.issue) == (
        "refire",
        "sent",
        "2027-03-12",
    )
    assert len(digests_sent(config)) == len(READERS)
    # Past the grace time it is recorded as missed: staff decide (run-now).
    with session_factory(engine)() as session:
        late = utc(2027, 3, 19, 13)
        session.add(Firing(schedule_name="friday", fire_time=late, kind="send", owner=f"{_host()}:999999"))
        session.commit()
    assert resume_interrupted(config, engine, late + timedelta(hours=2)) is None
    assert len(digests_sent(config)) == len(READERS)
    with session_factory(engine)() as session:
        assert session.scalar(select(Firing.outcome).where(Firing.fire_time == late)) == "missed"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('mode = "later"', "[schedule] mode: must be one of send, review, not 'later'"),
        ("misfire_grace_minutes = 0", "[schedule] misfire_grace_minutes: must be between 1 and 10080"),
        ("review_hours_before = 0", "[schedule] review_hours_before: must be more than 0"),
        ('review_to = ["not an address"]', "[schedule] review_to: 'not an address' is not an e-mail address"),
    ],
)
def test_schedule_keys_are_checked_naming_file_and_key(tmp_path: Path, toml: str, message: str) -> None:
    from digest.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        make_config(tmp_path, f"[schedule]\n{toml}")
    assert str(err.value).startswith(f"{tmp_path / 'digest.toml'}: {message}")


def test_weekly_text_is_stored_in_one_spelling(tmp_path: Path) -> None:
    config, engine = make_site(tmp_path)
    with ScheduleService(config, engine, clock=Clock(datetime(2027, 3, 8, tzinfo=NY))) as service:
        assert service.add("friday", weekly="Friday  9:00").trigger == "weekly fri 09:00"
