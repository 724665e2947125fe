"""Failures counted per key (a client address, an account), in the app's Flask-Limiter storage.

Flask-Limiter's decorators count every request; some checks must count only failures (a wrong
webhook signature, a wrong password) and refuse once there were too many. `FailureCounter`
uses the same storage (memory, or Redis with `[web] limiter_url`), so the counts hold across
processes exactly as the per-route limits do; `prefix` keeps two newsletters on one Redis apart.
"""

from __future__ import annotations

import time

from flask_limiter import Limiter
from limits import RateLimitItem, parse_many


class FailureCounter:
    """`limit` (e.g. "10 per 10 minutes") failures per key in `scope`, then `blocked` is true."""

    def __init__(self, limiter: Limiter, limit: str, *, scope: str, prefix: str) -> None:
        self.limiter = limiter
        self.items: list[RateLimitItem] = parse_many(limit)
        self.ids = (prefix, scope)

    def blocked(self, key: str) -> bool:
        """Whether `key` used up its failures (a check; it counts nothing)."""
        return any(not self.limiter.limiter.test(item, *self.ids, key) for item in self.items)

    def failed(self, key: str) -> None:
        for item in self.items:
            self.limiter.limiter.hit(item, *self.ids, key)

    def retry_after(self, key: str) -> int:
        """Whole seconds until `key` may try again (0: now)."""
        waits = [
            self.limiter.limiter.get_window_stats(item, *self.ids, key).reset_time - time.time()
            for item in self.items
            if not self.limiter.limiter.test(item, *self.ids, key)
        ]
        return int(max(waits)) + 1 if waits else 0
