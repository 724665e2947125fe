"""`digest bounces fetch` end to end: a POP3-over-TLS server in-process, a Maildir and an mbox.

The POP3 server is a few lines of socketserver (no well-kept test server exists for POP3): it
serves real DSNs from ../shared/testdata/bounces plus reports about our own messages, and
deletes what the client DELEtes on QUIT, as RFC 1939 says.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import mailbox
import re
import socketserver
import ssl
import threading
from pathlib import Path

import pytest
from bounce_helpers import SECRET, arf, dsn, message_id, sent_run
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from shared_data import TESTDATA

from digest import cli
from digest.db import make_engine, migrate, session_factory
from subscribers import store
from subscribers.reports import run_bounce_counts
from subscribers.store import Status

CORPUS = TESTDATA / "bounces"


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        # OpenSSL judges validity by the real clock; the date-proof runs move this process's clock
        # by up to a year (tests/conftest.py), so the window spans more than that either way.
        .not_valid_before(now - dt.timedelta(days=800))
        .not_valid_after(now + dt.timedelta(days=800))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


class Pop3Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, messages: list[bytes], context: ssl.SSLContext) -> None:
        self.messages: list[bytes | None] = list(messages)
        self.context = context
        self.logins: list[tuple[str, str]] = []
        super().__init__(("127.0.0.1", 0), Pop3Handler)

    def get_request(self):  # type: ignore[no-untyped-def]
        sock, addr = super().get_request()
        return self.context.wrap_socket(sock, server_side=True), addr


class Pop3Handler(socketserver.StreamRequestHandler):
    server: Pop3Server

    def send(self, line: bytes) -> None:
        self.wfile.write(line + b"\r\n")

    def handle(self) -> None:
        self.send(b"+OK test POP3")
        user, deleted = "", set()
        box = self.server.messages
        # Message numbers are fixed for the session (RFC 1939): 1..n over what is on the server.
        numbered = [i for i, m in enumerate(box) if m is not None]
        for raw in self.rfile:
            cmd, _, arg = raw.strip().decode().partition(" ")
            cmd = cmd.upper()
            live = [i for i in numbered if i not in deleted]
            if cmd == "USER":
                user = arg
                self.send(b"+OK")
            elif cmd == "PASS":
                self.server.logins.append((user, arg))
                self.send(b"+OK" if arg == "pop-secret" else b"-ERR bad login")
            elif cmd == "STAT":
                self.send(b"+OK %d %d" % (len(live), sum(len(box[i] or b"") for i in live)))
            elif cmd == "RETR":
                data = box[numbered[int(arg) - 1]] or b""
                self.send(b"+OK")
                for line in data.replace(b"\r\n", b"\n").split(b"\n"):
                    self.send(b"." + line if line.startswith(b".") else line)
                self.send(b".")
            elif cmd == "DELE":
                deleted.add(numbered[int(arg) - 1])
                self.send(b"+OK")
            elif cmd == "QUIT":
                for i in deleted:
                    box[i] = None
                self.send(b"+OK bye")
                return
            else:
                self.send(b"-ERR unknown")


@pytest.fixture
def setup(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    db = tmp_path / "digest.db"
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    with session_factory(engine).begin() as s:
        hard = store.add_subscriber(s, "hard@example.com", source="cli")
        angry = store.add_subscriber(s, "angry@example.com", source="cli")
        sent_run(s, "run1", [hard, angry])
        ours = [dsn(hard.email, message_id("run1", hard)), arf(angry.email, message_id("run1", angry))]
    if not (CORPUS / "arf-01.eml").is_file():
        pytest.skip(f"bounce corpus not found at {CORPUS}")  # before reading it, not after
    corpus = [
        (CORPUS / n).read_bytes() for n in ("lhost-postfix-01.eml", "arf-01.eml", "is-not-bounce-01.eml")
    ]

    errors: list[str] = []  # each run's standard error

    def run(mailbox_spec: str, extra: str = "") -> tuple[int, str]:
        config = tmp_path / "digest.toml"
        config.write_text(
            f'[database]\nurl = "sqlite:///{db}"\n[bounces]\nmailbox = "{mailbox_spec}"\n{extra}',
            encoding="utf-8",
        )
        code = cli.main(["-c", str(config), "bounces", "fetch"])
        captured = capsys.readouterr()
        errors.append(captured.err)
        return code, captured.out

    def state() -> tuple[Status, Status, dict[str, int]]:
        with session_factory(engine)() as s:
            return (
                store.get_by_email(s, "hard@example.com").status,
                store.get_by_email(s, "angry@example.com").status,
                run_bounce_counts(s, "run1"),
            )

    run.errors = errors  # type: ignore[attr-defined]
    yield ours + corpus, run, state, tmp_path
    engine.dispose()


def _lines(out: str) -> dict[str, int]:
    return {line.split(None, 1)[1]: int(line.split(None, 1)[0]) for line in out.strip().splitlines()}


def test_fetch_over_pop3_tls(setup, monkeypatch):
    messages, run, state, tmp_path = setup
    cert, key = _certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = Pop3Server(messages, context)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    monkeypatch.setenv("DIGEST_BOUNCES_PASSWORD", "pop-secret")
    try:
        code, out = run(f"pop3s://127.0.0.1:{port}", f'username = "bounces"\nca_file = "{cert}"\n')
        assert code == 0, out
        counts = _lines(out)
        assert counts["messages read"] == 5
        assert counts["suppressed (hard bounce or soft limit)"] == 1
        assert counts["complaints (suppressed and unsubscribed)"] == 1
        assert counts["not about mail we sent (changed nothing)"] == 2  # the corpus's reports
        assert counts["not reports (left in the mailbox)"] == 1
        assert state() == (Status.BOUNCED, Status.COMPLAINED, {"bounced": 1, "complained": 1, "refused": 0})
        assert server.logins == [("bounces", "pop-secret")]
        # Reports were deleted on the server; the ordinary message stays. A second fetch counts nothing twice.
        assert [m for m in server.messages if m is not None] == [messages[-1]]
        code, out = run(f"pop3s://127.0.0.1:{port}", f'username = "bounces"\nca_file = "{cert}"\n')
        assert _lines(out)["messages read"] == 1
        assert state()[2] == {"bounced": 1, "complained": 1, "refused": 0}
    finally:
        server.shutdown()
        server.server_close()


def test_pop3_needs_its_password(setup, monkeypatch):
    _messages, run, _state, _tmp = setup
    monkeypatch.delenv("DIGEST_BOUNCES_PASSWORD", raising=False)
    code, _ = run("pop3s://127.0.0.1:1", 'username = "bounces"\n')
    assert code == 2


def test_fetch_from_maildir_moves_reports_aside(setup):
    messages, run, state, tmp_path = setup
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for raw in messages:
        box.add(raw)
    code, out = run(f"maildir:{tmp_path / 'Maildir'}")
    assert code == 0, out
    assert state() == (Status.BOUNCED, Status.COMPLAINED, {"bounced": 1, "complained": 1, "refused": 0})
    assert len(box) == 1 and len(box.get_folder("digest-processed")) == 4


def test_fetch_from_mbox(setup):
    messages, run, state, tmp_path = setup
    path = tmp_path / "bounces.mbox"
    box = mailbox.mbox(path)
    for raw in messages:
        box.add(raw)
    box.close()
    code, out = run(f"mbox:{path}")
    assert code == 0, out
    assert state() == (Status.BOUNCED, Status.COMPLAINED, {"bounced": 1, "complained": 1, "refused": 0})
    assert len(mailbox.mbox(path)) == 1 and len(mailbox.mbox(tmp_path / "bounces.mbox.processed")) == 4


def test_show_says_why_and_unsuppress_records_the_reason(setup, capsys):
    messages, run, state, tmp_path = setup
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    box.add(messages[0])
    run(f"maildir:{tmp_path / 'Maildir'}")
    config = str(tmp_path / "digest.toml")
    assert cli.main(["-c", config, "subscribers", "show", "hard@example.com"]) == 0
    out = capsys.readouterr().out
    assert "yes: bounced" in out and "5.1.1" in out and "run1" in out
    assert (
        cli.main(["-c", config, "subscribers", "unsuppress", "hard@example.com", "--reason", "typo fixed"])
        == 0
    )
    capsys.readouterr()
    assert state()[0] == Status.ACTIVE
    cli.main(["-c", config, "subscribers", "show", "hard@example.com"])
    out = capsys.readouterr().out
    assert "suppressed no" in " ".join(out.split()) and "typo fixed" in out


# --- IMAP -------------------------------------------------------------------------------------

_ARG_RE = re.compile(rb'"((?:[^"\\]|\\.)*)"|(\S+)')


class ImapServer(socketserver.ThreadingTCPServer):
    """The few IMAP4rev1 commands a client that reads, moves and logs out needs (RFC 3501, and
    RFC 6851 MOVE when `move` is on)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, messages: list[bytes], context: ssl.SSLContext, *, move: bool) -> None:
        self.folders: dict[str, dict[int, bytes]] = {"INBOX": dict(enumerate(messages, 1))}
        self.deleted: set[int] = set()
        self.context = context
        self.move = move
        super().__init__(("127.0.0.1", 0), ImapHandler)

    def get_request(self):  # type: ignore[no-untyped-def]
        sock, addr = super().get_request()
        return self.context.wrap_socket(sock, server_side=True), addr


