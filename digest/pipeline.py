"""The weekly job, stage by stage: collect -> build -> render per variant -> message -> send.

This module wires the pure core to the edges it is given (database engine, transport,
console); the commands and the scheduler call it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from rich.console import Console
from sqlalchemy import Engine, inspect, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from digest.archive import write_archive
from digest.clicks import register_stories
from digest.collect import CollectResult, collect
from digest.config import Config
from digest.curate import Draft, apply_draft
from digest.db import make_engine, migrate, session_factory
from digest.dkim import make_signer
from digest.drafts import stored_draft
from digest.errors import ConfigError
from digest.message import ListHeaders, MessageTemplate, Personal, make_message_id, make_return_path
from digest.models import Digest, Recipient, RenderedVariant
from digest.personal import Links
from digest.render import Renderer
from digest.send import (
    Clock,
    Courier,
    Prepared,
    ProgressSink,
    RateLimits,
    RetryPolicy,
    RunReport,
    SendRun,
    SystemClock,
    last_send_window_end,
    ledger_size,
    start_run,
)
from digest.story_links import StoryLinks
from digest.story_links import make_signer as make_link_signer
from digest.transports.base import Transport
from subscribers import store
from subscribers.tokens import DEV_SECRET, Purpose, Tokens


@dataclass
class Issue:
    now: datetime
    collected: CollectResult
    digest: Digest
    renderer: Renderer  # the one that fitted the digest: its compiled templates serve the whole run

    def should_send(self, config: Config) -> bool:
        """No article at all means no send, unless [collect] send_when_empty (collect decides)."""
        return self.collected.should_send(config)


STORED = "stored"  # prepare_issue(draft=STORED): the draft saved in the database for the issue's date


def prepare_issue(
    config: Config,
    now: datetime | None = None,
    *,
    since: datetime | None = None,
    draft: Draft | None | Literal["stored"] = STORED,
) -> Issue:
    """Collect the week's articles and build the digest. `now` defaults to the newsletter's local time.

    `since` is when the last successful send collected, for [collect] window = "since_last_send".
    `draft` is staff's curation (digest.curate); by default the one saved in [database] url for
    this issue's date, if any; None builds the issue uncurated.
    """
    now = now or datetime.now(config.tz)
    collected = collect(config, now, since=since)
    if draft == STORED:
        draft = stored_draft(config, now.astimezone(config.tz).date())
    return issue_from(config, now, collected, draft)


def issue_from(config: Config, now: datetime, collected: CollectResult, draft: Draft | None) -> Issue:
    """The issue built from articles already collected, curated by `draft` (the console re-uses
    one collect for every change staff make)."""
    digest = apply_draft(
        collected.articles,
        draft,
        newsletter=config.newsletter.name,
        issue_date=now.astimezone(config.tz).date(),
        region_order=config.regions.order,
        max_per_region=config.collect.max_articles_per_region,
    )
    # Capped per region if the full issue would pass the HTML size limit (Gmail clips it).
    renderer = make_renderer(config)
    digest = renderer.fit(digest)
    return Issue(now=now, collected=collected, digest=digest, renderer=renderer)


def last_send(config: Config) -> tuple[datetime | None, str | None]:
    """Where `digest send` would start a "since_last_send" window: (time or None, warning or None).

    For `digest collect` and `digest preview`, so they show what the next send would send. A
    database that does not exist yet is not created for it (nor its folder).
    """
    try:
        url = make_url(config.database.url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            path = Path(url.database or "")
            if not (path if path.is_absolute() else config.base_dir / path).is_file():
                return None, None  # no database, so no send yet
        engine = make_engine(config.database.url, base_dir=config.base_dir)
        try:
            if not inspect(engine).has_table(SendRun.__tablename__):
                return None, None
            migrate(engine)  # a ledger written by an older version reads as send would read it
            with session_factory(engine)() as session:
                return last_send_window_end(session), None
        finally:
            engine.dispose()
    except SQLAlchemyError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return None, f"cannot read the last send from [database] url: {reason}"


def make_renderer(config: Config) -> Renderer:
    return Renderer.from_config(config)


def list_headers(config: Config) -> ListHeaders:
    return ListHeaders(
        sender=config.newsletter.sender,
        reply_to=config.newsletter.reply_to,
        list_id=config.list_id,
        unsubscribe_mailto=config.unsubscribe_mailto,
        domain=config.sender_domain,
    )


def signing_key(config: Config, console: Console | None = None) -> str:
    """DIGEST_SECRET_KEY (refused when weak); the outbox transport alone may fall back to a
    development key."""
    from digest.secret_key import secret_key_from_environment

    key = secret_key_from_environment()
    if key:
        return key
    if config.transport.kind == "outbox":
        if console is not None:
            console.print(
                "[yellow]note:[/] DIGEST_SECRET_KEY is not set; signing links with a development key"
            )
        return DEV_SECRET
    raise ConfigError("environment", "DIGEST_SECRET_KEY", "is not set; unsubscribe links must be signed")


class Variants:
    """Each distinct set of sections is rendered once (`VariantCache`) and encoded once."""

    def __init__(
        self,
        digest: Digest,
        renderer: Renderer,
        headers: ListHeaders,
        *,
        date: datetime,
        links: StoryLinks | None = None,
    ) -> None:
        self.digest = digest
        self.cache = renderer.variants(digest, links)
        self.headers = headers
        self.date = date
        self._templates: dict[tuple[str, ...], MessageTemplate] = {}

    def key_for(self, regions: frozenset[str] | None) -> tuple[str, ...]:
        """The regions this subscriber gets this week, in digest order."""
        return self.cache.key(regions)

    def get(self, key: tuple[str, ...]) -> tuple[RenderedVariant, MessageTemplate]:
        if key not in self._templates:
            self._templates[key] = MessageTemplate(self.cache.get(key), self.headers, date=self.date)
        template = self._templates[key]
        return template.variant, template

    @property
    def rendered(self) -> dict[tuple[str, ...], RenderedVariant]:
        return {key: t.variant for key, t in self._templates.items()}


class Personaliser:
    """The links and ids that differ per recipient."""

    def __init__(
        self,
        tokens: Tokens,
        links: Links,
        *,
        run_id: str,
        domain: str,
        return_path_domain: str = "",
        per_reader: bool = False,
    ) -> None:
        self.tokens = tokens
        self.links = links
        self.run_id = run_id
        self.domain = domain
        self.return_path_domain = return_path_domain  # "" = no VERP: the newsletter's own address
        self.per_reader = per_reader  # [analytics] per_reader: a reader token for the story links

    def __call__(self, recipient: Recipient) -> Personal:
        sid = recipient.subscriber_id
        signature = self.tokens.message_signature(self.run_id, sid)  # one HMAC serves both ids
        return Personal(
            unsubscribe_url=self.links.unsubscribe(self.tokens.make(sid, Purpose.UNSUBSCRIBE)),
            preferences_url=self.links.preferences(self.tokens.make(sid, Purpose.PREFERENCES)),
            message_id=make_message_id(self.run_id, sid, self.domain, signature=signature),
            return_path=make_return_path(self.run_id, sid, self.return_path_domain, signature=signature)
            if self.return_path_domain
            else "",
            reader=self.tokens.make(sid, Purpose.READER) if self.per_reader else "",
        )


def story_links(config: Config, sessions: sessionmaker, run_id: str, digest: Digest) -> StoryLinks:
    """The run's redirect links ([analytics]): its story table is written first, so every link
    in a message already resolves when the message leaves."""
    with sessions.begin() as session:
        stories = register_stories(session, run_id, digest)
    return StoryLinks(
        make_link_signer(signing_key(config)),
        config.newsletter.base_url,
        run_id,
        stories,
        opens=config.analytics.opens,
        per_reader=per_reader(config),
    )


def per_reader(config: Config) -> bool:
    """Whether story links also name their reader ([analytics] per_reader, off by default)."""
    return config.analytics.enabled and config.analytics.per_reader


def example_personal(links: Links) -> dict[str, str]:
    """Stand-in personal values for previews that staff look at (no real subscriber's token)."""
    return {
        "email": "reader@example.org",
        "name": "Example Reader",
        "unsubscribe_url": links.unsubscribe("EXAMPLE-TOKEN"),
        "preferences_url": links.preferences("EXAMPLE-TOKEN"),
    }


@dataclass
class SendOutcome:
    issue: Issue
    report: RunReport
    variants: dict[tuple[str, ...], RenderedVariant] = field(default_factory=dict)
    recipients: int = 0


def retry_policy(config: Config) -> RetryPolicy:
    t = config.transport
    return RetryPolicy(attempts=t.attempts, backoff=t.backoff_seconds, max_errors=t.max_errors)


def rate_limits(config: Config) -> RateLimits:
    return RateLimits(per_second=config.transport.max_per_second, per_hour=config.transport.max_per_hour)


def run_notes(issue: Issue) -> dict[str, object]:
    """What the run's record keeps about the issue: the articles left out, and why."""
    return {
        "dropped": [item._asdict() for item in issue.collected.left_out],
        "warnings": list(issue.collected.warnings),
        "articles": issue.digest.article_count,
    }


def handover_dir(config: Config, engine: Engine) -> Path:
    """Where hand-over journals go: beside a SQLite file, else in the config's folder."""
    database = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    if database and database != ":memory:":
        return Path(f"{database}.handover")
    return config.base_dir / ".digest-handover"


def send_issue(
    config: Config,
    engine: Engine,
    transport: Transport,
    *,
    issue: Issue,
    console: Console,
    retry: RetryPolicy | None = None,
    resume_run: str | None = None,
    unpark: bool = True,
    progress: ProgressSink | None = None,
    stop: threading.Event | None = None,
    clock: Clock | None = None,
    workers: str | None = None,
    detach: bool = False,
) -> SendOutcome:
    """Freeze the recipients (or take up `resume_run`), then deliver one message to each.

    `unpark=False` (after `digest.send.reopen`) sends only the rows staff chose again.
    `workers` ("inprocess" or "celery") overrides [send] workers; in celery mode the rows go
    to Celery workers (`digest.distributed`), and `detach` returns once they are enqueued.
    """
    distributed = (workers or config.send.workers) == "celery"
    if distributed:
        from digest.distributed import require_postgres

        require_postgres(config, engine)  # before freezing: a wrong database leaves no run behind
    tokens = Tokens(signing_key(config, console))  # before freezing: a missing secret leaves no run behind
    sign = make_signer(config)  # None unless [dkim] enabled; a bad key, too, leaves no run behind
    clock = clock or SystemClock()  # one clock for the run: the rows' due times and the engine's
    sessions = session_factory(engine)
    with sessions() as session:
        if resume_run:
            run_id = resume_run
        else:
            run_id = start_run(
                session,
                store.iter_active_recipients(session),
                issue=issue.digest.issue_date.isoformat(),
                window_end=issue.now,
                notes=run_notes(issue),
                transport=transport.name,
                now=clock.now(),
            )
        recipients = ledger_size(session, run_id)

    # The "view in browser" page must be there before the first reader opens the e-mail.
    write_archive(config, issue.digest, issue.renderer)
    sent_at = clock.now().astimezone(config.tz)  # the Date: header is when it goes out, also on a resumed run
    links = story_links(config, sessions, run_id, issue.digest) if config.analytics.enabled else None
    variants = Variants(issue.digest, issue.renderer, list_headers(config), date=sent_at, links=links)
    personalise = Personaliser(
        tokens,
        Links(config.newsletter.base_url),
        run_id=run_id,
        domain=config.sender_domain,
        return_path_domain=config.bounces.return_path_domain,
        per_reader=per_reader(config),
    )
    envelope_sender = address_of(config.newsletter.sender)
    empty_reason = "no articles this week in the chosen regions"

    def prepare(recipient: Recipient, key: str) -> Prepared:
        variant = variants.key_for(recipient.regions)
        if not variant and issue.digest.sections:
            return Prepared(None, empty_reason)
        _rendered, template = variants.get(variant)
        return Prepared(
            template.outbound(
                recipient, personalise(recipient), key=key, envelope_sender=envelope_sender, sign=sign
            )
        )

    if distributed:
        report = _send_distributed(
            config,
            engine,
            transport,
            issue=issue,
            variants=variants,
            run_id=run_id,
            unpark=unpark,
            progress=progress,
            stop=stop or threading.Event(),
            clock=clock,
            detach=detach,
        )
        return SendOutcome(issue=issue, report=report, variants=variants.rendered, recipients=recipients)

    courier = Courier(
        transport,
        prepare=prepare,
        unwanted=store.inactive_among,
        retry=retry or retry_policy(config),
        limits=rate_limits(config),
        batch_size=config.transport.batch_size,
        progress=progress,
        stop=stop or threading.Event(),
        clock=clock,
        journal_dir=handover_dir(config, engine),
        lease_seconds=config.send.lease_seconds,
    )
    report = courier.run(sessions, run_id, unpark=unpark)
    return SendOutcome(issue=issue, report=report, variants=variants.rendered, recipients=recipients)


def _send_distributed(
    config: Config,
    engine: Engine,
    transport: Transport,
    *,
    issue: Issue,
    variants: Variants,
    run_id: str,
    unpark: bool,
    progress: ProgressSink | None,
    stop: threading.Event,
    clock: Clock,
    detach: bool,
) -> RunReport:
    """Celery mode: render every variant once into the database, enqueue the rows, watch."""
    from digest.celery_app import enqueuer
    from digest.distributed import Dispatch, store_variants, write_dispatch

    def prepare_shared(session: Session) -> None:
        variant_of = store_variants(
            session,
            run_id,
            key_for=variants.key_for,
            render=lambda key: variants.get(key)[0],
            has_sections=bool(issue.digest.sections),
        )
        write_dispatch(
            session,
            run_id,
            sent_at=variants.date,
            variant_of=variant_of,
            limits=rate_limits(config),
            transport_per_second=transport.max_per_second,
            max_errors=config.transport.max_errors,
        )

    dispatch = Dispatch(
        session_factory(engine),
        run_id,
        enqueue=enqueuer(config),
        rows_per_task=config.celery.task_rows,
        lease_seconds=config.celery.worker_lease_seconds,
        run_lease_seconds=config.send.lease_seconds,
        progress=progress,
        stop=stop,
        clock=clock,
    )
    report, before = dispatch.start(
        unpark=unpark, journal_dir=handover_dir(config, engine), prepare_shared=prepare_shared
    )
    if detach:
        report.detached = True
        report.totals = before
        return report
    return dispatch.watch(report, before)


def address_of(sender: str) -> str:
    from email.utils import parseaddr

    return parseaddr(sender)[1]


TEST_SUBJECT_PREFIX = "[TEST] "


def send_test(
    config: Config,
    issue: Issue,
    to: str,
    transport: Transport,
    *,
    regions: frozenset[str] | None = None,
    console: Console | None = None,
) -> str:
    """One copy of the issue to a staff address, outside any run's ledger; returns the reply.

    The subject is marked as a test and the personal links are example links: a test copy must
    never carry a real subscriber's unsubscribe token, nor count as a delivery.
    """
    import dataclasses
    import secrets

    variants = Variants(issue.digest, issue.renderer, list_headers(config), date=datetime.now(config.tz))
    key = variants.key_for(regions)
    if not key and issue.digest.sections:
        raise ValueError(f"no articles this week in the regions {', '.join(sorted(regions or ()))}")
    rendered = variants.cache.get(key)  # the render only: its wire form is built once below, marked
    marked = dataclasses.replace(rendered, subject=TEST_SUBJECT_PREFIX + rendered.subject)
    template = MessageTemplate(marked, list_headers(config), date=datetime.now(config.tz))
    links = Links(config.newsletter.base_url)
    test_id = "test-" + secrets.token_hex(6)
    personal = Personal(
        unsubscribe_url=links.unsubscribe("TEST-COPY"),
        preferences_url=links.preferences("TEST-COPY"),
        message_id=f"<{test_id}@{config.sender_domain}>",
    )
    recipient = Recipient(subscriber_id=0, email=to, name="")
    outbound = template.outbound(
        recipient,
        personal,
        key=test_id,
        envelope_sender=address_of(config.newsletter.sender),
        sign=make_signer(config),  # signed like the real copies, so staff see how DKIM lands
    )
    with transport:
        outcome = transport.send_one(outbound)
    if console is not None:
        console.print(f"Test copy sent to {to}: {outcome.detail}")
    return outcome.detail


def worker_context(config: Config) -> Any:
    """What a Celery worker sends with (`digest worker` hands this to `celery_app.run_worker`):
    its own engine, transport, personal links and DKIM signer, as the in-process send has."""
    from digest.distributed import WorkerContext, require_postgres
    from digest.transports import make_transport

    engine = make_engine(config.database.url, base_dir=config.base_dir)
    require_postgres(config, engine)
    migrate(engine)
    tokens = Tokens(signing_key(config))
    links = Links(config.newsletter.base_url)

    def personaliser(run_id: str) -> Personaliser:
        return Personaliser(
            tokens,
            links,
            run_id=run_id,
            domain=config.sender_domain,
            return_path_domain=config.bounces.return_path_domain,
            per_reader=per_reader(config),
        )

    return WorkerContext(
        engine=engine,
        make_transport=lambda: make_transport(config),
        headers=list_headers(config),
        personaliser=personaliser,
        envelope_sender=address_of(config.newsletter.sender),
        sign=make_signer(config),  # each worker DKIM-signs what it sends, as the in-process send does
        unwanted=store.inactive_among,
        retry=retry_policy(config),
        claim_rows=config.celery.claim_rows,
        handover_rows=config.celery.handover_rows,
        lease_seconds=config.celery.worker_lease_seconds,
    )
