"""`digest preview`: this week's digest as an HTML file (and a PNG where Chromium is present).

Staff use it to see a template change before a send: it collects and builds the digest as a
run would, renders one variant, fills in example personal values, and writes FILE (HTML),
FILE.txt (the plain-text part) and, when Chromium is installed, a screenshot at --width
beside it (digest.html -> digest.375.png). Nothing is sent and no subscriber data is read.
"""

from __future__ import annotations

import argparse
import tempfile
import urllib.parse
import webbrowser
from dataclasses import replace
from pathlib import Path

from rich.markup import escape

from digest import screenshot, terminal
from digest.commands.collect import print_dropped
from digest.config import load_config
from digest.errors import DigestError
from digest.models import Digest, Section, Teaser
from digest.personal import Links, fill
from digest.pipeline import example_personal, last_send, prepare_issue

console = terminal.console()

# A neutral photo stand-in, for previews without network (the feed's photos are remote).
_PLACEHOLDER_SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="1200" height="800" viewBox="0 0 1200 800">'
    '<rect width="1200" height="800" fill="#c9ced6"/>'
    '<text x="600" y="430" font-family="Georgia,serif" font-size="72" fill="#3a4350" '
    'text-anchor="middle">photo</text></svg>'
)
PLACEHOLDER_IMAGE = "data:image/svg+xml," + urllib.parse.quote(_PLACEHOLDER_SVG)


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "preview",
        help="write this week's digest as HTML (and a PNG screenshot where Chromium is installed)",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
    )
    p.add_argument("--out", metavar="FILE", type=Path, help="HTML file to write (default: a temp file)")
    p.add_argument("--open", action="store_true", help="open the HTML in the default browser")
    p.add_argument("--width", type=int, default=600, metavar="N", help="screenshot width in px (default 600)")
    p.add_argument("--regions", metavar="LIST", help="comma-separated regions: one subscriber's variant")
    p.add_argument(
        "--archive", action="store_true", help="the web edition (view in browser), no personal links"
    )
    p.add_argument(
        "--placeholder-images", action="store_true", help="local stand-ins for the feed's photos (offline)"
    )
    p.add_argument("--no-screenshot", action="store_true", help="skip the PNG even when Chromium is present")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.width < 200 or args.width > 3000:
        raise DigestError(f"--width {args.width}: use a width between 200 and 3000 px")
    config = load_config(args.config)
    since, ledger_warning = last_send(config) if config.collect.window == "since_last_send" else (None, None)
    issue = prepare_issue(config, since=since)  # collected, built and fitted exactly as a send would
    if ledger_warning:
        issue.collected.warnings.insert(0, ledger_warning)
    for warning in issue.collected.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    print_dropped(console, issue.collected)
    renderer = issue.renderer
    digest = issue.digest
    for note in digest.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)

    if args.regions:
        wanted = [r.strip() for r in args.regions.split(",") if r.strip()]
        unknown = [r for r in wanted if r not in config.regions.order]
        if unknown:
            raise DigestError(
                f"--regions: unknown {', '.join(unknown)}; known: {', '.join(config.regions.order)}"
            )
        digest = digest.for_regions(wanted)
    if args.placeholder_images:
        digest = with_placeholder_images(digest)

    if args.archive:
        variant = renderer.render(digest, archive=True)  # what render_archive serves, plus its text
        html, text, subject = variant.html, variant.text, variant.subject
    else:
        variant = renderer.render(digest)
        values = example_personal(Links(config.newsletter.base_url))
        html, text, subject = fill(variant.html, values), fill(variant.text, values), variant.subject

    out = args.out or Path(tempfile.mkdtemp(prefix="digest-preview-")) / "digest.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    text_path = out.with_name(out.name + ".txt")
    text_path.write_text(text, encoding="utf-8")
    console.print(f"subject: {escape(subject)}", highlight=False)  # built from feed titles
    console.print(
        f"{digest.article_count} articles in {len(digest.sections)} regions; "
        f"HTML {len(html.encode()) / 1000:.1f} KB, {renderer.html_size(variant) / 1000:.1f} KB as sent "
        f"(limit {renderer.max_html_bytes / 1000:.0f} KB as sent)",
        highlight=False,
    )
    console.print(f"wrote {out} and {text_path.name}", highlight=False)

    if not args.no_screenshot:
        if screenshot.available():
            png = out.with_suffix(f".{args.width}.png")
            # Offline with placeholders: no request can leave the machine anyway.
            screenshot.screenshot(html, png, args.width, offline=args.placeholder_images)
            console.print(f"wrote {png} ({args.width} px wide)", highlight=False)
        else:
            console.print("no screenshot: needs /usr/bin/chromium and playwright", highlight=False)
    if args.open:
        webbrowser.open(out.resolve().as_uri())
    return 0


def with_placeholder_images(digest: Digest) -> Digest:
    """The digest with every photo replaced by a local stand-in of the same size."""

    def swap(t: Teaser) -> Teaser:
        return replace(t, image_url=PLACEHOLDER_IMAGE) if t.image_url else t

    sections = tuple(Section(s.region, tuple(swap(t) for t in s.teasers)) for s in digest.sections)
    lead = swap(digest.lead) if digest.lead else None
    return replace(digest, sections=sections, lead=lead)
