"""A sent issue and a live web app on a real SQLite file, for the analytics tests."""

from __future__ import annotations

import email
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

from rich.console import Console
from sqlalchemy import Engine
from werkzeug.serving import make_server

from digest.config import Config, config_from_dict
from digest.db import make_engine, migrate, session_factory
from digest.pipeline import prepare_issue, send_issue
from digest.transports.outbox import OutboxTransport
from subscribers import store

# Signs the links at send time (DIGEST_SECRET_KEY) and checks them in the app: strong enough for
# digest.secret_key's entropy check.
LINK_SECRET = "Qm7Tz2Kx9Vb4Nw1Hc8Jr5Ld3Fs6Gp0YeWa-analytics-tests"
BROWSER = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Version/18.1 Safari/604.1"
)
# What gateways that hide send: a desktop browser's User-Agent (so only the hidden link and the
# burst can give them away).
DISGUISED_SCANNER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/131.0 Safari/537.36"


class Clock:
    """The one clock of the flow: the web app and the scanner filter read it; tests move it."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Sent:
    config: Config
    db_path: Path
    run_id: str
    messages: dict[str, email.message.EmailMessage] = field(default_factory=dict)

    def html(self, address: str) -> str:
        return self.messages[address].get_body(("html",)).get_content()  # type: ignore[union-attr]

    def text(self, address: str) -> str:
        return self.messages[address].get_body(("plain",)).get_content()  # type: ignore[union-attr]


def links_in(html: str, base: str, prefix: str = "/r/") -> list[str]:
    """Every redirect link of a message part (HTML or text), in document order, each once."""
    found = re.findall(re.escape(base + prefix) + r'[^"\s<>]+', html)
    return list(dict.fromkeys(found))


def config_for(base: str, tmp_path: Path, **analytics: object) -> Config:
    return config_from_dict(
        {
            "newsletter": {"name": "Statecraft Weekly", "base_url": base},
            "database": {"url": f"sqlite:///{tmp_path / 'digest.db'}"},
            "transport": {"kind": "outbox", "outbox_dir": str(tmp_path / "outbox")},
            "web": {"archive_dir": str(tmp_path / "archive")},
            "analytics": {"utm_source": "newsletter", "utm_campaign": "digest-{issue}", **analytics},
        }
    )


def send_to(config: Config, tmp_path: Path, readers: dict[str, set[str] | None]) -> Sent:
    """Subscribe `readers` (address: regions, None = every region), send one issue to the outbox."""
    engine = make_engine(config.database.url)
    migrate(engine)
    with session_factory(engine).begin() as s:
        for address, regions in readers.items():
            store.add_subscriber(s, address, regions=regions)
    issue = prepare_issue(config, datetime.now(config.tz), draft=None)
    outbox = tmp_path / "outbox"
    outcome = send_issue(config, engine, OutboxTransport(outbox), issue=issue, console=Console(quiet=True))
    engine.dispose()
    sent = Sent(config, tmp_path / "digest.db", outcome.report.run_id)
    for path in outbox.glob("*.eml"):
        msg = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        sent.messages[str(msg["To"])] = msg  # type: ignore[assignment]
    return sent


@contextmanager
def serving(
    config: Config, db_path: Path, clock: Clock, port: int = 0
) -> Iterator[tuple[str, object, Engine]]:
    """The app on a threaded WSGI server on 127.0.0.1; on exit it stops as a process would:
    counts written, server down, engine closed."""
    from digest.web import create_app

    engine = make_engine(f"sqlite:///{db_path}")
    migrate(engine)
    app = create_app(config, engine, secret_key=LINK_SECRET, clock=clock)
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}", app, engine
    finally:
        server.shutdown()
        thread.join(timeout=5)
        app.extensions["digest.redirects"].close()
        engine.dispose()