class ImapHandler(socketserver.StreamRequestHandler):
    server: ImapServer

    def send(self, line: bytes) -> None:
        self.wfile.write(line + b"\r\n")

    def handle(self) -> None:
        srv = self.server
        self.send(b"* OK test IMAP ready")
        inbox = srv.folders["INBOX"]
        for raw in self.rfile:
            tag, _, rest = raw.strip().partition(b" ")
            args = [m.group(1) if m.group(1) is not None else m.group(2) for m in _ARG_RE.finditer(rest)]
            cmd = args[0].upper()
            if cmd == b"UID":
                cmd, args = b"UID " + args[1].upper(), args[1:]
            ok = tag + b" OK done"
            if cmd == b"CAPABILITY":
                self.send(b"* CAPABILITY IMAP4rev1" + (b" MOVE" if srv.move else b""))
            elif cmd == b"LOGIN":
                if args[1:] != [b"bounces", b"imap-secret"]:
                    ok = tag + b" NO bad login"
            elif cmd == b"SELECT":
                self.send(b"* %d EXISTS" % len(inbox))
                ok = tag + b" OK [READ-WRITE] selected"
            elif cmd == b"CREATE":
                srv.folders.setdefault(args[1].decode(), {})
            elif cmd == b"UID SEARCH":
                live = sorted(u for u in inbox if u not in srv.deleted)
                self.send(b"* SEARCH " + b" ".join(b"%d" % u for u in live))
            elif cmd == b"UID FETCH" and b"RFC822.SIZE" in args[2].upper():
                for uid in (int(u) for u in args[1].split(b",")):
                    if uid in inbox:
                        self.send(b"* %d FETCH (UID %d RFC822.SIZE %d)" % (uid, uid, len(inbox[uid])))
            elif cmd == b"UID FETCH":
                uid = int(args[1])
                data = inbox[uid]
                self.wfile.write(
                    b"* %d FETCH (UID %d BODY[] {%d}\r\n" % (uid, uid, len(data)) + data + b")\r\n"
                )
            elif cmd in (b"UID MOVE", b"UID COPY"):
                uid, folder = int(args[1]), args[2].decode()
                srv.folders[folder][uid] = inbox[uid]
                if cmd == b"UID MOVE":
                    del inbox[uid]
            elif cmd == b"UID STORE":
                srv.deleted.add(int(args[1]))
            elif cmd == b"EXPUNGE":
                for uid in list(srv.deleted):
                    inbox.pop(uid, None)
                srv.deleted.clear()
            elif cmd == b"LOGOUT":
                self.send(b"* BYE")
                self.send(ok)
                return
            else:
                ok = tag + b" BAD unknown"
            self.send(ok)


