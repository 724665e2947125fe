"""What a send shows while it runs, and how Ctrl-C and SIGTERM stop it cleanly.

On a terminal: a bar with sent, failed, unknown and the rate. Elsewhere (cron, a pipe, a log
file): one line every few seconds, so a log shows the run moving without a line per message.
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from digest.send import ProgressSink

LINE_EVERY_SECONDS = 5.0


def _summary(counts: Counter[str]) -> str:
    return (
        f"sent {counts['sent']}, failed {counts['failed']}, unknown {counts['unknown']}, "
        f"skipped {counts['skipped']}, retrying {counts['deferred']}"
    )


class BarProgress:
    """A rich progress bar; used as a context manager around the send."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.bar = Progress(
            TextColumn("[bold]Sending"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[summary]}"),
            TextColumn("{task.fields[rate]}"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = self.bar.add_task("send", total=None, summary="", rate="")
        self.done_before = 0

    def __enter__(self) -> BarProgress:
        self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()

    def started(self, run_id: str, total: int, done: int) -> None:
        self.done_before = done
        self.bar.update(self.task, total=total, completed=done)

    def advanced(self, counts: Counter[str], rate: float) -> None:
        finished = counts["sent"] + counts["failed"] + counts["unknown"] + counts["skipped"]
        self.bar.update(
            self.task,
            completed=self.done_before + finished,
            summary=_summary(counts),
            rate=f"{rate:.0f}/s",
        )

    def note(self, text: str) -> None:
        self.bar.console.print(f"[yellow]note:[/] {escape(text)}")


class LineProgress:
    """A line every LINE_EVERY_SECONDS (and at the start), for logs."""

    def __init__(
        self, console: Console, *, monotonic: Callable[[], float], every: float = LINE_EVERY_SECONDS
    ) -> None:
        self.console = console
        self.run_id = ""
        self.monotonic = monotonic
        self.every = every
        self.total = 0
        self.done_before = 0
        self.last = float("-inf")

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def started(self, run_id: str, total: int, done: int) -> None:
        self.run_id = run_id
        self.total, self.done_before = total, done
        self.console.print(f"run {self.run_id}: {total - done} of {total} deliveries to go")
        self.last = self.monotonic()

    def advanced(self, counts: Counter[str], rate: float) -> None:
        now = self.monotonic()
        if now - self.last < self.every:
            return
        self.last = now
        finished = counts["sent"] + counts["failed"] + counts["unknown"] + counts["skipped"]
        self.console.print(
            f"run {self.run_id}: {self.done_before + finished}/{self.total} done ({_summary(counts)}), "
            f"{rate:.0f} msg/s"
        )

    def note(self, text: str) -> None:
        self.console.print(f"run {self.run_id}: note: {escape(text)}")


def make_progress(console: Console, *, monotonic: Callable[[], float]) -> BarProgress | LineProgress:
    if console.is_terminal:
        return BarProgress(console)
    return LineProgress(console, monotonic=monotonic)


@contextmanager
def stop_on_signals(stop: threading.Event, console: Console) -> Iterator[threading.Event]:
    """SIGINT and SIGTERM set `stop`: in-flight messages finish and are recorded, then the run
    pauses. A second Ctrl-C gives up at once (rows being handed over become unknown)."""
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals reach only the main thread; the caller stops us through `stop`
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stop.set()
        name = signal.Signals(signum).name
        console.print(f"[yellow]{name}: letting the messages in flight finish, then stopping[/]")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


__all__ = ["BarProgress", "LineProgress", "ProgressSink", "make_progress", "stop_on_signals"]
