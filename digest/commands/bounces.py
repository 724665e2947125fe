"""`digest bounces fetch`: read bounce and complaint reports from a mailbox and apply them.

`[bounces] mailbox` says where: `pop3s://HOST[:PORT]` (POP3 over TLS) or
`imaps://HOST[:PORT][/FOLDER]` (IMAP over TLS; INBOX by default), both with user `[bounces]
username` and password DIGEST_BOUNCES_PASSWORD; or `maildir:PATH` or `mbox:PATH`.

A message that was a report (it had findings, matched or not) is taken out of the mailbox so a
later fetch does not count it again: POP3 deletes it on the server, IMAP moves it into
`[bounces] processed_folder`, a Maildir moves it into its `.digest-processed` folder, an mbox
moves it into `PATH.processed`. Anything else (a
reader's reply, an auto-responder) stays where it was.

Each message is read on its own: one that cannot be read (not an e-mail, a truncated report,
larger than `[bounces] max_message_bytes`) gets a one-line warning naming it and why, and is set
aside so no later fetch reads it again: IMAP moves it into `[bounces] unreadable_folder`, a
Maildir into `.digest-unreadable`, an mbox into `PATH.unreadable`; POP3 leaves it on the server
and records it as seen (`mailbox_seen`, by UIDL or content digest).
"""

from __future__ import annotations

import argparse
import hashlib
import imaplib
import json
import logging
import mailbox
import poplib
import re
import ssl
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from digest import terminal
from digest.config import MAILBOX_RE, Config, load_config, secret
from digest.errors import ConfigError, DigestError
from subscribers.bounces import Report, classify, classify_messages
from subscribers.tokens import Tokens, match_reference

# `digest bounces classify` reads files and touches no database: the database, the pipeline and
# the report policy (SQLAlchemy and all the pipeline imports) are imported where fetch needs
# them, so reading a thousand reports does not start with loading them.
if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import sessionmaker

console = terminal.console()
err_console = terminal.console(stderr=True, highlight=False, soft_wrap=True)
log = logging.getLogger(__name__)


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
    check = cmds.add_parser(
        "classify", help="say what each file is (bounce, complaint, ...) and what it reports; changes nothing"
    )
    check.add_argument(
        "files", nargs="+", metavar="FILE", help="a message file (.eml); - reads standard input"
    )
    check.add_argument("--json", action="store_true", help="one JSON array, an object per file")
    check.set_defaults(func=cmd_classify)


@dataclass
class Message:
    raw: bytes
    done: Callable[[], None]  # take it out of the mailbox
    name: str = ""  # for warnings: "IMAP UID 7", "maildir 1733.M1P2.host"
    aside: Callable[[str], None] | None = None  # set it aside as unreadable, with why
    size: int = -1  # as the mailbox reports it before reading; -1 when unknown
    seen_key: str = ""  # POP3: the UIDL or digest under which it is recorded as seen


