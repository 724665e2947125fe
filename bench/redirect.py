"""Server time of a story redirect (`/r/<token>`) against a bare Flask redirect, in the same run.

    python -m bench.redirect [--requests 5000]

Ours: the whole `digest serve` app (its hooks and security headers included) answering a signed
story link: signature check, story lookup (cached), the scanner filter, one count in memory, a
302 with UTM parameters; every request from another client, so each one is counted. The
reference: a Flask app with one view returning `redirect(<fixed URL>)`. Both are called as WSGI
apps with environments built beforehand (no sockets, no test client), so the figures are server
time. The counts are written to a
SQLite file by the app's background writer, as in production.

Then `personalise_story_links`: recipients personalised per second from a variant whose story
links go through us, against the same variant with direct article links (the send's
per-recipient cost must not move: links are made once per variant).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from flask import Flask, redirect
from werkzeug.test import EnvironBuilder

from digest.build import build_digest
from digest.clicks import register_stories
from digest.config import DEFAULT_REGION_ORDER, config_from_dict
from digest.db import make_engine, migrate, session_factory
from digest.message import MessageTemplate, Personal, make_message_id
from digest.models import Digest, Recipient
from digest.render import Renderer
from digest.send import start_run
from digest.sources.sample import synthetic_articles
from digest.story_links import StoryLinks, make_signer

SECRET = "Bn4Rq8Wz1Kc7Hx3Tm9Lv2Pd6Fj0Ys5Ga-bench-redirect"  # strong enough for the entropy check
TARGET_MS = 2.0


def bare_app() -> Flask:
    app = Flask("bare")

    @app.get("/r/<token>")
    def follow(token: str):  # type: ignore[no-untyped-def]
        return redirect("https://example.org/2026/11/20/article/?utm_source=newsletter", code=302)

    return app


def our_app(folder: Path) -> tuple[Flask, str]:
    """The real app on a SQLite file holding one sent issue; returns it and one story's path."""
    from digest.web import create_app

    config = config_from_dict(
        {"database": {"url": f"sqlite:///{folder / 'bench.db'}"}, "analytics": {"utm_source": "newsletter"}}
    )
    engine = make_engine(config.database.url)
    migrate(engine)
    now = datetime.now(UTC)
    digest = build_digest(
        synthetic_articles(12, DEFAULT_REGION_ORDER, now),
        newsletter="Bench",
        issue_date=now.date(),
        region_order=DEFAULT_REGION_ORDER,
    )
    sessions = session_factory(engine)
    with sessions() as s:
        run_id = start_run(s, [Recipient(1, "reader@example.org")], issue=now.date().isoformat())
    with sessions.begin() as s:
        stories = register_stories(s, run_id, digest)
    tracked, _ = StoryLinks(make_signer(SECRET), "", run_id, stories).for_variant(digest)
    path = tracked.sections[0].teasers[0].url
    app = create_app(config, engine, secret_key=SECRET)
    links = StoryLinks(make_signer(SECRET), "https://newsletter.example.org", run_id, stories)
    app.extensions["bench.issue"] = (digest, links)
    return app, path


def _recorder(statuses: list[str]):  # type: ignore[no-untyped-def]
    def start_response(status: str, headers: list, exc_info: object = None) -> None:
        statuses.append(status)

    return start_response


def per_second(app: Flask, path: str, requests: int, repeat: int) -> float:
    """Median requests per second over `repeat` runs, each from `requests` distinct clients.

    Only the WSGI call and reading its answer are timed: the request environments are built
    before, so what is measured is the server's own time.
    """
    runs = []
    for r in range(repeat + 1):  # the first run warms up caches
        environs = [
            EnvironBuilder(
                path=path,
                headers={"User-Agent": f"Mozilla/5.0 (Macintosh) Safari/605.1.15 r{r}c{i}"},
                environ_base={"REMOTE_ADDR": f"10.{r}.{i // 250}.{i % 250}"},
            ).get_environ()
            for i in range(requests)
        ]
        statuses: list[str] = []
        start_response = _recorder(statuses)

        start = time.perf_counter()
        for environ in environs:
            for _chunk in app(environ, start_response):
                pass
        elapsed = time.perf_counter() - start
        assert all(s.startswith("302") for s in statuses), statuses[:3]
        if r:
            runs.append(requests / elapsed)
    return statistics.median(runs)


def personalise_rates(
    digest: Digest, links: StoryLinks, recipients: int, repeat: int = 5
) -> tuple[float, float]:
    """Messages personalised per second from one variant rendered with story links and from the
    same variant with direct links: medians of `repeat` runs, alternated so load hits both."""
    from bench.__main__ import HEADERS, INFO

    renderer = Renderer(INFO)
    now = datetime.now(UTC)
    templates = [
        MessageTemplate(renderer.variants(digest, story_links).get(None), HEADERS, date=now)
        for story_links in (links, None)
    ]
    people = [
        (
            Recipient(i, f"reader{i}@example.org", f"Reader {i}"),
            Personal(
                unsubscribe_url=f"https://newsletter.example.org/unsubscribe/{i:012d}.sig{i:020d}",
                preferences_url=f"https://newsletter.example.org/preferences/{i:012d}.sig{i:020d}",
                message_id=make_message_id("run1", i, "example.org"),
            ),
        )
        for i in range(recipients)
    ]
    runs: list[list[float]] = [[], []]
    for _ in range(repeat):
        for which, template in enumerate(templates):
            start = time.perf_counter()
            for recipient, personal in people:
                template.personalise(recipient, personal)
            runs[which].append(recipients / (time.perf_counter() - start))
    return statistics.median(runs[0]), statistics.median(runs[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.redirect", description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--recipients", type=int, default=5000)
    args = parser.parse_args(argv)
    os.environ.setdefault("DIGEST_SECRET_KEY", SECRET)
    with tempfile.TemporaryDirectory() as tmp:
        app, path = our_app(Path(tmp))
        ours = per_second(app, path, args.requests, args.repeat)
        reference = per_second(bare_app(), "/r/anything", args.requests, args.repeat)
        app.extensions["digest.redirects"].close()
        digest, links = app.extensions["bench.issue"]
        tracked, direct = personalise_rates(digest, links, args.recipients)
    ms = 1000 / ours
    verdict = "ok" if ms < TARGET_MS else "OVER"
    print(f"redirect: ours {ours:.0f}/s, reference {reference:.0f}/s, ratio {ours / reference:.2f}")
    print(f"  {ms:.3f} ms per redirect of server time (target < {TARGET_MS:g} ms: {verdict})")
    # Story links are made once per variant: a recipient costs what it cost with direct links.
    print(
        f"personalise_story_links: ours {tracked:.0f}/s, reference {direct:.0f}/s, "
        f"ratio {tracked / direct:.2f}"
    )
    return 0


if __name__ == "__main__":
    main()
