"""A newsletter site for the scheduler tests: outbox transport, real SQLite file, a few readers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from digest.config import Config, load_config
from digest.db import make_engine, migrate, session_factory
from subscribers import store

READERS = ("ada@example.org", "bo@example.org", "cy@example.org")


def make_config(folder: Path, extra: str = "") -> Config:
    path = folder / "digest.toml"
    path.write_text(
        f"""
[newsletter]
name = "RS Weekly"
sender = "RS Weekly <news@rs.example>"
base_url = "https://news.rs.example"
timezone = "America/New_York"
[transport]
kind = "outbox"
outbox_dir = "outbox"
[database]
url = "sqlite:///digest.db"
[web]
archive_dir = "archive"
{extra}
""",
        encoding="utf-8",
    )
    return load_config(path)


def add_readers(engine: Engine) -> None:
    with session_factory(engine)() as session:
        for address in READERS:
            store.add_subscriber(session, address)
        session.commit()


def make_site(folder: Path, extra: str = "") -> tuple[Config, Engine]:
    config = make_config(folder, extra)
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    migrate(engine)
    add_readers(engine)
    return config, engine


def outbox_files(config: Config) -> list[Path]:
    folder = config.resolve_path(config.transport.outbox_dir)
    return sorted(folder.glob("*.eml")) if folder.is_dir() else []


def digests_sent(config: Config) -> list[Path]:
    """The issues in the outbox (review mails and alerts to staff left out)."""
    return [p for p in outbox_files(config) if not p.name.startswith(("review-", "alert-"))]


def alert_mails(config: Config) -> list[Path]:
    return [p for p in outbox_files(config) if p.name.startswith("alert-")]


def review_mails(config: Config) -> list[Path]:
    return [p for p in outbox_files(config) if p.name.startswith("review-")]


class Clock:
    """An injected clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


ClockFn = Callable[[], datetime]
