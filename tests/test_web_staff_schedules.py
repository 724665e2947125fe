"""The console's schedule pages, approvals and run history through Flask's test client: real SQLite
files, the outbox transport, an injected clock; sends the console starts are joined, not waited for."""

from __future__ import annotations

import html
import re
from datetime import UTC, datetime, timedelta
from email import message_from_bytes, policy

import pytest
from sqlalchemy import select
from staff_helpers import (  # noqa: F401  (cheap_password_hashes is an autouse fixture)
    ADMIN,
    EDITOR,
    ORIGIN,
    Staff,
    as_staff,
    cheap_password_hashes,
    close_site,
    make_site,
    run_now,
    staff_config,
    wait_for_console_sends,
)

from digest.db import session_factory
from digest.models import DeliveryStatus, Recipient
from digest.schedule import Approval, Firing, Schedule, ScheduleService, fire
from digest.send import Delivery, RunStatus, SendRun, start_run
from digest.web.site import JOBS_KEY
from subscribers import store
from subscribers.reports import BounceEvent

READERS = ("ada@example.org", "bo@example.org", "cy@example.org")


@pytest.fixture
def site(tmp_path):
    s = make_site(staff_config(ORIGIN, tmp_path, outbox=True))
    with session_factory(s.engine).begin() as db:
        for address in READERS:
            store.add_subscriber(db, address, source="cli")
    yield s
    close_site(s)


def outbox(site) -> dict[str, str]:
    """Recipient -> Subject of every message in the outbox."""
    folder = site.config.resolve_path(site.config.transport.outbox_dir)
    found = {}
    for path in sorted(folder.glob("*.eml")) if folder.is_dir() else []:
        msg = message_from_bytes(path.read_bytes(), policy=policy.default)
        found[str(msg["To"]).split("<")[-1].rstrip(">")] = str(msg["Subject"])
    return found


def clear_outbox(site) -> None:
    folder = site.config.resolve_path(site.config.transport.outbox_dir)
    for path in folder.glob("*.eml"):
        path.unlink()


def schedule_rows(site) -> dict[str, tuple]:
    with session_factory(site.engine)() as db:
        return {
            r.name: (r.trigger_kind, r.trigger_expr, r.mode, r.paused, r.removed_at is not None)
            for r in db.scalars(select(Schedule))
        }


def firings(site) -> list[tuple[str, str, str]]:
    with session_factory(site.engine)() as db:
        return [(f.schedule_name, f.kind, f.outcome) for f in db.scalars(select(Firing).order_by(Firing.id))]


def flash(page: str) -> str:
    """The flashed messages of a page, unescaped."""
    found = re.findall(r'<p class="(?:notice|error)" role="(?:status|alert)">(.*?)</p>', page, re.S)
    return html.unescape(" ".join(found))


# --- roles, CSRF, Origin ------------------------------------------------------------------


def test_an_editor_cannot_see_or_change_schedules(site):
    admin = as_staff(site, ADMIN)
    assert admin.get("/staff/schedules").status_code == 200  # seeds "weekly" from [schedule]
    before = schedule_rows(site)
    editor = as_staff(site, EDITOR)
    assert editor.get("/staff/schedules").status_code == 403
    assert editor.get("/staff/schedules/weekly").status_code == 403
    for path, data in (
        ("/staff/schedules", {"name": "sneaky", "kind": "weekly", "when": "mon 06:00", "mode": "send"}),
        ("/staff/schedules/weekly", {"kind": "cron", "when": "0 6 * * 1", "mode": "send"}),
        ("/staff/schedules/weekly/pause", {}),
        ("/staff/schedules/weekly/skip", {}),
        ("/staff/schedules/weekly/remove", {}),
        ("/staff/schedules/weekly/run-now", {}),
    ):
        resp = editor.post(path, data)
        assert resp.status_code == 403 and "Admins only" in resp.text, path
    wait_for_console_sends(site)
    assert schedule_rows(site) == before and firings(site) == []
    assert outbox(site) == {}
    menu = editor.get("/staff/").text
    assert 'href="/staff/schedules"' not in menu and 'href="/staff/runs"' in menu


