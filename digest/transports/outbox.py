"""The outbox transport: one .eml file per message in a folder, for demos, previews and tests.

Files are named by the idempotency key, so handing the same message over twice leaves one
file, and are written to a temporary name first so a crash never leaves half a message.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from digest.errors import TemporaryError
from digest.transports.base import Outbound, SingleMessageTransport

_UNSAFE = re.compile(r"[^A-Za-z0-9._@+-]+")


class OutboxTransport(SingleMessageTransport):
    name = "outbox"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)

    def path_for(self, envelope: Outbound) -> Path:
        stem = _UNSAFE.sub("_", f"{envelope.key}-{envelope.recipient}")[:200]
        return self.folder / f"{stem}.eml"

    def deliver(self, envelope: Outbound) -> str:
        message = envelope.wire()
        path = self.path_for(envelope)
        tmp = path.with_suffix(".eml.tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as fh:
                fh.write(message)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as err:
            raise TemporaryError(
                f"cannot write {path}: {err.strerror}", transport=self.name, recipient=envelope.recipient
            ) from err
        return str(path)
