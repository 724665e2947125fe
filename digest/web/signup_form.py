"""The one sign-up path: what `/subscribe` and `/subscribe/embed` both do with a posted form.

Read and check the fields, then queue the request (`SignupQueue.submit`). Everything that
depends on the address (the lookup, the writes, the per-mailbox limit, the mail) happens on the
queue's worker after the answer, so the answer and its timing are the same for every valid
address, known or not. The per-client limit is one Flask-Limiter limit shared by both routes
(`digest.web.signup_limits`, in the route table), so a client's attempts count together
wherever they post from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from werkzeug.datastructures import MultiDict

from digest.errors import InvalidAddressError
from digest.web.queue import SignupQueue
from subscribers.validate import MAX_ADDRESS_LENGTH, InputError, check_regions, clean_name, normalize_email


@dataclass(frozen=True)
class SignupAnswer:
    """What came of a posted form: the values as typed (to show again), and an error per field.

    No errors: the request was queued for `email`."""

    form: dict[str, Any]
    errors: dict[str, str] = field(default_factory=dict)
    email: str = ""


def take_signup(
    posted: MultiDict[str, str],
    regions: tuple[str, ...],
    queue: SignupQueue,
    at: datetime,
    *,
    submit: bool = True,
) -> SignupAnswer:
    """Check a sign-up form and, if it is valid, queue the request. Nothing else happens here.

    `submit=False` only checks (a bot caught by the embed's honeypot gets the same answer as a
    person, down to the error messages, and nothing is queued)."""
    form = {
        "email": posted.get("email", ""),
        "name": posted.get("name", ""),
        "regions": posted.getlist("region"),
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
            errors["email"] = reader_message(str(err))
    try:
        name = clean_name(form["name"])
    except InputError as err:
        errors["name"] = err.message
    try:
        chosen = check_regions(form["regions"], regions)
    except InputError as err:
        errors["regions"] = err.message
    if errors:
        return SignupAnswer(form, errors)
    # Before the answer, only an INSERT into the queue: the same work for every valid address,
    # and a failure there cannot change the answer (it is logged).
    if submit:
        queue.submit(email, name, chosen, at)
    return SignupAnswer(form, email=email)


def reader_message(error: str) -> str:
    """email-validator's sentence without our technical prefix (the reader typed the address)."""
    _, sep, reason = error.partition("is not a valid e-mail address: ")
    return f"That is not a valid e-mail address: {reason}" if sep else error[:1].upper() + error[1:] + "."
