"""The run pages (digest/web/runs.py) through Flask's test client, with the real app: a send the
console started, paused from the run's page while one process sends it, then resumed."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
from collections.abc import Sequence
from datetime import date, datetime, time

import pytest
from sqlalchemy import select
from staff_helpers import (  # noqa: F401  (cheap_password_hashes is an autouse fixture)
    ADMIN,
    EDITOR,
    ISSUE_DAY,
    ORIGIN,
    Site,
    as_staff,
    cheap_password_hashes,
    close_site,
    run_now,
    staff_config,
    wait_for_console_sends,
)
from subscriber_helpers import TEST_SECRET

from digest.db import make_engine, migrate, session_factory
from digest.models import DeliveryStatus
from digest.send import Delivery, RunStatus, SendRun
from digest.transports.base import Outbound, Outcome
from digest.transports.outbox import OutboxTransport
from digest.web import create_app, staff_store
from digest.web.staff_store import Role
from subscribers import store

READERS = tuple(f"reader{n}@example.org" for n in range(10))


class HeldOutbox(OutboxTransport):
    """The outbox transport, whose first hand-over waits until the test lets it go: the send is
    then certainly under way when staff press Pause."""

    def __init__(self, folder, started: threading.Event, go_on: threading.Event) -> None:
        super().__init__(folder)
        self.started, self.go_on = started, go_on

    def send_batch(self, batch: Sequence[Outbound]) -> list[Outcome]:
        if not self.go_on.is_set():
            self.started.set()
            assert self.go_on.wait(timeout=60), "the test never let the send go on"
        return super().send_batch(batch)


@pytest.fixture
def held():
    return threading.Event(), threading.Event()


@pytest.fixture
def site(tmp_path, held):
    config = staff_config(ORIGIN, tmp_path, outbox=True)
    # One row per claim: the pause lands between batches, with rows still pending.
    config = dataclasses.replace(config, transport=dataclasses.replace(config.transport, batch_size=1))
    engine = make_engine(config.database.url)
    migrate(engine)
    with session_factory(engine).begin() as db:
        staff_store.add_account(db, EDITOR, "correct horse battery staple", Role.EDITOR)
        staff_store.add_account(db, ADMIN, "correct horse battery staple", Role.ADMIN)
        for address in READERS:
            store.add_subscriber(db, address, source="cli")
    from staff_helpers import Clock

    clock = Clock()
    folder = config.resolve_path(config.transport.outbox_dir)
    app = create_app(
        config,
        engine,
        secret_key=TEST_SECRET,
        send_mail=[].append,
        background_mail=False,
        clock=clock,
        transport_factory=lambda: HeldOutbox(folder, *held),
    )
    s = Site(config=config, engine=engine, app=app, clock=clock)
    yield s
    held[1].set()
    close_site(s)


def statuses(site) -> dict[str, int]:
    with session_factory(site.engine)() as db:
        counts: dict[str, int] = {}
        for row in db.scalars(select(Delivery)):
            counts[DeliveryStatus(row.status).value] = counts.get(DeliveryStatus(row.status).value, 0) + 1
        return counts


def the_run(site) -> SendRun:
    with session_factory(site.engine)() as db:
        (run,) = db.scalars(select(SendRun))
        return run


def test_pause_a_send_in_this_process_from_its_page_then_resume_it(site, held):
    started, go_on = held
    admin = as_staff(site, ADMIN)
    admin.get("/staff/schedules")  # seeds the "weekly" schedule from [schedule]
    assert run_now(admin, "weekly").status_code == 303
    assert started.wait(timeout=60), "the console's send never started"
    run = the_run(site)
    assert run.status == RunStatus.RUNNING

    editor = as_staff(site, EDITOR)  # editors may pause: it loses nothing
    page = editor.get(f"/staff/runs/{run.id}").text
    assert 'id="pause-run"' in page and "Sent by one process" in page
    assert editor.post(f"/staff/runs/{run.id}/pause").status_code == 303
    page = editor.get(f"/staff/runs/{run.id}").text
    assert "pauses at its next batch" in page and f"Pause asked by {EDITOR}" in page
    assert 'id="pause-run"' not in page

    go_on.set()
    wait_for_console_sends(site)
    run = the_run(site)
    assert (run.status, run.paused_reason, run.pause_requested) == (
        RunStatus.PAUSED,
        f"paused by {EDITOR}",
        None,
    )
    counts = statuses(site)
    assert counts.get("pending", 0) > 0 and counts.get("sent", 0) > 0, counts
    assert sum(counts.values()) == len(READERS)

    page = editor.get(f"/staff/runs/{run.id}").text
    assert 'id="resume-run"' in page and f"Its {counts['pending']} pending deliveries go out" in page
    assert editor.post(f"/staff/runs/{run.id}/resume").status_code == 303
    assert "Resumed at" in editor.get(f"/staff/runs/{run.id}").text
    wait_for_console_sends(site)
    assert statuses(site) == {"sent": len(READERS)}
    assert the_run(site).status == RunStatus.FINISHED
    folder = site.config.resolve_path(site.config.transport.outbox_dir)
    # Each reader once, none twice; the pause also mailed staff (alert-*.eml, digest.alerts).
    issues = [p for p in folder.glob("*.eml") if not p.name.startswith("alert-")]
    assert len(issues) == len(READERS)
    assert [p.name for p in folder.glob("alert-*.eml")], "staff were not told of the pause"

    page = editor.get(f"/staff/runs/{run.id}").text
    assert 'id="resume-run"' not in page and 'id="pause-run"' not in page
    assert editor.post(f"/staff/runs/{run.id}/resume").status_code == 303
    assert "is finished: nothing to resume" in editor.get(f"/staff/runs/{run.id}").text


def test_pause_and_resume_need_a_login_the_csrf_token_and_this_origin(site):
    editor = as_staff(site, EDITOR)
    assert editor.post("/staff/runs/nope/pause", origin="https://evil.example").status_code == 403
    assert editor.post("/staff/runs/nope/resume", token=False).status_code == 400
    assert editor.post("/staff/runs/nope/resume").status_code == 404
    anonymous = site.app.test_client()
    assert anonymous.post("/staff/runs/nope/resume", headers={"Origin": ORIGIN}).status_code in (303, 400)


def test_skipped_readers_and_why_on_the_run_page_and_in_runs_show(site, held, tmp_path, capsys):
    """The editor leaves out Africa's every story; the reader who chose only Africa is skipped,
    and the run's page and `digest runs show` say who and why."""

    from rich.console import Console

    from digest.cli import main
    from digest.curate import Draft
    from digest.drafts import save_draft
    from digest.pipeline import prepare_issue, send_issue

    held[1].set()  # nothing held in this test
    friday = datetime.combine(date.fromisoformat(ISSUE_DAY), time(9), tzinfo=site.config.tz)  # the send
    with session_factory(site.engine).begin() as db:
        store.add_subscriber(db, "only-africa@example.org", regions={"Africa"}, source="cli")
    africa = [
        t.url
        for s in prepare_issue(site.config, friday).digest.sections
        if s.region == "Africa"
        for t in s.teasers
    ]
    with session_factory(site.engine).begin() as db:
        save_draft(db, Draft(date.fromisoformat(ISSUE_DAY), excluded=frozenset(africa)), by=EDITOR, at=friday)
    folder = site.config.resolve_path(site.config.transport.outbox_dir)
    outcome = send_issue(
        site.config,
        site.engine,
        OutboxTransport(folder),
        issue=prepare_issue(site.config, friday),
        console=Console(quiet=True),
    )
    run_id = outcome.report.run_id
    page = as_staff(site, EDITOR).get(f"/staff/runs/{run_id}").text
    reasons = re.search(r'<ul class="report" id="skipped-reasons">(.*?)</ul>', page, re.S).group(1)
    assert "<strong>1</strong> — no articles this week in the chosen regions" in reasons
    assert re.search(
        r'<td data-label="Address">only-africa@example.org</td><td data-label="Why">no articles', page
    )

    toml = tmp_path / "digest.toml"
    toml.write_text(f'[database]\nurl = "{site.config.database.url}"\n', encoding="utf-8")
    capsys.readouterr()
    assert main(["-c", str(toml), "runs", "show", run_id]) == 0
    out = capsys.readouterr().out
    assert "Skipped readers, and why:" in out and "1 — no articles this week in the chosen regions" in out
    assert "only-africa@example.org" in out
    assert main(["-c", str(toml), "runs", "show", run_id, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["skipped_reasons"] == {"no articles this week in the chosen regions": 1}
    assert record["skipped"] == [
        {"email": "only-africa@example.org", "reason": "no articles this week in the chosen regions"}
    ]
