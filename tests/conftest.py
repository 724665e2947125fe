"""Fixtures shared across the suite: real servers on 127.0.0.1, real database files."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from site_helpers import SmtpSink, free_port, make_site

__all__ = ["SmtpSink", "free_port", "make_site"]  # older imports `from site_helpers import ...` keep working


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
