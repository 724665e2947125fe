"""The outbox transport: one .eml file per message in a folder, for demos, previews and tests.

Files are named by the idempotency key, so handing the same message over twice leaves one
file, and are written to a temporary name first so a crash never leaves half a message.
A batch's files are made durable together (one `os.sync()`, then the renames and one fsync
of the folder) before any of them counts as sent: a power cut can lose a batch in flight,
never a message the ledger already calls sent. An fsync per file cost more than the rest
of the send together.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from digest.errors import TemporaryError
from digest.transports.base import Outbound, Outcome, Result, SingleMessageTransport

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")


class OutboxTransport(SingleMessageTransport):
    name = "outbox"
    # Files are cheap to write: large batches keep the ledger's commits and the syncs few.
    max_batch = 100
    concurrency = 2

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def path_for(self, envelope: Outbound) -> Path:
        stem = _UNSAFE.sub("_", f"{envelope.key}-{envelope.recipient}")[:200]
        return self.folder / f"{stem}.eml"

    def _write(self, envelope: Outbound, *, sync: bool) -> tuple[Path, Path]:
        path = self.path_for(envelope)
        tmp = path.with_suffix(".eml.tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(envelope.wire())
                if sync:
                    fh.flush()
                    os.fsync(fh.fileno())
        except OSError as err:
            raise TemporaryError(
                f"cannot write {path}: {err.strerror}", transport=self.name, recipient=envelope.recipient
            ) from err
        return tmp, path

    def deliver(self, envelope: Outbound) -> str:
        """One message on its own (confirmation mails, test copies): fsynced before it counts."""
        tmp, path = self._write(envelope, sync=True)
        os.replace(tmp, path)
        return str(path)

    def send_batch(self, batch: Sequence[Outbound]) -> list[Outcome]:
        written: list[tuple[Outbound, Path, Path]] = []
        outcomes: dict[str, Outcome] = {}
        for outbound in batch:
            self.handing_over(outbound)
            try:
                tmp, path = self._write(outbound, sync=False)
            except TemporaryError as err:
                outcomes[outbound.key] = Outcome(outbound.key, Result.DEFERRED, str(err))
                continue
            written.append((outbound, tmp, path))
        if written:
            os.sync()  # the batch's data on disk before the names point at it
            for _outbound, tmp, path in written:
                os.replace(tmp, path)
            _fsync_dir(self.folder)
        for outbound, _tmp, path in written:
            outcomes[outbound.key] = Outcome(outbound.key, Result.SENT, str(path), provider_id=str(path))
        result = [outcomes[o.key] for o in batch]
        for outbound, outcome in zip(batch, result, strict=True):
            self.answered(outbound, outcome)
        return result


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
