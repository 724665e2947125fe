"""Local files under the same size cap as HTTP bodies (`[collect] fetch_max_bytes`).

A feed saved to disk is no safer than one fetched: a 42 MB file must not be read whole (it
became 10,001 articles and 300 MB of memory). The cap is checked against the file's size and
again while reading, since a file can grow between the two.
"""

from __future__ import annotations

import os
from pathlib import Path

from digest.sources.http import DEFAULT_MAX_BYTES


class FileTooBig(Exception):
    """The file is over the cap; nothing of it was parsed."""

    def __init__(self, path: Path, size: int, cap: int) -> None:
        self.path, self.size, self.cap = path, size, cap
        super().__init__(f"{path} is {size:,} bytes, over the {cap:,}-byte cap ([collect] fetch_max_bytes)")


def read_capped(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The file's bytes, or FileTooBig when it is larger than `max_bytes`. OSError as open() raises it."""
    with path.open("rb") as file:
        size = os.fstat(file.fileno()).st_size
        if size > max_bytes:
            raise FileTooBig(path, size, max_bytes)
        data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise FileTooBig(path, max(size, len(data)), max_bytes)
    return data


def too_big_warning(name: str, err: FileTooBig) -> str:
    return f"{name}: {err}; skipped"