class Source:
    where = ""

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

        self.where = f"pop3s://{host}:{port}"
        self.max_bytes = 0  # set by fetch: larger messages are not downloaded

    def _uidls(self) -> dict[int, str]:
        try:
            _resp, lines, _octets = self.pop.uidl()
        except poplib.error_proto:  # UIDL is optional (RFC 1939): fall back on a content digest
            return {}
        out = {}
        for line in lines:
            number, _, uid = line.decode("ascii", "replace").partition(" ")
            if number.isdigit():
                out[int(number)] = "uidl:" + uid.strip()
        return out

    def _sizes(self) -> dict[int, int]:
        try:
            _resp, lines, _octets = self.pop.list()
        except poplib.error_proto:
            return {}
        pairs = (line.split() for line in lines)
        return {int(p[0]): int(p[1]) for p in pairs if len(p) == 2 and p[0].isdigit() and p[1].isdigit()}

    def messages(self) -> Iterator[Message]:
        count, _size = self.pop.stat()
        uidls, sizes = self._uidls(), self._sizes()
        for number in range(1, count + 1):
            size = sizes.get(number, -1)
            key = uidls.get(number, "")
            if key and self.is_seen(key):
                continue
            if self.max_bytes and size > self.max_bytes and key:
                raw = b""  # not downloaded: its size says enough
            else:
                _resp, lines, _octets = self.pop.retr(number)
                raw = b"\r\n".join(lines) + b"\r\n"
                key = key or "sha256:" + hashlib.sha256(raw).hexdigest()
                if self.is_seen(key):
                    continue
            yield Message(
                raw,
                lambda n=number: self.pop.dele(n),
                name=f"POP3 message {number}",
                aside=lambda why, key=key: self.mark_seen(key, why),
                size=size,
                seen_key=key,
            )

    # Set by fetch: the database where POP3 messages set aside are recorded as seen.
    def is_seen(self, key: str) -> bool:
        return False

    def mark_seen(self, key: str, why: str) -> None:
        raise NotImplementedError

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
        unreadable: str = "digest-unreadable",
        context: ssl.SSLContext,
        timeout: float,
    ) -> None:
        self.where = f"imaps://{host}:{port}/{folder}"
        self.processed = processed
        self.unreadable = unreadable
        self.created: set[str] = set()
        self.max_bytes = 0  # set by fetch: larger messages are not downloaded
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
        sizes = self._sizes(uids) if uids and self.max_bytes else {}
        for uid in uids:
            name = f"IMAP UID {uid.decode()}"
            aside = lambda why, uid=uid: self._move(uid, self.unreadable)  # noqa: E731
            if sizes.get(uid, 0) > self.max_bytes > 0:
                yield Message(b"", lambda: None, name=name, aside=aside, size=sizes[uid])
                continue
            fetched = self._ok(self.imap.uid("FETCH", uid, "(BODY.PEEK[])"), f"cannot fetch message {uid!r}")
            raw = next((part[1] for part in fetched if isinstance(part, tuple)), None)
            if raw is None:
                continue
            yield Message(raw, lambda uid=uid: self._move(uid, self.processed), name=name, aside=aside)

    def _sizes(self, uids: list[bytes]) -> dict[bytes, int]:
        """RFC822.SIZE of each message, so one over the size cap is never downloaded."""
        answer = self.imap.uid("FETCH", b",".join(uids), "(RFC822.SIZE)")
        out: dict[bytes, int] = {}
        for item in answer[1] if answer[0] == "OK" else []:
            text = item[0] if isinstance(item, tuple) else item
            m = re.search(rb"UID (\d+)", text or b"")
            size = re.search(rb"RFC822\.SIZE (\d+)", text or b"")
            if m and size:
                out[m.group(1)] = int(size.group(1))
        return out

    def _move(self, uid: bytes, folder: str) -> None:
        if folder not in self.created:
            self.imap.create(_quoted(folder))  # "already exists" is fine
            self.created.add(folder)
        if self.can_move:
            self._ok(self.imap.uid("MOVE", uid, _quoted(folder)), "move failed")
            return
        self._ok(self.imap.uid("COPY", uid, _quoted(folder)), "copy failed")
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
        self.where = f"maildir:{path}"
        self.box = mailbox.Maildir(path, factory=None, create=False)
        self.processed = self.box.add_folder("digest-processed")
        self.unreadable = self.box.add_folder("digest-unreadable")

    def messages(self) -> Iterator[Message]:
        for key in list(self.box.keys()):
            raw = self.box.get_bytes(key)

            def move(folder: mailbox.Maildir, key: str = key, raw: bytes = raw) -> None:
                folder.add(raw)
                self.box.remove(key)

            yield Message(
                raw,
                lambda move=move: move(self.processed),
                name=f"maildir message {key}",
                aside=lambda _why, move=move: move(self.unreadable),
            )


class MboxSource(Source):
    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise MailboxError(f"[bounces] mailbox mbox:{path}: file not found")
        self.where = f"mbox:{path}"
        self.box = mailbox.mbox(path, create=False)
        self.processed = mailbox.mbox(path.with_name(path.name + ".processed"))
        self.unreadable = mailbox.mbox(path.with_name(path.name + ".unreadable"))
        self.box.lock()

    def messages(self) -> Iterator[Message]:
        for number, key in enumerate(list(self.box.keys()), 1):
            raw = self.box.get_bytes(key)

            def move(folder: mailbox.mbox, key: str = key) -> None:
                folder.add(self.box.get_message(key))
                self.box.remove(key)

            yield Message(
                raw,
                lambda move=move: move(self.processed),
                name=f"mbox message {number}",
                aside=lambda _why, move=move: move(self.unreadable),
            )

    def close(self) -> None:
        self.processed.flush()
        self.unreadable.flush()
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
            unreadable=b.unreadable_folder,
            context=context,
            timeout=b.timeout,
        )
    path = config.resolve_path(m.group(6))
    return MaildirSource(path) if m.group(5) == "maildir" else MboxSource(path)


