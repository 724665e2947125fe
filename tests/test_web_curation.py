"""The issue page (digest/web/curation.py) through Flask's test client with the real app, the demo
feeds and a real SQLite file: subject and preheader, a story edited for this issue, a story added
by URL from a real HTTP server, what leaving out a region's last story costs, and the stories
shown as readers see them."""

from __future__ import annotations

import dataclasses
import html
import re
from datetime import date, datetime, time

import pytest
from staff_helpers import (  # noqa: F401  (cheap_password_hashes is an autouse fixture)
    EDITOR,
    ISSUE_DAY,
    ORIGIN,
    as_staff,
    cheap_password_hashes,
    close_site,
    make_site,
    staff_config,
)

from digest.db import session_factory
from digest.drafts import load_draft
from digest.pipeline import prepare_issue
from subscribers import store

# Fixture local_server: an HTTP server on 127.0.0.1.
pytest_plugins = ("collect_fixtures",)

IRAQ = "https://responsiblestatecraft.org/iraq-elections-2025/"
SUDAN = "https://responsiblestatecraft.org/sudan-el-fasher/"
SEND_TIME = datetime.combine(date.fromisoformat(ISSUE_DAY), time(9))  # the Friday send, in the zone


@pytest.fixture
def site(tmp_path):
    config = staff_config(ORIGIN, tmp_path, outbox=True)
    config = dataclasses.replace(
        config, collect=dataclasses.replace(config.collect, fetch_allow=("127.0.0.1",))
    )
    s = make_site(config)
    yield s
    close_site(s)


def draft(site):
    with session_factory(site.engine)() as db:
        return load_draft(db, date.fromisoformat(ISSUE_DAY))


def sent_issue(site):
    """What the scheduled send builds on Friday at 09:00."""
    return prepare_issue(site.config, SEND_TIME.replace(tzinfo=site.config.tz))


def stories(page: str) -> dict[str, str]:
    """Story key -> its index in the form."""
    return {key: i for i, key in re.findall(r'name="key-(\d+)" value="([^"]+)"', page)}


def form_of(page: str) -> dict[str, str]:
    """The draft form as a browser would send it untouched (every field, every value)."""
    form = re.search(r'<form method="post" action="/staff/issue" id="draft">(.*?)</form>', page, re.S).group(
        1
    )
    data: dict[str, object] = {}
    for tag in re.findall(r"<input[^>]*>", form):
        name = re.search(r'name="([^"]+)"', tag)
        if name is None or 'type="submit"' in tag:
            continue
        value = re.search(r'value="([^"]*)"', tag)
        kind = re.search(r'type="([^"]+)"', tag)
        if kind and kind.group(1) in ("checkbox", "radio") and "checked" not in tag:
            continue
        if name.group(1) == "story":
            data.setdefault("story", []).append(value.group(1))  # type: ignore[union-attr]
            continue
        default = "on" if kind and kind.group(1) == "checkbox" else ""  # what a browser sends
        data[name.group(1)] = html.unescape(value.group(1)) if value else default
    for name, text in re.findall(r'<textarea[^>]*name="([^"]+)"[^>]*>(.*?)</textarea>', form, re.S):
        data[name] = html.unescape(text)
    return data  # type: ignore[return-value]


def field_value(page: str, field_id: str) -> str:
    return html.unescape(re.search(rf'id="{field_id}"[^>]*value="([^"]*)"', page).group(1))


def label_for(page: str, text: str) -> str:
    """The id of the field the <label for> with this visible text names (the first one)."""
    found = re.search(rf'<label for="([^"]+)">{re.escape(text)}</label>', page)
    assert found, f"no <label for> reading {text!r}"
    return found.group(1)


# --- subject and preheader ---------------------------------------------------------------------


def test_subject_and_preheader_default_to_the_templates_and_what_is_saved_goes_out(site):
    staff = as_staff(site)
    page = staff.get("/staff/issue").text
    assert label_for(page, "Subject") == "subject" and label_for(page, "Preheader") == "preheader"
    template_subject = sent_issue(site).renderer.render(sent_issue(site).digest).subject
    assert field_value(page, "subject") == template_subject

    form = form_of(page)
    form["subject"] = "Elections in Iraq,  war in Sudan"
    form["preheader"] = "And the rest of the world's week"
    assert staff.post("/staff/issue", form).status_code == 303
    saved = draft(site)
    assert (saved.subject, saved.preheader) == (
        "Elections in Iraq, war in Sudan",
        "And the rest of the world's week",
    )
    issue = sent_issue(site)
    for regions in (None, frozenset({"Africa"})):
        rendered = issue.renderer.render(issue.digest.for_regions(regions))
        assert rendered.subject == "Elections in Iraq, war in Sudan"
        assert rendered.preheader == "And the rest of the world's week"
        assert (
            "And the rest of the world&#39;s week" in rendered.html
            or "And the rest of the world's week" in rendered.html
        )
    page = staff.get("/staff/issue").text
    assert field_value(page, "subject") == "Elections in Iraq, war in Sudan"

    # Saving the template's own line (or clearing the field) goes back to the template.
    form = form_of(page)
    form["subject"], form["preheader"] = "", ""
    assert staff.post("/staff/issue", form).status_code == 303
    assert (draft(site).subject, draft(site).preheader) == ("", "")
    assert sent_issue(site).renderer.render(sent_issue(site).digest).subject == template_subject


