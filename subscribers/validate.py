"""Checks on what readers and staff type: addresses, names, regions.

Each check returns the clean value or raises an error whose message names the input and
says what is wrong, in words a reader can act on.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

from digest.errors import DigestError, InvalidAddressError

MAX_NAME_LENGTH = 200
MAX_ADDRESS_LENGTH = 254  # RFC 5321 path limit minus the angle brackets

# Separators accepted in a regions cell of a CSV file; region names cannot contain them.
REGION_SEPARATORS = re.compile(r"\s*[;,|]\s*")


class InputError(DigestError, ValueError):
    """A field a reader or staff typed is unusable; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(message)


def normalize_email(raw: str) -> str:
    """The normalised form of `raw` (domain lower-cased and IDNA-checked, Unicode NFC).

    Policy: no display names, no quoted local parts (they are legal but almost always a
    mistake on a sign-up form), internationalised addresses allowed, RFC length limits
    enforced. No DNS lookups: the confirmation mail is the real deliverability check.
    """
    if not isinstance(raw, str):
        raise InvalidAddressError(f"{raw!r} is not an e-mail address")
    # Spaces and tabs around a pasted address are trimmed; a line break anywhere is refused below.
    value = raw.strip(" \t")
    if not value:
        raise InvalidAddressError("an e-mail address is required")
    if "\r" in value or "\n" in value:
        raise InvalidAddressError(
            f"{_preview(value)} is not a valid e-mail address: it contains a line break"
        )
    if len(value) > MAX_ADDRESS_LENGTH * 4:  # cheap guard before the real parser runs
        raise InvalidAddressError(f"{_preview(value)} is too long to be an e-mail address")
    quick = _plain_address(value)
    if quick is not None:
        return quick
    return _validated(value)


# A plain ASCII dot-atom local part (RFC 5322 atext), the shape of nearly every real address.
_PLAIN_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*")
_domains: dict[str, str | None] = {}  # domain as typed -> lower-cased if email_validator keeps it so
_DOMAIN_CACHE_SIZE = 100_000


def _plain_address(value: str) -> str | None:
    """The normalised form of a plain ASCII address, without running the full parser per address.

    Imports check hundreds of thousands of addresses over a few thousand domains: the domain is
    checked by email_validator once (cached), the local part by the dot-atom pattern. Anything
    else (non-ASCII, quoted, over-long, a domain that IDNA changes) returns None and takes the
    full path; a test checks the two agree.
    """
    local, at, domain = value.rpartition("@")
    if not at or len(local) > 64 or len(value) > MAX_ADDRESS_LENGTH or not value.isascii():
        return None
    if not _PLAIN_LOCAL.fullmatch(local):
        return None
    normal = _domains.get(domain, "")
    if normal == "":
        try:
            normal = _validated("a@" + domain).partition("@")[2]
        except InvalidAddressError:
            normal = None  # the full path says what is wrong, with the whole address
        if normal != domain.lower():
            normal = None
        if len(_domains) < _DOMAIN_CACHE_SIZE:
            _domains[domain] = normal
    return None if normal is None else f"{local}@{normal}"


def _validated(value: str) -> str:
    # Imported here: a `digest send` never checks an address, and the import costs ~15 ms.
    from email_validator import EmailNotValidError, validate_email

    try:
        result = validate_email(
            value,
            check_deliverability=False,
            strict=True,
            allow_smtputf8=True,
            allow_quoted_local=False,
            allow_display_name=False,
        )
    except EmailNotValidError as err:
        raise InvalidAddressError(f"{_preview(value)} is not a valid e-mail address: {err}") from None
    return result.normalized


def email_key(email: str) -> str:
    """The form addresses are compared and kept unique by.

    Rule: the domain lower-cased (normalize_email has already IDNA-checked it), the local part
    lower-cased with `str.lower()`. Not `str.casefold()`: it maps "ß" to "ss" and would make
    `straße@` and `strasse@`, two different mailboxes, one subscriber.
    """
    local, at, domain = email.strip().rpartition("@")
    if not at:
        return domain.lower()
    return f"{local.lower()}@{domain.lower()}"


