"""The confirmation mail, and a fallback way to hand it over until a transport is wired in.

`create_app(send_mail=...)` takes any callable that accepts an `EmailMessage`; the real
transports (digest.transports) plug in there.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path

from digest.config import Config
from digest.message import clean_header_value, format_address

SendMail = Callable[[EmailMessage], None]
log = logging.getLogger(__name__)


def confirmation_message(config: Config, *, to_email: str, to_name: str, confirm_url: str) -> EmailMessage:
    """A short multipart mail with the confirm link; nothing else is ever sent before confirmation."""
    newsletter = config.newsletter.name
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = clean_header_value(config.newsletter.sender)
    msg["To"] = format_address(to_name, to_email)
    msg["Subject"] = clean_header_value(f"Confirm your subscription to {newsletter}")
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = f"<confirm.{secrets.token_hex(12)}@{config.sender_domain}>"
    # RFC 3834: a machine wrote this; auto-responders should not answer it.
    msg["Auto-Submitted"] = "auto-generated"
    if config.newsletter.reply_to:
        msg["Reply-To"] = clean_header_value(config.newsletter.reply_to)
    text = (
        f"Hello{' ' + to_name if to_name else ''},\n\n"
        f"Someone, hopefully you, asked to subscribe {to_email} to {newsletter}.\n\n"
        f"To confirm, open this link within 7 days:\n{confirm_url}\n\n"
        "If it was not you, ignore this message: you will not hear from us again.\n\n"
        f"-- \n{newsletter}\n{config.newsletter.postal_address}\n"
    )
    msg.set_content(text, cte="quoted-printable")
    return msg


def outbox_mailer(folder: Path) -> SendMail:
    """Write each message as an .eml file into `folder` (the default until a transport is wired)."""

    def send(msg: EmailMessage) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = folder / f"web-{stamp}-{secrets.token_hex(4)}.eml"
        path.write_bytes(msg.as_bytes(policy=policy.SMTP))
        log.info("confirmation mail written to %s", path)

    return send