def test_schedule_changes_need_the_csrf_token_and_this_origin(site):
    admin = as_staff(site, ADMIN)
    admin.get("/staff/schedules")
    before = schedule_rows(site)
    add = {"name": "forged", "kind": "weekly", "when": "mon 06:00", "mode": "send"}
    assert admin.post("/staff/schedules", add, token=False).status_code == 400
    assert admin.post("/staff/schedules", add, origin="https://evil.example").status_code == 403
    assert admin.post("/staff/schedules/weekly/pause", token=False).status_code == 400
    assert admin.post("/staff/schedules/weekly/pause", origin="https://evil.example").status_code == 403
    assert admin.post("/staff/schedules/weekly/run-now", origin="null").status_code == 403
    assert admin.post("/staff/approvals", {"schedule": "weekly"}, origin=None).status_code == 403
    wait_for_console_sends(site)
    assert schedule_rows(site) == before and firings(site) == [] and outbox(site) == {}


# --- the schedules page ---------------------------------------------------------------------


def test_add_edit_pause_resume_skip_and_remove(site):
    admin = as_staff(site, ADMIN)
    page = admin.get("/staff/schedules").text
    # Seeded from [schedule]: Friday 20 November 09:00 New York is 14:00 UTC.
    weekly = re.search(r'<li class="story schedule" id="schedule-weekly">.*?</li>', page, re.S).group(0)
    assert "weekly fri 09:00" in weekly and "Fri 20 Nov 2026, 09:00 EST · 14:00 UTC" in weekly

    resp = admin.post(
        "/staff/schedules", {"name": "mornings", "kind": "cron", "when": "30 7 * * 1-5", "mode": "review"}
    )
    assert resp.status_code == 303
    page = admin.get("/staff/schedules").text
    assert "Schedule “mornings” added: cron 30 7 * * 1-5, review." in flash(page)
    assert schedule_rows(site)["mornings"] == ("cron", "30 7 * * 1-5", "review", False, False)
    # Thursday 19 November 07:30 EST = 12:30 UTC (the clock is Wednesday 10:00 in New York).
    assert "Thu 19 Nov 2026, 07:30 EST · 12:30 UTC" in page

    bad = admin.post("/staff/schedules", {"name": "bad", "kind": "weekly", "when": "someday 25:00"})
    assert bad.status_code == 400 and 'aria-invalid="true"' in bad.text and "someday 25:00" in bad.text
    taken = admin.post("/staff/schedules", {"name": "mornings", "kind": "weekly", "when": "mon 06:00"})
    assert taken.status_code == 400 and "exists already" in taken.text
    assert set(schedule_rows(site)) == {"weekly", "mornings"}

    assert admin.post("/staff/schedules/mornings/pause").status_code == 303
    assert schedule_rows(site)["mornings"][3] is True
    page = admin.get("/staff/schedules").text
    mornings = re.search(r'id="schedule-mornings">.*?</li>', page, re.S).group(0)
    assert "paused" in mornings and "none while paused" in mornings and "Resume mornings" in mornings
    assert admin.post("/staff/schedules/mornings/resume").status_code == 303
    assert schedule_rows(site)["mornings"][3] is False
    assert "next Thu 19 Nov 2026 07:30 EST (12:30 UTC)" in flash(admin.get("/staff/schedules").text)

    assert admin.post("/staff/schedules/weekly/skip").status_code == 303
    assert firings(site) == [("weekly", "send", "skipped")]
    page = admin.get("/staff/schedules").text
    assert "the firing of Fri 20 Nov 09:00 is skipped; next Fri 27 Nov 2026 09:00 EST" in flash(page)
    assert re.search(r"<td><strong>skipped</strong></td><td>2026-11-20</td>", page)

    edit = admin.post("/staff/schedules/weekly", {"kind": "weekly", "when": "Thursday 8:15", "mode": "send"})
    assert edit.status_code == 303
    assert schedule_rows(site)["weekly"] == ("weekly", "thu 08:15", "send", False, False)
    one = admin.get("/staff/schedules/weekly").text
    assert "Thu 19 Nov 2026, 08:15 EST · 13:15 UTC" in one and "skipped" in one  # history kept
    bad_edit = admin.post("/staff/schedules/weekly", {"kind": "cron", "when": "not a crontab"})
    assert bad_edit.status_code == 400 and schedule_rows(site)["weekly"][1] == "thu 08:15"

    assert admin.post("/staff/schedules/mornings/remove").status_code == 303
    assert schedule_rows(site)["mornings"][4] is True
    page = admin.get("/staff/schedules").text
    assert 'id="schedule-mornings"' not in page
    assert admin.get("/staff/schedules/mornings").status_code == 404
    assert admin.post("/staff/schedules/nobody/pause").status_code == 404


