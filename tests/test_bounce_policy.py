"""Reports applied to the list: matched only through our signed Message-ID, then the policy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

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


# The word rules read a report alone, with no database: a reader that is no stored row (ids
# are what a Message-ID signs) keeps them from setting up SQLite and PostgreSQL per case.
_UNSTORED_READER = SimpleNamespace(id=7, email="reader@example.com")


def _classified(status: str, diagnostic: str):
    msg_id = message_id("run1", _UNSTORED_READER)
    return classify(dsn(_UNSTORED_READER.email, msg_id, status=status, diagnostic=diagnostic))


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
    assert run_bounce_counts(session, "run1") == {"bounced": 1, "complained": 0, "refused": 0}
    # The same report again (a second copy in the mailbox) counts once.
    assert _apply(session, dsn(reader.email, message_id("run1", reader))).effect == Effect.DUPLICATE
    assert run_bounce_counts(session, "run1") == {"bounced": 1, "complained": 0, "refused": 0}


def test_complaint_suppresses_and_unsubscribes(session, reader):
    applied = _apply(session, arf(reader.email, message_id("run1", reader)))
    assert applied.effect == Effect.COMPLAINED
    assert reader.status == Status.COMPLAINED
    assert store.suppression_for(session, reader.email).reason == "complained"
    assert run_bounce_counts(session, "run1") == {"bounced": 0, "complained": 1, "refused": 0}


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
    assert run_bounce_counts(session, "run1") == {"bounced": 0, "complained": 0, "refused": 0}


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


# --- reasons decide the policy ---------------------------------------------------------------

BLOCKED = "550 5.7.1 Service unavailable, Client host [192.0.2.1] blocked using Spamhaus"


@pytest.mark.parametrize(
    ("status", "diagnostic", "reason"),
    [
        ("5.7.1", BLOCKED, "blocked"),
        (
            "5.7.26",
            "550 5.7.26 Unauthenticated email from example.org is not accepted due to DMARC",
            "authfailure",
        ),
        (
            "5.7.1",
            "554 5.7.1 <r@x.example>: Recipient address rejected: Message content looks like spam",
            "spamdetected",
        ),
        (
            "5.7.1",
            "554 5.7.1 <r@x.example>: Recipient address rejected: Virus found in message",
            "virusdetected",
        ),
        (
            "5.3.4",
            "552 5.3.4 <r@x.example>: Recipient address rejected: message size exceeds the limit",
            "mesgtoolarge",
        ),
    ],
)
def test_refusals_of_our_sending_never_suppress_the_reader(session, reader, status, diagnostic, reason):
    """Blocklisting, authentication, spam, virus and size refusals are about us: the reader stays
    active, the run's record has a `refused` event and an alarm for staff. Postfix's "Recipient
    address rejected:" prefix does not make them unknown users."""
    report = classify(dsn(reader.email, message_id("run1", reader), status=status, diagnostic=diagnostic))
    assert [(f.reason, f.hard) for f in report.findings] == [(reason, False)]
    applied = apply_report(session, TOKENS, report, source="mailbox", policy=POLICY)
    assert applied.effect == Effect.REFUSED
    assert reader.status == Status.ACTIVE and not store.is_suppressed(session, reader.email)
    assert run_bounce_counts(session, "run1") == {"bounced": 0, "complained": 0, "refused": 1}
    (alarm,) = reports.run_alarms(session, "run1")
    assert alarm.text.startswith(f"{reason} by example.com: 1 message refused; ")


def test_one_blocklisting_across_many_readers_is_one_alarm_and_no_suppression(session):
    readers = [store.add_subscriber(session, f"r{i}@outlook.example", source="cli") for i in range(5)]
    other = store.add_subscriber(session, "x@gmail.example", source="cli")
    sent_run(session, "run7", [*readers, other])
    for sub in readers:
        raw = dsn(sub.email, message_id("run7", sub), status="5.7.1", diagnostic=BLOCKED)
        assert _apply(session, raw).effect == Effect.REFUSED
    _apply(session, dsn(other.email, message_id("run7", other)))  # a real unknown user
    assert all(r.status == Status.ACTIVE for r in readers) and other.status == Status.BOUNCED
    assert [a.text.split(";")[0] for a in reports.run_alarms(session, "run7")] == [
        "blocked by outlook.example: 5 messages refused"
    ]


def test_a_full_mailbox_is_soft_even_when_permanent(session, reader):
    """5.2.2 is the reader's problem and may pass: it counts towards the soft limit, never at once."""
    raw = dsn(reader.email, message_id("run1", reader), status="5.2.2", diagnostic="552 5.2.2 Mailbox full")
    assert _apply(session, raw).effect == Effect.SOFT
    assert reader.status == Status.ACTIVE


