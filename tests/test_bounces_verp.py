"""VERP: each message's envelope sender names its run and subscriber, signed; reports are matched
by the address they came back to, the Message-ID second."""

from __future__ import annotations

import mailbox
import re
from pathlib import Path

import pytest
from bounce_helpers import DOMAIN, SECRET, TOKENS, dsn, message_id, sent_run

from digest.cli import main
from digest.config import load_config
from digest.errors import ConfigError
from digest.message import make_return_path
from subscribers import store
from subscribers.bounces import classify
from subscribers.reports import Effect, Policy, apply_report
from subscribers.store import Status
from subscribers.tokens import Tokens
from tests.conftest import make_site

pytest_plugins = ("subscriber_fixtures",)
POLICY = Policy()


def verp(run_id: str, sub: store.Subscriber, tokens: Tokens = TOKENS) -> str:
    return make_return_path(run_id, sub.id, DOMAIN, signature=tokens.message_signature(run_id, sub.id))


def bounce_to(address: str, return_path: str, *, quoted_id: str = "") -> bytes:
    """A report sent to `return_path` about `address`; it quotes `quoted_id`, or no Message-ID."""
    raw = dsn(address, quoted_id or "<none@nowhere>").decode()
    raw = raw.replace("To: bounces@news.example.org", f"To: {return_path}", 1)
    if not quoted_id:
        raw = raw.replace("Message-ID: <none@nowhere>\r\n", "")
    return raw.encode()


@pytest.fixture
def reader(session):
    sub = store.add_subscriber(session, "reader@example.com", source="cli")
    sent_run(session, "run1", [sub])
    return sub


def test_a_report_that_quotes_no_message_id_is_matched_by_where_it_came_back(session, reader):
    report = classify(bounce_to(reader.email, verp("run1", reader)))
    assert report.message_ids == () and report.return_paths == (verp("run1", reader),)
    applied = apply_report(session, TOKENS, report, source="mailbox", policy=POLICY)
    assert (applied.effect, applied.matched_by) == (Effect.SUPPRESSED, "verp")
    assert reader.status == Status.BOUNCED


def test_the_return_path_decides_before_a_quoted_message_id(session, reader):
    other = store.add_subscriber(session, "other@example.com", source="cli")
    sent_run(session, "run2", [other])
    raw = bounce_to(reader.email, verp("run1", reader), quoted_id=message_id("run2", other))
    applied = apply_report(session, TOKENS, classify(raw), source="mailbox", policy=POLICY)
    assert (applied.run_id, applied.subscriber_id, applied.matched_by) == ("run1", reader.id, "verp")
    assert other.status == Status.ACTIVE


def test_forged_or_lowercased_return_paths(session, reader):
    forged = verp("run1", reader, Tokens("another-key"))
    assert apply_report(
        session, TOKENS, classify(bounce_to(reader.email, forged)), source="m", policy=POLICY
    ).effect == (Effect.UNMATCHED)
    # Some mail systems lower-case the local part: the signature still reads.
    assert TOKENS.read_return_path(verp("run1", reader).upper().replace("RUN1", "run1")) == (
        "run1",
        reader.id,
    )
    # Without a VERP address, the Message-ID still matches (second way).
    applied = apply_report(
        session, TOKENS, classify(dsn(reader.email, message_id("run1", reader))), source="m", policy=POLICY
    )
    assert applied.matched_by == "message-id"


def test_bad_return_path_domain_is_named(tmp_path: Path):
    path = tmp_path / "digest.toml"
    path.write_text("[bounces]\nreturn_path_domain = 'not a domain'\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[bounces\] return_path_domain"):
        load_config(path)


def test_digest_send_puts_the_signed_return_path_in_mail_from(
    tmp_path: Path, smtp_server, monkeypatch, capsys
):
    """A real `digest send` over SMTP: each MAIL FROM is bounces+RUN.ID.SIG@return_path_domain, it
    reads back as that run and subscriber, and a bounce sent to it (quoting nothing) is applied."""
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    site = make_site(tmp_path, smtp_server, {"a@example.org": {}, "b@example.org": {}})
    site.write_text(
        site.read_text() + '\n[bounces]\nreturn_path_domain = "bounce.rs.example"\n', encoding="utf-8"
    )
    assert main(["-c", str(site), "send"]) == 0
    tokens = Tokens(SECRET)
    senders = {rcpts[0]: mail_from for mail_from, rcpts, _d in smtp_server.messages}
    assert set(senders) == {"a@example.org", "b@example.org"}
    refs = {}
    for rcpt, mail_from in senders.items():
        assert re.fullmatch(r"bounces\+[0-9a-f]{16}\.\d+\.[a-z2-7]{20}@bounce\.rs\.example", mail_from), (
            mail_from
        )
        refs[rcpt] = tokens.read_return_path(mail_from)
    assert len({r[0] for r in refs.values()}) == 1  # one run
    capsys.readouterr()
    box = tmp_path / "bounces.mbox"
    mbox = mailbox.mbox(box)
    mbox.add(bounce_to("a@example.org", senders["a@example.org"]))
    mbox.close()
    assert main(["-c", str(site), "bounces", "fetch", "--mailbox", f"mbox:{box}"]) == 0
    assert "     1  suppressed" in capsys.readouterr().out


def test_classify_says_the_report_matched_by_its_return_path(tmp_path: Path, monkeypatch, capsys):
    import json

    from digest import cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", ("digest.commands.bounces",))
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    address = make_return_path("run5", 42, DOMAIN, signature=TOKENS.message_signature("run5", 42))
    path = tmp_path / "report.eml"
    path.write_bytes(bounce_to("reader@example.com", address))
    assert main(["bounces", "classify", "--json", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["ours"] == {"run": "run5", "subscriber": 42, "by": "verp"}
