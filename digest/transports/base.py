"""The one interface every transport implements.

A transport only moves bytes: the message is fully built (headers, MIME, CRLF) before it gets
here. It raises `TemporaryError` (safe to retry), `PermanentError` (do not retry) or
`UnknownOutcomeError` (may have been delivered: never retry blindly).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import TracebackType


@dataclass(frozen=True)
class Envelope:
    sender: str  # envelope sender (bounce address)
    recipient: str
    idempotency_key: str  # stable per (send run, subscriber); providers that accept one get it


class Transport(ABC):
    name: str = "transport"

    def open(self) -> None:  # noqa: B027  optional hook: connect, log in
        """Open connections ahead of a batch. Optional."""

    def close(self) -> None:  # noqa: B027  optional hook
        """Release connections. Optional."""

    @abstractmethod
    def send(self, envelope: Envelope, message: bytes) -> str:
        """Hand over one message; return the server's id or reply for the ledger."""

    def __enter__(self) -> Transport:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
