"""Sent runs in the ledger, and reports about their messages, for the bounce tests."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from digest.message import make_message_id
from digest.send import Delivery, SendRun
from subscribers import store
from subscribers.tokens import Tokens

SECRET = "Xr5Kq2Vw8Ln3Tz7Bc1Hm6Jd4Fg9Ps0YaQe7Wn2Rb5Mk-t3"
TOKENS = Tokens(SECRET)
DOMAIN = "news.example.org"


def sent_run(
    session: Session, run_id: str, subs: list[store.Subscriber], *, at: datetime | None = None
) -> None:
    """A finished run that sent one message to each of `subs`."""
    at = at or datetime.now(UTC)
    run = SendRun(id=run_id, issue="2026-11-27", status="finished", window_end=at)
    session.add(run)
    session.flush()
    run.open_slot = None  # finished: the slot (default 1 on insert) is free for the next run
    session.flush()
    for sub in subs:
        session.add(
            Delivery(
                run_id=run_id, subscriber_id=sub.id, email=sub.email, email_key=sub.email_key, status="sent"
            )
        )
    session.flush()


def message_id(run_id: str, sub: store.Subscriber, tokens: Tokens = TOKENS) -> str:
    return make_message_id(run_id, sub.id, DOMAIN, signature=tokens.message_signature(run_id, sub.id))


def dsn(
    address: str, msg_id: str, *, status: str = "5.1.1", action: str = "failed", diagnostic: str = ""
) -> bytes:
    """An RFC 3464 report about the message `msg_id` to `address`."""
    diag = diagnostic or ("550 5.1.1 user unknown" if status.startswith("5") else "452 4.2.2 mailbox full")
    return (
        "From: MAILER-DAEMON@mx.example.net\r\n"
        "To: bounces@news.example.org\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <report-1@mx.example.net>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {address}\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; {diag}\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: news@news.example.org\r\nTo: {address}\r\nSubject: This week\r\nMessage-ID: {msg_id}\r\n\r\n"
        "--B--\r\n"
    ).encode()


def arf(address: str, msg_id: str) -> bytes:
    """An RFC 5965 complaint about the message `msg_id`."""
    return (
        "From: fbl@isp.example.net\r\nTo: abuse@news.example.org\r\nSubject: Abuse report\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=feedback-report; boundary="F"\r\n\r\n'
        "--F\r\nContent-Type: text/plain\r\n\r\nA complaint.\r\n"
        "--F\r\nContent-Type: message/feedback-report\r\n\r\n"
        f"Feedback-Type: abuse\r\nUser-Agent: FBL/1.0\r\nVersion: 1\r\nOriginal-Rcpt-To: {address}\r\n\r\n"
        "--F\r\nContent-Type: message/rfc822\r\n\r\n"
        f"From: news@news.example.org\r\nTo: {address}\r\nMessage-ID: {msg_id}\r\n"
        "Subject: This week\r\n\r\nHi\r\n"
        "--F--\r\n"
    ).encode()
