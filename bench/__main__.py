"""Render and personalisation speed for a 30-article digest, against a bare mjml-python compile.

    python -m bench [--articles 30] [--recipients 20000] [--repeat 7]

Reports the median of `--repeat` timed runs (after a warm-up) of:
  * one variant render: Jinja2 (subject, preheader, MJML source, text) + MJML -> HTML;
  * its parts: the Jinja2 MJML source, the MJML compile through our path, the text part;
  * the reference: a bare `mjml.mjml2html` of the same MJML source, in the same run;
  * per recipient: `MessageTemplate.personalise` (splice values into pre-encoded bytes);
  * a second reference: one `EmailMessage` built and serialised per recipient, the naive way.
Ratios are against the bare compile, so a slower or faster machine moves both sides.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from email.message import EmailMessage
from email.policy import SMTP

from mjml import mjml2html

from digest.build import build_digest
from digest.config import DEFAULT_REGION_ORDER
from digest.message import ListHeaders, MessageTemplate, Personal, make_message_id
from digest.models import Digest, Recipient
from digest.personal import fill
from digest.render import NewsletterInfo, Renderer, compile_mjml
from digest.sources.sample import synthetic_articles

TARGET_VARIANT_MS = 5.0
TARGET_RECIPIENT_US = 20.0

INFO = NewsletterInfo(
    name="Responsible Statecraft Weekly",
    base_url="https://newsletter.example.org",
    postal_address="Quincy Institute, 1 Example Street, Washington, DC 20001, USA",
)
HEADERS = ListHeaders(
    sender='"Responsible Statecraft" <newsletter@example.org>',
    list_id="responsible-statecraft-weekly.newsletter.example.org",
    unsubscribe_mailto="unsubscribe@example.org",
    domain="example.org",
)
NOW = datetime(2026, 11, 20, 14, 0, tzinfo=UTC)


def digest_of(count: int) -> Digest:
    """`count` full-length articles over six regions (the same set the size tests use)."""
    articles = synthetic_articles(count, DEFAULT_REGION_ORDER, NOW)
    return build_digest(
        articles, newsletter=INFO.name, issue_date=date(2026, 11, 20), region_order=DEFAULT_REGION_ORDER
    )


def median_seconds(fn: Callable[[], object], *, number: int, repeat: int) -> float:
    """Median over `repeat` runs of the time per call of `fn`, each run `number` calls."""
    fn()  # warm-up: template compile, caches
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        runs.append((time.perf_counter() - start) / number)
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument("--articles", type=int, default=30)
    parser.add_argument("--recipients", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args(argv)

    renderer = Renderer(INFO)
    digest = digest_of(args.articles)
    variant = renderer.render(digest)
    ctx = renderer.context(digest)
    ctx["subject"], ctx["preheader"] = variant.subject, variant.preheader
    source = renderer._render("digest.mjml.j2", ctx)
    n, r = 50, args.repeat

    bare = median_seconds(lambda: mjml2html(source), number=n, repeat=r)
    render = median_seconds(lambda: renderer.render(digest), number=n, repeat=r)
    jinja = median_seconds(lambda: renderer._render("digest.mjml.j2", ctx), number=n, repeat=r)
    ours = median_seconds(lambda: compile_mjml(source), number=n, repeat=r)
    text = median_seconds(lambda: renderer._render("digest.txt.j2", ctx), number=n, repeat=r)

    template = MessageTemplate(variant, HEADERS, date=NOW)
    people = [
        (
            Recipient(i, f"reader{i}@example.org", f"Reader {i}"),
            Personal(
                unsubscribe_url=f"https://newsletter.example.org/unsubscribe/{i:012d}.sig{i:020d}",
                preferences_url=f"https://newsletter.example.org/preferences/{i:012d}.sig{i:020d}",
                message_id=make_message_id("run1", i, "example.org"),
            ),
        )
        for i in range(args.recipients)
    ]

    def personalise_all() -> None:
        for recipient, personal in people:
            template.personalise(recipient, personal)

    per_recipient = median_seconds(personalise_all, number=1, repeat=r) / len(people)

    def naive_one() -> bytes:
        recipient, personal = people[0]
        values = {"email": recipient.email, "name": recipient.name}
        values |= {"unsubscribe_url": personal.unsubscribe_url, "preferences_url": personal.preferences_url}
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = HEADERS.sender, recipient.email, variant.subject
        msg["Message-ID"] = personal.message_id
        msg.set_content(fill(variant.text, values))
        msg.add_alternative(fill(variant.html, values), subtype="html")
        return msg.as_bytes(policy=SMTP)

    naive = median_seconds(naive_one, number=20, repeat=r)

    size = len(variant.html.encode())
    ok_variant = "ok" if render * 1e3 < TARGET_VARIANT_MS else "OVER"
    ok_recipient = "ok" if per_recipient * 1e6 < TARGET_RECIPIENT_US else "OVER"
    rows = [
        ("reference: bare mjml2html of the same MJML", bare * 1e3, "ms", bare, ""),
        ("render one variant (Jinja2 + MJML + text)", render * 1e3, "ms", render,
         f"target < {TARGET_VARIANT_MS:g} ms: {ok_variant}"),
        ("  Jinja2 -> MJML source", jinja * 1e3, "ms", jinja, ""),
        ("  MJML -> HTML (our compile path)", ours * 1e3, "ms", ours, ""),
        ("  text part", text * 1e3, "ms", text, ""),
        (f"personalise one recipient (of {len(people)})", per_recipient * 1e6, "us", per_recipient,
         f"target < {TARGET_RECIPIENT_US:g} us: {ok_recipient}"),
        ("  naive: one EmailMessage per recipient", naive * 1e6, "us", naive, ""),
    ]  # fmt: skip
    regions = len(digest.sections)
    print(f"digest: {digest.article_count} articles in {regions} regions, HTML {size / 1000:.1f} KB")
    print(f"python {sys.version.split()[0]}, median of {r} runs; ratio = time / bare mjml2html time")
    for label, value, unit, seconds, note in rows:
        print(f"{label:<46} {value:10.3f} {unit}  {seconds / bare:8.3f}x  {note}")
    return 0


if __name__ == "__main__":
    status = main()
    print()
    from bench import send_throughput  # the send path against bare smtplib, also in-run

    send_throughput.main()
    print()
    from bench import dkim_cost  # DKIM signing per message against personalising alone, in-run

    dkim_cost.main([])
    from bench import smtp_transport  # the SMTP transport alone, 1 and 4 connections, also in-run

    smtp_transport.main([])
    print()
    from bench import celery_workers  # one and two Celery workers against the in-process send

    celery_workers.main([])
    print()
    from bench import send_cli  # the whole `digest send` process against 4 bare smtplib threads

    send_cli.main([])
    send_cli.main(["--dkim"])
    print()
    from bench import import_speed  # a 100,000-row Mailchimp import against csv + executemany

    import_speed.main([])
    print()
    from bench import cli_startup  # `digest --version` and `--help` against `python -c pass`

    cli_startup.main([])
    print()
    from bench import redirect  # a story redirect's server time against a bare Flask redirect

    redirect.main([])
    sys.exit(status)