def test_a_gone_address_is_hard_even_on_a_4xx(session, reader):
    """sisimai's rule, ours too: "user unknown" says the address is gone, whatever the class."""
    raw = dsn(reader.email, message_id("run1", reader), status="4.1.1", diagnostic="450 4.1.1 user unknown")
    assert _apply(session, raw).effect == Effect.SUPPRESSED


@pytest.mark.parametrize(
    ("status", "diagnostic", "reason", "hard"),
    [
        ("5.0.0", "550 user unknown", "filtered", False),
        ("5.3.0", "5.3.0 - Other mail system problem 550-'Unknown user r@x.example'", "filtered", False),
        ("5.0.0", "550 user unknown (in reply to RCPT TO command)", "userunknown", True),
        ("5.1.1", "550 5.1.1 user unknown", "userunknown", True),
    ],
)
def test_unknown_user_words_without_a_mailbox_code_or_rcpt_are_a_filter(status, diagnostic, reason, hard):
    """sisimai's rule: "user unknown" under a code that names no mailbox (5.0.0, 5.3.0), with
    nothing placing it at RCPT TO, may be a filter's answer after DATA: not proof the address is
    gone. A mailbox code (x.1.1) or a refusal at RCPT TO is."""
    report = _classified(status, diagnostic)
    assert [(f.reason, f.hard) for f in report.findings] == [(reason, hard)]


@pytest.mark.parametrize(
    ("status", "diagnostic", "reason"),
    [
        # A quoted address after the reply code is not the server's quoted reply.
        ("5.0.0", "550 'r@x.example' is not a registered gateway user", "rejected"),
        ("4.0.0", "451 Could not load DRD for domain (x.example) rcpt (r@x.example)", "systemerror"),
        ("5.0.0", "550 Can't create user output file", "systemerror"),
        # A multiline reply's "550-5.2.1" inside the sentence does not cut it short.
        (
            "5.2.1",
            "550-5.2.1 The user you are trying to contact is receiving mail at a rate that "
            "550-5.2.1 prevents additional messages from being delivered.",
            "ratelimited",
        ),
        # 501-507: the server did not take our command or its argument (sisimai's SyntaxError).
        ("5.0.0", "504 Command parameter not implemented", "syntaxerror"),
        ("5.0.0", "501 Bad argument", "syntaxerror"),
        # SMTP AUTH wanted (a relay's rule) is not an SPF or DMARC failure...
        ("5.0.0", "550 Unauthenticated senders not allowed", "securityerror"),
        # ...but unauthenticated mail refused for its domain's DMARC policy is.
        (
            "5.7.1",
            "550-5.7.1 Unauthenticated email from example.org is not accepted due to domain's",
            "authfailure",
        ),
        # Google's "DNS Error" is a lookup that may pass; a null MX is the domain taking no mail.
        (
            "4.0.0",
            "DNS Error: 1234 DNS type 'mx' lookup of x.example responded with code SERVFAIL",
            "networkerror",
        ),
        (
            "4.0.0",
            "DNS Error: 1234 DNS type 'mx' lookup of x.example responded with code NOERROR "
            "The domain x.example doesn't receive email according to the administrator: returned NULL MX",
            "notaccept",
        ),
        # Our IP is not one our domain may send from.
        ("4.0.0", "450 service permits 2 unverifyable sending IPs - example.org is not 192.0.2.1", "blocked"),
        ("5.5.0", "550 domain [example.org] mismatches client ip 192.0.2.1.", "blocked"),
        ("5.0.0", "554 mx.example.net ESMTP not accepting connections", "blocked"),
        # IMail's and Biglobe's words for a full mailbox; IMail's and DragonFly's for giving up.
        ("5.0.0", "User mailbox exceeds allowed size: r@x.example", "mailboxfull"),
        ("5.0.0", "The number of messages in recipient's mailbox exceeded the local limit.", "mailboxfull"),
        ("5.0.0", "Delivery failed 20 attempts: r@x.example", "expired"),
        ("5.0.0", "Could not deliver for the last 432000 seconds. Giving up.", "expired"),
        ("4.0.0", "r@x.example: Network error on destination MXs", "networkerror"),
    ],
)
def test_reason_words_of_sisimai_families(status, diagnostic, reason):
    report = _classified(status, diagnostic)
    assert [(f.reason, f.hard) for f in report.findings] == [(reason, False)]


def test_a_vague_status_takes_the_servers_code_quoted_last():
    """A relay's "4.4.7 expired" quoting the server's last answer: the server's code is the one."""
    diagnostic = "554 4.4.7 Message expired: unable to deliver in 840 minutes.<421 4.4.2 Timed out>"
    report = _classified("4.4.7", diagnostic)
    assert [(f.status, f.reason) for f in report.findings] == [("4.4.2", "expired")]