def fetch(
    config: Config,
    source: Source,
    tokens: Tokens,
    engine: Engine,
    warn: Callable[[str], None] | None = None,
    refused_runs: set[str] | None = None,
) -> Counter[str]:
    """Apply every report in `source`; a count per outcome (see `Effect`) plus "read",
    "not_reports" and "unreadable". Each message on its own: one that cannot be read is set
    aside with a one-line warning (`warn`), and the next is read."""
    from sqlalchemy.exc import SQLAlchemyError

    from digest.db import session_factory
    from subscribers.reports import Effect, Policy, apply_report

    warn = warn or (lambda line: log.warning("%s", line))
    policy = Policy(
        soft_limit=config.bounces.soft_limit, soft_window=timedelta(days=config.bounces.soft_window_days)
    )
    limit = config.bounces.max_message_bytes
    counts: Counter[str] = Counter()
    sessions = session_factory(engine)
    _remember_seen(source, sessions)
    if hasattr(source, "max_bytes"):
        source.max_bytes = limit  # type: ignore[attr-defined]
    try:
        for message in source.messages():
            counts["read"] += 1
            size = max(message.size, len(message.raw))
            if size > limit:
                why = f"{size:,} bytes, over [bounces] max_message_bytes ({limit:,})"
            else:
                report = classify(message.raw)
                why = report.error or (
                    "truncated report: it ends before saying who failed" if report.truncated else ""
                )
            if why:
                counts["unreadable"] += 1
                _set_aside(source, message, why, warn)
                continue
            if not report.findings:
                counts["not_reports"] += 1
                continue
            try:
                with sessions.begin() as session:
                    applied = apply_report(session, tokens, report, source="mailbox", policy=policy)
            except SQLAlchemyError as err:  # the database, not this message: stop, lose nothing
                raise MailboxError(f"{source.where} {message.name}: cannot record it: {err}") from err
            counts[applied.effect.value] += 1
            if applied.effect == Effect.REFUSED and refused_runs is not None:
                refused_runs.add(applied.run_id)
            message.done()  # only after its effect is committed: a crash re-reads, never loses it
    finally:
        source.close()
    return counts


def _set_aside(source: Source, message: Message, why: str, warn: Callable[[str], None]) -> None:
    if message.aside is None:
        warn(f"{source.where} {message.name}: {why}; left where it is")
        return
    try:
        message.aside(why)
    except Exception as err:  # a mailbox that refuses the move: say so, go on with the next
        warn(f"{source.where} {message.name}: {why}; could not set it aside ({err})")
        return
    where = {
        ImapSource: lambda: f"moved to {source.unreadable}",  # type: ignore[attr-defined]
        MaildirSource: lambda: "moved to .digest-unreadable",
        MboxSource: lambda: f"moved to {source.unreadable._path}",  # type: ignore[attr-defined]
        Pop3Source: lambda: "recorded as seen, left on the server",
    }.get(type(source), lambda: "set aside")()
    warn(f"{source.where} {message.name}: {why}; {where}")


def _remember_seen(source: Source, sessions: sessionmaker) -> None:
    """POP3 cannot move a message: the ones set aside are recorded in `mailbox_seen` instead."""
    if not isinstance(source, Pop3Source):
        return
    from subscribers.reports import is_seen_in, record_seen

    where = source.where

    def is_seen(key: str) -> bool:
        with sessions() as session:
            return is_seen_in(session, where, key)

    def mark_seen(key: str, why: str) -> None:
        with sessions.begin() as session:
            record_seen(session, where, key, why)

    source.is_seen = is_seen  # type: ignore[method-assign]
    source.mark_seen = mark_seen  # type: ignore[method-assign]


def _alarm_lines(engine: Engine, run_ids: list[str]) -> list[str]:
    """The alarms of the runs this fetch found refusals for: staff see them at once."""
    from digest.db import session_factory
    from subscribers.reports import run_alarms

    with session_factory(engine)() as session:
        return [f"run {run_id}: {alarm.text}" for run_id in run_ids for alarm in run_alarms(session, run_id)]


