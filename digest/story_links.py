"""Per-story redirect links: signed tokens naming an issue, a variant and a story, never a reader.

A teaser's links (photo, headline, "Keep reading") point to `<base_url>/r/<token>`; the web app
checks the signature, counts the click (digest.clicks) and redirects to the article. The token
carries no URL: the story is an index into the issue's story table (`run_stories`), so a token
cannot be made to point anywhere else (no open redirect), and a changed one fails its signature.

Token: `<run id>-<variant>-<story>.<signature>`, about 50 characters:
  * run id: the send run's id (the issue as sent);
  * variant: which regions' sections the message carried, as a hexadecimal bit mask over the
    issue's regions in their order (bit 0 = the first region with stories);
  * story: the story's index in the issue, `h` for the hidden link, `o` for the open pixel.

Pure: no I/O. Tokens are made once per variant at render time, never per recipient. Only with
`[analytics] per_reader` (off by default) does a story link also carry `?r=<reader token>`,
spliced in per recipient as the unsubscribe link is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from itsdangerous import BadSignature, Signer

from digest.models import Digest, Section, Teaser
from digest.personal import MARKERS

SALT = "digest.story-link"
HIDDEN = "h"  # the link no person sees: a client fetching it is a scanner
OPEN = "o"  # the open pixel
_PAYLOAD_RE = re.compile(r"^([A-Za-z0-9_.:-]{1,40})-([0-9a-f]{1,16})-(\d{1,6}|h|o)$")


@dataclass(frozen=True)
class StoryRef:
    """What a valid token names."""

    run_id: str
    variant: str  # hexadecimal region mask
    story: int | Literal["h", "o"]


@dataclass(frozen=True)
class IssueStory:
    """One story of a sent issue, as the story table keeps it."""

    index: int
    url: str
    title: str
    region: str


@dataclass(frozen=True)
class VariantTracking:
    """What a variant's template adds besides its story links (None values: not shown)."""

    hidden_url: str
    pixel_url: str | None = None


def make_signer(secret_key: str) -> Signer:
    return Signer(secret_key, salt=SALT)


def read_token(signer: Signer, token: str) -> StoryRef | None:
    """The reference a token names, or None if it was changed, forged or is malformed."""
    if len(token) > 120:
        return None
    try:
        payload = signer.unsign(token).decode("ascii")
    except (BadSignature, UnicodeDecodeError):
        return None
    m = _PAYLOAD_RE.match(payload)
    if m is None:
        return None
    story = m.group(3)
    return StoryRef(m.group(1), m.group(2), story if story in (HIDDEN, OPEN) else int(story))  # type: ignore[arg-type]


def stories_of(digest: Digest) -> list[tuple[str, str, str]]:
    """(url, title, region) of every story of the issue, in section order, each URL once."""
    seen: set[str] = set()
    out = []
    for section in digest.sections:
        for t in section.teasers:
            if t.url not in seen:
                seen.add(t.url)
                out.append((t.url, t.title, section.region))
    return out


def issue_regions(stories: Sequence[IssueStory]) -> list[str]:
    """The issue's regions in the order their stories were indexed: the variant mask's bits."""
    out: list[str] = []
    for s in sorted(stories, key=lambda s: s.index):
        if s.region not in out:
            out.append(s.region)
    return out


def variant_mask(regions: Sequence[str], variant_regions: Sequence[str]) -> str:
    """The hexadecimal mask of `variant_regions` over `regions` (the issue's)."""
    wanted = set(variant_regions)
    return format(sum(1 << i for i, r in enumerate(regions) if r in wanted), "x")


def mask_regions(regions: Sequence[str], mask: str) -> list[str]:
    bits = int(mask, 16)
    return [r for i, r in enumerate(regions) if bits >> i & 1]


class StoryLinks:
    """Makes one issue's redirect links: `for_variant` rewrites a variant's teaser URLs."""

    def __init__(
        self,
        signer: Signer,
        base_url: str,
        run_id: str,
        stories: Sequence[IssueStory],
        *,
        opens: bool = False,
        per_reader: bool = False,
    ) -> None:
        self.signer = signer
        self.base = base_url.rstrip("/")
        self.run_id = run_id
        self.index = {s.url: s.index for s in stories}
        self.regions = issue_regions(stories)
        self.opens = opens
        # [analytics] per_reader: each story link also carries the reader's token, spliced in
        # per recipient like the unsubscribe link (the render stays once per variant).
        self.reader_query = f"?r={MARKERS['reader']}" if per_reader else ""

    def url(self, mask: str, story: int | str) -> str:
        token = self.signer.sign(f"{self.run_id}-{mask}-{story}").decode("ascii")
        return f"{self.base}/r/{token}"

    def pixel_url(self, mask: str) -> str:
        token = self.signer.sign(f"{self.run_id}-{mask}-{OPEN}").decode("ascii")
        return f"{self.base}/o/{token}"

    def for_variant(self, digest: Digest) -> tuple[Digest, VariantTracking]:
        """The variant with every known story's URL replaced by its redirect link.

        The lead and its copy in its section get the same link, so the body still shows the
        lead once (`render.body_sections` compares URLs). A story missing from the table (none,
        when the table was made from this digest) keeps its direct link.
        """
        mask = variant_mask(self.regions, digest.regions)
        links: dict[str, str] = {}

        def swap(t: Teaser) -> Teaser:
            index = self.index.get(t.url)
            if index is None:
                return t
            if t.url not in links:
                links[t.url] = self.url(mask, index) + self.reader_query
            return replace(t, url=links[t.url])

        sections = tuple(Section(s.region, tuple(swap(t) for t in s.teasers)) for s in digest.sections)
        lead = swap(digest.lead) if digest.lead is not None else None
        tracking = VariantTracking(
            hidden_url=self.url(mask, HIDDEN), pixel_url=self.pixel_url(mask) if self.opens else None
        )
        return replace(digest, sections=sections, lead=lead), tracking
