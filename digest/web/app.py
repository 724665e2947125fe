"""The web app: readers' pages (subscribe, confirm, preferences, unsubscribe), the staff console
under /staff/, provider webhooks under /webhooks/. This module only wires things: the URLs are
in `routes`, the views in a module per concern, what they share in `site`, the checks in `guards`.

Forms carry a CSRF token (Flask-WTF's CSRFProtect) bound to the session, kept in a
SameSite=Lax, HttpOnly cookie; the signed-link routes and the webhooks are exempt.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect
from jinja2 import ChoiceLoader, FileSystemLoader
from sqlalchemy import Engine
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from digest.config import Config, load_config
from digest.db import make_engine, migrate, session_factory
from digest.render import bundled_templates_dir
from digest.secret_key import secret_key_from_environment
from digest.transports import Transport, make_transport
from digest.web import pages
from digest.web.embed import EMBED_KEY, EmbedPolicy, embed_headers
from digest.web.mail import SendMail, transport_mailer
from digest.web.redirects import register_redirects
from digest.web.routes import register_routes
from digest.web.signup import Signups
from digest.web.site import JOBS_KEY, MAIL_KEY, SCHEDULES_KEY, SITE_KEY, make_site
from digest.web.subscribers import import_upload_limit
from digest.web.webhooks import register_webhooks
from subscribers.tokens import Tokens

MAX_FORM_BYTES = 16 * 1024  # a subscribe or preferences form is well under 1 KB


def create_app(
    config: Config,
    engine: Engine,
    *,
    secret_key: str | None = None,
    send_mail: SendMail | None = None,
    background_mail: bool = True,
    process_queue: bool = True,
    clock: Callable[[], datetime] | None = None,
    transport_factory: Callable[[], Transport] | None = None,
) -> Flask:
    """The web app.

    `secret_key` defaults to $DIGEST_SECRET_KEY; `send_mail` (any callable taking an
    EmailMessage) to the transport configured in `[transport]`. With `background_mail` (the default)
    a sign-up is queued in the database (`signup_jobs`) and its work (lookups, writes, the
    confirmation mail) runs on a background thread after the page is answered
    (`app.extensions["digest.mail"].join()` waits for it); jobs an earlier process left behind
    are picked up at start-up. Without it, that work runs before the page is answered.
    `process_queue=False` only queues (another process's worker handles the jobs).
    `transport_factory` makes the transport the console's test sends, run-now firings and
    "send again" go through (default: `[transport]`). The console's schedules are
    `app.extensions["digest.schedule"]` when set (`digest run` sets its running service), else a
    ScheduleService made on first use; the sends it starts run on a background thread,
    `app.extensions["digest.console.jobs"]` (`.join()` waits for them).
    """
    key = secret_key or secret_key_from_environment(required_by="digest serve (it signs links and cookies)")
    tokens = Tokens(key)
    sessions = session_factory(engine)
    now = clock or (lambda: datetime.now(UTC))
    app = Flask(__name__, static_folder=None)
    register_redirects(app, config, engine, key, now)  # /r/, /o/: story links, before ProxyFix wraps
    configure(app, config, key)
    app.before_request(import_upload_limit)  # before CSRFProtect, which reads the form
    csrf = CSRFProtect(app)
    limiter = make_limiter(app, config)

    signups = Signups(
        config,
        sessions,
        tokens,
        send_mail or transport_mailer(config),
        clock=now,
        inline=not background_mail,
        run_worker=process_queue,
    )
    site = make_site(
        config,
        engine,
        sessions=sessions,
        clock=now,
        tokens=tokens,
        transport_factory=transport_factory or (lambda: make_transport(config)),
        signups=signups,
    )
    site.schedules.extensions = app.extensions  # digest run puts its running service there
    app.extensions.update(
        {SITE_KEY: site, MAIL_KEY: signups.queue, JOBS_KEY: site.jobs, SCHEDULES_KEY: site.schedules}
    )

    # Provider webhooks (bounces, complaints): signed by the provider, so no CSRF token.
    register_webhooks(app, config, sessions, tokens, now)
    # The embedded sign-up's allowed sites and signed fill times; CORS for those sites only.
    app.extensions[EMBED_KEY] = EmbedPolicy(config, key, now)
    app.after_request(embed_headers)
    register_routes(app, limiter, csrf, config.web)
    app.context_processor(pages.template_globals)
    app.after_request(pages.security_headers)
    app.register_error_handler(CSRFError, pages.csrf_error)
    app.register_error_handler(HTTPException, pages.http_error)
    signups.queue.start()  # sign-ups an earlier process queued but never handled
    return app


def configure(app: Flask, config: Config, key: str) -> None:
    """Flask's settings, the templates' folders and the proxies to trust."""
    app.secret_key = key
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_FORM_BYTES,
        MAX_FORM_MEMORY_SIZE=MAX_FORM_BYTES,
        SESSION_COOKIE_NAME="digest_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=config.newsletter.base_url.startswith("https://"),
        TEMPLATES_AUTO_RELOAD=False,
        # The token is bound to the session cookie, which is what expires; a time limit of its
        # own would only make a form left open for an hour fail.
        WTF_CSRF_TIME_LIMIT=None,
        # Flask-WTF's strict mode wants a Referer on HTTPS, which the reader pages never send
        # (Referrer-Policy: no-referrer keeps their token URLs private); the staff pages check
        # the Origin header themselves (guards.same_origin).
        WTF_CSRF_SSL_STRICT=False,
    )
    web_dirs = [str(bundled_templates_dir() / "web")]
    if config.templates.folder:
        web_dirs.insert(0, str(config.resolve_path(config.templates.folder) / "web"))
    app.jinja_loader = ChoiceLoader([FileSystemLoader(web_dirs)])
    trusted = config.web.trusted_proxies
    if trusted:
        # Only the proxies' own hops: with N proxies, the Nth address from the right of
        # X-Forwarded-For is the client; anything further left was written by the client.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=trusted, x_proto=trusted)  # type: ignore[method-assign]


def make_limiter(app: Flask, config: Config) -> Limiter:
    """Per-client limits: in this process's memory, or in Redis ([web] limiter_url) so they hold
    across processes and restarts. The prefix keeps two newsletters on one Redis apart."""
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=config.web.limiter_url or "memory://",
        strategy="moving-window",
        headers_enabled=True,
        # Redis gone: count in memory until it answers again, rather than failing every sign-up.
        in_memory_fallback_enabled=True,
        key_prefix=f"digest:{config.list_id}",
    )
    app.extensions["digest.limiter"] = limiter
    return limiter


def create_app_from_environment() -> Flask:
    """For WSGI servers (`gunicorn 'digest.web:create_app_from_environment()'`): config from
    $DIGEST_CONFIG or ./digest.toml, secret from $DIGEST_SECRET_KEY, mail through `[transport]`."""
    config = load_config(os.environ.get("DIGEST_CONFIG"))
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    migrate(engine)
    return create_app(config, engine)
