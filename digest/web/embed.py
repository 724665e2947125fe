"""The sign-up form other sites embed: `POST /subscribe/embed`, its script and its snippet.

A newsroom pastes the snippet (`embed_snippet`, shown in the console) into its article template:
a plain HTML form that works with no script, and an optional script (`/subscribe/embed.js`)
that sends it in place and shows the answer beside the form. No CSRF token can live in a page
of another site, so the checks are these, and nothing else is weakened:

- **Where from** (`allowed_origin_only`, which the route table puts around EMBED routes): the
  Origin header (or, without one, the Referer's origin) must be one of `[web] embed_origins` or
  our own `base_url`; anything else gets a 403 page saying so. CORS headers (`embed_headers`)
  go only to those sites.
- **Bots**: a hidden honeypot field (`website`) that people never fill (answered as a person
  would be, and nothing is queued), and a minimum fill time: the form must carry a signed time (`started`,
  from `GET /subscribe/embed/start`, which the script fetches when the page loads) at least
  `[web] embed_min_seconds` old by the app's clock. A form without one, or sent sooner, gets a
  page on our site with the form filled in and a fresh signed time: "press Subscribe once more".
  Readers without scripts take that step; a bot posting the pasted form blindly never gets past it.
- **Everything else is /subscribe's path** (`digest.web.signup_form.take_signup` under the same
  shared per-client limit): double opt-in, the per-mailbox limit on the worker, and the same
  answer for every valid address, known or not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from functools import wraps
from typing import Any
from urllib.parse import urlsplit

from flask import Response, current_app, jsonify, render_template, request
from itsdangerous import BadSignature, URLSafeSerializer

from digest.config import Config
from digest.web.pages import staff_page
from digest.web.signup_form import take_signup
from digest.web.site import site

log = logging.getLogger(__name__)

HONEYPOT = "website"
STARTED = "started"
MAX_FORM_AGE_SECONDS = 24 * 3600  # a form shown yesterday gets a fresh time, like one with none
EMBED_KEY = "digest.embed"  # app.extensions: the EmbedPolicy
EMBED_PATHS = ("/subscribe/embed", "/subscribe/embed/start", "/subscribe/embed.js")


class EmbedPolicy:
    """What the embed views need to know: allowed origins, the clock and the time signer."""

    def __init__(self, config: Config, secret_key: str, clock: Callable[[], datetime]) -> None:
        self.config = config
        self.own_origin = origin_of(config.newsletter.base_url)
        self.origins = frozenset(config.web.embed_origins)
        self.min_seconds = config.web.embed_min_seconds
        self.clock = clock
        self._signer = URLSafeSerializer(secret_key, salt="digest.embed-started")

    def allowed(self, origin: str | None) -> bool:
        return origin is not None and (origin == self.own_origin or origin in self.origins)

    def stamp(self) -> str:
        return self._signer.dumps(int(self.clock().timestamp()))

    def ripe(self, token: str) -> bool:
        """True if `token` is a time we signed, at least `min_seconds` and at most a day ago
        (always with `min_seconds` 0: the check is off)."""
        if self.min_seconds == 0:
            return True
        try:
            shown = self._signer.loads(token)
        except BadSignature:
            return False
        if not isinstance(shown, int):
            return False
        age = self.clock().timestamp() - shown
        return self.min_seconds <= age <= MAX_FORM_AGE_SECONDS


def origin_of(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    default = {"http": 80, "https": 443}[parts.scheme]
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    return f"{parts.scheme}://{parts.hostname}{port}"


def request_origin() -> str | None:
    """Where the post came from: the Origin header, else the Referer's origin ("null" is none)."""
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        return origin_of(origin)
    referer = request.headers.get("Referer")
    return origin_of(referer) if referer else None


def wants_json() -> bool:
    return request.accept_mimetypes.best_match(["text/html", "application/json"]) == "application/json"


