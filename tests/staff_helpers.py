"""A staff console on a real SQLite file (or the given engine), for the Flask-client and Chromium tests."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import Engine
from subscriber_helpers import TEST_SECRET

from digest.config import Config, config_from_dict
from digest.db import make_engine, migrate, session_factory
from digest.web import create_app, staff_store
from digest.web.site import JOBS_KEY, SCHEDULES_KEY
from digest.web.staff_store import Role

# A Wednesday: the next send by [schedule] (fri 09:00 New York) is Friday 20 November.
WEDNESDAY = datetime(2026, 11, 18, 15, tzinfo=UTC)
ISSUE_DAY = "2026-11-20"
PASSWORD = "correct horse battery staple"
EDITOR = "editor@example.org"
ADMIN = "admin@example.org"
ORIGIN = "http://localhost"  # the base_url of the Flask-client tests
CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Clock:
    now: datetime = WEDNESDAY

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Site:
    config: Config
    engine: Engine
    app: Any
    clock: Clock
    outbox: list = field(default_factory=list)


def staff_config(
    base_url: str,
    folder: Path,
    *,
    smtp: tuple[str, int] | None = None,
    outbox: bool = False,
    **web: Any,
) -> Config:
    data: dict[str, Any] = {
        "newsletter": {"name": "Statecraft Weekly", "base_url": base_url},
        "database": {"url": f"sqlite:///{folder / 'console.db'}"},
        # A send writes the "view in browser" page: into the test's folder, not the repository.
        "web": {
            "primary_color": "#1d3557",
            "accent_color": "#b5322e",
            "archive_dir": str(folder / "archive"),
            **web,
        },
    }
    if smtp is not None:
        data["transport"] = {"kind": "smtp", "smtp": {"host": smtp[0], "port": smtp[1]}}
    elif outbox:
        data["transport"] = {"kind": "outbox", "outbox_dir": str(folder / "outbox")}
    return config_from_dict(data)


def make_site(config: Config, engine: Engine | None = None) -> Site:
    engine = engine or make_engine(config.database.url)
    migrate(engine)
    with session_factory(engine).begin() as s:
        staff_store.add_account(s, EDITOR, PASSWORD, Role.EDITOR)
        staff_store.add_account(s, ADMIN, PASSWORD, Role.ADMIN)
    clock = Clock()
    outbox: list = []
    app = create_app(
        config, engine, secret_key=TEST_SECRET, send_mail=outbox.append, background_mail=False, clock=clock
    )
    return Site(config=config, engine=engine, app=app, clock=clock, outbox=outbox)


@pytest.fixture(autouse=True)
def cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 at its cheapest: the defaults cost ~0.5 s a hash on the test machine. Production
    keeps argon2-cffi's defaults; these tests are about the console, not the hash."""
    monkeypatch.setattr(staff_store, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


def csrf(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def wait_for_console_sends(site: Site) -> None:
    """Join the threads the console started (run now, send again): no sleeping, no timing."""
    site.app.extensions[JOBS_KEY].join()


def close_site(site: Site) -> None:
    """Stop what the console started (its ScheduleService's scheduler), then the engine."""
    wait_for_console_sends(site)
    site.app.extensions[SCHEDULES_KEY].close()
    site.engine.dispose()


class Staff:
    """A browser's worth of cookies, sending the Origin a browser sends."""

    def __init__(self, app) -> None:
        self.client = app.test_client()
        self.token = ""

    def get(self, path, **kw):
        return self.client.get(path, **kw)

    def post(self, path, data=None, *, origin=ORIGIN, token=True, **kw):
        data = dict(data or {})
        if token:
            data.setdefault("csrf_token", self.token)
        headers = kw.pop("headers", {})
        if origin:
            headers["Origin"] = origin
        return self.client.post(path, data=data, headers=headers, **kw)

    def login(self, email, password=PASSWORD):
        self.token = csrf(self.get("/staff/login").text)
        resp = self.post("/staff/login", {"email": email, "password": password})
        if resp.status_code == 303:
            self.token = csrf(self.get("/staff/").text)  # a new session, a new token
        return resp


def as_staff(site, email=EDITOR) -> Staff:
    staff = Staff(site.app)
    assert staff.login(email).status_code == 303
    return staff


def run_now(admin: Staff, name: str) -> Any:
    """Run now as staff do it: the confirmation page, then its form, ticked."""
    page = admin.get(f"/staff/schedules/{name}/run-now").text
    issue = re.search(r'name="issue" value="([0-9-]+)"', page).group(1)
    return admin.post(f"/staff/schedules/{name}/run-now", {"confirm": "yes", "issue": issue})