def test_skip_next_of_a_paused_schedule_says_why_and_changes_nothing(site):
    admin = as_staff(site, ADMIN)
    admin.get("/staff/schedules")
    assert admin.post("/staff/schedules/weekly/pause").status_code == 303
    assert admin.post("/staff/schedules/weekly/skip").status_code == 303
    assert "Nothing was changed: schedule 'weekly' is paused" in flash(admin.get("/staff/schedules").text)
    assert firings(site) == []


def test_the_history_shows_missed_and_held_firings(site):
    admin = as_staff(site, ADMIN)
    admin.post(
        "/staff/schedules", {"name": "friday-review", "kind": "weekly", "when": "fri 09:00", "mode": "review"}
    )
    friday = datetime(2026, 11, 20, 14, tzinfo=UTC)
    # The server was down: the firing starts two hours late (grace: 60 minutes).
    fire(site.config, site.engine, "weekly", friday + timedelta(hours=2), scheduled_for=friday)
    # Review mode, nobody approved: held.
    fire(site.config, site.engine, "friday-review", friday, scheduled_for=friday)
    assert sorted(firings(site)) == [("friday-review", "send", "held"), ("weekly", "send", "missed")]
    page = admin.get("/staff/schedules").text
    history = re.search(r'<table id="firings">.*?</table>', page, re.S).group(0)
    assert "<strong>missed</strong>" in history and "<strong>held</strong>" in history
    # No issue went out; staff were told (digest.alerts), each mail naming what happened.
    assert outbox(site) and all(s.startswith(("[missed]", "[held]")) for s in outbox(site).values())


def test_run_now_sends_in_the_background_and_shows_in_the_run_history(site):
    admin = as_staff(site, ADMIN)
    admin.get("/staff/schedules")
    # Not without the confirmation.
    assert admin.post("/staff/schedules/weekly/run-now").status_code == 400
    resp = run_now(admin, "weekly")
    assert resp.status_code == 303
    started = admin.get("/staff/schedules").text
    assert "Started at 10:00:00: the issue of " in flash(started)
    assert "(schedule “weekly”) is collecting and sending in the background" in flash(started)
    wait_for_console_sends(site)
    assert set(outbox(site)) == set(READERS)
    assert firings(site) == [("weekly", "manual", "sent")]
    (job,) = site.app.extensions[JOBS_KEY].recent()
    assert job.ok and job.by == ADMIN and job.result.startswith("sent (run ")
    with session_factory(site.engine)() as db:
        (run,) = db.scalars(select(SendRun))
        assert run.status == RunStatus.FINISHED
    runs = admin.get("/staff/runs").text
    assert f'href="/staff/runs/{run.id}"' in runs and "done: sent (run" in runs
    row = re.search(rf"<tr><td>{run.issue}</td>.*?</tr>", runs, re.S).group(0)
    assert re.findall(r'class="num">(\d+)<', row) == ["3", "0", "0", "0", "0", "0", "0"]
    page = admin.get("/staff/schedules").text
    assert f'<a href="/staff/runs/{run.id}">' in page  # the firing links to its run


def test_a_second_console_send_while_one_runs_is_refused(site):
    import threading

    gate = threading.Event()
    jobs = site.app.extensions[JOBS_KEY]
    jobs.start("a long send", "someone@example.org", lambda: str(gate.wait()))
    admin = as_staff(site, ADMIN)
    admin.get("/staff/schedules")
    assert run_now(admin, "weekly").status_code == 303
    assert "Not started: “a long send” (started by someone@example.org) is still running" in flash(
        admin.get("/staff/schedules").text
    )
    gate.set()
    wait_for_console_sends(site)
    assert firings(site) == [] and outbox(site) == {}


# --- approving a review ------------------------------------------------------------------------


