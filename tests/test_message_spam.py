"""A personalised digest through SpamAssassin's local rules (Debian package `spamassassin`).

The rules our facts name: MPART_ALT_DIFF (text part differs from HTML) and
HTML_FONT_LOW_CONTRAST (text coloured like its background, as MJML's preheader is) must not
fire. The report is parsed strictly (its total must be found and match the rules read), and
a control message that does trip both rules shows they are live and read. Skips when
spamassassin is not installed (in CI that skip is a failure: tests/skip_allowlist.txt).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from email.message import EmailMessage

import pytest
from render_helpers import DATE, HEADERS, personal, renderer, sample_digest, synthetic_digest

from digest.message import MessageTemplate
from digest.models import Digest, Recipient

SPAMASSASSIN = shutil.which("spamassassin")
pytestmark = pytest.mark.skipif(SPAMASSASSIN is None, reason="needs spamassassin (Debian package)")

TOTAL = re.compile(r"Content analysis details:\s+\((-?\d+(?:\.\d+)?) points")
RULE = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s+([A-Z][A-Z0-9_]+)\s")


def parse_report(report: str) -> dict[str, float]:
    """Rule name -> points, from `spamassassin -t`'s report. Raises if the report has no total
    or its rules do not add up to it: an unread report must never look like a clean one."""
    total = TOTAL.search(report)
    if total is None:
        raise AssertionError(f"no 'Content analysis details' total in SpamAssassin's report:\n{report}")
    details = report[total.end() :]
    hits = {m[2]: float(m[1]) for m in (RULE.match(line) for line in details.splitlines()) if m}
    if not hits:
        raise AssertionError(f"no rule lines in SpamAssassin's report:\n{report}")
    assert sum(hits.values()) == pytest.approx(float(total[1]), abs=0.11), (hits, total[1])
    return hits


def rules_hit(raw: bytes) -> dict[str, float]:
    report = subprocess.run(
        [SPAMASSASSIN or "spamassassin", "-L", "-t"], input=raw, capture_output=True, timeout=120, check=True
    ).stdout.decode("utf-8", "replace")
    return parse_report(report)


def test_the_rules_we_guard_against_fire_on_a_message_that_breaks_them() -> None:
    """The control: a text part unlike its HTML, and white-on-white text, trip both rules."""
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = HEADERS.sender, "reader@example.org", "Weekly news"
    msg["Date"] = "Fri, 20 Nov 2026 14:00:00 +0000"
    msg["Message-ID"] = "<control.1234567890@example.org>"
    msg.set_content("Gardening tips: tomatoes, basil, compost, watering cans, seedlings.\n")
    hidden = "".join(f"<font color='#ffffff'>invisible{i} </font>" for i in range(40))
    msg.add_alternative(
        "<html><body bgcolor='#ffffff'><p>Foreign policy, diplomacy, treaties, sanctions, "
        f"embassies.</p>{hidden}</body></html>",
        subtype="html",
    )
    hits = rules_hit(msg.as_bytes())
    assert "MPART_ALT_DIFF" in hits, hits
    assert "HTML_FONT_LOW_CONTRAST" in hits, hits


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