def classify_file(path: str, tokens: Tokens | None = None, *, max_bytes: int = 10_000_000) -> dict[str, Any]:
    """What one file is and says, as plain data. Never raises: a file that cannot be read is
    kind "error" with why."""
    out: dict[str, Any] = {"file": path, "kind": "error", "error": "", "findings": [], "message_ids": []}
    try:
        if path == "-":
            raw = sys.stdin.buffer.read(max_bytes + 1)
        else:
            with open(path, "rb") as f:
                raw = f.read(max_bytes + 1)
    except OSError as err:
        out["error"] = f"cannot read it: {err.strerror or err}"
        return out
    if len(raw) > max_bytes:
        out["error"] = f"larger than {max_bytes:,} bytes"
        return out
    report = _one_report(classify_messages(raw))
    out["message_ids"] = list(report.message_ids)
    if report.error or report.truncated:
        out["error"] = report.error or "truncated report: it ends before saying who failed"
        return out
    out["kind"] = report.kind.value if report.kind else "not-report"
    out["findings"] = [
        {
            "recipient": f.address,
            "kind": f.kind.value,
            "hard": f.hard,
            "reason": f.reason.value,
            "side": f.side.value,
            "status": f.status,
            "reply": f.reply,
            "how": f.how,
            "feedback_type": f.feedback_type,
            "diagnostic": f.diagnostic,
        }
        for f in report.findings
    ]
    if tokens is not None:
        ours = match_reference(tokens, report)
        out["ours"] = {"run": ours[0], "subscriber": ours[1], "by": ours[2]} if ours else None
    return out


def _one_report(reports: list[Report]) -> Report:
    """The reports of a file's messages (an mbox file holds several) as one: their findings in
    order; an error only when no message could be read."""
    if len(reports) == 1:
        return reports[0]
    readable = [r for r in reports if not r.error and not r.truncated] or reports[:1]
    return Report(
        findings=tuple(f for r in readable for f in r.findings),
        message_ids=tuple(dict.fromkeys(i for r in readable for i in r.message_ids)),
        error=readable[0].error,
        return_paths=tuple(dict.fromkeys(p for r in readable for p in r.return_paths)),
        truncated=readable[0].truncated,
    )


def cmd_classify(args: argparse.Namespace) -> int:
    """Exit 0 whatever the files hold: a file that is junk is an answer, not a failure."""
    key = secret("secret_key")
    tokens = Tokens(key) if key else None
    results = [classify_file(path, tokens) for path in args.files]
    if args.json:
        print(terminal.safe_text(json.dumps(results, indent=2, ensure_ascii=False)))
        return 0
    for r in results:
        head = f"{r['file']}: {r['kind']}" + (f" ({r['error']})" if r["error"] else "")
        if r.get("ours"):
            head += (
                f"; ours: run {r['ours']['run']}, subscriber {r['ours']['subscriber']} (by {r['ours']['by']})"
            )
        print(terminal.safe_text(head))  # plain lines for grep and tests; no control sequences
        for f in r["findings"]:
            hard = "hard" if f["hard"] else "soft"
            what = (
                f["feedback_type"]
                if f["kind"] == "complaint"
                else f"{hard} {f['reason']} {f['status'] or '-'}"
            )
            print(terminal.safe_text(f"  {f['recipient'] or '(no address)'}  {what}  [{f['how']}]"))
    return 0


@contextmanager
def _engine(config: Config) -> Iterator[Engine]:
    from digest.db import make_engine, migrate

    engine = make_engine(config.database.url, base_dir=config.base_dir)
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()


def cmd_fetch(args: argparse.Namespace) -> int:
    from digest.pipeline import signing_key
    from subscribers.reports import Effect

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
        runs: set[str] = set()
        counts = fetch(
            config,
            open_source(config, spec),
            tokens,
            engine,
            warn=lambda line: err_console.print(line, markup=False),
            refused_runs=runs,
        )
        alarms = _alarm_lines(engine, sorted(runs))
    labels = (
        ("read", "messages read"),
        (Effect.SUPPRESSED.value, "suppressed (hard bounce or soft limit)"),
        (Effect.COMPLAINED.value, "complaints (suppressed and unsubscribed)"),
        (Effect.SOFT.value, "soft bounces recorded"),
        (Effect.DUPLICATE.value, "already recorded"),
        (Effect.NOTHING.value, "delivery notices"),
        (Effect.UNMATCHED.value, "not about mail we sent (changed nothing)"),
        (Effect.REFUSED.value, "refused for our sending (see the run's alarms)"),
        ("not_reports", "not reports (left in the mailbox)"),
        ("unreadable", "unreadable (set aside, see the warnings)"),
    )
    for key, label in labels:
        console.print(f"{counts.get(key, 0):>6}  {label}", highlight=False)
    for line in alarms:
        err_console.print(f"Alarm: {line}", markup=False)
    return 0
