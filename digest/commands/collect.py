"""`digest collect`: show the week's articles per region, as a table or as JSON."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from digest import terminal
from digest.collect import DUPLICATE, OUTSIDE_WINDOW, CollectResult, collect
from digest.config import Config, load_config
from digest.models import Article
from digest.pipeline import last_send


def register(sub: Any) -> None:
    p = sub.add_parser(
        "collect",
        help="show this week's articles per region",
        description="Read every source in digest.toml and show the articles of the week per region.",
    )
    p.add_argument("--json", action="store_true", help="print JSON for machines instead of a table")
    p.add_argument(
        "--since",
        metavar="TIME",
        help="ISO 8601 time of the last successful send (used when [collect] window = since_last_send; "
        "default: from the delivery ledger, as `digest send` does)",
    )
    p.add_argument("--now", metavar="TIME", help="ISO 8601 time to run as (default: now)")
    p.add_argument("--dropped", action="store_true", help="also list the articles left out, and why")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, console: Console | None = None) -> int:
    config = load_config(args.config)
    now = _time(args.now, "--now", config) if args.now else datetime.now(UTC)
    since = _time(args.since, "--since", config) if args.since else None
    ledger_warning = None
    if since is None and config.collect.window == "since_last_send":
        since, ledger_warning = last_send(config)
    result = collect(config, now, since=since)
    if ledger_warning:
        result.warnings.insert(0, ledger_warning)
    console = console or terminal.console()
    if args.json:
        console.print_json(json.dumps(as_json(result, config)), highlight=False)
    else:
        print_table(result, config, console, show_dropped=args.dropped)
    return 0


def _time(text: str, option: str, config: Config) -> datetime:
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise SystemExit(f"digest collect: {option} {text!r} is not an ISO 8601 time") from None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=config.tz)


def by_region(result: CollectResult, config: Config) -> list[tuple[str, list[Article]]]:
    """Regions in the configured order (the fallback among them), newest article first."""
    order = list(config.regions.order)
    groups: dict[str, list[Article]] = {}
    for article in result.articles:
        groups.setdefault(article.region or "", []).append(article)
    names = [r for r in order if r in groups] + sorted(r for r in groups if r not in order)
    return [(r, sorted(groups[r], key=lambda a: a.published, reverse=True)) for r in names]


def as_json(result: CollectResult, config: Config) -> dict[str, Any]:
    def article(a: Article) -> dict[str, Any]:
        return {
            "title": a.title,
            "url": a.url,
            "guid": a.guid,
            "published": a.published.isoformat(),
            "region": a.region,
            "categories": list(a.categories),
            "lede": a.lede,
            "image_url": a.image_url,
            "image_alt": a.image_alt,
            "image_credit": a.image_credit,
            "author": a.author,
            "format_label": a.format_label,
            "source": a.source,
        }

    return {
        "window": {
            "start": result.window_start.isoformat() if result.window_start else None,
            "end": result.window_end.isoformat() if result.window_end else None,
        },
        "regions": [
            {"region": r, "articles": [article(a) for a in items]} for r, items in by_region(result, config)
        ],
        "article_count": len(result.articles),
        "would_send": result.should_send(config),
        "warnings": list(result.warnings),
        "dropped": [{"title": a.title, "url": a.url, "reason": why} for a, why in result.dropped],
        "left_out": [item._asdict() for item in result.left_out],
    }


def print_table(
    result: CollectResult, config: Config, console: Console, *, show_dropped: bool = False
) -> None:
    tz = config.tz
    window = ""
    if result.window_start and result.window_end:
        start, end = result.window_start.astimezone(tz), result.window_end.astimezone(tz)
        window = f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M}"
    table = Table(title=f"{config.newsletter.name}: {len(result.articles)} articles {window}".strip())
    table.add_column("Region", no_wrap=True)
    table.add_column("Date", no_wrap=True)
    # The title gets the room: at 80 columns it must still read as words, not a letter column.
    table.add_column("Title", overflow="fold", ratio=2)
    table.add_column("Image", justify="center", no_wrap=True)
    # Credits run to a full caption; the table shows their start, --json has them whole.
    table.add_column("Credit", ratio=1)
    for region, items in by_region(result, config):
        for i, a in enumerate(items):
            table.add_row(
                region if i == 0 else "",
                f"{a.published.astimezone(tz):%a %d %b %H:%M}",
                Text(a.title),  # Text, not str: a feed title must never be read as rich markup
                "yes" if a.image_url else "no",
                Text(_clip(a.image_credit or "", 30)),
                end_section=i == len(items) - 1,
            )
    console.print(table)
    print_dropped(console, result)
    others = [(a, why) for a, why in result.dropped if why in (DUPLICATE, OUTSIDE_WINDOW)]
    if show_dropped and others:
        console.print("[bold]Also left out:[/]")
        for a, why in others:
            console.print(f"  {a.title} ({why})", highlight=False, markup=False)
    for warning in result.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if not result.should_send(config):
        console.print(
            "[yellow]no articles this week: a run would not send (see \\[collect] send_when_empty)[/]"
        )


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def print_dropped(console: Console, collected: CollectResult) -> None:
    """Say which articles of the week no region took: they must never vanish quietly.

    `digest collect`, `digest preview`, `digest send` and `digest demo` all print it (the run
    record keeps `collected.left_out` too). Articles with no known region are a warning; those
    in a section that `[regions] ignore` names were left out on purpose, and get a note.
    """
    unplaced = [item for item in collected.left_out if not item.ignored]
    ignored = [item for item in collected.left_out if item.ignored]
    if unplaced:
        n = len(unplaced)
        console.print(
            f"[yellow]warning:[/] {_count(n)} of the week fit no region and {_were(n)} left out "
            "(map their sections with \\[regions.aliases], or set \\[regions] fallback):",
            highlight=False,
        )
        for item in unplaced:
            console.print(Text(f"  - {item.title} ({item.reason}) {item.url}"), highlight=False)
    if ignored:
        console.print(
            f"[yellow]note:[/] {_count(len(ignored))} left out by \\[regions] ignore:", highlight=False
        )
        for item in ignored:
            console.print(Text(f"  - {item.title} ({item.reason})"), highlight=False)


def _count(n: int) -> str:
    return f"{n} article" if n == 1 else f"{n} articles"


def _were(n: int) -> str:
    return "was" if n == 1 else "were"
