"""What every view works with, made once per app by `create_app` and read with `site()`.

Views are top-level functions with no closure state: they find the config, the database, the
clock and the console's services here (`current_app.extensions`), and the staff member of the
request in `g.staff` (see `guards`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from flask import current_app
from sqlalchemy import Engine
from sqlalchemy.orm import sessionmaker

from digest.config import Config
from digest.personal import Links
from digest.transports.base import Transport
from digest.web import console
from digest.web.signup import Signups
from subscribers.tokens import Tokens

SITE_KEY = "digest.site"
JOBS_KEY = "digest.console.jobs"  # app.extensions: the console's background sends (tests join them)
SCHEDULES_KEY = "digest.console.schedules"  # app.extensions: console.ConsoleSchedules
MAIL_KEY = "digest.mail"  # app.extensions: the sign-up queue (`.join()` waits for it)


@dataclass
class Site:
    config: Config
    engine: Engine
    sessions: sessionmaker
    clock: Callable[[], datetime]
    tokens: Tokens
    links: Links
    transport_factory: Callable[[], Transport]
    schedules: console.ConsoleSchedules
    jobs: console.BackgroundJobs
    workspace: console.Workspace
    signups: Signups
    # Check "is a console send running?", change the ledger, start the thread: one request at a time.
    starting: threading.Lock = field(default_factory=threading.Lock)


def make_site(
    config: Config,
    engine: Engine,
    *,
    sessions: sessionmaker,
    clock: Callable[[], datetime],
    tokens: Tokens,
    transport_factory: Callable[[], Transport],
    signups: Signups,
) -> Site:
    schedules = console.ConsoleSchedules(config, engine, clock=clock, transport=transport_factory)
    return Site(
        config=config,
        engine=engine,
        sessions=sessions,
        clock=clock,
        tokens=tokens,
        links=Links(config.newsletter.base_url),
        transport_factory=transport_factory,
        schedules=schedules,
        jobs=console.BackgroundJobs(clock),
        workspace=console.Workspace(config, engine, clock, schedules),
        signups=signups,
    )


def site() -> Site:
    """The app's Site, inside a request (or an app context)."""
    return current_app.extensions[SITE_KEY]