def allowed_origin_only(view: Callable[..., Response]) -> Callable[..., Response]:
    """The route table's guard for EMBED routes: posted from a site in [web] embed_origins (or
    our own), by the Origin header or, without one, the Referer; else a clear 403."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Response:
        origin = request_origin()
        if not current_policy().allowed(origin):
            log.info("embedded sign-up refused: posted from %s", origin or "an unknown page")
            return refused(origin)
        return view(*args, **kwargs)

    return wrapper


def embed_start() -> Response:
    """A signed "the form was shown now", for the script to put in the form."""
    return jsonify({STARTED: current_policy().stamp()})


def embed_script() -> Response:
    return Response(render_template("embed.js"), mimetype="text/javascript")


def current_policy() -> EmbedPolicy:
    return current_app.extensions[EMBED_KEY]  # type: ignore[no-any-return]


def embed_headers(resp: Response) -> Response:
    """CORS for the allowed sites only, on the embed paths only (error answers included, so the
    script can read a 429)."""
    if request.path not in EMBED_PATHS:
        return resp
    policy = current_policy()
    origin = request.headers.get("Origin")
    if origin and origin in policy.origins:
        resp.headers["Access-Control-Allow-Origin"] = origin
        if request.method == "OPTIONS":
            resp.headers["Access-Control-Allow-Methods"] = "GET, POST"
            resp.headers["Access-Control-Allow-Headers"] = "Accept, Content-Type"
            resp.headers["Access-Control-Max-Age"] = "3600"
    resp.headers.add("Vary", "Origin")
    if request.path == "/subscribe/embed.js":
        resp.headers["Cache-Control"] = "public, max-age=3600"
        # The script is loaded by other sites' pages.
        resp.headers["Cross-Origin-Resource-Policy"] = "cross-origin"
    return resp


def subscribe_embed() -> Response:
    """POST /subscribe/embed (behind `allowed_origin_only`): honeypot, fill time, then /subscribe's path."""
    policy = current_policy()
    posted = request.form
    # A field people never see was filled: a bot. It gets what a person would get, and nothing
    # is queued, so it learns nothing.
    caught = bool(posted.get(HONEYPOT))
    if caught:
        log.info("embedded sign-up: honeypot filled, ignored")
    elif not policy.ripe(posted.get(STARTED, "")):
        return again(policy, posted, errors={})
    queue = site().signups.queue
    answer = take_signup(posted, policy.config.regions.order, queue, policy.clock(), submit=not caught)
    if answer.errors:
        if wants_json():
            return json_answer(400, ok=False, errors=answer.errors)
        return embed_page(policy, answer.form, answer.errors, 400)
    return sent(answer.email)


def sent(email: str) -> Response:
    if wants_json():
        return json_answer(
            200,
            ok=True,
            message=f"Check your inbox: if {email} can receive the newsletter, a message with a "
            "confirmation link is on its way.",
        )
    return Response(render_template("subscribe_sent.html", email=email), mimetype="text/html")


def again(policy: EmbedPolicy, posted: Any, errors: dict[str, str]) -> Response:
    """No signed time, or one too fresh: one more press, with a fresh time (no-script readers)."""
    if wants_json():
        return json_answer(
            200, ok=False, again=True, started=policy.stamp(), message="Press Subscribe once more to confirm."
        )
    form = {"email": posted.get("email", ""), "regions": posted.getlist("region")}
    return embed_page(policy, form, errors, 200, confirm_step=True)


def embed_page(
    policy: EmbedPolicy, form: dict[str, Any], errors: dict[str, str], status: int, confirm_step: bool = False
) -> Response:
    page = render_template(
        "embed_page.html",
        form=form,
        errors=errors,
        regions=policy.config.regions.order,
        started=policy.stamp(),
        confirm_step=confirm_step,
    )
    resp = Response(page, status=status, mimetype="text/html")
    # The page posts back to us: the browser must send our Origin (no-referrer would send "null").
    resp.headers["Referrer-Policy"] = "same-origin"
    return resp


def refused(origin: str | None) -> Response:
    message = (
        f"This sign-up form was sent from {origin}, which is not a site we take sign-ups from."
        if origin
        else "This sign-up form was sent from a page that did not say where it is (its site may "
        "hide that), so we cannot take it."
    )
    if wants_json():
        return json_answer(403, ok=False, refused=True, message=message)
    page = render_template(
        "message.html",
        title="We cannot take this sign-up here",
        message=message + " Nothing was saved. You can subscribe on our own page instead.",
        show_subscribe=True,
    )
    return Response(page, status=403, mimetype="text/html")


def json_answer(status: int, **body: Any) -> Response:
    resp = jsonify(body)
    resp.status_code = status
    return resp


def embed_snippet(config: Config, *, with_regions: bool) -> str:
    """The HTML a site pastes into its article template (rendered in an app context)."""
    base = config.newsletter.base_url.rstrip("/")
    return render_template(
        "embed_snippet.html", base=base, regions=config.regions.order if with_regions else ()
    ).strip()


def console_context(config: Config) -> dict[str, Any]:
    """What the console's Embed page shows (rendered in an app context)."""
    base = config.newsletter.base_url.rstrip("/")
    return {
        "action": f"{base}/subscribe/embed",
        "origins": config.web.embed_origins,
        "own_origin": origin_of(base),
        "with_regions": embed_snippet(config, with_regions=True),
        "without_regions": embed_snippet(config, with_regions=False),
    }


def console_page() -> Response:
    """GET /staff/embed (admins): the snippet to paste into the site's article template."""
    return staff_page("embed.html", **console_context(site().config))
