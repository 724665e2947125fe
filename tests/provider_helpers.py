"""Shared pieces of the provider transport tests: real messages, misbehaving servers, API oracles."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from render_helpers import DATE, HEADERS, personal, renderer, sample_digest
from shared_data import TESTDATA

from digest.message import MessageTemplate
from digest.models import Recipient
from digest.transports.base import Outbound

PROVIDERS = TESTDATA / "providers"
NOW = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)
# Names that need care on the way: a comma (SendGrid), non-ASCII (RFC 2047 in the MIME), an
# ampersand (HTML escaping), and none at all.
NAMES = ["Ada Reader", "Reader, Bo", "Zoë Ünal", "Cy & Co", ""]


@cache
def template() -> MessageTemplate:
    return MessageTemplate(renderer().render(sample_digest()), HEADERS, date=DATE)


def outbounds(count: int, *, start: int = 1, tmpl: MessageTemplate | None = None) -> list[Outbound]:
    """`count` recipients' messages of one real rendered variant, keys `run42-<n>`."""
    tmpl = tmpl or template()
    out = []
    for n in range(start, start + count):
        recipient = Recipient(n, f"reader{n}@example.org", NAMES[n % len(NAMES)])
        out.append(
            tmpl.outbound(
                recipient, personal(f"tok{n}", n), key=f"run42-{n}", envelope_sender="bounces@example.org"
            )
        )
    return out


class SilentServer:
    """A TCP server that reads each whole HTTP request and then never answers (`hang`) or hangs up
    (`drop`): the provider that took the request and went silent; or that hangs up at once without
    reading a byte (`slam`)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requests: list[bytes] = []
        self._conns: list[socket.socket] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self._conns.append(conn)
            if self.mode == "slam":  # hang up before reading anything
                conn.close()
                continue
            self.requests.append(_read_request(conn))
            if self.mode == "drop":
                conn.close()

    def stop(self) -> None:
        self._stopped.set()
        with suppress(OSError):  # shutdown wakes the blocked accept(); close() alone does not
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for conn in self._conns:
            conn.close()
        self._thread.join(timeout=5)


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


@contextmanager
def silent_server(mode: str) -> Iterator[SilentServer]:
    server = SilentServer(mode)
    try:
        yield server
    finally:
        server.stop()


def refused_url() -> str:
    """A local port nothing listens on: connecting is refused before anything is sent."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# --- the providers' own OpenAPI documents as oracles ---------------------------------------------


def openapi_oracle(relative: str, base_url: str) -> Callable[[Any], None]:
    """A function that validates a werkzeug request (as pytest-httpserver hands it over) against the
    provider's published OpenAPI document: path, method, header parameters, security, body schema."""
    path = PROVIDERS / relative
    if not path.is_file():
        pytest.skip(f"provider OpenAPI document missing: {path} (see tests/shared_data.py)")
    pytest.importorskip("openapi_core")
    from openapi_core.contrib.werkzeug import WerkzeugOpenAPIRequest

    api = _openapi(path, base_url.rstrip("/"))

    def validate(request: Any) -> None:
        api.validate_request(WerkzeugOpenAPIRequest(request))

    return validate


@cache
def _openapi(path: Path, base_url: str) -> Any:
    """Built once per document and server (pytest-httpserver keeps one port per session)."""
    import openapi_core

    spec = dict(_load(path), servers=[{"url": base_url}])  # the local server stands in for theirs
    # The document is the provider's and is taken as it is: checking it against the OpenAPI
    # meta-schema first costs seconds and tests nothing of ours.
    return openapi_core.OpenAPI.from_dict(spec, config=openapi_core.Config(spec_validator_cls=None))


@cache
def _load(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        return json.loads(text)
    import yaml

    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml: 10x faster


@cache
def other_template() -> MessageTemplate:
    """A second variant (one region only): a batch may mix variants."""
    digest = sample_digest()
    return MessageTemplate(renderer().variants(digest).get(["Middle East"]), HEADERS, date=DATE)