def test_an_editor_approves_and_revokes_the_issue_of_a_review_schedule(site):
    with ScheduleService(site.config, site.engine, clock=site.clock) as service:
        service.add("thursday", weekly="thu 10:00", mode="review")
    editor = as_staff(site, EDITOR)
    page = editor.get("/staff/issue").text
    assert "Issue of 2026-11-19 (“thursday”): <strong>not approved</strong>" in page
    approve = {"schedule": "thursday", "action": "approve", "back": "staff.issue"}
    resp = editor.post("/staff/approvals", approve)
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/staff/issue")
    with session_factory(site.engine)() as db:
        approval = db.get(Approval, "2026-11-19")
        assert (approval.schedule_name, approval.approved_by) == ("thursday", EDITOR)
    page = editor.get("/staff/issue").text
    assert "The issue of 2026-11-19 is approved by editor@example.org" in flash(page)
    assert "Revoke the approval of 2026-11-19" in page
    # The dashboard's next send is this review, with its approval.
    dashboard = editor.get("/staff/").text
    assert "schedule “thursday”" in dashboard
    assert "<strong>approved</strong> by editor@example.org" in dashboard

    revoke = {"schedule": "thursday", "action": "revoke", "back": "staff.dashboard"}
    resp = editor.post("/staff/approvals", revoke)
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/staff/")
    with session_factory(site.engine)() as db:
        assert db.get(Approval, "2026-11-19") is None
    assert "revoked" in flash(editor.get("/staff/").text)
    # Somewhere else to go back to is not followed.
    resp = editor.post("/staff/approvals", {"schedule": "thursday", "back": "https://evil.example/"})
    assert resp.headers["Location"].endswith("/staff/issue")


def test_approving_without_a_next_issue_changes_nothing(site):
    with ScheduleService(site.config, site.engine, clock=site.clock) as service:
        service.add("thursday", weekly="thu 10:00", mode="review")
        service.pause("thursday")
    editor = as_staff(site, EDITOR)
    editor.post("/staff/approvals", {"schedule": "thursday"})
    assert "Nothing was changed" in flash(editor.get("/staff/issue").text)
    editor.post("/staff/approvals", {"schedule": "nobody"})
    assert "no schedule named 'nobody'" in flash(editor.get("/staff/issue").text)
    with session_factory(site.engine)() as db:
        assert db.scalars(select(Approval)).all() == []


# --- run history and "send again to these" -----------------------------------------------------


def finished_run_with_problems(site) -> str:
    """A finished run of the three readers: ada sent, bo failed, cy unknown; bo's message bounced."""
    with session_factory(site.engine)() as db:
        subs = {address: store.get_by_email(db, address).id for address in READERS}
        run_id = start_run(
            db,
            [Recipient(i, a) for a, i in subs.items()],
            issue="2026-11-13",
            window_end=datetime(2026, 11, 13, 14, tzinfo=UTC),
            notes={"dropped": [{"title": "An old story", "reason": "outside the week window"}]},
            transport="outbox",
        )
        outcome = {
            "ada@example.org": (DeliveryStatus.SENT, "250 OK", "<a@rs>"),
            "bo@example.org": (DeliveryStatus.FAILED, "550 mailbox full", "<b@rs>"),
            "cy@example.org": (DeliveryStatus.UNKNOWN, "connection lost after DATA", "<c@rs>"),
        }
        for row in db.scalars(select(Delivery).where(Delivery.run_id == run_id)):
            row.status, row.detail, row.message_id = outcome[row.email]
            row.attempts = 1
        run = db.get(SendRun, run_id)
        run.status, run.open_slot, run.finished_at = RunStatus.FINISHED, None, site.clock()
        bo = subs["bo@example.org"]
        bounce = BounceEvent(run_id=run_id, subscriber_id=bo, kind="bounce", at=site.clock())
        db.add(bounce)
        db.commit()
    return run_id


def statuses(site, run_id) -> dict[str, str]:
    with session_factory(site.engine)() as db:
        rows = db.scalars(select(Delivery).where(Delivery.run_id == run_id))
        return {r.email: DeliveryStatus(r.status).value for r in rows}


def test_editors_read_the_run_history_but_cannot_send_again(site):
    run_id = finished_run_with_problems(site)
    editor = as_staff(site, EDITOR)
    runs = editor.get("/staff/runs")
    assert runs.status_code == 200
    row = re.search(r"<tr><td>2026-11-13</td>.*?</tr>", runs.text, re.S).group(0)
    assert re.findall(r'class="num">(\d+)<', row) == ["1", "1", "1", "0", "0", "1", "0"]
    one = editor.get(f"/staff/runs/{run_id}")
    assert one.status_code == 200
    problems = re.search(r'<table id="problems">.*?</table>', one.text, re.S).group(0)
    assert "bo@example.org" in problems and "550 mailbox full" in problems and "&lt;b@rs&gt;" in problems
    assert "cy@example.org" in problems and "connection lost after DATA" in problems
    assert "ada@example.org" not in problems
    assert "1 sent, 1 failed, 1 unknown, 0 skipped, 0 pending, 1 bounced, 0 complained" in one.text
    assert "1 articles of the week were left out" in one.text and "An old story" in one.text
    assert "Send again" not in one.text  # no forms for editors
    resp = editor.post(f"/staff/runs/{run_id}/resend", {"include": "failed"})
    assert resp.status_code == 403
    wait_for_console_sends(site)
    assert statuses(site, run_id)["bo@example.org"] == "failed" and outbox(site) == {}
    assert editor.get("/staff/runs/nope").status_code == 404


