"""The confirmation mail, and handing it to the configured transport (the sign-up queue and its
worker are in `digest.web.queue`).

`create_app(send_mail=...)` takes any callable that accepts an `EmailMessage`; by default
it is `transport_mailer(config)`, which goes through `[transport]` like the digest does.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr

from digest.config import Config
from digest.message import clean_header_value

SendMail = Callable[[EmailMessage], None]
log = logging.getLogger(__name__)


def confirmation_message(config: Config, *, to_email: str, confirm_url: str) -> EmailMessage:
    """A short plain-text mail with the confirm link; nothing else is ever sent before confirmation.

    It carries no name, neither in To nor in the greeting: whoever filled in the form may not
    own the address, and must not be able to put words ("URGENT call ...") into our mail.
    """
    newsletter = config.newsletter.name
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = clean_header_value(config.newsletter.sender)
    # An Address object, never text built by hand (format_address's RFC 2047 text folds with a
    # line break, which EmailMessage refuses, and policy.SMTP re-emitted it unquoted).
    # username/domain rather than addr_spec: Address refuses a non-ASCII addr_spec, which
    # SMTPUTF8 allows.
    local, _, domain = to_email.rpartition("@")
    msg["To"] = Address(username=local, domain=domain)
    msg["Subject"] = clean_header_value(f"Confirm your subscription to {newsletter}")
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = f"<confirm.{secrets.token_hex(12)}@{config.sender_domain}>"
    # RFC 3834: a machine wrote this; auto-responders should not answer it.
    msg["Auto-Submitted"] = "auto-generated"
    if config.newsletter.reply_to:
        msg["Reply-To"] = clean_header_value(config.newsletter.reply_to)
    text = (
        "Hello,\n\n"
        f"Someone, hopefully you, asked to subscribe {to_email} to {newsletter}.\n\n"
        f"To confirm, open this link within 7 days:\n{confirm_url}\n\n"
        "If it was not you, ignore this message: you will not hear from us again.\n\n"
        f"-- \n{newsletter}\n{config.newsletter.postal_address}\n"
    )
    msg.set_content(text, cte="quoted-printable")
    return msg


def transport_mailer(config: Config) -> SendMail:
    """Hand each message to the transport named in `[transport]` (outbox files, or SMTP)."""
    from digest.transports import make_transport
    from digest.transports.base import Outbound

    transport = make_transport(config)
    envelope_sender = parseaddr(config.newsletter.sender)[1]

    def send(msg: EmailMessage) -> None:
        recipient = msg["To"].addresses[0].addr_spec
        key = "web-" + str(msg["Message-ID"]).strip("<>").split("@")[0]
        # A connection per message: confirmations are rare, and a kept one would idle out.
        with transport:
            outbound = Outbound.from_email_message(
                msg, key=key, envelope_sender=envelope_sender, wire=wire_bytes(msg)
            )
            reply = transport.send_one(outbound).detail
        log.info("confirmation mail to %s handed over: %s", recipient, reply)

    return send


def wire_bytes(msg: EmailMessage) -> bytes:
    """CRLF bytes; an internationalised address needs SMTPUTF8 (RFC 6531) or it would be mangled.

    Only the address decides: a non-ASCII display name is RFC 2047-encoded by policy.SMTP, so
    mail to an ASCII address never needs a server that speaks SMTPUTF8.
    """
    header = msg.get("To")
    ascii_only = header is None or all(a.addr_spec.isascii() for a in header.addresses)
    return msg.as_bytes(policy=policy.SMTP if ascii_only else policy.SMTPUTF8)
