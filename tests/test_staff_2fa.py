"""The optional second factor for staff (TOTP with pyotp, recovery codes), through Flask's test
client on a real SQLite file, with the site's injected clock."""

from __future__ import annotations

import re
from pathlib import Path

import pyotp
import pytest
import segno
from staff_helpers import (  # noqa: F401  (cheap_password_hashes is an autouse fixture)
    ADMIN,
    EDITOR,
    ORIGIN,
    PASSWORD,
    Staff,
    as_staff,
    cheap_password_hashes,
    close_site,
    csrf,
    make_site,
    staff_config,
)

from digest import cli
from digest.db import session_factory
from digest.web import staff_2fa, staff_store


@pytest.fixture
def site(tmp_path):
    s = make_site(staff_config(ORIGIN, tmp_path, staff_login_limit="1000 per minute"))
    yield s
    close_site(s)


def enrol(site, staff: Staff) -> tuple[str, list[str]]:
    """Turn the second factor on as a person would: the key from the page, a code from the app."""
    assert staff.post("/staff/account/2fa/start").status_code == 303
    page = staff.get("/staff/account").text
    secret = re.search(r'id="totp-secret">([^<]+)<', page)[1].replace(" ", "")
    # The QR code on the page is the provisioning URI an authenticator app reads.
    uri = pyotp.TOTP(secret).provisioning_uri(name=ADMIN, issuer_name="Statecraft Weekly (digest)")
    assert segno.make(uri, error="m").svg_inline(scale=4, title="QR code for your app") in page
    staff.token = csrf(page)
    assert staff.post("/staff/account/2fa/confirm", {"code": "000000"}).status_code == 303
    done = staff.post("/staff/account/2fa/confirm", {"code": pyotp.TOTP(secret).at(site.clock())})
    assert done.status_code == 200 and "shown only now" in done.text
    codes = re.findall(r"<code>([a-z0-9-]{19})</code>", done.text)
    assert len(codes) == 10
    site.clock.advance(seconds=30)  # the code just used is spent: the next log-in needs a new one
    return secret, codes


def password_step(site, email=ADMIN) -> Staff:
    staff = Staff(site.app)
    staff.token = csrf(staff.get("/staff/login").text)
    resp = staff.post("/staff/login", {"email": email, "password": PASSWORD})
    assert resp.status_code == 303 and resp.headers["Location"].endswith("/staff/login/code")
    staff.token = csrf(staff.get("/staff/login/code").text)
    return staff


def test_enrol_then_log_in_with_a_code_each_used_once(site):
    admin = as_staff(site, ADMIN)
    secret, _codes = enrol(site, admin)
    assert "10 of 10 recovery codes left" in admin.get("/staff/account").text

    staff = password_step(site)
    assert staff.get("/staff/").status_code == 303  # the password alone opened nothing
    assert staff.post("/staff/login/code", {"code": "123456"}).status_code == 401
    code = pyotp.TOTP(secret).at(site.clock())
    assert staff.post("/staff/login/code", {"code": code}).status_code == 303
    assert staff.get("/staff/").status_code == 200
    # The same code again (a replay, within its 30 s) opens nothing.
    again = password_step(site)
    assert again.post("/staff/login/code", {"code": code}).status_code == 401
    site.clock.advance(seconds=30)
    assert again.post("/staff/login/code", {"code": pyotp.TOTP(secret).at(site.clock())}).status_code == 303


def test_recovery_codes_work_once(site):
    admin = as_staff(site, ADMIN)
    _secret, codes = enrol(site, admin)
    staff = password_step(site)
    assert staff.post("/staff/login/code", {"code": codes[0].upper()}).status_code == 303
    assert password_step(site).post("/staff/login/code", {"code": codes[0]}).status_code == 401
    with session_factory(site.engine)() as s:
        assert staff_2fa.recovery_codes_left(s, staff_store.get_by_email(s, ADMIN)) == 9


def test_the_code_step_expires_and_wrong_codes_slow_down(site):
    admin = as_staff(site, ADMIN)
    secret, _codes = enrol(site, admin)
    staff = password_step(site)
    site.clock.advance(minutes=6)
    late = staff.post("/staff/login/code", {"code": pyotp.TOTP(secret).at(site.clock())})
    assert late.status_code == 303 and late.headers["Location"].endswith("/staff/login")
    staff = password_step(site)
    codes = [staff.post("/staff/login/code", {"code": f"{i:06d}"}).status_code for i in range(7)]
    assert codes[-1] == 429  # the same growing waits as wrong passwords


def test_required_for_admins_when_configured(tmp_path):
    site = make_site(staff_config(ORIGIN, tmp_path, staff_require_2fa=True))
    admin = Staff(site.app)
    admin.token = csrf(admin.get("/staff/login").text)
    assert admin.post("/staff/login", {"email": ADMIN, "password": PASSWORD}).status_code == 303
    admin.token = csrf(admin.get("/staff/account").text)
    for path in ("/staff/", "/staff/subscribers", "/staff/team"):
        resp = admin.get(path)
        assert resp.status_code == 303 and resp.headers["Location"].endswith("/staff/account"), path
    assert "Admins must turn on a second factor" in admin.get("/staff/account").text
    assert as_staff(site, EDITOR).get("/staff/").status_code == 200  # editors may choose
    secret, _codes = enrol(site, admin)
    assert admin.get("/staff/subscribers").status_code == 200
    admin.token = csrf(admin.get("/staff/account").text)
    off = admin.post("/staff/account/2fa/off", {"code": pyotp.TOTP(secret).at(site.clock())})
    assert off.status_code == 303 and "Admins must keep" in admin.get("/staff/account").text
    with session_factory(site.engine)() as s:
        assert staff_2fa.enabled(staff_store.get_by_email(s, ADMIN))  # admins keep it
    close_site(site)


def test_turning_it_off_and_the_cli_reset(site, capsys, monkeypatch):
    editor = as_staff(site, EDITOR)
    assert editor.post("/staff/account/2fa/start").status_code == 303
    page = editor.get("/staff/account").text
    secret = re.search(r'id="totp-secret">([^<]+)<', page)[1].replace(" ", "")
    editor.token = csrf(page)
    editor.post("/staff/account/2fa/confirm", {"code": pyotp.TOTP(secret).at(site.clock())})
    site.clock.advance(seconds=30)
    editor.token = csrf(editor.get("/staff/account").text)
    assert (
        editor.post("/staff/account/2fa/off", {"code": pyotp.TOTP(secret).at(site.clock())}).status_code
        == 303
    )
    with session_factory(site.engine)() as s:
        assert not staff_2fa.enabled(staff_store.get_by_email(s, EDITOR))

    # An admin's phone is lost: `digest staff 2fa-reset` turns it off and ends their sessions.
    admin = as_staff(site, ADMIN)
    enrol(site, admin)
    config_file = Path(site.engine.url.database).with_name("cli.toml")
    config_file.write_text(f'[database]\nurl = "sqlite:///{site.engine.url.database}"\n', encoding="utf-8")
    assert cli.main(["-c", str(config_file), "staff", "2fa-reset", ADMIN]) == 0
    assert "second factor of admin@example.org is off" in capsys.readouterr().out
    assert admin.get("/staff/").status_code == 303
    assert as_staff(site, ADMIN).get("/staff/").status_code == 200  # the password alone again
