"""Public redirect links: `/r/<token>` (a story, or the hidden scanner link) and `/o/<token>` (the
open pixel). Tokens name issue, variant and story, never a reader (digest/story_links.py); only
with [analytics] per_reader does a story link carry a second token, `?r=`, naming its reader.

The middleware checks the signature (a changed token is 404), finds the story's URL in the
issue's story table (cached: a story's URL never changes once sent), asks the scanner filter,
adds one count in memory and redirects (302). No database write and no cookie on the way.
"""

from __future__ import annotations

import atexit
import base64
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from flask import Flask
from sqlalchemy import Engine, select

from digest.clicks import OPEN_STORY, ClickRecorder, RunStory, minute_of
from digest.config import AnalyticsConfig, Config
from digest.db import session_factory
from digest.scanners import Kind, ScannerFilter
from digest.send import SendRun
from digest.story_links import HIDDEN, OPEN, StoryRef, make_signer, read_token
from subscribers.tokens import Purpose, TokenError, Tokens

EXTENSION = "digest.redirects"
_PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")  # 1x1 transparent GIF
_CACHE_MAX = 50_000


class Client(NamedTuple):
    address: str
    user_agent: str
    method: str


class RedirectService:
    """What the views share: signer, story lookup, scanner filter, counts, clock."""

    def __init__(
        self, config: Config, engine: Engine, secret_key: str, clock: Callable[[], datetime]
    ) -> None:
        a = config.analytics
        self.settings: AnalyticsConfig = a
        self.signer = make_signer(secret_key)
        self.sessions = session_factory(engine)
        self.clock = clock
        self.filter = ScannerFilter(
            lambda: clock().timestamp(),
            burst_links=a.burst_links,
            burst_seconds=a.burst_seconds,
            memory_seconds=a.client_memory_minutes * 60,
        )
        self.recorder = ClickRecorder(self.sessions, flush_seconds=a.flush_seconds)
        self._stories: dict[tuple[str, int], tuple[str, str] | None] = {}
        self._lock = threading.Lock()
        self.per_reader = a.enabled and a.per_reader
        self.tokens = Tokens(secret_key)

    def story(self, run_id: str, index: int) -> tuple[str, str] | None:
        """(article URL, issue date) of a story, from the cache or the story table."""
        key = (run_id, index)
        with self._lock:
            if key in self._stories:
                return self._stories[key]
        with self.sessions() as session:
            row = session.execute(
                select(RunStory.url, SendRun.issue)
                .join(SendRun, SendRun.id == RunStory.run_id)
                .where(RunStory.run_id == run_id, RunStory.idx == index)
            ).first()
        found = (row[0], row[1]) if row else None
        if found is not None:  # an unknown one is not cached: a flood of them must not fill memory
            with self._lock:
                if len(self._stories) >= _CACHE_MAX:
                    self._stories.clear()
                self._stories[key] = found
        return found

    def target(self, url: str, issue: str) -> str:
        """The article URL with the configured UTM parameters (ones already in it are kept)."""
        a = self.settings
        utm = {
            "utm_source": a.utm_source,
            "utm_medium": a.utm_medium,
            "utm_campaign": a.utm_campaign.replace("{issue}", issue),
        }
        utm = {k: v for k, v in utm.items() if v}
        if not utm:
            return url
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        present = {k for k, _ in query}
        query += [(k, v) for k, v in utm.items() if k not in present]
        return urlunsplit(parts._replace(query=urlencode(query)))

    def reader(self, query: str) -> int | None:
        """The subscriber a story link's `r` names, with [analytics] per_reader only; None for
        no token or a changed one (the click still counts for the story)."""
        if not self.per_reader or not query:
            return None
        token = next((v for k, v in parse_qsl(query) if k == "r"), "")
        try:
            return self.tokens.read(token, Purpose.READER) if token else None
        except TokenError:
            return None

    def judge(self, ref: StoryRef, kind: Kind, client: Client, reader: int | None = None) -> None:
        """Ask the filter about this request and add its count (and any re-count) in memory."""
        story = OPEN_STORY if kind == "open" else ref.story if kind == "story" else None
        keys: tuple[Any, ...] = ()
        if story is not None:
            keys = ((ref.run_id, ref.variant, story, minute_of(self.clock())),)
            if reader is not None and kind == "story":
                keys += ((ref.run_id, reader, story),)
        verdict = self.filter.judge(
            address=client.address,
            user_agent=client.user_agent,
            method=client.method,
            message=(ref.run_id, ref.variant),
            link=ref.story,
            kind=kind,
            count_key=keys,
        )
        for earlier in verdict.reclassify:
            for key in earlier or ():
                self.recorder.add(key, human=-1, filtered=1)
        if verdict.count:
            human, filtered = (0, 1) if verdict.filtered else (1, 0)
            for key in keys:
                self.recorder.add(key, human=human, filtered=filtered)

    def close(self) -> None:
        self.recorder.close()


