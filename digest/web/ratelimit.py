"""A sliding-window counter per key (client address), in memory.

Per process: with several worker processes each keeps its own count, so the effective limit
is the configured one times the workers. The per-address limit on confirmation mails is kept
in the database instead (see `subscribers.signup`) and holds across processes.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

Clock = Callable[[], float]


class RateLimiter:
    def __init__(self, limit: int, window_seconds: float, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.window = window_seconds
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def allow(self, key: str) -> bool:
        """Count one attempt for `key`; False once it has used up its attempts in the window."""
        now = self._clock()
        with self._lock:
            hits = self._hits.setdefault(key, deque())
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return False
            hits.append(now)
            if len(self._hits) > 10_000:  # bound memory: forget keys with no recent hits
                self._hits = {k: v for k, v in self._hits.items() if v and v[-1] > now - self.window}
            return True
