"""Every error the project raises.

Configuration errors sit outside `DigestError` on purpose: code that logs a failed
send and carries on must never swallow a broken configuration.
Each transport error says whether retrying is safe.
"""

from __future__ import annotations


class ConfigError(Exception):
    """digest.toml is missing, has an unknown key, or a bad value. Not retryable: fix the file."""

    def __init__(self, file: str, key: str | None, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {problem}")


class DigestError(Exception):
    """Root of the errors raised while running a digest."""


class SourceError(DigestError):
    """A source could not be read. The run goes on with the other sources."""

    def __init__(self, source: str, reason: str) -> None:
        self.source = source
        self.reason = reason
        super().__init__(f"{source}: {reason}")


class RunBusyError(DigestError):
    """A send run cannot start or go on: another is unfinished, or another process holds it.

    Safe to retry later; nothing was sent by the process that got it.
    """

    def __init__(self, run_id: str, reason: str) -> None:
        self.run_id = run_id
        super().__init__(f"send run {run_id}: {reason}")


class ConsoleBusyError(DigestError):
    """A send started from the staff console (run now, send again) is still running.

    Safe to retry once it has finished; nothing was started or changed.
    """


class TemplateError(DigestError):
    """A template failed to load or render; the message names the template file and line."""


class TransportError(DigestError):
    """A transport failed to hand over a message.

    Carries which transport, which recipient, and the server's status and text.
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        transport: str = "",
        recipient: str = "",
        status: int | str | None = None,
        response: str = "",
    ) -> None:
        self.transport = transport
        self.recipient = recipient
        self.status = status
        self.response = response
        parts = [message]
        if transport:
            parts.append(f"transport={transport}")
        if recipient:
            parts.append(f"recipient={recipient}")
        if status is not None:
            parts.append(f"status={status}")
        if response:
            parts.append(f"response={response[:200]!r}")
        super().__init__(" ".join(parts))


class TemporaryError(TransportError):
    """4xx, 421, 429, a dropped connection before the server answered: safe to retry later.

    `retry_after` is the wait in seconds the server asked for (Retry-After), if it did;
    `rate_limited` says the refusal was a rate limit, which the run records.
    """

    retryable = True

    def __init__(
        self, message: str, *, retry_after: float | None = None, rate_limited: bool = False, **kwargs: object
    ) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after
        self.rate_limited = rate_limited


class PermanentError(TransportError):
    """5xx or a refused recipient: do not retry; record it (and suppress on a hard bounce)."""


class UnknownOutcomeError(TransportError):
    """The connection was lost after the message was handed over: it may have been delivered.

    Not retried blindly, or the reader could get two copies.
    """


class InvalidAddressError(DigestError, ValueError):
    """An e-mail address failed validation."""


class ScheduleError(DigestError, ValueError):
    """A schedule request is wrong (bad trigger text, unknown or duplicate name). Not retryable:
    fix the input named in the message."""
