"""This week's issue (/staff/issue): the collected stories by region, which go in, in what
order, which leads, and the editor's introduction. What is saved is a `digest.curate.Draft`;
the send applies it (`digest.pipeline.issue_from`)."""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, g, redirect, request, url_for
from werkzeug.datastructures import MultiDict

from digest.curate import Draft, clean_intro, ordered, story_key
from digest.drafts import load_draft, save_draft
from digest.models import Article
from digest.pipeline import Issue, issue_from
from digest.web import console
from digest.web.pages import staff_page
from digest.web.site import site

log = logging.getLogger(__name__)


def current_issue() -> tuple[console.Collected, Draft | None, Issue]:
    """The collected week, the saved draft (if any), and the issue they make."""
    s = site()
    collected = s.workspace.get()
    issue_date = collected.now.astimezone(s.config.tz).date()
    with s.sessions() as db:
        draft = load_draft(db, issue_date)
    return collected, draft, issue_from(s.config, collected.now, collected.result, draft)


def story_rows(collected: console.Collected, draft: Draft | None, issue: Issue) -> list[dict[str, Any]]:
    """Every collected story by region, in the order the issue would have them."""
    config = site().config
    cap = config.collect.max_articles_per_region
    in_issue = {story_key(t) for s in issue.digest.sections for t in s.teasers}
    lead = story_key(issue.digest.lead) if issue.digest.lead else None
    excluded = draft.excluded if draft else frozenset()
    index = 0
    regions = []
    for region in config.regions.order:
        articles = sorted(
            (a for a in collected.result.articles if a.region == region),
            key=lambda a: a.published,
            reverse=True,
        )
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
                    "article": article,
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


def issue_page(status: int = 200, **extra: Any) -> Response:
    s = site()
    collected, draft, issue = current_issue()
    dropped: dict[str, list[Article]] = {}
    for article, reason in collected.result.dropped:
        dropped.setdefault(reason, []).append(article)
    return staff_page(
        "issue.html",
        status,
        collected=collected,
        draft=draft,
        issue=issue,
        regions=story_rows(collected, draft, issue),
        dropped=dropped,
        intro=extra.pop("intro", draft.intro if draft else ""),
        saved=request.args.get("saved") == "1",
        config_cap=s.config.collect.max_articles_per_region,
        reviews=console.awaiting_approval(console.scheduled_sends(s.schedules)[0]),
        **extra,
    )


def issue() -> Response:
    return issue_page()


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


def issue_save() -> Response:
    s = site()
    collected, draft, _issue = current_issue()
    form = request.form
    try:
        intro = clean_intro(form.get("intro", ""))
    except ValueError as err:
        return issue_page(400, intro=form.get("intro", ""), intro_error=str(err))
    by_key = {story_key(a): a for a in collected.result.articles}
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
    new = Draft(
        issue_date=old.issue_date,
        excluded=frozenset(leaving | absent_excluded),
        lead=lead if lead in by_key and lead not in leaving else None,
        order=new_order,
        intro=intro,
    )
    with s.sessions.begin() as db:
        save_draft(db, new, by=g.staff.email, at=s.clock())
    log.info("staff: %s saved the draft of %s", g.staff.email, new.issue_date)
    return redirect(url_for("staff.issue", saved=1), 303)


def issue_collect() -> Response:
    site().workspace.get(again=True)
    return redirect(url_for("staff.issue"), 303)