def test_send_again_to_the_failed_rows_sends_to_them_and_no_one_else(site):
    run_id = finished_run_with_problems(site)
    admin = as_staff(site, ADMIN)
    page = admin.get(f"/staff/runs/{run_id}").text
    assert "Send again to all 1 failed" in page and "Send again to all 1 unknown" in page
    resp = admin.post(f"/staff/runs/{run_id}/resend", {"include": "failed"})
    assert resp.status_code == 303 and resp.headers["Location"].endswith(f"/staff/runs/{run_id}")
    page = admin.get(f"/staff/runs/{run_id}").text
    assert "sending again to 1 delivery of this run, and no one else" in flash(page)
    wait_for_console_sends(site)
    assert list(outbox(site)) == ["bo@example.org"]
    assert statuses(site, run_id) == {
        "ada@example.org": "sent",
        "bo@example.org": "sent",
        "cy@example.org": "unknown",
    }
    with session_factory(site.engine)() as db:
        assert db.get(SendRun, run_id).status == RunStatus.FINISHED
    page = admin.get(f"/staff/runs/{run_id}").text
    assert "done: run " in page and "1 sent" in page


def test_send_again_to_ticked_rows_only(site):
    run_id = finished_run_with_problems(site)
    admin = as_staff(site, ADMIN)
    nothing = admin.post(
        f"/staff/runs/{run_id}/resend", {"selection": "ticked", "include": ["failed", "unknown"]}
    )
    assert nothing.status_code == 400 and "Tick the rows" in nothing.text
    resp = admin.post(
        f"/staff/runs/{run_id}/resend",
        {"selection": "ticked", "include": ["failed", "unknown"], "only": ["cy@example.org"]},
    )
    assert resp.status_code == 303
    wait_for_console_sends(site)
    assert list(outbox(site)) == ["cy@example.org"]
    assert statuses(site, run_id)["cy@example.org"] == "sent"
    assert statuses(site, run_id)["bo@example.org"] == "failed"
    stranger = admin.post(
        f"/staff/runs/{run_id}/resend", {"include": "failed", "only": ["stranger@example.org"]}
    )
    assert stranger.status_code == 409 and "not in this run: stranger@example.org" in stranger.text
    assert statuses(site, run_id)["bo@example.org"] == "failed"


def test_another_unfinished_run_refuses_send_again_with_a_clear_message(site):
    run_id = finished_run_with_problems(site)
    with session_factory(site.engine)() as db:
        other = start_run(db, [Recipient(99, "zed@example.org")], issue="2026-11-20")
    before = statuses(site, run_id)
    admin = as_staff(site, ADMIN)
    resp = admin.post(f"/staff/runs/{run_id}/resend", {"include": ["failed", "unknown"]})
    assert resp.status_code == 409
    error = re.search(r'<p class="error" role="alert" id="resend-error">(.*?)</p>', resp.text, re.S).group(1)
    assert error == (
        f"Nothing was changed: send run {other}: another run is unfinished; finish or abandon it first."
    )
    wait_for_console_sends(site)
    assert statuses(site, run_id) == before and outbox(site) == {}
    with session_factory(site.engine)() as db:
        assert db.get(SendRun, run_id).status == RunStatus.FINISHED


def test_send_again_needs_the_csrf_token_and_this_origin(site):
    run_id = finished_run_with_problems(site)
    admin = as_staff(site, ADMIN)
    assert admin.post(f"/staff/runs/{run_id}/resend", {"include": "failed"}, token=False).status_code == 400
    evil = admin.post(f"/staff/runs/{run_id}/resend", {"include": "failed"}, origin="https://evil.example")
    assert evil.status_code == 403
    wait_for_console_sends(site)
    assert statuses(site, run_id)["bo@example.org"] == "failed" and outbox(site) == {}


def test_the_pages_ask_for_a_login(site):
    client = Staff(site.app)
    for path in ("/staff/schedules", "/staff/schedules/weekly", "/staff/runs", "/staff/runs/x"):
        resp = client.get(path)
        assert resp.status_code == 303 and resp.headers["Location"].endswith("/staff/login"), path


