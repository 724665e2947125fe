"""Staff are told: an issue held, missed, failed or paused, a run taken over from a dead process.

Each alert is three things at once: a row of `staff_alerts` (the console's dashboard shows it as
a banner until someone acknowledges it), a mail to `[schedule] review_to` (else every staff
account, else the sender's address) through `[transport]`, and a WARNING log line (which
`digest run` prints). A mail that cannot be sent (the relay that failed the issue may refuse it
too) is logged; the banner and the log line stay.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import TYPE_CHECKING

from sqlalchemy import Engine, Index, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from digest.config import Config
from digest.db import Base, UTCDateTime, session_factory

if TYPE_CHECKING:
    from digest.transports.base import Transport

log = logging.getLogger(__name__)

# What staff are told about; "unknown" is rows a dead process left without an answer.
KINDS = ("held", "missed", "failed", "paused", "takeover", "unknown")


class StaffAlert(Base):
    __tablename__ = "staff_alerts"
    __table_args__ = (Index("ix_staff_alerts_open", "acknowledged_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # one of KINDS
    subject: Mapped[str] = mapped_column(Text)
    detail: Mapped[str] = mapped_column(Text, default="", server_default="")  # what to do, too
    issue: Mapped[str | None] = mapped_column(String(40), nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(40), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    acknowledged_by: Mapped[str | None] = mapped_column(String(320), nullable=True)
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


def alert_staff(
    config: Config,
    engine: Engine,
    kind: str,
    subject: str,
    detail: str,
    *,
    now: datetime,
    issue: str | None = None,
    run_id: str | None = None,
    transport: Transport | None = None,
) -> int:
    """Record the alert, log it at WARNING and mail staff; returns the alert's id."""
    if kind not in KINDS:
        raise ValueError(f"alert kind {kind!r}: must be one of {', '.join(KINDS)}")
    with session_factory(engine)() as session:
        row = StaffAlert(
            kind=kind, subject=subject, detail=detail, issue=issue, run_id=run_id, created_at=now
        )
        session.add(row)
        session.commit()
        alert_id = row.id
    log.warning("staff alert %d (%s): %s: %s", alert_id, kind, subject, detail)
    text = f"{subject}\n\n{detail}\n\n"
    console = f"{config.newsletter.base_url.rstrip('/')}/staff/"
    text += f"The staff console shows it until someone acknowledges it: {console}\n"
    try:
        mail_staff(
            config,
            engine,
            f"[{kind}] {config.newsletter.name}: {subject}",
            text,
            f"alert-{alert_id}",
            transport,
        )
    except Exception:  # noqa: BLE001  the banner and the log line still tell staff
        log.exception("staff alert %d could not be mailed", alert_id)
    return alert_id


def open_alerts(session: Session) -> list[StaffAlert]:
    """Alerts nobody acknowledged yet, newest first."""
    return list(
        session.scalars(
            select(StaffAlert).where(StaffAlert.acknowledged_at.is_(None)).order_by(StaffAlert.id.desc())
        )
    )


def acknowledge(session: Session, alert_id: int, *, by: str, now: datetime) -> bool:
    """Mark one alert as seen; False when there is no such open alert. Commits."""
    done = session.execute(
        update(StaffAlert)
        .where(StaffAlert.id == alert_id, StaffAlert.acknowledged_at.is_(None))
        .values(acknowledged_by=by, acknowledged_at=now)
        .execution_options(synchronize_session=False)
    ).rowcount
    session.commit()
    return bool(done)


def review_recipients(config: Config, engine: Engine | None = None) -> tuple[str, ...]:
    """Who staff mail goes to: `[schedule] review_to`, else every staff account (editors and
    admins, who can approve), else the sender's address."""
    if config.schedule.review_to:
        return config.schedule.review_to
    if engine is not None:
        from digest.web.staff_store import list_accounts

        with session_factory(engine)() as session:
            staff = tuple(a.email for a in list_accounts(session))
        if staff:
            return staff
    return (parseaddr(config.newsletter.sender)[1],)


def mail_staff(
    config: Config, engine: Engine, subject: str, text: str, key: str, transport: Transport | None = None
) -> tuple[str, ...]:
    """One plain-text mail per staff recipient through `[transport]`; returns who got it."""
    from digest.transports import make_transport
    from digest.transports.base import Outbound
    from digest.web.mail import wire_bytes

    transport = transport or make_transport(config)
    envelope_sender = parseaddr(config.newsletter.sender)[1]
    recipients = review_recipients(config, engine)
    with transport:
        for i, to in enumerate(recipients):
            msg = EmailMessage(policy=policy.SMTP)
            msg["From"] = config.newsletter.sender
            local_part, _, domain = to.rpartition("@")
            msg["To"] = Address(username=local_part, domain=domain)
            msg["Subject"] = subject
            msg["Date"] = format_datetime(datetime.now(UTC))
            msg["Message-ID"] = f"<{key}-{i}@{config.sender_domain}>"
            msg["Auto-Submitted"] = "auto-generated"
            msg.set_content(text, cte="quoted-printable")
            outbound = Outbound.from_email_message(
                msg, key=f"{key}-{i}", envelope_sender=envelope_sender, wire=wire_bytes(msg)
            )
            transport.send_one(outbound)
    return recipients
