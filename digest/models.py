"""Plain data that flows through the pipeline. No I/O here."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime


@dataclass(frozen=True)
class Article:
    """One article as collected from a source, already cleaned (plain-text lede, sanitised HTML)."""

    guid: str
    url: str
    title: str
    lede: str
    published: datetime  # timezone-aware
    region: str | None = None  # canonical region name, or None when no configured region matched
    categories: tuple[str, ...] = ()
    image_url: str | None = None
    image_alt: str = ""
    image_credit: str | None = None
    image_width: int | None = None
    image_height: int | None = None
    author: str | None = None  # the byline's names, e.g. "Ann Smith and Bob Jones" (no "By")
    source: str = ""  # name of the source it came from, for warnings and the collect table
    format_label: str = ""  # the kind of piece ("Analysis", "Opinion"), from its section label


@dataclass(frozen=True)
class Teaser:
    """What a reader sees of one article: photo with credit, title, lede, Keep reading link."""

    title: str
    url: str
    lede: str
    region: str
    image_url: str | None = None
    image_alt: str = ""
    image_credit: str | None = None
    image_width: int | None = None
    image_height: int | None = None
    published: datetime | None = None
    format_label: str = ""  # "Analysis", "Opinion"...: shown beside the region label, as sites do
    byline: str = ""  # the authors' names as the source gives them ("Ann Smith and Bob Jones"), no "By"

    @classmethod
    def from_article(cls, article: Article, region: str) -> Teaser:
        return cls(
            title=article.title,
            url=article.url,
            lede=article.lede,
            region=region,
            image_url=article.image_url,
            # No stand-in when the source gave none: the headline is right beside the photo, and
            # an alt repeating it makes screen readers read it twice.
            image_alt=article.image_alt,
            image_credit=article.image_credit,
            image_width=article.image_width,
            image_height=article.image_height,
            published=article.published,
            format_label=article.format_label,
            byline=article.author or "",
        )


_EPOCH = datetime.min.replace(tzinfo=UTC)


def newest(teasers: Iterable[Teaser]) -> Teaser | None:
    """The most recently published teaser (undated ones count as oldest)."""
    return max(teasers, key=lambda t: t.published or _EPOCH, default=None)


@dataclass(frozen=True)
class Section:
    region: str
    teasers: tuple[Teaser, ...]


@dataclass(frozen=True)
class Digest:
    """One issue of the newsletter: sections in the configured region order."""

    newsletter: str
    issue_date: date
    sections: tuple[Section, ...]
    lead: Teaser | None = None
    notes: tuple[str, ...] = ()  # things the run should tell staff (caps applied, regions empty)
    intro: str = ""  # staff's introduction (digest.curate), plain text; shown under the header
    subject: str = ""  # staff's subject line for this issue; "": the template makes it
    preheader: str = ""  # staff's inbox preview text; "": the template makes it

    @property
    def regions(self) -> tuple[str, ...]:
        return tuple(s.region for s in self.sections)

    @property
    def article_count(self) -> int:
        return sum(len(s.teasers) for s in self.sections)

    def for_regions(self, regions: Iterable[str] | None) -> Digest:
        """The variant a subscriber with these region preferences gets (None: all regions)."""
        if regions is None:
            return self
        wanted = frozenset(regions)
        sections = tuple(s for s in self.sections if s.region in wanted)
        lead = self.lead
        if lead is not None and lead.region not in wanted:
            # The lead is another region's story: lead with this reader's newest one instead.
            teasers = [t for s in sections for t in s.teasers]
            lead = newest(teasers)
        return replace(self, sections=sections, lead=lead)


@dataclass(frozen=True)
class Recipient:
    """A subscriber as the send stage sees them."""

    subscriber_id: int
    email: str
    name: str = ""
    regions: frozenset[str] | None = None  # None: every region


@dataclass(frozen=True)
class RenderedVariant:
    """The render of one variant. Personal values appear as placeholders (see `digest.personal`)."""

    regions: tuple[str, ...]
    subject: str
    preheader: str
    html: str
    text: str
    extra: dict[str, str] = field(default_factory=dict)


# The statuses a run's totals are shown in, in this order (`sending` is a passing state).
STATUSES = ("sent", "failed", "unknown", "skipped", "pending")


class DeliveryStatus(enum.StrEnum):
    """The closed set of per-recipient outcomes kept in the delivery ledger."""

    PENDING = "pending"
    SENDING = "sending"  # committed just before a hand-over; left so only if the process died mid-way
    SENT = "sent"
    FAILED = "failed"
    UNKNOWN = "unknown"  # may or may not have been delivered: never re-sent blindly
    SKIPPED = "skipped"  # suppressed or unsubscribed between freeze and send