def test_inside_digest_run_the_console_uses_the_running_scheduler(site):
    """`digest run` puts its running ScheduleService in app.extensions; the console edits through it."""
    from digest.web.site import SCHEDULES_KEY

    with ScheduleService(site.config, site.engine, clock=site.clock) as running:
        site.app.extensions["digest.schedule"] = running
        try:
            assert site.app.extensions[SCHEDULES_KEY]() is running
            admin = as_staff(site, ADMIN)
            admin.get("/staff/schedules")
            assert admin.post("/staff/schedules/weekly/pause").status_code == 303
            assert running.get("weekly").paused is True
            assert running.scheduler.get_job("schedule:weekly").next_run_time is None
        finally:
            del site.app.extensions["digest.schedule"]


def test_without_the_signing_secret_send_again_says_so_and_changes_nothing(
    tmp_path, monkeypatch, smtp_server
):
    """Over SMTP the unsubscribe links must be signed: no DIGEST_SECRET_KEY, no row reopened."""
    monkeypatch.delenv("DIGEST_SECRET_KEY", raising=False)
    s = make_site(staff_config(ORIGIN, tmp_path, smtp=(smtp_server.host, smtp_server.port)))
    try:
        with session_factory(s.engine).begin() as db:
            for address in READERS:
                store.add_subscriber(db, address, source="cli")
        run_id = finished_run_with_problems(s)
        resp = as_staff(s, ADMIN).post(f"/staff/runs/{run_id}/resend", {"include": "failed"})
        assert (
            resp.status_code == 500
            and "Nothing was changed" in resp.text
            and "DIGEST_SECRET_KEY" in resp.text
        )
        assert statuses(s, run_id)["bo@example.org"] == "failed" and smtp_server.messages == []
        with session_factory(s.engine)() as db:
            assert db.get(SendRun, run_id).status == RunStatus.FINISHED
    finally:
        close_site(s)


def test_a_distributed_run_shows_each_worker_on_its_page(site):
    """Celery mode records each worker's part in `run_workers`; the run's page lists them."""
    from digest.distributed import WORKER_OWNER_PREFIX, RunWorker

    run_id = finished_run_with_problems(site)
    seen = site.clock()
    with session_factory(site.engine)() as db:
        for name, sent in (("w1", 120), ("w2", 80)):
            db.add(
                RunWorker(
                    run_id=run_id,
                    worker=f"{WORKER_OWNER_PREFIX}{name}",
                    host="mail-1",
                    sent=sent,
                    failed=1,
                    first_seen=seen - timedelta(seconds=10),
                    last_seen=seen,
                )
            )
        db.commit()
    page = as_staff(site, EDITOR).get(f"/staff/runs/{run_id}").text
    table = re.search(r'<table id="workers">.*?</table>', page, re.S).group(0)
    assert re.findall(r'<th scope="row">(\w+)</th><td>mail-1</td><td class="num">(\d+)</td>', table) == [
        ("w1", "120"),
        ("w2", "80"),
    ]
    assert "12/s" in table and "8/s" in table  # sent over the seconds between first and last seen


def test_a_running_runs_page_follows_it_and_a_finished_one_stays_put(site):
    """Workers add their counts every second: while the run is running its page reloads."""
    run_id = finished_run_with_problems(site)
    refresh = '<meta http-equiv="refresh" content="5">'
    assert refresh not in as_staff(site, EDITOR).get(f"/staff/runs/{run_id}").text
    with session_factory(site.engine)() as db:
        db.get(SendRun, run_id).status = RunStatus.RUNNING
        db.commit()
    assert refresh in as_staff(site, EDITOR).get(f"/staff/runs/{run_id}").text


def running_distributed_run(site) -> str:
    """A run of the three readers as Celery workers leave it mid-send: running, all pending."""
    from digest.distributed import RunDispatch

    with session_factory(site.engine)() as db:
        subs = [store.get_by_email(db, address).id for address in READERS]
        run_id = start_run(
            db,
            [Recipient(i, a) for a, i in zip(READERS, subs, strict=True)],
            issue="2026-11-13",
            window_end=datetime(2026, 11, 13, 14, tzinfo=UTC),
            transport="smtp",
        )
        db.get(SendRun, run_id).status = RunStatus.RUNNING
        now = site.clock()
        db.add(
            RunDispatch(
                run_id=run_id, dispatched_at=now, sent_at=now, variant_of="{}", tasks=1, per_second=0.0,
                per_hour=0, second_tokens=1.0, hour_tokens=0.0, stamp=0.0, hold_until=0.0, failures=0,
                max_errors=50,
            )
        )  # fmt: skip
        db.commit()
    return run_id


