"""This week's issue (/staff/issue): the collected stories by region as readers will see them,
which go in, in what order, which leads; the issue's subject, preheader and introduction; a
story's headline, lede, photo and credit for this issue only; stories added by URL. What is
saved is a `digest.curate.Draft`; the send applies it (`digest.pipeline.issue_from`)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any
from urllib.parse import urlsplit

from flask import Response, g, redirect, render_template, request, url_for
from werkzeug.datastructures import MultiDict

from digest import operations
from digest.collect import canonical_url, make_fetcher
from digest.curate import (
    EDITABLE,
    Draft,
    clean_intro,
    clean_line,
    edited,
    ordered,
    region_costs,
    story_key,
    with_added,
)
from digest.drafts import load_draft, save_draft
from digest.models import Article
from digest.pipeline import Issue, issue_from
from digest.sources.enrich import story_from_page
from digest.sources.http import FetchError
from digest.web import console
from digest.web.pages import ISSUE_CSP, staff_page
from digest.web.site import site
from subscribers import store as subscriber_store

log = logging.getLogger(__name__)

MAX_SUBJECT = 150  # inboxes show 40-80 characters; the rest is cut
MAX_PREHEADER = 250
LIMITS = {"title": 300, "lede": 1200, "image_url": 2000, "image_credit": 300}
ADDED_SOURCE = "added by staff"


def current_issue() -> tuple[console.Collected, Draft | None, Issue]:
    """The collected week, the saved draft (if any), and the issue they make."""
    s = site()
    collected = s.workspace.get()
    issue_date = collected.now.astimezone(s.config.tz).date()
    with s.sessions() as db:
        draft = load_draft(db, issue_date)
    return collected, draft, issue_from(s.config, collected.now, collected.result, draft)


def all_stories(collected: console.Collected, draft: Draft | None) -> list[Article]:
    """The collected stories and those staff added, as collected (without staff's edits)."""
    return with_added(collected.result.articles, draft.added if draft else ())


def story_rows(collected: console.Collected, draft: Draft | None, issue: Issue) -> list[dict[str, Any]]:
    """Every story by region, in the order the issue would have them, as readers see them."""
    config = site().config
    cap = config.collect.max_articles_per_region
    in_issue = {story_key(t) for s in issue.digest.sections for t in s.teasers}
    lead = story_key(issue.digest.lead) if issue.digest.lead else None
    excluded = draft.excluded if draft else frozenset()
    edits = draft.edits if draft else {}
    added = {story_key(a) for a in draft.added} if draft else set()
    stories = all_stories(collected, draft)
    index = 0
    regions = []
    for region in config.regions.order:
        articles = sorted((a for a in stories if a.region == region), key=lambda a: a.published, reverse=True)
        if not articles:
            continue
        rows = []
        shown = 0
        for position, article in enumerate(
            ordered(articles, draft.order.get(region, ()) if draft else ()), 1
        ):
            key = story_key(article)
            included = key not in excluded
            shown += included
            rows.append(
                {
                    "index": index,
                    "position": position,
                    "article": edited(article, edits),  # what readers get
                    "original": article,
                    "edited": bool(edits.get(key)),
                    "added": key in added,
                    "key": key,
                    "included": included,
                    "lead": key == lead,
                    "over_cap": included and shown > cap,
                    "in_issue": key in in_issue,
                }
            )
            index += 1
        regions.append({"region": region, "rows": rows})
    return regions


def template_lines(issue: Issue) -> tuple[str, str]:
    """The subject and preheader the templates give this issue (for every region)."""
    plain = dataclasses.replace(issue.digest, subject="", preheader="")
    return issue.renderer.subject_and_preheader(plain)


def choice_costs(collected: console.Collected, draft: Draft | None, issue: Issue) -> list[Any]:
    """Regions whose every story the draft leaves out, with the readers that costs."""
    had = {a.region for a in all_stories(collected, draft)}
    remaining = [s.region for s in issue.digest.sections]
    emptied = [r for r in site().config.regions.order if r in had and r not in remaining]
    if not emptied:
        return []
    with site().sessions() as db:
        readers = [r.regions for r in subscriber_store.iter_active_recipients(db)]
    return region_costs(emptied, remaining, readers)


def issue_page(status: int = 200, **extra: Any) -> Response:
    s = site()
    extra.setdefault("errors", {})
    collected, draft, issue = current_issue()
    dropped: dict[str, list[Article]] = {}
    for article, reason in collected.result.dropped:
        dropped.setdefault(reason, []).append(article)
    default_subject, default_preheader = template_lines(issue)
    lines = {
        "subject": draft.subject if draft and draft.subject else default_subject,
        "preheader": draft.preheader if draft and draft.preheader else default_preheader,
    }
    return staff_page(
        "issue.html",
        status,
        csp=ISSUE_CSP,
        collected=collected,
        draft=draft,
        issue=issue,
        regions=story_rows(collected, draft, issue),
        dropped=dropped,
        intro=extra.pop("intro", draft.intro if draft else ""),
        lines={**lines, **extra.pop("lines", {})},
        defaults={"subject": default_subject, "preheader": default_preheader},
        costs=choice_costs(collected, draft, issue),
        saved=request.args.get("saved") == "1",
        config_cap=s.config.collect.max_articles_per_region,
        reviews=console.awaiting_approval(console.scheduled_sends(s.schedules)[0]),
        approval=approval_of(collected),
        tz=s.config.tz,
        zone=s.config.newsletter.timezone,
        region_names=s.config.regions.order,
        **extra,
    )


def approval_of(collected: console.Collected) -> str:
    """The approval state of the issue on the page, in words (its schedule's mode decides)."""
    s = site()
    upcoming = console.next_send(s.config, s.schedules, s.clock())
    issue_date = collected.now.astimezone(s.config.tz).date().isoformat()
    words, _holds = operations.approval_state(s.schedules(), upcoming.mode or "send", issue_date)
    return words


def issue() -> Response:
    return issue_page()


def curation_script() -> Response:
    """Drag and drop on the issue page (the page works without it)."""
    resp = Response(render_template("staff/curation.js"), mimetype="text/javascript")
    resp.headers["Cache-Control"] = "no-cache"
    return resp


def chosen_order(
    form: MultiDict[str, str], by_key: dict[str, Article]
) -> tuple[dict[str, list[str]], set[str]]:
    """The stories' order per region as the form has it (positions typed, then a move up or
    down), and the keys left out."""
    stories: list[tuple[float, int, str]] = []  # (position, form order, key)
    leaving: set[str] = set()
    for n, raw in enumerate(form.getlist("story")):
        key = form.get(f"key-{raw}", "")
        if key not in by_key:
            continue  # a story a re-collect in between took away
        try:
            position = float(form.get(f"pos-{raw}", "") or n + 1)
        except ValueError:
            position = float(n + 1)
        stories.append((position, n, key))
        if form.get(f"include-{raw}") != "on":
            leaving.add(key)
    order: dict[str, list[str]] = {}
    for _position, _n, key in sorted(stories):
        order.setdefault(by_key[key].region or "", []).append(key)
    move = form.get("move", "")
    if ":" in move:
        raw, direction = move.split(":", 1)
        moved = form.get(f"key-{raw}", "")
        keys = order.get(by_key[moved].region or "", []) if moved in by_key else []
        if moved in keys:
            i = keys.index(moved)
            j = i - 1 if direction == "up" else i + 1
            if 0 <= j < len(keys):
                keys[i], keys[j] = keys[j], keys[i]
    return order, leaving


FIELD_NAMES = {"title": "headline", "lede": "lede", "image_url": "photo URL", "image_credit": "credit"}


def chosen_edits(form: MultiDict[str, str], by_key: dict[str, Article]) -> dict[str, dict[str, str]]:
    """Staff's changes to stories: only the fields that differ from the source's. ValueError
    (naming the story and field) for a field that cannot be used."""
    edits: dict[str, dict[str, str]] = {}
    for raw in form.getlist("story"):
        key = form.get(f"key-{raw}", "")
        article = by_key.get(key)
        if article is None:
            continue
        change = {}
        for name in EDITABLE:
            sent = form.get(f"{name}-{raw}")
            if sent is None:
                continue
            what = f"{FIELD_NAMES[name]} of “{article.title[:60]}”"
            value = clean_intro(sent) if name == "lede" else clean_line(sent, what=what, limit=LIMITS[name])
            if name == "image_url" and value and urlsplit(value).scheme not in ("http", "https"):
                raise ValueError(f"The {what} must be an http(s) address.")
            if value and value != (getattr(article, name) or ""):
                change[name] = value
        if change:
            edits[key] = change
    return edits


def issue_save() -> Response:
    s = site()
    collected, draft, issue_now = current_issue()
    form = request.form
    typed = {"subject": form.get("subject", ""), "preheader": form.get("preheader", "")}
    by_key = {story_key(a): a for a in all_stories(collected, draft)}
    errors: dict[str, str] = {}
    checks = {
        "intro": lambda: clean_intro(form.get("intro", "")),
        "subject": lambda: clean_line(typed["subject"], what="subject", limit=MAX_SUBJECT),
        "preheader": lambda: clean_line(typed["preheader"], what="preheader", limit=MAX_PREHEADER),
        "stories": lambda: chosen_edits(form, by_key),
    }
    clean: dict[str, Any] = {}
    for name, check in checks.items():
        try:
            clean[name] = check()
        except ValueError as err:
            errors[name] = str(err)
    if errors:
        return issue_page(400, intro=form.get("intro", ""), lines=typed, errors=errors)
    intro, subject, preheader, edits = clean["intro"], clean["subject"], clean["preheader"], clean["stories"]
    order, leaving = chosen_order(form, by_key)
    old = draft or Draft(issue_date=collected.now.astimezone(s.config.tz).date())
    # Choices about stories not collected now are kept: they apply again if the story returns.
    absent_excluded = {k for k in old.excluded if k not in by_key}
    new_order = {
        region: (*keys, *(k for k in old.order.get(region, ()) if k not in by_key))
        for region, keys in order.items()
    }
    lead_raw = form.get("lead", "")
    lead = form.get(f"key-{lead_raw}", "") if lead_raw else ""
    default_subject, default_preheader = template_lines(issue_now)
    new = dataclasses.replace(
        old,
        excluded=frozenset(leaving | absent_excluded),
        lead=lead if lead in by_key and lead not in leaving else None,
        order=new_order,
        intro=intro,
        # The template's own line stays the template's: it follows the stories if they change.
        subject="" if subject == default_subject else subject,
        preheader="" if preheader == default_preheader else preheader,
        edits={**{k: v for k, v in old.edits.items() if k not in by_key}, **edits},
    )
    with s.sessions.begin() as db:
        save_draft(db, new, by=g.staff.email, at=s.clock())
    log.info("staff: %s saved the draft of %s", g.staff.email, new.issue_date)
    return redirect(url_for("staff.issue", saved=1), 303)


def issue_collect() -> Response:
    site().workspace.get(again=True)
    return redirect(url_for("staff.issue"), 303)


def issue_add() -> Response:
    """Add a story by URL: its page read as collect's enrichment reads it, into the region the
    editor picked; its headline, lede, photo and credit are then editable like any story's."""
    s = site()
    url = request.form.get("url", "").strip()[:2000]
    region = request.form.get("region", "")
    problem = ""
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        problem = "Type the story's whole address, starting with https://."
    elif region not in s.config.regions.order:
        problem = "Choose the region the story goes in."
    if problem:
        return issue_page(400, add_error=problem, add_form={"url": url, "region": region})
    collected, draft, _issue = current_issue()
    try:
        story = story_from_page(
            canonical_url(url), region, make_fetcher(s.config), now=s.clock(), source=ADDED_SOURCE
        )
    except FetchError as err:
        return issue_page(
            502, add_error=f"Nothing was added: {err}.", add_form={"url": url, "region": region}
        )
    old = draft or Draft(issue_date=collected.now.astimezone(s.config.tz).date())
    key = story_key(story)
    new = dataclasses.replace(
        old,
        added=(*(a for a in old.added if story_key(a) != key), story),
        excluded=old.excluded - {key},
    )
    with s.sessions.begin() as db:
        save_draft(db, new, by=g.staff.email, at=s.clock())
    log.info("staff: %s added %s to %s", g.staff.email, key, region)
    return redirect(url_for("staff.issue", added=1, _anchor="added-story"), 303)