def test_a_subject_that_cannot_be_used_is_refused_and_nothing_saved(site):
    staff = as_staff(site)
    form = form_of(staff.get("/staff/issue").text)
    form["subject"] = "x" * 151
    resp = staff.post("/staff/issue", form)
    assert resp.status_code == 400 and "The subject is 151 characters long" in resp.text
    assert 'aria-invalid="true"' in resp.text and draft(site) is None
    form["subject"] = "Hello @@digest:email@@"
    assert staff.post("/staff/issue", form).status_code == 400 and draft(site) is None


# --- a story edited for this issue ---------------------------------------------------------------


def test_edit_a_teaser_for_this_issue_only(site):
    staff = as_staff(site)
    page = staff.get("/staff/issue").text
    i = stories(page)[IRAQ]
    story = re.search(rf'<li class="story" id="story-{i}">.*?</li>', page, re.S).group(0)
    for text in ("Headline", "Lede", "Photo URL", "Credit"):
        assert "<label for=" in story and f">{text}</label>" in story, text
    form = form_of(page)
    form[f"title-{i}"] = "Iraq votes, and waits"
    form[f"lede-{i}"] = "A shorter lede, written by the editor."
    form[f"image_url-{i}"] = "https://images.example.org/baghdad.jpg"
    form[f"image_credit-{i}"] = "Photo: Staff"
    assert staff.post("/staff/issue", form).status_code == 303
    assert draft(site).edits == {
        IRAQ: {
            "title": "Iraq votes, and waits",
            "lede": "A shorter lede, written by the editor.",
            "image_url": "https://images.example.org/baghdad.jpg",
            "image_credit": "Photo: Staff",
        }
    }
    issue = sent_issue(site)
    teaser = next(t for s in issue.digest.sections for t in s.teasers if t.url == IRAQ)
    assert (teaser.title, teaser.lede, teaser.image_url, teaser.image_credit) == (
        "Iraq votes, and waits",
        "A shorter lede, written by the editor.",
        "https://images.example.org/baghdad.jpg",
        "Photo: Staff",
    )
    collected = next(a for a in issue.collected.articles if a.url == IRAQ)
    assert collected.title != "Iraq votes, and waits"  # the feed's story is as it was
    assert "Iraq votes, and waits" in issue.renderer.render(issue.digest).html
    page = staff.get("/staff/issue").text
    assert "edited for this issue" in page and 'src="https://images.example.org/baghdad.jpg"' in page


def test_a_photo_url_that_is_not_http_is_refused(site):
    staff = as_staff(site)
    page = staff.get("/staff/issue").text
    form = form_of(page)
    form[f"image_url-{stories(page)[IRAQ]}"] = "javascript:alert(1)"
    resp = staff.post("/staff/issue", form)
    assert resp.status_code == 400 and "must be an http(s) address" in resp.text and draft(site) is None


# --- a story added by URL ---------------------------------------------------------------------


ARTICLE_PAGE = """<!doctype html><html><head><title>ignored</title>
<meta property="og:title" content="Ukraine's winter, seen from Kharkiv">
<meta property="og:description" content="The cold is the front line now.">
<meta property="og:image" content="https://images.example.org/kharkiv.jpg">
<meta property="article:published_time" content="2026-11-17T12:00:00+00:00">
<script type="application/ld+json">{"@type": "NewsArticle", "image": {"url": "https://images.example.org/kharkiv.jpg",
 "creditText": "Photo: Kharkiv Daily"}}</script></head><body>...</body></html>"""


