"""The readers' pages: subscribe, confirm, preferences, unsubscribe (RFC 8058).

Rules the routes keep:
- The subscribe form answers the same page for any valid address, known or not.
- Links carry signed, purpose-bound tokens (subscribers.tokens); a bad one is a 400 page.
- GET never changes anything (mail scanners prefetch links); a button POSTs.
- POST /unsubscribe/<token> works with no cookie and no CSRF token (RFC 8058 one-click);
  the token is the proof, as it is for POST /confirm/<token> (both CSRF-exempt in the route
  table). Every other form carries a CSRF token bound to the session.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from flask import Response, abort, redirect, render_template, request, url_for

from digest.web.pages import page
from digest.web.signup_form import take_signup
from digest.web.site import site
from subscribers import store
from subscribers.store import ConfirmOutcome, Status, Subscriber
from subscribers.tokens import Purpose, TokenError
from subscribers.validate import InputError, check_regions


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
    """The reader a link's token names, and when it was issued; a 400 page if there is none."""
    try:
        subscriber_id, issued = site().tokens.read_with_time(token, purpose)
    except TokenError as err:
        abort(bad_link(err))
    sub = store.get(db, subscriber_id)
    if sub is None:  # erased on request: the link refers to no one now
        abort(bad_link(TokenError("this link is not valid")))
    return sub, issued


def masked(email: str) -> str:
    local, _, domain = email.partition("@")
    return f"{local[:1]}{'•' * min(max(len(local) - 1, 1), 6)}@{domain}"


def is_one_click() -> bool:
    return request.form.get("List-Unsubscribe") == "One-Click"


def style() -> Response:
    web = site().config.web
    css = render_template("style.css", primary=web.primary_color, accent=web.accent_color)
    return Response(css, mimetype="text/css")


def index() -> Response:
    return redirect(url_for("subscribe_form"))


def subscribe_form() -> Response:
    return page("subscribe.html", regions=site().config.regions.order, form={}, errors={})


def subscribe() -> Response:
    # The same path as the embedded form's (digest.web.signup_form): check, then queue. Before
    # the answer, only an INSERT into the queue; everything that depends on the address happens
    # on the worker, so the page and its timing are the same for every valid address.
    regions = site().config.regions.order
    answer = take_signup(request.form, regions, site().signups.queue, site().clock())
    if answer.errors:
        return page("subscribe.html", 400, regions=regions, form=answer.form, errors=answer.errors)
    return page("subscribe_sent.html", email=answer.email)


def confirm_page(token: str) -> Response:
    with site().sessions() as db:
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


def confirm(token: str) -> Response:
    s = site()
    with s.sessions.begin() as db:
        sub, issued = load(token, Purpose.CONFIRM, db)
        outcome = store.confirm(db, sub, issued_at=issued, source="web")
        prefs = s.links.preferences(s.tokens.make(sub.id, Purpose.PREFERENCES))
    if outcome in (ConfirmOutcome.CONFIRMED, ConfirmOutcome.ALREADY_ACTIVE):
        return page("confirmed.html", already=outcome == ConfirmOutcome.ALREADY_ACTIVE, preferences_url=prefs)
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


def unsubscribe_page(token: str) -> Response:
    with site().sessions() as db:
        sub, _ = load(token, Purpose.UNSUBSCRIBE, db)
        already = sub.status in (Status.UNSUBSCRIBED, Status.BOUNCED, Status.COMPLAINED)
        return page("unsubscribe.html", token=token, email=masked(sub.email), already=already)


def unsubscribe(token: str) -> Response:
    # RFC 8058: the mail client POSTs "List-Unsubscribe=One-Click" with no cookie; the signed
    # token is the proof, so no CSRF check here. Repeating it is harmless.
    with site().sessions.begin() as db:
        sub, _ = load(token, Purpose.UNSUBSCRIBE, db)
        store.unsubscribe(db, sub, source="one-click" if is_one_click() else "web")
        email = masked(sub.email)
    return page("unsubscribed.html", email=email)


def preferences_context(sub: Subscriber, token: str, **extra: Any) -> dict[str, Any]:
    return {
        "token": token,
        "email": masked(sub.email),
        "regions": site().config.regions.order,
        "chosen": set(sub.regions or ()),
        "paused": sub.paused,
        "sub_status": sub.status.value,
        "unsubscribe_url": url_for("unsubscribe_page", token=site().tokens.make(sub.id, Purpose.UNSUBSCRIBE)),
        "errors": {},
        **extra,
    }


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


def preferences_page(token: str) -> Response:
    with site().sessions() as db:
        sub, _ = load(token, Purpose.PREFERENCES, db)
        return page("preferences.html", **preferences_context(sub, token))


def preferences(token: str) -> Response:
    with site().sessions() as db:
        sub, _ = load(token, Purpose.PREFERENCES, db)
        if sub.status != Status.ACTIVE:
            return page("preferences.html", 409, **preferences_context(sub, token))
        try:
            chosen = check_regions(request.form.getlist("region"), site().config.regions.order)
        except InputError as err:
            return page(
                "preferences.html", 400, **preferences_context(sub, token, errors={"regions": err.message})
            )
        store.set_regions(db, sub, chosen, source="web")
        store.set_paused(db, sub, request.form.get("paused") == "on", source="web")
        db.commit()
        return page("preferences.html", **preferences_context(sub, token, saved=True))
