"""The preview page's test sends (digest/web/previews.py) through Flask's test client with the real
app, over a real SMTP server (aiosmtpd, in-process): several addresses, each a [TEST] copy of the
chosen variant, remembered for the next test."""

from __future__ import annotations

import html
import re
from email import message_from_bytes, policy

import pytest
from staff_helpers import (  # noqa: F401  (cheap_password_hashes is an autouse fixture)
    EDITOR,
    ORIGIN,
    as_staff,
    cheap_password_hashes,
    close_site,
    make_site,
    staff_config,
)

from digest.db import session_factory
from digest.send import Delivery


@pytest.fixture
def site(tmp_path, smtp_server):
    s = make_site(staff_config(ORIGIN, tmp_path, smtp=(smtp_server.host, smtp_server.port)))
    yield s
    close_site(s)


def textarea(page: str) -> str:
    return html.unescape(
        re.search(r'<textarea id="test-to" name="to"[^>]*>(.*?)</textarea>', page, re.S).group(1)
    )


def test_test_copies_to_several_addresses_remembered(site, smtp_server):
    staff = as_staff(site)
    page = staff.get("/staff/preview?region=Africa").text
    assert '<label for="test-to">Test addresses</label>' in page
    assert textarea(page) == EDITOR  # nothing remembered yet: one's own address

    typed = "desk@example.org, Chief@Example.org\nproof@example.net"
    resp = staff.post("/staff/preview/test", {"region": ["Africa"], "to": typed})
    assert resp.status_code == 200
    for address in ("desk@example.org", "Chief@example.org", "proof@example.net"):
        assert f"A test copy went to {address}" in resp.text
    assert sorted(r for _f, rcpts, _d in smtp_server.messages for r in rcpts) == [
        "Chief@example.org",
        "desk@example.org",
        "proof@example.net",
    ]
    for _mail_from, _rcpts, data in smtp_server.messages:
        msg = message_from_bytes(data, policy=policy.default)
        assert msg["Subject"].startswith("[TEST] ")
        body = msg.get_body(("plain",)).get_content()
        assert "Sudan" in body and "Iraq" not in body  # the chosen variant: Africa
    with session_factory(site.engine)() as db:
        assert db.query(Delivery).count() == 0  # outside the ledger

    # Remembered: the next visit (a new session too) offers the same addresses.
    again = as_staff(site).get("/staff/preview").text
    assert textarea(again) == "desk@example.org, Chief@example.org, proof@example.net"


def test_a_wrong_address_sends_nothing_and_says_which(site, smtp_server):
    staff = as_staff(site)
    resp = staff.post("/staff/preview/test", {"to": "desk@example.org, not-an-address"})
    assert resp.status_code == 400 and "“not-an-address” is not an e-mail address" in resp.text
    assert smtp_server.messages == []
    assert textarea(resp.text) == "desk@example.org, not-an-address"  # kept to correct
    many = ", ".join(f"a{n}@example.org" for n in range(11))
    assert "At most 10 addresses" in staff.post("/staff/preview/test", {"to": many}).text
    assert smtp_server.messages == []


def test_one_refused_address_is_named_and_the_others_still_go(site, smtp_server):
    smtp_server.rcpt_replies["gone@example.org"] = "550 no such user"
    resp = as_staff(site).post("/staff/preview/test", {"to": "gone@example.org ok@example.org"})
    assert resp.status_code == 502
    assert "A test copy went to ok@example.org" in resp.text and "gone@example.org:" in resp.text
    assert [rcpts for _f, rcpts, _d in smtp_server.messages] == [["ok@example.org"]]
