"""What a sign-up request does, apart from the web: who gets a confirmation mail, if anyone.

The web page answers the same whatever happens here, so nobody learns from it whether an
address is known. This module decides; the caller sends the mail and commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from subscribers import store
from subscribers.store import Status, Subscriber


@dataclass(frozen=True)
class SignupDecision:
    subscriber: Subscriber | None  # who to send a confirmation to; None: send nothing
    reason: str  # for the log only, never shown to the visitor


def request_subscription(
    session: Session,
    email: str,
    *,
    name: str,
    regions: frozenset[str],
    now: datetime,
    limit_per_mailbox: int,
    window: timedelta,
) -> SignupDecision:
    """Record a sign-up request for an already validated address, name and regions.

    - new address: a pending subscriber with this name and regions, confirmation sent
    - pending, or unsubscribed (coming back): confirmation sent; the record keeps its name and
      regions until the link is used, which applies the requested ones (whoever filled in the
      form may not own the address)
    - active: nothing (they are subscribed; a stranger must not be able to mail them)
    - bounced, complained, or suppressed for those reasons: nothing
    - `limit_per_mailbox` confirmations already sent within `window` to this mailbox, counting
      every `+tag` variant and case spelling of it (`store.mailbox_key`): nothing
    """
    sub = store.get_by_email(session, email)
    if sub is None:
        sub = store.add_subscriber(
            session, email, name=name, regions=regions, status=Status.PENDING, source="web"
        )
    elif sub.status == Status.ACTIVE:
        return SignupDecision(None, "already active")
    elif sub.status in (Status.BOUNCED, Status.COMPLAINED):
        return SignupDecision(None, f"address {sub.status.value}")
    suppression = store.suppression_of(session, sub.email)
    if suppression is not None and suppression.reason in ("bounced", "complained"):
        return SignupDecision(None, f"address suppressed ({suppression.reason})")
    store.lock_mailbox(session, sub)
    sent = store.confirmations_since(session, sub.email, now - window)
    if sent >= limit_per_mailbox:
        return SignupDecision(None, "confirmation limit for this mailbox reached")
    store.note_sign_up_request(sub, name=name, regions=regions)
    store.note_confirmation_sent(session, sub, source="web", at=now)
    return SignupDecision(sub, "confirmation due")
