"""Address, name and region checks; python-email-validator's own cases are the oracle."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from subscriber_helpers import REGIONS, cases

from digest.errors import InvalidAddressError
from subscribers.validate import InputError, check_regions, clean_name, normalize_email

# Our policy refuses what the oracle only accepts with options we leave off.
NEEDS_QUOTES_OR_DISPLAY_NAME = ('"', "<")


@pytest.mark.parametrize("case", cases("test_email_valid") + cases("test_email_valid_intl_local_part"))
def test_valid_addresses_normalise_as_upstream(case):
    address, expected = case["email_input"], case["output"]["normalized"]
    if address.startswith(NEEDS_QUOTES_OR_DISPLAY_NAME) or "<" in address:
        with pytest.raises(InvalidAddressError):
            normalize_email(address)
    else:
        assert normalize_email(address) == expected


@pytest.mark.parametrize("case", cases("test_email_valid_only_if_quoted_local_part"))
def test_quoted_local_parts_are_refused(case):
    with pytest.raises(InvalidAddressError, match="Quoting"):
        normalize_email(case["email_input"])


# Inputs where the installed email-validator (2.4) reports a different first problem than the
# 2.3.0 test file expects (it now checks IDNA before the overall length).
MESSAGE_DIFFERS = {"The email address is too long (1-3 characters too many)."}


@pytest.mark.parametrize("case", cases("test_email_invalid_syntax"))
def test_invalid_addresses_give_upstream_message(case):
    address = case["email_input"]
    with pytest.raises(InvalidAddressError) as info:
        normalize_email(address)
    message = str(info.value)
    assert "is not a valid e-mail address" in message
    if address == address.strip(" \t") and "\n" not in address and case["error_msg"] not in MESSAGE_DIFFERS:
        assert case["error_msg"] in message


@pytest.mark.parametrize(
    "case",
    cases("test_email_invalid_syntax_strict")
    + cases("test_email_invalid_reserved_domain")
    + cases("test_email_invalid_character_smtputf8_off"),
)
def test_strictly_invalid_and_reserved_refused(case):
    # Over-long local parts (strict), special-use domains, and the two smtputf8 cases, which we
    # refuse for another reason (quoted, or a domain without a dot).
    address = case["email_input"]
    with pytest.raises(InvalidAddressError):
        normalize_email(address)


@pytest.mark.parametrize("case", cases("test_email_unsafe_character"))
def test_unsafe_characters_refused(case):
    for address in (case["s"] + "me@example.com", "me@" + case["s"] + "example.com"):
        with pytest.raises(InvalidAddressError) as info:
            normalize_email(address)
        assert case["expected_error"] in str(info.value)


@pytest.mark.parametrize("case", cases("test_pyisemail_tests"))
def test_isemail_cases(case):
    address, status = case["email_input"]
    if address != address.strip(" \t"):
        # We trim spaces and tabs around an address (pasted input): judge the trimmed form.
        trimmed = address.strip(" \t")
        try:
            expected = normalize_email(trimmed)
        except InvalidAddressError:
            with pytest.raises(InvalidAddressError):
                normalize_email(address)
        else:
            assert normalize_email(address) == expected
        return
    if status == "ISEMAIL_VALID":
        assert normalize_email(address)
    else:
        with pytest.raises(InvalidAddressError):
            normalize_email(address)


def test_address_is_trimmed_and_domain_lowercased():
    assert normalize_email("  Reader@Example.ORG ") == "Reader@example.org"


@pytest.mark.parametrize(
    "bad", ["", "   ", "a" * 2000 + "@example.com", "a@example.com\r\nBcc: b@example.com", "a@example.com\n"]
)
def test_empty_and_oversized_addresses(bad):
    with pytest.raises(InvalidAddressError):
        normalize_email(bad)


@pytest.mark.parametrize(
    "name,fragment",
    [
        ("Eve\r\nBcc: victim@example.com", "single line"),
        ("Eve\nX", "single line"),
        # Unicode line and paragraph separators break lines too (str.splitlines, mail clients).
        ("Eve\u2028Bcc: victim@example.com", "single line"),
        ("Eve\u2029X", "single line"),
        ("Eve\x85X", "single line"),
        ("Eve\x0bX", "single line"),
        ("Eve\x00", "control"),
        ("Eve\u202e", "control"),
        ("x" * 201, "too long"),
    ],
)
def test_bad_names(name, fragment):
    with pytest.raises(InputError, match=fragment):
        clean_name(name)


def test_good_names_kept():
    assert clean_name("  Zoë O'Brien-Nakamura ") == "Zoë O'Brien-Nakamura"
    assert clean_name(None) == ""


def test_regions_checked_against_configuration():
    assert check_regions(["africa", " Middle East "], REGIONS) == {"Africa", "Middle East"}
    assert check_regions([], REGIONS) == frozenset()
    with pytest.raises(InputError, match="Unknown region 'Atlantis'"):
        check_regions(["Africa", "Atlantis"], REGIONS)


# --- the quick path for plain addresses agrees with email_validator ---------------------------

_ATEXT = "abcXYZ019!#$%&'*+/=?^_`{|}~-."
_DOMAINS = [
    "example.org",
    "EXAMPLE.org",
    "Sub.Example.COM",
    "localhost",
    "example",
    "x.test",
    "x.invalid",
    "x.local",
    "1.2.3.4",
    "xn--bcher-kva.example",
    "-bad.org",
    "bad-.org",
    "a" * 64 + ".org",
    "a" * 63 + ".org",
    ("a" * 60 + ".") * 4 + "org",
    "under_score.org",
    "x..org",
]


@settings(max_examples=400, deadline=None)
@given(local=st.text(alphabet=_ATEXT, min_size=0, max_size=70), domain=st.sampled_from(_DOMAINS))
def test_plain_addresses_normalise_as_email_validator_says(local: str, domain: str) -> None:
    from email_validator import EmailNotValidError, validate_email

    address = f"{local}@{domain}"
    try:
        expected = validate_email(
            address,
            check_deliverability=False,
            strict=True,
            allow_smtputf8=True,
            allow_quoted_local=False,
            allow_display_name=False,
        ).normalized
    except EmailNotValidError:
        expected = None
    try:
        ours = normalize_email(address)
    except InvalidAddressError:
        ours = None
    assert ours == expected
