"""One reader's page for admins (digest/web/subscribers.py) through Flask's test client with the
real app and a real SQLite file: change regions, unsubscribe, a new confirmation mail, erase
after typing the address; each change an event in the reader's history. Search and the CSV
import are tested in test_web_staff.py."""

from __future__ import annotations

import html
import io
import re

import pytest
from staff_helpers import (  # noqa: F401  (cheap_password_hashes is an autouse fixture)
    ADMIN,
    EDITOR,
    ORIGIN,
    as_staff,
    cheap_password_hashes,
    close_site,
    make_site,
    staff_config,
)

from digest.db import session_factory
from subscribers import store
from subscribers.store import Event, Status


@pytest.fixture
def site(tmp_path):
    s = make_site(staff_config(ORIGIN, tmp_path, outbox=True))
    yield s
    close_site(s)


def add(site, email: str, **kw) -> int:
    with session_factory(site.engine).begin() as db:
        return store.add_subscriber(db, email, source="cli", **kw).id


def events(site, sub_id: int) -> list[tuple[str, str, str]]:
    with session_factory(site.engine)() as db:
        rows = db.query(Event).filter_by(subscriber_id=sub_id).order_by(Event.id)
        return [(e.kind, e.source, e.detail) for e in rows]


def flash(page: str) -> str:
    return html.unescape(
        " ".join(re.findall(r'<p class="(?:notice|error)" role="(?:status|alert)">(.*?)</p>', page, re.S))
    )


def test_change_a_readers_regions_and_unsubscribe_each_an_event(site):
    sub_id = add(site, "amina@example.net", regions={"Africa"})
    admin = as_staff(site, ADMIN)
    page = admin.get(f"/staff/subscribers/{sub_id}").text
    assert "<legend>Regions</legend>" in page
    assert re.search(
        r'<label class="check" for="region-\d+"><input type="checkbox" id="region-\d+" '
        r'name="region" value="Africa" checked>',
        page,
    )
    resp = admin.post(f"/staff/subscribers/{sub_id}/regions", {"region": ["Africa", "Europe"]})
    assert resp.status_code == 303
    page = admin.get(resp.headers["Location"]).text
    assert "amina@example.net now gets Africa, Europe." in flash(page)
    with session_factory(site.engine)() as db:
        assert store.get(db, sub_id).regions == {"Africa", "Europe"}
    assert ("preferences", f"console ({ADMIN})", "Africa, Europe") in events(site, sub_id)
    assert admin.post(f"/staff/subscribers/{sub_id}/regions", {"region": ["Mars"]}).status_code == 303
    assert "Nothing was changed: Unknown region" in flash(admin.get(f"/staff/subscribers/{sub_id}").text)

    assert admin.post(f"/staff/subscribers/{sub_id}/unsubscribe").status_code == 303
    page = admin.get(f"/staff/subscribers/{sub_id}").text
    assert "is unsubscribed; the address stays suppressed" in flash(page)
    with session_factory(site.engine)() as db:
        sub = store.get(db, sub_id)
        assert sub.status == Status.UNSUBSCRIBED and store.is_suppressed(db, sub.email)
    assert events(site, sub_id)[-1][:2] == ("unsubscribed", f"console ({ADMIN})")
    assert 'id="unsubscribe"' not in page  # nothing more to unsubscribe


def test_a_pending_reader_gets_a_new_confirmation_mail(site):
    sub_id = add(site, "new@example.org", status=Status.PENDING)
    admin = as_staff(site, ADMIN)
    assert 'id="confirm-again"' in admin.get(f"/staff/subscribers/{sub_id}").text
    assert admin.post(f"/staff/subscribers/{sub_id}/confirm-again").status_code == 303
    assert "A new confirmation mail went to new@example.org." in flash(
        admin.get(f"/staff/subscribers/{sub_id}").text
    )
    (mail,) = site.outbox
    assert mail["To"] == "new@example.org"
    link = re.search(r"https?://\S+/confirm/\S+", mail.get_body(("plain",)).get_content()).group(0)
    assert events(site, sub_id)[-1][:2] == ("confirmation_sent", f"console ({ADMIN})")
    # The link works: the reader confirms with it.
    client = site.app.test_client()
    assert client.post(link.replace(ORIGIN, ""), headers={"Origin": ORIGIN}).status_code == 200
    with session_factory(site.engine)() as db:
        assert store.get(db, sub_id).status == Status.ACTIVE
    # An active reader has nothing to confirm.
    assert admin.post(f"/staff/subscribers/{sub_id}/confirm-again").status_code == 303
    assert "only a pending reader confirms" in flash(admin.get(f"/staff/subscribers/{sub_id}").text)
    assert len(site.outbox) == 1


