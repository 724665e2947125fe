"""`digest bounces fetch`: read bounce and complaint reports from a mailbox and apply them.

`[bounces] mailbox` says where: `pop3s://HOST[:PORT]` (POP3 over TLS, user `[bounces]
username`, password DIGEST_BOUNCES_PASSWORD), `maildir:PATH` or `mbox:PATH`.

A message that was a report (it had findings, matched or not) is taken out of the mailbox so a
later fetch does not count it again: POP3 deletes it on the server, a Maildir moves it into
its `.digest-processed` folder, an mbox moves it into `PATH.processed`. Anything else (a
reader's reply, an auto-responder) stays where it was.
"""

from __future__ import annotations

import argparse
import mailbox
import poplib
import ssl
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from rich.console import Console

from digest.config import MAILBOX_RE, Config, load_config, secret
from digest.db import make_engine, migrate, session_factory
from digest.errors import ConfigError, DigestError
from digest.pipeline import signing_key
from subscribers.bounces import classify
from subscribers.reports import Effect, Policy, apply_report
from subscribers.tokens import Tokens

console = Console()


class MailboxError(DigestError):
    """The bounce mailbox could not be read (connection, login, a missing folder)."""


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("bounces", help="bounce and complaint reports")
    cmds = group.add_subparsers(dest="bounces_command", metavar="ACTION", required=True)
    fetch = cmds.add_parser("fetch", help="read reports from [bounces] mailbox and apply them")
    fetch.add_argument("--mailbox", help="override [bounces] mailbox (pop3s://..., maildir:PATH, mbox:PATH)")
    fetch.set_defaults(func=cmd_fetch)


@dataclass
class Message:
    raw: bytes
    done: Callable[[], None]  # take it out of the mailbox


class Source:
    def messages(self) -> Iterator[Message]:
        raise NotImplementedError

    def close(self) -> None:
        """Commit the removals (POP3's QUIT, an mbox's flush)."""


class Pop3Source(Source):
    def __init__(
        self, host: str, port: int, user: str, password: str, context: ssl.SSLContext, timeout: float
    ):
        try:
            self.pop = poplib.POP3_SSL(host, port, context=context, timeout=timeout)
            self.pop.user(user)
            self.pop.pass_(password)
        except (OSError, poplib.error_proto) as err:
            raise MailboxError(f"[bounces] mailbox pop3s://{host}:{port}: {err}") from err

    def messages(self) -> Iterator[Message]:
        count, _size = self.pop.stat()
        for number in range(1, count + 1):
            _resp, lines, _octets = self.pop.retr(number)
            yield Message(b"\r\n".join(lines) + b"\r\n", lambda n=number: self.pop.dele(n))

    def close(self) -> None:
        self.pop.quit()  # deletions take effect only on QUIT


class MaildirSource(Source):
    def __init__(self, path: Path) -> None:
        if not (path / "cur").is_dir() and not (path / "new").is_dir():
            raise MailboxError(f"[bounces] mailbox maildir:{path}: not a Maildir (no cur/ or new/)")
        self.box = mailbox.Maildir(path, factory=None, create=False)
        self.processed = self.box.add_folder("digest-processed")

    def messages(self) -> Iterator[Message]:
        for key in list(self.box.keys()):
            raw = self.box.get_bytes(key)

            def done(key: str = key, raw: bytes = raw) -> None:
                self.processed.add(raw)
                self.box.remove(key)

            yield Message(raw, done)


class MboxSource(Source):
    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise MailboxError(f"[bounces] mailbox mbox:{path}: file not found")
        self.box = mailbox.mbox(path, create=False)
        self.processed = mailbox.mbox(path.with_name(path.name + ".processed"))
        self.box.lock()

    def messages(self) -> Iterator[Message]:
        for key in list(self.box.keys()):
            raw = self.box.get_bytes(key)

            def done(key: str = key) -> None:
                self.processed.add(self.box.get_message(key))
                self.box.remove(key)

            yield Message(raw, done)

    def close(self) -> None:
        self.processed.flush()
        self.box.flush()
        self.box.unlock()
        self.box.close()


def open_source(config: Config, spec: str) -> Source:
    m = MAILBOX_RE.fullmatch(spec)
    if m is None:
        raise ConfigError(
            config.path,
            "[bounces] mailbox",
            f"{spec!r} is not pop3s://HOST[:PORT], maildir:PATH or mbox:PATH",
        )
    if m.group(1):
        b = config.bounces
        if not b.username:
            raise ConfigError(config.path, "[bounces] username", "is needed to read a POP3 mailbox")
        password = secret("bounces_password", required_by="digest bounces fetch (POP3 login)")
        context = ssl.create_default_context(
            cafile=str(config.resolve_path(b.ca_file)) if b.ca_file else None
        )
        return Pop3Source(m.group(2), int(m.group(3) or 995), b.username, password, context, b.timeout)
    path = config.resolve_path(m.group(5))
    return MaildirSource(path) if m.group(4) == "maildir" else MboxSource(path)


def fetch(config: Config, source: Source, tokens: Tokens, engine) -> Counter[str]:  # type: ignore[no-untyped-def]
    """Apply every report in `source`; a count per outcome (see `Effect`) plus "read" and "not_reports"."""
    policy = Policy(
        soft_limit=config.bounces.soft_limit, soft_window=timedelta(days=config.bounces.soft_window_days)
    )
    counts: Counter[str] = Counter()
    sessions = session_factory(engine)
    try:
        for message in source.messages():
            counts["read"] += 1
            report = classify(message.raw)
            if not report.findings:
                counts["not_reports"] += 1
                continue
            with sessions.begin() as session:
                applied = apply_report(session, tokens, report, source="mailbox", policy=policy)
            counts[applied.effect.value] += 1
            message.done()  # only after its effect is committed: a crash re-reads, never loses it
    finally:
        source.close()
    return counts


@contextmanager
def _engine(config: Config):  # type: ignore[no-untyped-def]
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()


def cmd_fetch(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    spec = args.mailbox or config.bounces.mailbox
    if not spec:
        raise ConfigError(
            config.path, "[bounces] mailbox", "is not set (pop3s://HOST, maildir:PATH or mbox:PATH)"
        )
    tokens = Tokens(signing_key(config, console))
    with _engine(config) as engine:
        counts = fetch(config, open_source(config, spec), tokens, engine)
    labels = (
        ("read", "messages read"),
        (Effect.SUPPRESSED.value, "suppressed (hard bounce or soft limit)"),
        (Effect.COMPLAINED.value, "complaints (suppressed and unsubscribed)"),
        (Effect.SOFT.value, "soft bounces recorded"),
        (Effect.DUPLICATE.value, "already recorded"),
        (Effect.NOTHING.value, "delivery notices"),
        (Effect.UNMATCHED.value, "not about mail we sent (changed nothing)"),
        ("not_reports", "not reports (left in the mailbox)"),
    )
    for key, label in labels:
        console.print(f"{counts.get(key, 0):>6}  {label}", highlight=False)
    return 0
