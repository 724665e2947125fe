"""The work behind a sign-up, done after the page is answered: record the request, then mail
the confirmation link if one is due (see `queue.SignupQueue` for where it runs)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from digest.config import Config
from digest.personal import Links
from digest.web.mail import SendMail, confirmation_message
from digest.web.queue import SignupQueue, SignupRequest
from subscribers import store
from subscribers.signup import request_subscription
from subscribers.tokens import Purpose, Tokens

log = logging.getLogger(__name__)


class Signups:
    """Sign-up requests: queued by the subscribe page, handled by `queue`'s worker."""

    def __init__(
        self,
        config: Config,
        sessions: sessionmaker,
        tokens: Tokens,
        mailer: SendMail,
        *,
        clock: Callable[[], datetime],
        inline: bool,
        run_worker: bool,
    ) -> None:
        self.config = config
        self.sessions = sessions
        self.tokens = tokens
        self.mailer = mailer
        self.links = Links(config.newsletter.base_url)
        self.confirm_window = timedelta(hours=config.web.confirm_window_hours)
        self.queue = SignupQueue(
            sessions,
            self.sign_up,
            clock=clock,
            inline=inline,
            run_worker=run_worker,
            after_pass=self.housekeeping,
        )

    def sign_up(self, job: SignupRequest) -> None:
        """The whole sign-up, on the worker: record the request, then mail the link if one is due."""
        mail = self.record_request(job.email, job.name, job.regions, job.at)
        if mail is not None:
            self.mailer(mail)

    def housekeeping(self, db: Any, at: datetime) -> None:
        store.forget_confirmations_before(db, at - self.confirm_window)

    def record_request(
        self, email: str, name: str, chosen: frozenset[str], at: datetime
    ) -> EmailMessage | None:
        """Store a sign-up request; the confirmation mail to send, if one is due."""
        web = self.config.web
        for attempt in (1, 2):
            with self.sessions() as db:
                try:
                    decision = request_subscription(
                        db,
                        email,
                        name=name,
                        regions=chosen,
                        now=at,
                        limit_per_mailbox=web.confirm_limit_per_mailbox,
                        window=self.confirm_window,
                    )
                    sub = decision.subscriber
                    mail = None
                    if sub is not None:
                        url = self.links.confirm(self.tokens.make(sub.id, Purpose.CONFIRM))
                        mail = confirmation_message(self.config, to_email=sub.email, confirm_url=url)
                    # Commit before sending: when the mail arrives, its link must find the row.
                    db.commit()
                except IntegrityError:
                    # Two requests for the same new address at once: the other one created the
                    # row; run again against it.
                    db.rollback()
                    if attempt == 2:
                        raise
                    continue
                log.info("subscribe request: %s", decision.reason)
                return mail
        return None
