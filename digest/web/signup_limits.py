"""The limits every sign-up endpoint shares (`/subscribe`, and any other form that signs readers
up), so a second endpoint is no second budget:

- per client address: `signup_limit(limiter, web)`, a Flask-Limiter shared limit (one scope, so
  every endpoint decorated with it draws on the same count per address);
- per mailbox: `subscribers.signup.request_subscription` counts confirmation mails per mailbox
  (`subscribers.validate.mailbox_key`: +tags, case, Gmail's dots and domains), whichever
  endpoint queued the request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask_limiter import Limiter

from digest.config import WebConfig

SCOPE = "signup"


def signup_limit(limiter: Limiter, web: WebConfig) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The decorator that puts a view under the one per-client sign-up budget."""
    return limiter.shared_limit(
        f"{web.subscribe_limit_per_client} per {web.rate_window_minutes} minutes", scope=SCOPE
    )
