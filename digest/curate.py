"""Staff curation of one issue, as data: which stories stay out, which leads, the order, an intro.

Pure: no I/O, no clock. The draft is stored by `digest.drafts` and applied here by
`apply_draft` when an issue is built (`digest.pipeline`), so the scheduled run sends what staff
chose. A story is named by its key, the canonical URL collect gives it: the one identity that
holds across sources (a feed's GUID is unique only within that feed) and that teasers carry.
Choices about stories no longer collected are kept but do nothing; a story collected after the
draft was saved is included, after the ones staff ordered.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import TypeVar

from digest.build import build_digest
from digest.models import Article, Digest, Section, Teaser, newest

Story = TypeVar("Story", Article, Teaser)

MAX_INTRO_LENGTH = 1200  # a few short paragraphs; the issue is about the stories


@dataclass(frozen=True)
class Draft:
    """What staff chose for the issue of `issue_date`."""

    issue_date: date
    excluded: frozenset[str] = frozenset()  # story keys left out
    lead: str | None = None  # key of the lead story; None: the newest, as without a draft
    order: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # region -> keys, first first
    intro: str = ""  # plain text, paragraphs split by a blank line
    subject: str = ""  # the issue's subject line; "": the template's (subject.txt.j2)
    preheader: str = ""  # the inbox preview text; "": the template's (preheader.txt.j2)
    # Staff's changes to stories for this issue only, by key: {"title", "lede", "image_url",
    # "image_credit"} -> text; a field not there (or empty) is the source's.
    edits: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    added: tuple[Article, ...] = ()  # stories staff added by URL, each in the region they chose
    updated_by: str = ""
    updated_at: datetime | None = None


def curation_stamp(draft: Draft | None) -> str:
    """One version of staff's curation, as a short stamp: what an approval is bound to.

    Made of what changes the issue (left out, lead, order, intro), not of who saved it when;
    "" for an issue with no draft. Any edit that changes the issue changes the stamp.
    """
    if draft is None or not (draft.excluded or draft.lead or draft.order or draft.intro):
        return ""  # a draft that changes nothing is the uncurated issue
    content = {
        "excluded": sorted(draft.excluded),
        "lead": draft.lead,
        "order": {region: list(keys) for region, keys in sorted(draft.order.items())},
        "intro": draft.intro,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:32]


def story_key(story: Article | Teaser) -> str:
    return story.url


def clean_intro(text: str) -> str:
    """The introduction as stored: plain text, LF line ends, no control characters, trimmed.

    Raises ValueError with a sentence for staff when it cannot be used as it is.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(c for c in text if c == "\n" or unicodedata.category(c)[0] != "C")
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text).strip()
    if len(text) > MAX_INTRO_LENGTH:
        raise ValueError(f"The introduction is {len(text)} characters long; at most {MAX_INTRO_LENGTH} fit.")
    if "@@" in text:
        # "@@" starts the placeholders filled per reader (digest.personal): it cannot appear as text.
        raise ValueError('The introduction cannot contain "@@".')
    return text


def intro_paragraphs(intro: str) -> list[str]:
    """Paragraphs of an introduction, each on one line (templates wrap them)."""
    return [" ".join(p.split()) for p in intro.split("\n\n") if p.strip()]


def apply_draft(
    articles: Iterable[Article],
    draft: Draft | None,
    *,
    newsletter: str,
    issue_date: date,
    region_order: Sequence[str],
    max_per_region: int | None = None,
) -> Digest:
    """The digest of `articles` as staff curated it; with no draft, exactly `build_digest`'s.

    Excluded stories leave before the per-region cap, so a story over the cap moves up into the
    issue; staff's order decides which stories the cap keeps. The chosen lead stays the lead
    when it is still collected and not excluded; otherwise the newest story leads.
    """
    if draft is None:
        return build_digest(
            articles,
            newsletter=newsletter,
            issue_date=issue_date,
            region_order=region_order,
            max_per_region=max_per_region,
        )
    kept = [
        edited(a, draft.edits)
        for a in with_added(articles, draft.added)
        if story_key(a) not in draft.excluded
    ]
    full = build_digest(kept, newsletter=newsletter, issue_date=issue_date, region_order=region_order)
    sections: list[Section] = []
    notes: list[str] = []
    for section in full.sections:
        teasers = ordered(section.teasers, draft.order.get(section.region, ()))
        if max_per_region is not None and len(teasers) > max_per_region:
            notes.append(f"{section.region}: {len(teasers)} articles, capped to {max_per_region}")
            teasers = teasers[:max_per_region]
        sections.append(Section(region=section.region, teasers=tuple(teasers)))
    shown = [t for s in sections for t in s.teasers]
    lead = next((t for t in shown if story_key(t) == draft.lead), None) or newest(shown)
    return replace(
        full,
        sections=tuple(sections),
        lead=lead,
        notes=tuple(notes),
        intro=draft.intro,
        subject=draft.subject,
        preheader=draft.preheader,
    )


EDITABLE = ("title", "lede", "image_url", "image_credit")  # what staff may change of a story


def with_added(articles: Iterable[Article], added: Sequence[Article]) -> list[Article]:
    """The collected stories and those staff added; an added story that was also collected is
    staff's (in the region they chose)."""
    keys = {story_key(a) for a in added}
    return [*(a for a in articles if story_key(a) not in keys), *added]


def edited(article: Article, edits: Mapping[str, Mapping[str, str]]) -> Article:
    """The story with staff's changes for this issue (the feed itself is never changed)."""
    change = {k: v for k, v in edits.get(story_key(article), {}).items() if k in EDITABLE and v}
    return replace(article, **change) if change else article


def clean_line(text: str, *, what: str, limit: int) -> str:
    """A one-line text staff typed (subject, preheader, headline, credit): spaces collapsed.
    ValueError with a sentence for staff when it cannot be used."""
    text = " ".join("".join(c if unicodedata.category(c)[0] != "C" else " " for c in text).split())
    if len(text) > limit:
        raise ValueError(f"The {what} is {len(text)} characters long; at most {limit} fit.")
    if "@@" in text:
        raise ValueError(f'The {what} cannot contain "@@".')
    return text


def ordered(stories: Sequence[Story], order: Sequence[str]) -> list[Story]:
    """`stories` in staff's `order`; those it does not name follow in their own order (newest first)."""
    rank = {key: i for i, key in enumerate(order)}
    return sorted(stories, key=lambda t: rank.get(story_key(t), len(rank)))  # stable: ties keep order


@dataclass(frozen=True)
class RegionCost:
    """What leaving out a region's last story costs: readers who get no issue at all, and
    readers who get it without that region's section."""

    region: str
    no_issue: int
    lose_section: int


def region_costs(
    emptied: Sequence[str], remaining: Iterable[str], readers: Iterable[frozenset[str] | None]
) -> list[RegionCost]:
    """For each region in `emptied` (it had stories, the draft leaves none), how many of
    `readers` (each the regions they chose; None: every region) it costs. `remaining`: the
    regions the issue still has."""
    left = frozenset(remaining)
    no_issue = dict.fromkeys(emptied, 0)
    lose = dict.fromkeys(emptied, 0)
    for chosen in readers:
        hit = [r for r in emptied if chosen is None or r in chosen]
        if not hit:
            continue
        gets_issue = bool(left) if chosen is None else bool(chosen & left)
        for region in hit:
            if gets_issue:
                lose[region] += 1
            else:
                no_issue[region] += 1
    return [RegionCost(r, no_issue[r], lose[r]) for r in emptied]
