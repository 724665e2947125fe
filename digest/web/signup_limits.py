"""The limits every sign-up endpoint shares (`/subscribe`, and any other form that signs readers
up), so a second endpoint is no second budget:

- per client address: a route in the table with `limit=per_client, limit_scope=SCOPE` is under
  one Flask-Limiter shared limit: every such route draws on the same count per address;
- per mailbox: `subscribers.signup.request_subscription` counts confirmation mails per mailbox
  (`subscribers.validate.mailbox_key`: +tags, case, Gmail's dots and domains), whichever
  endpoint queued the request.
"""

from __future__ import annotations

from digest.config import WebConfig

SCOPE = "signup"


def per_client(web: WebConfig) -> str:
    """Sign-up attempts one client address may make per window, on all endpoints together."""
    return f"{web.subscribe_limit_per_client} per {web.rate_window_minutes} minutes"
