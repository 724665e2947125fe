"""Fixtures shared across the suite: real servers on 127.0.0.1, real database files."""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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


# --- CI: a skip is a failure, unless tests/skip_allowlist.txt says why it may skip -------------

ALLOWLIST = Path(__file__).with_name("skip_allowlist.txt")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def read_allowlist(path: Path = ALLOWLIST) -> list[tuple[str, str]]:
    """(test id pattern, reason) per line `PATTERN  # reason`; a line without a reason is an error."""
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1) if path.exists() else []:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pattern, _, reason = line.partition("#")
        if not pattern.strip() or not reason.strip():
            raise pytest.UsageError(
                f"{path}:{number}: expected 'TEST_ID_PATTERN  # why it may skip', got {line!r}"
            )
        entries.append((pattern.strip(), reason.strip()))
    return entries


def allowed_skip(nodeid: str, allowlist: list[tuple[str, str]]) -> bool:
    return any(fnmatch.fnmatchcase(nodeid, pattern) for pattern, _ in allowlist)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_ALLOW] = read_allowlist() if in_ci() else []
    config.stash[_SKIPPED_COLLECTING] = []
    _start_time_shift(config)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> pytest.TestReport:
    report = yield
    # xfails are reported as skipped too (wasxfail set): they stay as they are.
    xfail = hasattr(report, "wasxfail")
    if (
        in_ci()
        and report.skipped
        and not xfail
        and not allowed_skip(report.nodeid, item.config.stash[_ALLOW])
    ):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = (
            f"skipped in CI (CI={os.environ.get('CI')}): {reason}\n"
            f"Install what it needs, or add it to {ALLOWLIST.name} with the reason it may skip."
        )
    return report


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:  # a whole module skipped (allow_module_level, importorskip at the top)
        _skipped_while_collecting.append(report)


def pytest_sessionstart(session: pytest.Session) -> None:
    _skipped_while_collecting.clear()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    allow = session.config.stash[_ALLOW]
    bad = [r for r in _skipped_while_collecting if in_ci() and not allowed_skip(r.nodeid, allow)]
    if bad and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    session.config.stash[_SKIPPED_COLLECTING] = bad


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    for report in config.stash.get(_SKIPPED_COLLECTING, []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        terminalreporter.write_line(f"FAILED (skipped in CI) {report.nodeid}: {reason}", red=True)
    shift = config.stash.get(_SHIFT, None)
    if shift:
        terminalreporter.write_line(f"process clock moved {shift:+d} days (DIGEST_TEST_TIME_SHIFT_DAYS)")


_skipped_while_collecting: list[pytest.CollectReport] = []
_ALLOW = pytest.StashKey[list[tuple[str, str]]]()
_SKIPPED_COLLECTING = pytest.StashKey[list[pytest.CollectReport]]()
_SHIFT = pytest.StashKey[int]()


# --- the suite on another date: DIGEST_TEST_TIME_SHIFT_DAYS=365 moves the process clock ----------


def _start_time_shift(config: pytest.Config) -> None:
    """With DIGEST_TEST_TIME_SHIFT_DAYS=N, the whole session runs with the process clock N days
    from the real now, ticking (time-machine): a test that leans on a fixed calendar day, or mixes
    the wall clock with an injected one, fails. Subprocesses do not inherit it (see the Makefile)."""
    days = os.environ.get("DIGEST_TEST_TIME_SHIFT_DAYS", "").strip()
    if not days:
        return
    import time_machine

    try:
        shift = int(days)
    except ValueError:
        raise pytest.UsageError(
            f"DIGEST_TEST_TIME_SHIFT_DAYS must be a whole number of days, got {days!r}"
        ) from None
    traveller = time_machine.travel(datetime.now(UTC) + timedelta(days=shift), tick=True)
    traveller.start()
    config.stash[_SHIFT] = shift
    config.add_cleanup(traveller.stop)