def test_staff_pause_a_run_on_workers_from_its_page(site):
    """The console's Pause does what `digest runs pause` does: the run's status says stop, and
    every worker stops at its next row; editors may, since it loses nothing."""
    run_id = running_distributed_run(site)
    editor = as_staff(site, EDITOR)
    page = editor.get(f"/staff/runs/{run_id}").text
    assert 'id="pause-run"' in page and 'id="abandon-link"' not in page  # abandon: admins only
    answer = editor.post(f"/staff/runs/{run_id}/pause")
    assert answer.status_code == 303
    with session_factory(site.engine)() as db:
        run = db.get(SendRun, run_id)
        assert (run.status, run.paused_reason) == (RunStatus.PAUSED, f"paused by {EDITOR}")
    page = editor.get(f"/staff/runs/{run_id}").text
    assert "paused: its workers stop at their next row" in page and 'id="pause-run"' not in page
    again = editor.post(f"/staff/runs/{run_id}/pause")  # a second click, or a stale page
    assert again.status_code == 303
    assert "is paused: nothing to pause" in editor.get(f"/staff/runs/{run_id}").text


def test_staff_abandon_an_unfinished_run_only_when_confirmed(site):
    run_id = running_distributed_run(site)
    admin = as_staff(site, ADMIN)
    # Asked on a page of its own: the run's page reloads every 5 s while the run is running.
    assert 'id="abandon-link"' in admin.get(f"/staff/runs/{run_id}").text
    asking = admin.get(f"/staff/runs/{run_id}/abandon").text
    assert 'id="abandon-run"' in asking and 'http-equiv="refresh"' not in asking
    assert "Its 3 pending deliveries will not be sent" in asking
    assert as_staff(site, EDITOR).get(f"/staff/runs/{run_id}/abandon").status_code == 403
    assert as_staff(site, EDITOR).post(f"/staff/runs/{run_id}/abandon", {"confirm": "yes"}).status_code == 403
    unconfirmed = admin.post(f"/staff/runs/{run_id}/abandon")
    assert unconfirmed.status_code == 400 and "tick the box to confirm" in unconfirmed.text
    assert statuses(site, run_id) == dict.fromkeys(READERS, "pending")
    assert admin.post(f"/staff/runs/{run_id}/abandon", {"confirm": "yes"}).status_code == 303
    assert statuses(site, run_id) == dict.fromkeys(READERS, "skipped")
    with session_factory(site.engine)() as db:
        assert db.get(SendRun, run_id).status == RunStatus.ABANDONED
    page = admin.get(f"/staff/runs/{run_id}").text
    assert "abandoned; 3 deliveries skipped" in page and 'id="abandon-link"' not in page


# --- run now asks first; the approval binds the curation ---------------------------------------


def test_run_now_asks_first_showing_issue_readers_and_approval(site):
    """Review mode: the confirmation says which issue, to how many readers, and that it is not
    approved (so there is nothing to send); approved, it sends that issue as curated; an edit
    of the curation after the approval withdraws it, and the console says so."""
    with ScheduleService(site.config, site.engine, clock=site.clock) as service:
        service.add("thursday", weekly="thu 10:00", mode="review")
    admin = as_staff(site, ADMIN)
    upcoming = "2026-11-19"  # the site's clock is a Wednesday
    page = admin.get("/staff/schedules/thursday/run-now").text
    assert re.search(r'id="run-now-issue">2026-11-19 \(due Thu 19 Nov', page)
    assert '<dd id="run-now-readers">3</dd>' in page
    assert "not approved" in page and 'id="run-now-held"' in page and 'id="run-now"' not in page
    # Curated, then approved: that version is what the confirmation shows and what goes out.
    curate(site, upcoming, "The curated Thursday.")
    admin.post("/staff/approvals", {"schedule": "thursday", "action": "approve", "back": "staff.issue"})
    issue_page = admin.get("/staff/issue").text
    assert 'id="approval-state">Approval of this issue: <strong>approved by admin@example.org' in issue_page
    # Edited after the approval: withdrawn, on the issue page and in the confirmation.
    curate(site, upcoming, "Edited after the approval.")
    issue_page = html.unescape(admin.get("/staff/issue").text)
    assert "Approval of this issue: <strong>approval withdrawn: the curation was edited" in issue_page
    assert "<strong>approval withdrawn</strong>" in issue_page
    page = admin.get("/staff/schedules/thursday/run-now").text
    assert "approval withdrawn" in page and 'id="run-now"' not in page
    admin.post("/staff/approvals", {"schedule": "thursday", "action": "approve", "back": "staff.issue"})
    page = admin.get("/staff/schedules/thursday/run-now").text
    assert "approved by admin@example.org" in page and 'id="run-now"' in page
    assert run_now(admin, "thursday").status_code == 303
    wait_for_console_sends(site)
    assert firings(site) == [("thursday", "manual", "sent")]
    sent = sent_texts(site)
    assert set(sent) == set(READERS) and all("Edited after the approval." in t for t in sent.values())
    with session_factory(site.engine)() as db:
        assert db.scalar(select(Firing.issue).where(Firing.kind == "manual")) == upcoming


