"""A personalised digest through SpamAssassin's local rules (Debian package `spamassassin`).

The rules our facts name: MPART_ALT_DIFF (text part differs from HTML) and
HTML_FONT_LOW_CONTRAST (text coloured like its background, as MJML's preheader is) must not
fire. Skips when spamassassin is not installed.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from render_helpers import DATE, HEADERS, personal, renderer, sample_digest, synthetic_digest

from digest.message import MessageTemplate
from digest.models import Digest, Recipient

SPAMASSASSIN = shutil.which("spamassassin")
pytestmark = pytest.mark.skipif(SPAMASSASSIN is None, reason="needs spamassassin (Debian package)")


def rules_hit(raw: bytes) -> dict[str, float]:
    report = subprocess.run(
        [SPAMASSASSIN or "spamassassin", "-L", "-t"], input=raw, capture_output=True, timeout=120, check=True
    ).stdout.decode("utf-8", "replace")
    hits = {}
    details = report.split("Content analysis details:", 1)[-1]
    for line in details.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1].isupper():
            try:
                hits[parts[1]] = float(parts[0])
            except ValueError:
                continue
    return hits


@pytest.mark.parametrize("digest", [sample_digest(), synthetic_digest(30)], ids=["sample", "thirty"])
def test_digest_does_not_trip_content_rules(digest: Digest) -> None:
    template = MessageTemplate(renderer().render(digest), HEADERS, date=DATE)
    hits = rules_hit(template.personalise(Recipient(7, "reader@example.org", "Ada Reader"), personal()))
    assert "MPART_ALT_DIFF" not in hits and "MPART_ALT_DIFF_COUNT" not in hits, hits
    assert "HTML_FONT_LOW_CONTRAST" not in hits, hits
    assert sum(hits.values()) < 1.0, hits


def test_story_links_and_the_hidden_link_do_not_trip_rules() -> None:
    """[analytics]: every story link through our site, one hidden link, the open pixel."""
    from digest.story_links import IssueStory, StoryLinks, make_signer, stories_of

    digest = synthetic_digest(30)
    stories = [IssueStory(i, url, title, region) for i, (url, title, region) in enumerate(stories_of(digest))]
    links = StoryLinks(
        make_signer("k"), "https://newsletter.example.org", "0123456789abcdef", stories, opens=True
    )
    variant = renderer().variants(digest, links).get(None)
    assert variant.html.count("https://newsletter.example.org/r/") > 30
    template = MessageTemplate(variant, HEADERS, date=DATE)
    hits = rules_hit(template.personalise(Recipient(7, "reader@example.org", "Ada Reader"), personal()))
    assert "MPART_ALT_DIFF" not in hits and "MPART_ALT_DIFF_COUNT" not in hits, hits
    assert sum(hits.values()) < 1.0, hits
