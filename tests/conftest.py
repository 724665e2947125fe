"""Fixtures shared across the suite: real servers on 127.0.0.1, real database files."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class SmtpSink:
    """What the in-process SMTP server received, and knobs to make it refuse."""

    host: str
    port: int
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # address -> reply, e.g. "550 no such user"
    data_reply: str | None = None  # e.g. "451 try later"
    drop_after_data: bool = False
    on_message: Callable[[int], None] | None = None  # called with the count after each accepted message


@pytest.fixture
def sink() -> Iterator[object]:
    """A counting SMTP sink (tests/celery_helpers.py) for the distributed-send tests."""
    from celery_helpers import CountingSink

    counting = CountingSink()
    counting.start()
    yield counting
    counting.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpSink]:
    from aiosmtpd.controller import Controller

    sink = SmtpSink(host="127.0.0.1", port=free_port())

    class Handler:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001
            reply = sink.rcpt_replies.get(address)
            if reply:
                return reply
            envelope.rcpt_tos.append(address)
            return "250 OK"

        async def handle_DATA(self, server, session, envelope):  # noqa: ANN001
            if sink.data_reply:
                return sink.data_reply
            sink.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.original_content))
            if sink.on_message is not None:
                sink.on_message(len(sink.messages))
            if sink.drop_after_data:
                # The message was accepted, but the client never hears so.
                server.transport.close()
                return "250 OK"
            return "250 OK queued"

    controller = Controller(Handler(), hostname=sink.host, port=sink.port)
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


def make_site(folder: Path, sink: SmtpSink, subscribers: dict[str, dict]) -> Path:
    """A digest.toml sending over SMTP to `sink`, with a SQLite list of `subscribers` (email -> fields)."""
    from digest.config import load_config
    from digest.db import create_schema, make_engine, session_factory
    from subscribers import store

    path = folder / "digest.toml"
    path.write_text(
        f"""
[newsletter]
name = "RS Weekly"
sender = "RS Weekly <news@rs.example>"
base_url = "https://news.rs.example"
[transport]
kind = "smtp"
[transport.smtp]
host = "{sink.host}"
port = {sink.port}
[database]
url = "sqlite:///subscribers.db"
""",
        encoding="utf-8",
    )
    config = load_config(path)
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    create_schema(engine)
    with session_factory(engine)() as s:
        for email, fields in subscribers.items():
            store.add_subscriber(s, email, **fields)
        s.commit()
    engine.dispose()
    return path