def test_erase_only_after_typing_the_address(site):
    sub_id = add(site, "leave@example.org", regions={"Europe"})
    admin = as_staff(site, ADMIN)
    asking = admin.get(f"/staff/subscribers/{sub_id}/erase").text
    assert '<label for="erase-confirm">Type the address to confirm</label>' in asking
    wrong = admin.post(f"/staff/subscribers/{sub_id}/erase", {"confirm": "someone@example.org"})
    assert wrong.status_code == 400 and "Nothing was erased" in wrong.text
    with session_factory(site.engine)() as db:
        assert store.get(db, sub_id) is not None
    done = admin.post(f"/staff/subscribers/{sub_id}/erase", {"confirm": " Leave@Example.org "})
    assert done.status_code == 303 and done.headers["Location"].endswith("/staff/subscribers")
    assert "leave@example.org is erased" in flash(admin.get("/staff/subscribers").text)
    with session_factory(site.engine)() as db:
        assert store.get(db, sub_id) is None and store.is_erased(db, "leave@example.org")
        assert db.query(Event).filter_by(subscriber_id=sub_id).count() == 0
    assert admin.get(f"/staff/subscribers/{sub_id}").status_code == 404


def test_editors_cannot_change_readers(site):
    sub_id = add(site, "amina@example.net", regions={"Africa"})
    editor = as_staff(site, EDITOR)
    for path, data in (
        ("regions", {"region": ["Europe"]}),
        ("unsubscribe", {}),
        ("confirm-again", {}),
        ("erase", {"confirm": "amina@example.net"}),
    ):
        assert editor.post(f"/staff/subscribers/{sub_id}/{path}", data).status_code == 403, path
    assert editor.get(f"/staff/subscribers/{sub_id}/erase").status_code == 403
    admin = as_staff(site, ADMIN)
    assert (
        admin.post(f"/staff/subscribers/{sub_id}/unsubscribe", origin="https://evil.example").status_code
        == 403
    )
    assert admin.post(f"/staff/subscribers/{sub_id}/unsubscribe", token=False).status_code == 400
    with session_factory(site.engine)() as db:
        sub = store.get(db, sub_id)
        assert sub.status == Status.ACTIVE and sub.regions == {"Africa"}


MAILCHIMP = (
    "Email Address,First Name,Last Name,Address,Phone Number,REGION,TAGS\n"
    'ada@example.org,Ada,Lovelace,1 Main St,555-0100,CA,"Africa, Donors"\n'
    "bo@example.org,Bo,Li,2 Main St,555-0101,NY,Europe\n"
    "not-an-address,Cy,Ng,3 Main St,555-0102,TX,Africa\n"
)


def test_check_a_mailchimp_export_first_then_import_it(site):
    admin = as_staff(site, ADMIN)
    upload = {"file": (io.BytesIO(MAILCHIMP.encode()), "mailchimp.csv"), "action": "plan"}
    plan = admin.post("/staff/subscribers/import", upload, content_type="multipart/form-data")
    assert plan.status_code == 200
    page = html.unescape(plan.text)
    assert "Nothing was imported yet. 2 would be added" in page and "1 row(s) skipped" in page
    columns = dict(re.findall(r'<td class="key">(.*?)</td><td data-label="Read as">(.*?)</td>', page))
    assert columns["REGION"].startswith("not used: Mailchimp's REGION is a state")
    assert columns["TAGS"].startswith("regions:") and columns["Email Address"] == "address"
    assert columns["Phone Number"] == "not used"
    assert "line 4" in re.search(r'<ul class="report" id="plan-reasons">(.*?)</ul>', page, re.S).group(1)
    with session_factory(site.engine)() as db:
        assert store.get_by_email(db, "ada@example.org") is None  # a check writes nothing

    upload = {"file": (io.BytesIO(MAILCHIMP.encode()), "mailchimp.csv"), "action": "import"}
    done = admin.post("/staff/subscribers/import", upload, content_type="multipart/form-data")
    assert done.status_code == 200 and "2 added" in done.text
    with session_factory(site.engine)() as db:
        assert store.get_by_email(db, "ada@example.org").regions == {"Africa"}
        assert store.get_by_email(db, "bo@example.org").regions == {"Europe"}
