"""Provider webhooks: POST /webhooks/<provider> (and /webhooks/postmark/<anything>, for
Postmark URLs that carry a path). No CSRF token and no cookie: the provider's signature (or
Postmark's basic auth) is the proof, checked by the provider's module in `digest.transports`
before anything is read. Refused: 401 (missing) or 403 (wrong, stale, replayed), nothing changed;
a signed body not shaped as the provider documents it is a 400. Refusals of the proof (401, 403)
are counted per client address: past `[bounces] webhook_failure_limit` that client gets 429
before anything is checked, so credentials and signatures cannot be guessed at speed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any

from flask import Blueprint, Flask, Response, abort, jsonify, request
from flask_limiter.util import get_remote_address
from sqlalchemy.orm import sessionmaker

from digest.config import Config, secret
from digest.transports import (
    mailgun_webhook,
    postmark_webhook,
    resend_webhook,
    sendgrid_webhook,
    ses_webhook,
)
from digest.transports.ses_webhook import SnsFetcher
from digest.transports.webhook import Context, Incoming, Refused
from digest.web.throttle import FailureCounter
from subscribers.reports import Policy, apply_report
from subscribers.tokens import Tokens

log = logging.getLogger(__name__)

PROVIDERS: dict[str, ModuleType] = {
    m.PROVIDER: m for m in (sendgrid_webhook, mailgun_webhook, postmark_webhook, ses_webhook, resend_webhook)
}
MAX_WEBHOOK_BYTES = 5 * 1024 * 1024  # SendGrid batches run to hundreds of events


@dataclass
class Webhooks:
    """What the routes use; tests replace `extra["sns_fetcher"]` through app.extensions."""

    config: Config
    sessions: sessionmaker
    tokens: Tokens
    now: Callable[[], datetime]
    extra: dict[str, Any] = field(default_factory=dict)


def register_webhooks(
    app: Flask, config: Config, sessions: sessionmaker, tokens: Tokens, now: Callable[[], datetime]
) -> None:
    # One SNS fetcher for the app's life: its certificate cache is what spares AWS (and us) a GET
    # per request.
    extra = {"ses_topic_arns": config.bounces.ses_topic_arns, "sns_fetcher": SnsFetcher()}
    hooks = Webhooks(config, sessions, tokens, now, extra=extra)
    app.extensions["digest.webhooks"] = hooks
    failures = FailureCounter(
        app.extensions["digest.limiter"],
        config.bounces.webhook_failure_limit,
        scope="webhook-refused",
        prefix=f"digest:{config.list_id}",
    )
    bp = Blueprint("webhooks", __name__, url_prefix="/webhooks")
    policy = Policy(
        soft_limit=config.bounces.soft_limit, soft_window=timedelta(days=config.bounces.soft_window_days)
    )

    @bp.before_request
    def _larger_bodies() -> None:
        request.max_content_length = MAX_WEBHOOK_BYTES

    @bp.post("/<provider>")
    @bp.post("/<provider>/<path:path_secret>")
    def receive(provider: str, path_secret: str = "") -> Any:
        module = PROVIDERS.get(provider)
        if module is None:
            abort(404)
        client = get_remote_address()
        if failures.blocked(client):
            wait = failures.retry_after(client)
            return _refusal(429, "too many refused webhook requests from this address", wait)
        auth = request.authorization
        incoming = Incoming(
            body=request.get_data(cache=False),
            headers=dict(request.headers),
            path_secret=path_secret,
            authorization=(auth.username or "", auth.password or "")
            if auth and auth.type == "basic"
            else None,
        )
        with hooks.sessions() as session:
            context = Context(
                now=hooks.now,
                max_age_seconds=config.bounces.webhook_max_age_seconds,
                session=session,
                secret=secret,
                extra=hooks.extra,
            )
            try:
                found = module.reports(incoming, context)
            except Refused as err:
                session.rollback()  # a replay check may have written; a refused request changes nothing
                log.warning("webhook %s refused from %s: %s", provider, client, err.reason)
                if err.status in (401, 403):
                    failures.failed(client)
                return _refusal(err.status, err.reason)
            effects: dict[str, int] = {}
            for report in found:
                applied = apply_report(
                    session, hooks.tokens, report, source=provider, policy=policy, now=hooks.now()
                )
                effects[applied.effect.value] = effects.get(applied.effect.value, 0) + 1
            session.commit()
        log.info("webhook %s: %s", provider, effects)
        return jsonify(effects)

    csrf = app.extensions.get("csrf")
    if csrf is not None:
        csrf.exempt(bp)  # signed by the provider, posted by its servers: no session, no CSRF token
    app.register_blueprint(bp)


def _refusal(status: int, reason: str, retry_after: int = 0) -> Response:
    resp = jsonify(error=reason)
    resp.status_code = status
    if status == 401:
        resp.headers["WWW-Authenticate"] = 'Basic realm="webhooks"'
    if retry_after:
        resp.headers["Retry-After"] = str(retry_after)
    return resp
