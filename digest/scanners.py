"""Tell mail scanners' clicks from people's, as they arrive, without keeping anything about people.

Mail security gateways (Microsoft Defender Safe Links, Proofpoint, Mimecast, Barracuda) fetch
every link of a message right after delivery. A click is filtered when:
  * it is a HEAD request (browsers following a link send GET);
  * its User-Agent is empty or names a known scanner, crawler or HTTP library;
  * its client fetched the message's hidden link (no person can see or reach it);
  * its client fetched `burst_links` different links of the message within `burst_seconds`.
The last two also mark the client: its other clicks on that message, earlier ones included
(while remembered), are re-counted as filtered. A "client" is one IP address and User-Agent;
a "message" is one issue and variant (links are per variant, never per reader).

What is kept, and for how long: in this process's memory only, per client and message, a
keyed hash of (address, User-Agent) whose key is random per process and never stored, the
times of the links it fetched and which counts it added. An entry is dropped once its client
has been silent for `memory_seconds` (default 10 minutes). Nothing of it reaches the database.

Limits: a scanner that waits longer than the burst window between links, fetches only some of
them, skips the hidden link and sends a browser's User-Agent is counted as a person. Two people
behind one address with the same browser are one client for the burst rule. With several web
processes each sees only the clicks it serves (the burst rule then needs sticky routing by
client address). A client marked a scanner more than `memory_seconds` after its clicks leaves
those clicks counted as human.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Literal

# Substrings (case-insensitive) of User-Agents that are not a person's browser following a link.
SCANNER_AGENTS = (
    "barracuda",
    "mimecast",
    "proofpoint",
    "urldefense",
    "safelinks",
    "safe links",
    "bingpreview",
    "microsoft office existence discovery",
    "ms-office",
    "symantec",
    "trend micro",
    "forcepoint",
    "fortinet",
    "sophos",
    "cisco",
    "ironport",
    "headlesschrome",
    "phantomjs",
    "python-requests",
    "python-urllib",
    "aiohttp",
    "httpx",
    "go-http-client",
    "java/",
    "okhttp",
    "curl/",
    "wget/",
    "libwww",
    "scrapy",
    "bot",
    "crawler",
    "spider",
    "slurp",
    "preview",
    "scanner",
    "facebookexternalhit",
)

Kind = Literal["story", "hidden", "open"]


def is_scanner_agent(user_agent: str) -> bool:
    # Substring tests on the lowered string: a case-insensitive regex alternation of these
    # took about 30 times longer, most of a redirect's time.
    lowered = user_agent.lower()
    return not lowered.strip() or any(a in lowered for a in SCANNER_AGENTS)


@dataclass(frozen=True)
class Verdict:
    count: bool  # False: this client's repeat of a link it already fetched (counted once)
    filtered: bool
    reason: str  # "", "head", "agent", "hidden", "burst", or the reason its client was marked
    reclassify: tuple[Hashable, ...] = ()  # this client's earlier human counts, now filtered


@dataclass
class _Client:
    last: float
    links: dict[Hashable, float] = field(default_factory=dict)  # story links, first fetch time
    seen: set[Hashable] = field(default_factory=set)  # every link and pixel fetched
    human: list[Hashable] = field(default_factory=list)  # count keys added as human
    scanner: str = ""


class ScannerFilter:
    """Judges each click as it comes; `clock` gives seconds (injected: tests need no sleeps)."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        burst_links: int = 4,
        burst_seconds: float = 5.0,
        memory_seconds: float = 600.0,
        max_clients: int = 200_000,
    ) -> None:
        self.clock = clock
        self.burst_links = burst_links
        self.burst_seconds = burst_seconds
        self.memory_seconds = memory_seconds
        self.max_clients = max_clients
        self._key = os.urandom(16)  # never stored: the hashes mean nothing outside this process
        self._clients: dict[tuple[bytes, Hashable], _Client] = {}
        self._purged = clock()
        self._lock = threading.Lock()  # the web app serves requests on several threads

    def client_id(self, address: str, user_agent: str) -> bytes:
        return hashlib.blake2b(f"{address}\0{user_agent}".encode(), key=self._key, digest_size=16).digest()

    def __len__(self) -> int:
        return len(self._clients)

    def judge(
        self,
        *,
        address: str,
        user_agent: str,
        method: str,
        message: Hashable,
        link: Hashable,
        kind: Kind,
        count_key: Hashable = None,
    ) -> Verdict:
        """What to do with one request; `count_key` is what the caller adds if it counts a human."""
        with self._lock:
            return self._judge(address, user_agent, method, message, link, kind, count_key)

    def _judge(
        self,
        address: str,
        user_agent: str,
        method: str,
        message: Hashable,
        link: Hashable,
        kind: Kind,
        count_key: Hashable,
    ) -> Verdict:
        now = self.clock()
        self._purge(now)
        key = (self.client_id(address, user_agent), message)
        client = self._clients.get(key)
        if client is None:
            client = self._clients[key] = _Client(last=now)
        client.last = now
        first = link not in client.seen
        client.seen.add(link)
        if kind == "story" and first:
            client.links[link] = now
        reason = client.scanner
        if kind == "hidden":
            reason = "hidden"
        elif method == "HEAD":
            reason = reason or "head"
        elif is_scanner_agent(user_agent):
            reason = reason or "agent"
        elif not reason and kind == "story":
            recent = sum(1 for t in client.links.values() if now - t <= self.burst_seconds)
            if recent >= self.burst_links:
                reason = "burst"
        reclassify: tuple[Hashable, ...] = ()
        if reason and not client.scanner:
            client.scanner = reason
            reclassify, client.human = tuple(client.human), []
        if not first:
            return Verdict(False, bool(reason), reason, reclassify)
        if reason:
            return Verdict(True, True, reason, reclassify)
        client.human.append(count_key)
        return Verdict(True, False, "", ())

    def _purge(self, now: float) -> None:
        """Forget clients silent for `memory_seconds` (checked at most every tenth of that)."""
        if now - self._purged < self.memory_seconds / 10 and len(self._clients) <= self.max_clients:
            return
        self._purged = now
        cutoff = now - self.memory_seconds
        self._clients = {k: c for k, c in self._clients.items() if c.last >= cutoff}
        if len(self._clients) > self.max_clients:  # a flood: keep the most recent
            keep = sorted(self._clients.items(), key=lambda kc: kc[1].last)[-self.max_clients // 2 :]
            self._clients = dict(keep)
