"""Helpers shared across the suite: a free port, the SMTP sink's record, a site on disk.

Imported by name (`from site_helpers import ...`): tests/ is on sys.path for plain `pytest` and
`python -m pytest` alike (pytest's rootdir-relative import of a tests folder without __init__.py).
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    """A threaded WSGI server on a free port of 127.0.0.1, bound before its app exists (the app's
    config needs the server's URL, `base`): `serve(app)` starts it, `close()` stops it."""

    def __init__(self) -> None:
        from werkzeug.serving import make_server

        self._app: Callable | None = None
        self._server = make_server("127.0.0.1", 0, self._call, threaded=True)
        self.base = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _call(self, environ, start_response):  # noqa: ANN001, ANN202
        assert self._app is not None
        return self._app(environ, start_response)

    def serve(self, app: Callable) -> None:
        self._app = app
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():  # shutdown() waits for a serve_forever that never started
            self._server.shutdown()
            self._thread.join(timeout=5)
        self._server.server_close()


@dataclass
class SmtpSink:
    """What the in-process SMTP server received, and knobs to make it refuse."""

    host: str
    port: int
    messages: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # address -> reply, e.g. "550 no such user"
    data_reply: str | None = None  # e.g. "451 try later"
    drop_after_data: bool = False
    on_message: Callable[[int], None] | None = None  # called with the count after each accepted message


def make_site(folder: Path, sink: SmtpSink, subscribers: dict[str, dict]) -> Path:
    """A digest.toml sending over SMTP to `sink`, with a SQLite list of `subscribers` (email -> fields)."""
    from digest.config import load_config
    from digest.db import create_schema, make_engine, session_factory
    from subscribers import store

    path = folder / "digest.toml"
    path.write_text(
        f"""
[newsletter]
name = "RS Weekly"
sender = "RS Weekly <news@rs.example>"
base_url = "https://news.rs.example"
[transport]
kind = "smtp"
[transport.smtp]
host = "{sink.host}"
port = {sink.port}
[database]
url = "sqlite:///subscribers.db"
""",
        encoding="utf-8",
    )
    config = load_config(path)
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    create_schema(engine)
    with session_factory(engine)() as s:
        for email, fields in subscribers.items():
            store.add_subscriber(s, email, **fields)
        s.commit()
    engine.dispose()
    return path