def test_add_a_story_by_url_read_like_enrichment_then_edit_it(site, local_server):
    local_server.expect_request("/kharkiv").respond_with_data(ARTICLE_PAGE, content_type="text/html")
    url = local_server.url_for("/kharkiv")
    staff = as_staff(site)
    page = staff.get("/staff/issue").text
    assert label_for(page, "Story URL") == "add-url" and label_for(page, "Region") == "add-region"
    resp = staff.post("/staff/issue/add", {"url": url, "region": "Europe"})
    assert resp.status_code == 303 and "added=1" in resp.headers["Location"]
    (added,) = draft(site).added
    assert (added.title, added.lede, added.image_url, added.image_credit, added.region) == (
        "Ukraine's winter, seen from Kharkiv",
        "The cold is the front line now.",
        "https://images.example.org/kharkiv.jpg",
        "Photo: Kharkiv Daily",
        "Europe",
    )
    europe = next(s for s in sent_issue(site).digest.sections if s.region == "Europe")
    assert "Ukraine's winter, seen from Kharkiv" in [t.title for t in europe.teasers]

    page = staff.get("/staff/issue?added=1").text
    assert "added by URL" in page and "Story added." in page
    form = form_of(page)
    i = stories(page)[added.url]
    form[f"title-{i}"] = "Kharkiv's winter"
    assert staff.post("/staff/issue", form).status_code == 303
    europe = next(s for s in sent_issue(site).digest.sections if s.region == "Europe")
    assert "Kharkiv's winter" in [t.title for t in europe.teasers]


def test_adding_a_story_says_what_is_wrong(site, local_server):
    staff = as_staff(site)
    assert "whole address" in staff.post("/staff/issue/add", {"url": "kharkiv", "region": "Europe"}).text
    assert (
        "Choose the region"
        in staff.post("/staff/issue/add", {"url": "https://x.example/a", "region": "Mars"}).text
    )
    local_server.expect_request("/gone").respond_with_data("no", status=404)
    resp = staff.post("/staff/issue/add", {"url": local_server.url_for("/gone"), "region": "Europe"})
    assert resp.status_code == 502 and "Nothing was added" in resp.text and "/gone" in resp.text
    assert draft(site) is None


# --- what a choice costs -------------------------------------------------------------------------


def test_leaving_out_a_regions_last_story_says_who_it_costs(site):
    with session_factory(site.engine).begin() as db:
        store.add_subscriber(db, "only-africa@example.org", regions={"Africa"}, source="cli")
        store.add_subscriber(db, "africa-europe@example.org", regions={"Africa", "Europe"}, source="cli")
        store.add_subscriber(db, "everything@example.org", source="cli")
        store.add_subscriber(db, "europe@example.org", regions={"Europe"}, source="cli")
    staff = as_staff(site)
    page = staff.get("/staff/issue").text
    assert 'class="warning cost"' not in page
    form = form_of(page)
    keys = stories(page)
    issue = sent_issue(site)
    africa = [t.url for s in issue.digest.sections if s.region == "Africa" for t in s.teasers]
    assert SUDAN in africa
    for url in africa:
        form.pop(f"include-{keys[url]}", None)
    resp = staff.post("/staff/issue", form)
    assert resp.status_code == 303
    page = html.unescape(staff.get(resp.headers["Location"]).text)
    warning = re.search(r'<p class="warning cost"[^>]*>(.*?)</p>', page, re.S).group(1)
    text = " ".join(re.sub(r"<[^>]+>", "", warning).split())
    assert text == (
        "Africa: no story of this region is left in the issue. 1 reader gets no issue at all "
        "(it was their only region with stories); 2 readers get the issue without Africa."
    )


# --- the stories as readers see them -------------------------------------------------------------


def test_stories_show_photo_lede_format_and_local_times(site):
    page = as_staff(site).get("/staff/issue")
    csp = page.headers["Content-Security-Policy"]
    assert "img-src 'self' https: http: data:" in csp and "script-src 'self'" in csp
    text = page.text
    issue = sent_issue(site)
    teasers = [t for s in issue.digest.sections for t in s.teasers]
    with_photo = next(t for t in teasers if t.image_url)
    assert f'<img class="thumb" src="{html.escape(with_photo.image_url)}"' in text
    with_lede = next(t for t in teasers if t.lede)
    assert html.escape(with_lede.lede[:60]) in text
    labelled = [t for t in teasers if t.format_label]
    for t in labelled:
        assert f'<span class="format">{t.format_label}</span>' in text
    assert "(America/New_York)" in text and " UTC" not in re.sub(r"<script.*?</script>", "", text)
    assert 'src="/staff/curation.js"' in text
    script = as_staff(site).get("/staff/curation.js")
    assert script.status_code == 200 and "dragstart" in script.text
    # Without the script, the buttons and positions still reorder (kept for no-script use).
    assert text.count("Move up") == len([r for r in re.findall(r'name="story"', text)])
