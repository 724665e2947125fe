"""Flask app for readers: subscribe, confirm, preference centre, unsubscribe (RFC 8058).

Rules the routes keep:
- The subscribe form answers the same page for any valid address, known or not.
- Links carry signed, purpose-bound tokens (subscribers.tokens); a bad one is a 400 page.
- GET never changes anything (mail scanners prefetch links); a button POSTs.
- POST /unsubscribe/<token> works with no cookie and no CSRF token (RFC 8058 one-click);
  the token is the proof, as it is for POST /confirm/<token>. Every other form carries a CSRF
  token (Flask-WTF's CSRFProtect) bound to the session, kept in a SameSite=Lax, HttpOnly cookie.
- The staff console (`digest.web.staff`) lives under /staff/ in the same app.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from flask import Flask, Response, abort, redirect, render_template, request, url_for
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFError, CSRFProtect
from jinja2 import ChoiceLoader, FileSystemLoader
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from digest.archive import archive_path
from digest.config import Config, load_config, secret
from digest.db import make_engine, migrate, session_factory
from digest.errors import InvalidAddressError
from digest.personal import Links
from digest.render import bundled_templates_dir
from digest.transports import Transport, make_transport
from digest.web.mail import SendMail, confirmation_message, transport_mailer
from digest.web.queue import SignupQueue, SignupRequest
from digest.web.redirects import register_redirects
from digest.web.staff import IMPORT_ENDPOINT, MAX_IMPORT_BYTES, staff_blueprint
from digest.web.webhooks import register_webhooks
from subscribers import store
from subscribers.signup import request_subscription
from subscribers.store import ConfirmOutcome, Status, Subscriber
from subscribers.tokens import Purpose, TokenError, Tokens
from subscribers.validate import (
    MAX_ADDRESS_LENGTH,
    InputError,
    check_regions,
    clean_name,
    normalize_email,
)

log = logging.getLogger(__name__)

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
    are picked up at start-up. Without it, that work runs before the page is answered, and the
    response time then depends on the address. `process_queue=False` only queues (another
    process's worker handles the jobs).
    `transport_factory` makes the transport the console's test sends, run-now firings and
    "send again" go through (default: `[transport]`). The console's schedules are
    `app.extensions["digest.schedule"]` when set (`digest run` sets its running service), else a
    ScheduleService made on first use; the sends it starts run on a background thread,
    `app.extensions["digest.console.jobs"]` (`.join()` waits for them).
    """
    key = secret_key or secret("secret_key", required_by="digest serve (it signs links and cookies)")
    tokens = Tokens(key)
    links = Links(config.newsletter.base_url)
    sessions = session_factory(engine)
    mailer = send_mail or transport_mailer(config)
    web = config.web
    confirm_window = timedelta(hours=web.confirm_window_hours)
    now = clock or (lambda: datetime.now(UTC))
    regions = config.regions.order

    app = Flask(__name__, static_folder=None)
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
        # the Origin header themselves.
        WTF_CSRF_SSL_STRICT=False,
    )

    @app.before_request
    def _upload_limit() -> None:
        # Registered before CSRFProtect, which reads the form: the staff's CSV import may be larger.
        if request.endpoint == IMPORT_ENDPOINT:
            request.max_content_length = MAX_IMPORT_BYTES
            # Werkzeug buffers multipart data up to this much between parts (the file's chunks).
            request.max_form_memory_size = 1024 * 1024

    csrf = CSRFProtect(app)
    web_dirs = [str(bundled_templates_dir() / "web")]
    if config.templates.folder:
        web_dirs.insert(0, str(config.resolve_path(config.templates.folder) / "web"))
    app.jinja_loader = ChoiceLoader([FileSystemLoader(web_dirs)])
    register_redirects(app, config, engine, key, now)  # /r/, /o/: story links; inside ProxyFix
    if web.trusted_proxies:
        # Only the proxies' own hops: with N proxies, the Nth address from the right of
        # X-Forwarded-For is the client; anything further left was written by the client.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=web.trusted_proxies, x_proto=web.trusted_proxies)  # type: ignore[method-assign]
    # Per-client limits: in this process's memory, or in Redis ([web] limiter_url) so they hold
    # across processes and restarts. The prefix keeps two newsletters on one Redis apart.
    limiter = Limiter(
        get_remote_address,
        app=app,
        storage_uri=web.limiter_url or "memory://",
        strategy="moving-window",
        headers_enabled=True,
        # Redis gone: count in memory until it answers again, rather than failing every sign-up.
        in_memory_fallback_enabled=True,
        key_prefix=f"digest:{config.list_id}",
    )
    app.extensions["digest.limiter"] = limiter

    # Provider webhooks (bounces, complaints): signed by the provider, so no CSRF token.
    register_webhooks(app, config, sessions, tokens, now)

    # --- helpers -----------------------------------------------------------------------

    @app.context_processor
    def _globals() -> dict[str, Any]:
        return {
            "newsletter": config.newsletter,
            "colors": {"primary": web.primary_color, "accent": web.accent_color},
        }

    def page(template: str, status: int = 200, **context: Any) -> Response:
        return Response(render_template(template, **context), status=status, mimetype="text/html")

    def bad_link(err: TokenError) -> Response:
        expired = "expired" in err.reason
        return page(
            "message.html",
            400,
            title="This link has expired" if expired else "This link does not work",
            message=(
                "The link is too old. You can sign up again to get a new one."
                if expired
                else "The link is damaged or incomplete. Copy the whole link from the e-mail, "
                "or use the newest e-mail we sent you."
            ),
            show_subscribe=True,
        )

    def load(token: str, purpose: Purpose, db: Any) -> tuple[Subscriber, datetime]:
        try:
            subscriber_id, issued = tokens.read_with_time(token, purpose)
        except TokenError as err:
            abort(bad_link(err))
        sub = store.get(db, subscriber_id)
        if sub is None:  # erased on request: the link refers to no one now
            abort(bad_link(TokenError("this link is not valid")))
        return sub, issued

    def masked(email: str) -> str:
        local, _, domain = email.partition("@")
        return f"{local[:1]}{'•' * min(max(len(local) - 1, 1), 6)}@{domain}"

    def sign_up(job: SignupRequest) -> None:
        """The whole sign-up, on the worker: record the request, then mail the link if one is due."""
        mail = record_request(job.email, job.name, job.regions, job.at)
        if mail is not None:
            mailer(mail)

    def housekeeping(db: Any, at: datetime) -> None:
        store.forget_confirmations_before(db, at - confirm_window)

    queue = SignupQueue(
        sessions,
        sign_up,
        clock=now,
        inline=not background_mail,
        run_worker=process_queue,
        after_pass=housekeeping,
    )
    app.extensions["digest.mail"] = queue

    def record_request(email: str, name: str, chosen: frozenset[str], at: datetime) -> EmailMessage | None:
        """Store a sign-up request; the confirmation mail to send, if one is due."""
        for attempt in (1, 2):
            with sessions() as db:
                try:
                    decision = request_subscription(
                        db,
                        email,
                        name=name,
                        regions=chosen,
                        now=at,
                        limit_per_mailbox=web.confirm_limit_per_mailbox,
                        window=confirm_window,
                    )
                    sub = decision.subscriber
                    mail = None
                    if sub is not None:
                        url = links.confirm(tokens.make(sub.id, Purpose.CONFIRM))
                        mail = confirmation_message(config, to_email=sub.email, confirm_url=url)
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

    # --- security headers ----------------------------------------------------------------

    @app.after_request
    def _headers(resp: Response) -> Response:
        resp.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'",
        )
        resp.headers["X-Content-Type-Options"] = "nosniff"
        # Token URLs must never leak to other sites through the Referer header (the staff pages
        # set their own policy).
        resp.headers.setdefault("Referrer-Policy", "no-referrer")
        stylesheet = request.endpoint in ("style", "staff.style")
        resp.headers["Cache-Control"] = "public, max-age=3600" if stylesheet else "no-store"
        return resp

    @app.errorhandler(CSRFError)
    def _csrf_error(err: CSRFError) -> Response:
        log.info("CSRF check failed on %s: %s", request.path, err.description)
        return page(
            "message.html",
            400,
            title="Please try again",
            message="This form has expired or was not sent from our page. "
            "Reload the page and send it again (cookies must be allowed for this site).",
        )

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        if err.code == 429:
            message = "There have been too many attempts from your network. Please try again later."
        elif err.code == 413:
            message = "What you sent is far larger than this form allows. Shorten it and try again."
        elif err.code == 404:
            message = "There is no page at this address."
        elif err.code == 405:
            message = "This page cannot be used that way."
        elif err.code == 429:
            message = "There have been too many attempts from your network. Wait a minute and try again."
        else:
            message = err.description or "Something went wrong."
        return page("message.html", err.code or 500, title=err.name, message=message)

    # --- pages ---------------------------------------------------------------------------

    @app.get("/style.css")
    def style() -> Response:
        css = render_template("style.css", primary=web.primary_color, accent=web.accent_color)
        return Response(css, mimetype="text/css")

    @app.get("/")
    def index() -> Response:
        return redirect(url_for("subscribe_form"))

    @app.get("/subscribe")
    def subscribe_form() -> Response:
        return page("subscribe.html", regions=regions, form={}, errors={})

    @app.post("/subscribe")
    @limiter.limit(f"{web.subscribe_limit_per_client} per {web.rate_window_minutes} minutes")
    def subscribe() -> Response:
        form = {
            "email": request.form.get("email", ""),
            "name": request.form.get("name", ""),
            "regions": request.form.getlist("region"),
        }
        errors: dict[str, str] = {}
        email = name = ""
        chosen: frozenset[str] = frozenset()
        if len(form["email"]) > MAX_ADDRESS_LENGTH:
            errors["email"] = f"That address is too long (at most {MAX_ADDRESS_LENGTH} characters)."
        else:
            try:
                email = normalize_email(form["email"])
            except InvalidAddressError as err:
                errors["email"] = _reader_message(str(err))
        try:
            name = clean_name(form["name"])
        except InputError as err:
            errors["name"] = err.message
        try:
            chosen = check_regions(form["regions"], regions)
        except InputError as err:
            errors["regions"] = err.message
        if errors:
            return page("subscribe.html", 400, regions=regions, form=form, errors=errors)
        # Everything that depends on the address (lookup, writes, the per-mailbox limit, the
        # mail) happens after the answer, on the worker: before it, only an INSERT into the
        # queue, so the page and its timing are the same for every valid address, and a
        # failure there cannot change them (it is logged).
        queue.submit(email, name, chosen, now())
        return page("subscribe_sent.html", email=email)

    @app.get("/confirm/<token>")
    def confirm_page(token: str) -> Response:
        with sessions() as db:
            sub, _ = load(token, Purpose.CONFIRM, db)
            # What the form asked for, shown to the owner before it takes effect: whoever filled
            # it in may be a stranger. Autoescaped: it is text they typed, never markup.
            asked_name = sub.requested_name
            asked_regions = json.loads(sub.requested_regions) if sub.requested_regions is not None else None
        return page(
            "confirm.html",
            token=token,
            email=masked(sub.email),
            asked_name=asked_name,
            asked_regions=asked_regions,
        )

    @app.post("/confirm/<token>")
    @csrf.exempt  # the signed token is the proof; the link is often opened in a fresh browser
    def confirm(token: str) -> Response:
        with sessions.begin() as db:
            sub, issued = load(token, Purpose.CONFIRM, db)
            outcome = store.confirm(db, sub, issued_at=issued, source="web")
            prefs = links.preferences(tokens.make(sub.id, Purpose.PREFERENCES))
        if outcome in (ConfirmOutcome.CONFIRMED, ConfirmOutcome.ALREADY_ACTIVE):
            return page(
                "confirmed.html", already=outcome == ConfirmOutcome.ALREADY_ACTIVE, preferences_url=prefs
            )
        if outcome == ConfirmOutcome.USED:
            return page(
                "message.html",
                400,
                title="This link was already used",
                message="This confirmation link was used already, or a newer one replaced it. "
                "Use the newest e-mail, or sign up again.",
                show_subscribe=True,
            )
        return page(
            "message.html",
            400,
            title="We cannot confirm this address",
            message="Mail to this address could not be delivered or was reported as unwanted. "
            "Write to us if you want to subscribe again.",
        )

    @app.get("/unsubscribe/<token>")
    def unsubscribe_page(token: str) -> Response:
        with sessions() as db:
            sub, _ = load(token, Purpose.UNSUBSCRIBE, db)
            already = sub.status in (Status.UNSUBSCRIBED, Status.BOUNCED, Status.COMPLAINED)
            return page("unsubscribe.html", token=token, email=masked(sub.email), already=already)

    @app.post("/unsubscribe/<token>")
    @csrf.exempt  # RFC 8058 one-click: no cookie, no CSRF token
    def unsubscribe(token: str) -> Response:
        # RFC 8058: the mail client POSTs "List-Unsubscribe=One-Click" with no cookie; the signed
        # token is the proof, so no CSRF check here. Repeating it is harmless.
        with sessions.begin() as db:
            sub, _ = load(token, Purpose.UNSUBSCRIBE, db)
            store.unsubscribe(db, sub, source="one-click" if _is_one_click() else "web")
            email = masked(sub.email)
        return page("unsubscribed.html", email=email)

    def _preferences_context(sub: Subscriber, token: str, **extra: Any) -> dict[str, Any]:
        return {
            "token": token,
            "email": masked(sub.email),
            "regions": regions,
            "chosen": set(sub.regions or ()),
            "paused": sub.paused,
            "sub_status": sub.status.value,
            "unsubscribe_url": url_for("unsubscribe_page", token=tokens.make(sub.id, Purpose.UNSUBSCRIBE)),
            "errors": {},
            **extra,
        }

    @app.get("/preferences")
    def preferences_help() -> Response:
        # Where the web edition's footer points: it has no personal link to offer.
        return page(
            "message.html",
            title="Your preferences",
            message=(
                "Every issue we send you ends with your own links to choose your regions, pause, or "
                "unsubscribe. Open the latest issue in your inbox and use the links at its foot."
            ),
            show_subscribe=True,
        )

    @app.get("/archive/<issue>")
    def archive(issue: str) -> Response:
        """The web edition of a sent issue ("view in browser"), as the send wrote it."""
        path = archive_path(config, issue)
        if path is None or not path.is_file():
            abort(404)
        resp = Response(path.read_text(encoding="utf-8"), mimetype="text/html")
        # The e-mail HTML carries its own inline styles and remote photos; still no scripts.
        resp.headers["Content-Security-Policy"] = (
            "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
        )
        return resp

    @app.get("/preferences/<token>")
    def preferences_page(token: str) -> Response:
        with sessions() as db:
            sub, _ = load(token, Purpose.PREFERENCES, db)
            return page("preferences.html", **_preferences_context(sub, token))

    @app.post("/preferences/<token>")
    def preferences(token: str) -> Response:
        with sessions() as db:
            sub, _ = load(token, Purpose.PREFERENCES, db)
            if sub.status != Status.ACTIVE:
                return page("preferences.html", 409, **_preferences_context(sub, token))
            try:
                chosen = check_regions(request.form.getlist("region"), regions)
            except InputError as err:
                ctx = _preferences_context(sub, token, errors={"regions": err.message})
                return page("preferences.html", 400, **ctx)
            store.set_regions(db, sub, chosen, source="web")
            store.set_paused(db, sub, request.form.get("paused") == "on", source="web")
            db.commit()
            return page("preferences.html", **_preferences_context(sub, token, saved=True))

    queue.start()  # sign-ups an earlier process queued but never handled
    app.register_blueprint(
        staff_blueprint(
            config,
            engine,
            clock=now,
            limiter=limiter,
            transport_factory=transport_factory or (lambda: make_transport(config)),
        )
    )
    return app


def _is_one_click() -> bool:
    return request.form.get("List-Unsubscribe") == "One-Click"


def _reader_message(error: str) -> str:
    """email-validator's sentence without our technical prefix (the reader typed the address)."""
    _, sep, reason = error.partition("is not a valid e-mail address: ")
    return f"That is not a valid e-mail address: {reason}" if sep else error[:1].upper() + error[1:] + "."


def create_app_from_environment() -> Flask:
    """For WSGI servers (`gunicorn 'digest.web:create_app_from_environment()'`): config from
    $DIGEST_CONFIG or ./digest.toml, secret from $DIGEST_SECRET_KEY, mail through `[transport]`."""
    config = load_config(os.environ.get("DIGEST_CONFIG"))
    engine = make_engine(config.database.url, base_dir=config.base_dir)
    migrate(engine)
    return create_app(config, engine)
