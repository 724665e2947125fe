"""Approvals on the schedules' views (digest/web/schedules.py) through Flask's test client with the
real app: the optional four-eyes rule, `[schedule] approver_must_differ`. The rest of the
schedule pages are tested in test_web_staff_schedules.py."""

from __future__ import annotations

import dataclasses
import html
import re
from datetime import date, timedelta

import pytest
from staff_helpers import (  # noqa: F401  (cheap_password_hashes is an autouse fixture)
    ADMIN,
    EDITOR,
    ISSUE_DAY,
    ORIGIN,
    as_staff,
    cheap_password_hashes,
    close_site,
    make_site,
    staff_config,
)

from digest.curate import Draft
from digest.db import session_factory
from digest.drafts import save_draft
from digest.errors import ScheduleError
from digest.schedule import Approval, ScheduleService

THURSDAY = str(date.fromisoformat(ISSUE_DAY) - timedelta(days=1))  # the next issue of "thursday"


def four_eyes_site(tmp_path, *, on: bool):
    config = staff_config(ORIGIN, tmp_path, outbox=True)
    schedule = dataclasses.replace(config.schedule, approver_must_differ=on)
    s = make_site(dataclasses.replace(config, schedule=schedule))
    with ScheduleService(s.config, s.engine, clock=s.clock) as service:
        service.add("thursday", weekly="thu 10:00", mode="review")
    with session_factory(s.engine).begin() as db:  # the editor curated Thursday's issue
        save_draft(db, Draft(date.fromisoformat(THURSDAY), intro="Edited."), by=EDITOR, at=s.clock())
    return s


@pytest.fixture
def site(tmp_path):
    s = four_eyes_site(tmp_path, on=True)
    yield s
    close_site(s)


def flash(page: str) -> str:
    found = re.findall(r'<p class="(?:notice|error)" role="(?:status|alert)">(.*?)</p>', page, re.S)
    return html.unescape(" ".join(found))


def approval(site) -> Approval | None:
    with session_factory(site.engine)() as db:
        return db.get(Approval, THURSDAY)


APPROVE = {"schedule": "thursday", "action": "approve", "back": "staff.issue"}


def test_the_last_editor_of_the_curation_cannot_approve_it_someone_else_can(site):
    editor = as_staff(site, EDITOR)
    assert editor.post("/staff/approvals", APPROVE).status_code == 303
    said = flash(editor.get("/staff/issue").text)
    assert f"Nothing was changed: {EDITOR} last edited the curation of the issue of {THURSDAY}" in said
    assert "approver_must_differ" in said and approval(site) is None

    admin = as_staff(site, ADMIN)
    assert admin.post("/staff/approvals", APPROVE).status_code == 303
    assert f"is approved by {ADMIN}" in flash(admin.get("/staff/issue").text)
    assert approval(site).approved_by == ADMIN


def test_without_the_rule_the_editor_approves_their_own_curation(tmp_path):
    s = four_eyes_site(tmp_path, on=False)
    try:
        assert as_staff(s, EDITOR).post("/staff/approvals", APPROVE).status_code == 303
        assert approval(s).approved_by == EDITOR
    finally:
        close_site(s)


def test_the_command_line_keeps_the_rule_too(site):
    from digest import operations

    with ScheduleService(site.config, site.engine, clock=site.clock) as service:
        with pytest.raises(ScheduleError, match="approver_must_differ"):
            operations.approve(service, THURSDAY, EDITOR)
        assert operations.approve(service, "thursday", "chief (cli)").approved_by == "chief (cli)"