@pytest.mark.parametrize("move", [True, False], ids=["MOVE", "COPY+EXPUNGE"])
def test_fetch_over_imap_tls(setup, monkeypatch, move):
    messages, run, state, tmp_path = setup
    cert, key = _certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ImapServer(messages, context, move=move)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    monkeypatch.setenv("DIGEST_BOUNCES_PASSWORD", "imap-secret")
    extra = f'username = "bounces"\nca_file = "{cert}"\n'
    try:
        code, out = run(f"imaps://127.0.0.1:{port}/INBOX", extra)
        assert code == 0, out
        assert _lines(out)["messages read"] == 5
        assert state() == (Status.BOUNCED, Status.COMPLAINED, {"bounced": 1, "complained": 1, "refused": 0})
        assert list(server.folders["INBOX"].values()) == [messages[-1]]
        assert len(server.folders["digest-processed"]) == 4
        code, out = run(f"imaps://127.0.0.1:{port}/INBOX", extra)
        assert _lines(out)["messages read"] == 1
    finally:
        server.shutdown()
        server.server_close()


def test_imap_wrong_password_is_a_clear_error(setup, monkeypatch):
    messages, run, _state, tmp_path = setup
    cert, key = _certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = ImapServer(messages, context, move=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("DIGEST_BOUNCES_PASSWORD", "wrong")
    try:
        code, _ = run(
            f"imaps://127.0.0.1:{server.server_address[1]}", f'username = "bounces"\nca_file = "{cert}"\n'
        )
        assert code == 1
        assert "bad login" in run.errors[-1]
    finally:
        server.shutdown()
        server.server_close()


# --- nothing jams ----------------------------------------------------------------------------


def _unreadable_messages() -> list[bytes]:
    """Binary junk, a report cut off before its findings, and one over a 50 KB cap."""
    from test_bounces_robust import japanese_report_with_broken_boundary

    cut = (CORPUS / "lhost-postfix-02.eml").read_bytes()
    big = b"From: a@example.org\r\nSubject: big\r\n\r\n" + b"x" * 60_000 + b"\r\n"
    return [bytes(range(256)) * 20, cut[: len(cut) // 3], big, japanese_report_with_broken_boundary()]


def test_unreadable_messages_are_set_aside_and_the_rest_applied(setup):
    """Junk, a cut-off report and an oversized one each get one warning naming them and go to
    .digest-unreadable; the reports after them are still applied; a second fetch does not see them."""
    messages, run, state, tmp_path = setup
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for raw in _unreadable_messages() + messages:
        box.add(raw)
    code, out = run(f"maildir:{tmp_path / 'Maildir'}", "max_message_bytes = 50000\n")
    assert code == 0, out
    counts = _lines(out)
    assert counts["messages read"] == 9 and counts["unreadable (set aside, see the warnings)"] == 3
    assert state() == (Status.BOUNCED, Status.COMPLAINED, {"bounced": 1, "complained": 1, "refused": 0})
    warnings = run.errors[-1].strip().splitlines()
    assert len(warnings) == 3, warnings
    assert all(w.startswith(f"maildir:{tmp_path / 'Maildir'} maildir message ") for w in warnings)
    assert any("not an e-mail (no header fields); moved to .digest-unreadable" in w for w in warnings)
    assert any("truncated report" in w for w in warnings)
    assert any("over [bounces] max_message_bytes (50,000)" in w for w in warnings)
    assert "Traceback" not in run.errors[-1]
    assert len(box.get_folder("digest-unreadable")) == 3
    code, out = run(f"maildir:{tmp_path / 'Maildir'}", "max_message_bytes = 50000\n")
    assert _lines(out)["messages read"] == 1 and run.errors[-1] == ""


def test_pop3_records_what_it_set_aside_and_skips_it_next_time(setup, monkeypatch):
    messages, run, state, tmp_path = setup
    cert, key = _certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    junk = _unreadable_messages()[0]
    server = Pop3Server([junk, *messages], context)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("DIGEST_BOUNCES_PASSWORD", "pop-secret")
    extra = f'username = "bounces"\nca_file = "{cert}"\n'
    try:
        code, out = run(f"pop3s://127.0.0.1:{server.server_address[1]}", extra)
        assert code == 0 and _lines(out)["unreadable (set aside, see the warnings)"] == 1
        assert "POP3 message 1: not an e-mail" in run.errors[-1] and "recorded as seen" in run.errors[-1]
        assert state() == (Status.BOUNCED, Status.COMPLAINED, {"bounced": 1, "complained": 1, "refused": 0})
        assert server.messages[0] == junk  # POP3 cannot move it: it stays, recorded as seen
        code, out = run(f"pop3s://127.0.0.1:{server.server_address[1]}", extra)
        assert _lines(out)["messages read"] == 1  # the ordinary message only
        assert run.errors[-1] == ""
    finally:
        server.shutdown()
        server.server_close()


def test_imap_moves_unreadable_messages_to_their_folder(setup, monkeypatch):
    messages, run, state, tmp_path = setup
    cert, key = _certificate(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    junk = _unreadable_messages()
    server = ImapServer(junk + messages, context, move=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("DIGEST_BOUNCES_PASSWORD", "imap-secret")
    extra = f'username = "bounces"\nca_file = "{cert}"\nmax_message_bytes = 50000\n'
    try:
        code, out = run(f"imaps://127.0.0.1:{server.server_address[1]}/INBOX", extra)
        assert code == 0, out
        assert len(server.folders["digest-unreadable"]) == 3
        assert "IMAP UID 3: 60,0" in run.errors[-1]  # the big one, named by its UID
        assert state() == (Status.BOUNCED, Status.COMPLAINED, {"bounced": 1, "complained": 1, "refused": 0})
    finally:
        server.shutdown()
        server.server_close()


def test_a_blocklisting_raises_an_alarm_in_runs_show_and_suppresses_nobody(setup, monkeypatch, capsys):
    messages, run, state, tmp_path = setup
    monkeypatch.setattr(
        cli,
        "COMMAND_MODULES",
        ("digest.commands.bounces", "digest.commands.subscribers", "digest.commands.runs"),
    )
    blocked = "550 5.7.1 Service unavailable; client [192.0.2.1] blocked using zen.spamhaus.org"
    with session_factory(make_engine(f"sqlite:///{tmp_path / 'digest.db'}")).begin() as s:
        hard, angry = store.get_by_email(s, "hard@example.com"), store.get_by_email(s, "angry@example.com")
        reports = [
            dsn(sub.email, message_id("run1", sub), status="5.7.1", diagnostic=blocked)
            for sub in (hard, angry)
        ]
    box = mailbox.Maildir(tmp_path / "Maildir", create=True)
    for raw in reports:
        box.add(raw)
    code, out = run(f"maildir:{tmp_path / 'Maildir'}")
    assert code == 0 and _lines(out)["refused for our sending (see the run's alarms)"] == 2
    assert state() == (Status.ACTIVE, Status.ACTIVE, {"bounced": 0, "complained": 0, "refused": 2})
    assert "Alarm: run run1: blocked by example.com: 2 messages refused" in run.errors[-1]
    assert cli.main(["-c", str(tmp_path / "digest.toml"), "runs", "show", "run1"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "2 refused" in shown and "Alarm: blocked by example.com: 2 messages refused" in shown
    assert cli.main(["-c", str(tmp_path / "digest.toml"), "runs", "show", "run1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert [(a["reason"], a["domain"], a["count"]) for a in record["alarms"]] == [
        ("blocked", "example.com", 2)
    ]