def legacy_email_key(email: str) -> str:
    """The key before migration 0008 (whole address case-folded); only to match old hashes."""
    return email.strip().casefold()


# Providers known to deliver every spelling of a mailbox to one inbox, the one place that says
# so. Domains that are one mailbox domain (Gmail's old name in Germany and the UK), and domains
# whose local parts ignore dots (Gmail: "j.doe", "jdoe" and "jd.o.e" are one inbox). Google
# Workspace domains ignore dots too, but nothing in an address tells them apart.
SAME_MAILBOX_DOMAINS = {"googlemail.com": "gmail.com"}
DOTS_IGNORED_DOMAINS = frozenset({"gmail.com"})


def mailbox_key(email: str) -> str:
    """The mailbox behind an address, for limits only: `email_key` without a `+tag`, with the
    provider's own equivalences (`SAME_MAILBOX_DOMAINS`, `DOTS_IGNORED_DOMAINS`).

    `Victim+1@example.org` and `victim@example.org` reach one inbox, as do `v.ictim@gmail.com`
    and `victim@googlemail.com`, so they share one limit on confirmation mails; the address
    itself is stored as typed.
    """
    key = email_key(email)
    local, at, domain = key.rpartition("@")
    if not at:
        return key
    domain = SAME_MAILBOX_DOMAINS.get(domain, domain)
    base = local.split("+", 1)[0] or local  # "+tag@" alone keeps its local part
    if domain in DOTS_IGNORED_DOMAINS:
        base = base.replace(".", "") or base
    return f"{base}@{domain}"


ERASED_PREFIX = "sha256:"


def erased_key(key: str) -> str:
    """What is kept of an erased address: `sha256:` and the SHA-256 hex of its `email_key`."""
    return ERASED_PREFIX + hashlib.sha256(key.encode("utf-8")).hexdigest()


def is_erased_key(value: str) -> bool:
    return (
        value.startswith(ERASED_PREFIX)
        and re.fullmatch(r"[0-9a-f]{64}", value[len(ERASED_PREFIX) :]) is not None
    )


def clean_name(raw: str | None) -> str:
    """A display name safe to put in a header: one line, no control characters, bounded."""
    if raw is None:
        return ""
    value = raw.strip()
    if value.isascii() and value.isprintable() and len(value) <= MAX_NAME_LENGTH:
        return value  # plain ASCII: already NFC, one line, no control characters
    value = unicodedata.normalize("NFC", value).strip()
    # Anything str.splitlines() splits on (CR, LF, NEL, VT, FF, U+2028, U+2029, ...) and any
    # line or paragraph separator: mail software and logs may break the line there.
    if len(value.splitlines()) > 1 or any(unicodedata.category(ch) in ("Zl", "Zp") for ch in value):
        raise InputError("name", "The name must be a single line (it contains a line break).")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs") for ch in value):
        raise InputError("name", "The name contains control or invisible characters.")
    if len(value) > MAX_NAME_LENGTH:
        raise InputError(
            "name", f"The name is too long ({len(value)} characters; at most {MAX_NAME_LENGTH})."
        )
    return value


def check_regions(chosen: Iterable[str], known: Iterable[str]) -> frozenset[str]:
    """`chosen` as a set of configured region names; an unknown name is an error naming it."""
    known_list = list(known)
    by_fold = {r.casefold(): r for r in known_list}
    out: set[str] = set()
    for raw in chosen:
        name = raw.strip()
        if not name:
            continue
        canonical = by_fold.get(name.casefold())
        if canonical is None:
            raise InputError(
                "regions", f"Unknown region {_preview(name)}; choose from: {', '.join(known_list)}."
            )
        out.add(canonical)
    return frozenset(out)


def split_regions(cell: str) -> list[str]:
    return [p for p in REGION_SEPARATORS.split(cell.strip()) if p]


def _preview(value: str, limit: int = 80) -> str:
    shown = value if len(value) <= limit else value[:limit] + "…"
    return repr(shown)