def test_a_stale_confirmation_sends_nothing(site):
    admin = as_staff(site, ADMIN)
    admin.get("/staff/schedules")
    resp = admin.post("/staff/schedules/weekly/run-now", {"confirm": "yes", "issue": "2020-01-02"})
    assert resp.status_code == 409 and "Nothing was sent: the upcoming issue is now" in resp.text
    assert firings(site) == []


def test_the_dashboard_shows_an_alert_until_someone_acknowledges_it(site):
    with ScheduleService(site.config, site.engine, clock=site.clock) as service:
        service.add("friday-review", weekly="fri 09:00", mode="review")
    friday = datetime(2026, 11, 20, 14, tzinfo=UTC)
    fire(site.config, site.engine, "friday-review", friday, scheduled_for=friday)  # held
    editor = as_staff(site, EDITOR)
    page = editor.get("/staff/").text
    banner = re.search(r'<div class="alert-banner" role="alert" id="alert-(\d+)">(.*?)</div>', page, re.S)
    assert banner is not None and "The issue of 2026-11-20 is held (schedule friday-review)" in banner.group(
        2
    )
    assert "digest schedule approve friday-review --issue 2026-11-20" in banner.group(2)
    resp = editor.post(f"/staff/alerts/{banner.group(1)}/acknowledge")
    assert resp.status_code == 303
    assert "alert-banner" not in as_staff(site, ADMIN).get("/staff/").text  # gone for everyone


def curate(site, issue_date: str, intro: str) -> None:  # noqa: ANN001
    from datetime import date

    from digest.curate import Draft
    from digest.drafts import save_draft

    with session_factory(site.engine).begin() as db:
        save_draft(
            db, Draft(issue_date=date.fromisoformat(issue_date), intro=intro), by=EDITOR, at=site.clock()
        )


def sent_texts(site) -> dict[str, str]:  # noqa: ANN001
    folder = site.config.resolve_path(site.config.transport.outbox_dir)
    found = {}
    for path in sorted(folder.glob("*.eml")):
        msg = message_from_bytes(path.read_bytes(), policy=policy.default)
        to = str(msg["To"]).split("<")[-1].rstrip(">")
        if to in READERS:
            found[to] = msg.get_body(("plain",)).get_content()
    return found


def test_the_run_page_shows_refusals_of_our_sending_as_an_alarm(site):
    """A blocklisting reported about a run's message: the run's page says so, for staff to fix;
    the reader it was sent to stays active (subscribers.reports)."""
    run_id = finished_run_with_problems(site)
    with session_factory(site.engine)() as db:
        cy = store.get_by_email(db, "cy@example.org").id
        detail = f"5.7.1 blocked (run {run_id}): 550 5.7.1 client blocked using zen.spamhaus.org"
        db.add(
            BounceEvent(
                run_id=run_id,
                subscriber_id=cy,
                kind="refused",
                reason="blocked",
                detail=detail,
                at=site.clock(),
            )
        )
        db.commit()
    page = as_staff(site, EDITOR).get(f"/staff/runs/{run_id}").text
    alarms = re.search(
        r'<section aria-labelledby="alarms-title" id="run-alarms">.*?</section>', page, re.S
    ).group(0)
    assert "blocked by example.org: 1 message refused; our sending IP or host is refused" in alarms
    assert "zen.spamhaus.org" in alarms
    assert "1 bounced, 0 complained, 1 refused" in page
