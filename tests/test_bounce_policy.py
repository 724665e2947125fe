"""Reports applied to the list: matched only through our signed Message-ID, then the policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from bounce_helpers import TOKENS, arf, dsn, message_id, sent_run

from subscribers import reports, store
from subscribers.bounces import classify
from subscribers.reports import Effect, Policy, apply_report, run_bounce_counts
from subscribers.store import Status
from subscribers.tokens import Tokens

pytest_plugins = ("subscriber_fixtures",)

POLICY = Policy(soft_limit=3, soft_window=timedelta(days=30))


def _apply(session, raw: bytes, *, now: datetime | None = None, tokens: Tokens = TOKENS):
    return apply_report(session, tokens, classify(raw), source="mailbox", policy=POLICY, now=now)


@pytest.fixture
def reader(session):
    sub = store.add_subscriber(session, "Reader@Example.com", source="cli")
    sent_run(session, "run1", [sub])
    return sub


def test_hard_bounce_suppresses_at_once_and_lands_in_both_records(session, reader):
    applied = _apply(session, dsn(reader.email, message_id("run1", reader)))
    assert applied.effect == Effect.SUPPRESSED
    assert reader.status == Status.BOUNCED
    assert store.is_suppressed(session, reader.email)
    assert not store.is_active(session, reader.id)
    kinds = [e.kind for e in store.events_for(session, reader)]
    assert kinds[-1] == "bounced" and "5.1.1" in store.events_for(session, reader)[-1].detail
    assert run_bounce_counts(session, "run1") == {"bounced": 1, "complained": 0}
    # The same report again (a second copy in the mailbox) counts once.
    assert _apply(session, dsn(reader.email, message_id("run1", reader))).effect == Effect.DUPLICATE
    assert run_bounce_counts(session, "run1") == {"bounced": 1, "complained": 0}


def test_complaint_suppresses_and_unsubscribes(session, reader):
    applied = _apply(session, arf(reader.email, message_id("run1", reader)))
    assert applied.effect == Effect.COMPLAINED
    assert reader.status == Status.COMPLAINED
    assert store.suppression_for(session, reader.email).reason == "complained"
    assert run_bounce_counts(session, "run1") == {"bounced": 0, "complained": 1}


def test_soft_bounces_suppress_at_the_limit_within_the_window(session, reader):
    now = datetime(2026, 11, 1, tzinfo=UTC)
    runs = ["run2", "run3", "run4"]
    for run_id in runs:
        sent_run(session, run_id, [reader])
    # Two soft bounces long ago fall out of the window.
    _apply(
        session,
        dsn(reader.email, message_id("run1", reader), status="4.2.2", action="delayed"),
        now=now - timedelta(days=60),
    )
    first = _apply(session, dsn(reader.email, message_id("run2", reader), status="4.2.2"), now=now)
    assert first.effect == Effect.SOFT and reader.status == Status.ACTIVE
    # Several delay notices about one message are one soft bounce.
    again = _apply(session, dsn(reader.email, message_id("run2", reader), status="4.2.2"), now=now)
    assert again.effect == Effect.DUPLICATE
    assert (
        _apply(session, dsn(reader.email, message_id("run3", reader), status="4.2.2"), now=now).effect
        == Effect.SOFT
    )
    third = _apply(session, dsn(reader.email, message_id("run4", reader), status="4.2.2"), now=now)
    assert third.effect == Effect.SUPPRESSED
    assert reader.status == Status.BOUNCED
    assert "3 soft bounces within 30 days" in store.events_for(session, reader)[-1].detail


def test_a_report_we_did_not_sign_changes_nothing(session, reader):
    """Forged, foreign, unsigned, or about a run the subscriber was not in: nothing happens."""
    forged = Tokens("someone-elses-secret")
    cases = [
        dsn(reader.email, f"<run1.{reader.id}@news.example.org>"),  # the old, unsigned form
        dsn(reader.email, message_id("run1", reader, forged)),  # signed with another key
        dsn(reader.email, "<abc@elsewhere.example>"),  # not ours at all
        dsn(reader.email, message_id("run-never-sent", reader)),  # signed, but no such delivery
    ]
    for raw in cases:
        assert _apply(session, raw).effect == Effect.UNMATCHED
    assert reader.status == Status.ACTIVE and not store.is_suppressed(session, reader.email)
    assert run_bounce_counts(session, "run1") == {"bounced": 0, "complained": 0}


def test_the_token_decides_not_the_address(session, reader):
    """A report naming the reader's address but quoting another subscriber's message acts on that one."""
    other = store.add_subscriber(session, "other@example.com", source="cli")
    sent_run(session, "run9", [other])
    _apply(session, dsn(reader.email, message_id("run9", other)))
    assert other.status == Status.BOUNCED and reader.status == Status.ACTIVE


def test_staff_lift_a_suppression_with_a_reason(session, reader):
    _apply(session, dsn(reader.email, message_id("run1", reader)))
    reports.unsuppress(session, reader, reason="mailbox fixed, confirmed by phone", source="cli")
    assert reader.status == Status.ACTIVE and not store.is_suppressed(session, reader.email)
    assert any(e.kind == "unsuppressed" and "phone" in e.detail for e in store.events_for(session, reader))
    store.unsubscribe(session, reader, source="web")
    with pytest.raises(ValueError, match="unsubscribed themselves"):
        reports.unsuppress(session, reader, reason="no", source="cli")


def test_webhook_nonce_is_single_use(session):
    now = datetime.now(UTC)
    assert reports.remember_nonce(session, "mailgun", "tok", now=now, keep=timedelta(minutes=5))
    assert not reports.remember_nonce(session, "mailgun", "tok", now=now, keep=timedelta(minutes=5))


def test_the_pipeline_signs_every_message_id(session, reader):
    """What `digest send` puts in Message-ID is what matching reads back."""
    from digest.personal import Links
    from digest.pipeline import Personaliser

    personalise = Personaliser(
        TOKENS, Links("https://news.example.org"), run_id="run1", domain="news.example.org"
    )
    mid = personalise(reader.to_recipient()).message_id
    assert mid.endswith("@news.example.org>") and TOKENS.read_message_id(mid) == ("run1", reader.id)
    assert _apply(session, dsn(reader.email, mid)).effect == Effect.SUPPRESSED
