"""`digest bounces fetch`: read bounce and complaint reports from a mailbox and apply them.

`[bounces] mailbox` says where: `pop3s://HOST[:PORT]` (POP3 over TLS) or
`imaps://HOST[:PORT][/FOLDER]` (IMAP over TLS; INBOX by default), both with user `[bounces]
username` and password DIGEST_BOUNCES_PASSWORD; or `maildir:PATH` or `mbox:PATH`.

A message that was a report (it had findings, matched or not) is taken out of the mailbox so a
later fetch does not count it again: POP3 deletes it on the server, IMAP moves it into
`[bounces] processed_folder`, a Maildir moves it into its `.digest-processed` folder, an mbox
moves it into `PATH.processed`. Anything else (a
reader's reply, an auto-responder) stays where it was.
"""

from __future__ import annotations

import argparse
import imaplib
import mailbox
import poplib
import re
import ssl
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from sqlalchemy import Engine

from digest import terminal
from digest.config import MAILBOX_RE, Config, load_config, secret
from digest.db import make_engine, migrate, session_factory
from digest.errors import ConfigError, DigestError
from digest.pipeline import signing_key
from subscribers.bounces import classify
from subscribers.reports import Effect, Policy, apply_report
from subscribers.tokens import Tokens

console = terminal.console()


class MailboxError(DigestError):
    """The bounce mailbox could not be read (connection, login, a missing folder)."""


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("bounces", help="bounce and complaint reports")
    cmds = group.add_subparsers(dest="bounces_command", metavar="ACTION", required=True)
    fetch = cmds.add_parser("fetch", help="read reports from [bounces] mailbox and apply them")
    fetch.add_argument(
        "--mailbox", help="override [bounces] mailbox (pop3s://..., imaps://..., maildir:PATH, mbox:PATH)"
    )
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


class ImapSource(Source):
    def __init__(
        self,
        host: str,
        port: int,
        folder: str,
        user: str,
        password: str,
        *,
        processed: str,
        context: ssl.SSLContext,
        timeout: float,
    ) -> None:
        self.where = f"imaps://{host}:{port}/{folder}"
        self.processed = processed
        try:
            self.imap = imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=timeout)
            self.imap.login(user, password)
            self._ok(self.imap.select(_quoted(folder)), f"cannot open folder {folder!r}")
        except (OSError, imaplib.IMAP4.error) as err:
            raise MailboxError(f"[bounces] mailbox {self.where}: {err}") from err
        self.moved = False
        self.can_move = "MOVE" in self.imap.capabilities

    def _ok(self, answer: tuple[str, list], what: str) -> list:
        status, data = answer
        if status != "OK":
            raise MailboxError(f"[bounces] mailbox {self.where}: {what}: {data!r}")
        return data

    def messages(self) -> Iterator[Message]:
        data = self._ok(self.imap.uid("SEARCH", None, "UNDELETED"), "search failed")
        uids = data[0].split() if data and data[0] else []
        if uids:
            self.imap.create(_quoted(self.processed))  # "already exists" is fine
        for uid in uids:
            fetched = self._ok(self.imap.uid("FETCH", uid, "(BODY.PEEK[])"), f"cannot fetch message {uid!r}")
            raw = next((part[1] for part in fetched if isinstance(part, tuple)), None)
            if raw is None:
                continue
            yield Message(raw, lambda uid=uid: self._move(uid))

    def _move(self, uid: bytes) -> None:
        if self.can_move:
            self._ok(self.imap.uid("MOVE", uid, _quoted(self.processed)), "move failed")
            return
        self._ok(self.imap.uid("COPY", uid, _quoted(self.processed)), "copy failed")
        self._ok(self.imap.uid("STORE", uid, "+FLAGS.SILENT", r"(\Deleted)"), "marking as deleted failed")
        self.moved = True

    def close(self) -> None:
        try:
            if self.moved:
                self.imap.expunge()
            self.imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass  # the moves are done; a copy left flagged \Deleted is expunged next time


def _quoted(name: str) -> str:
    return '"' + re.sub(r'(["\\])', r"\\\1", name) + '"'


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
            f"{spec!r} is not pop3s://HOST[:PORT], imaps://HOST[:PORT][/FOLDER], maildir:PATH or mbox:PATH",
        )
    if m.group(1):
        b = config.bounces
        protocol = "POP3" if m.group(1) == "pop3s" else "IMAP"
        if not b.username:
            raise ConfigError(config.path, "[bounces] username", f"is needed to read an {protocol} mailbox")
        password = secret("bounces_password", required_by=f"digest bounces fetch ({protocol} login)")
        cafile = str(config.resolve_path(b.ca_file)) if b.ca_file else None
        context = ssl.create_default_context(cafile=cafile)
        host = m.group(2)
        if protocol == "POP3":
            return Pop3Source(host, int(m.group(3) or 995), b.username, password, context, b.timeout)
        return ImapSource(
            host,
            int(m.group(3) or 993),
            m.group(4) or "INBOX",
            b.username,
            password,
            processed=b.processed_folder,
            context=context,
            timeout=b.timeout,
        )
    path = config.resolve_path(m.group(6))
    return MaildirSource(path) if m.group(5) == "maildir" else MboxSource(path)


def fetch(config: Config, source: Source, tokens: Tokens, engine: Engine) -> Counter[str]:
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
def _engine(config: Config) -> Iterator[Engine]:
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
            config.path,
            "[bounces] mailbox",
            "is not set (pop3s://HOST, imaps://HOST, maildir:PATH or mbox:PATH)",
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