Environ = dict[str, Any]
StartResponse = Callable[..., Any]
_HEADERS = [
    ("Cache-Control", "no-store"),
    ("Referrer-Policy", "no-referrer"),
    ("X-Content-Type-Options", "nosniff"),
]
_NOT_FOUND = b"There is no page at this address.\n"
_HIDDEN_ANSWER = b"This link is not meant to be followed.\n"


class RedirectLinks:
    """WSGI middleware answering `/r/<token>` and `/o/<token>` itself; every other path goes on
    to the app. The hot public path skips Flask's request machinery (context, sessions, the
    limiter), which cost several times the redirect's own work (bench/redirect.py)."""

    def __init__(
        self, app: Callable[[Environ, StartResponse], Iterable[bytes]], service: RedirectService
    ) -> None:
        self.app = app
        self.service = service

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        if not path.startswith(("/r/", "/o/")):
            return self.app(environ, start_response)
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            return _answer(start_response, method, "405 Method Not Allowed", b"", [("Allow", "GET, HEAD")])
        token = path[3:]
        service = self.service
        ref = read_token(service.signer, token) if "/" not in token else None
        if ref is None:
            return _answer(start_response, method, "404 Not Found", _NOT_FOUND)
        client = Client(environ.get("REMOTE_ADDR", ""), environ.get("HTTP_USER_AGENT", ""), method)
        if path[1] == "o":
            if ref.story != OPEN:
                return _answer(start_response, method, "404 Not Found", _NOT_FOUND)
            service.judge(ref, "open", client)
            return _answer(start_response, method, "200 OK", _PIXEL, content_type="image/gif")
        if ref.story == OPEN:
            return _answer(start_response, method, "404 Not Found", _NOT_FOUND)
        if ref.story == HIDDEN:
            service.judge(ref, "hidden", client)
            return _answer(start_response, method, "200 OK", _HIDDEN_ANSWER)
        story = service.story(ref.run_id, int(ref.story))
        if story is None:
            return _answer(start_response, method, "404 Not Found", _NOT_FOUND)
        service.judge(ref, "story", client, service.reader(environ.get("QUERY_STRING", "")))
        location = service.target(*story)
        return _answer(start_response, method, "302 Found", b"", [("Location", location)])


def _answer(
    start_response: StartResponse,
    method: str,
    status: str,
    body: bytes,
    extra: list[tuple[str, str]] | None = None,
    *,
    content_type: str = "text/plain; charset=utf-8",
) -> list[bytes]:
    headers = [*_HEADERS, ("Content-Type", content_type), ("Content-Length", str(len(body))), *(extra or [])]
    start_response(status, headers)
    return [] if method == "HEAD" else [body]


def register_redirects(
    app: Flask, config: Config, engine: Engine, secret_key: str, clock: Callable[[], datetime]
) -> None:
    """Serve the redirect links in front of the app (call it before wrapping the app in ProxyFix,
    so the client address is already the real one). Counts are written every [analytics]
    flush_seconds and at exit; `app.extensions["digest.redirects"].close()` writes them now."""
    service = RedirectService(config, engine, secret_key, clock)
    app.extensions[EXTENSION] = service
    app.wsgi_app = RedirectLinks(app.wsgi_app, service)  # type: ignore[method-assign]
    atexit.register(service.recorder.flush)
