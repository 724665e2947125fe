"""The web editions of sent issues, as the sends wrote them into `[web] archive_dir`.

`/archive/<issue>` is one issue ("view in browser"). Readers who follow without subscribing
have `/archive`, the list of past issues, newest first, `PAGE_SIZE` a page (`?page=2`), and
`/archive/feed.xml`, an Atom feed of the newest `FEED_ISSUES`, each entry carrying the issue's
whole HTML. All read only the web edition, rendered without personal links
(`Renderer.render_archive`), so nothing here can carry a reader's token.
"""

from __future__ import annotations

from datetime import UTC, datetime
from xml.etree import ElementTree as ET

from flask import Response, abort, render_template, request

from digest.archive import ArchivedIssue, archive_path, issue_body, list_issues, read_issue
from digest.config import Config
from digest.personal import Links
from digest.web.site import site

# The e-mail HTML carries its own inline styles and remote photos; still no scripts.
EDITION_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def archive(issue: str) -> Response:
    path = archive_path(site().config, issue)
    if path is None or not path.is_file():
        abort(404)
    resp = Response(path.read_text(encoding="utf-8"), mimetype="text/html")
    resp.headers["Content-Security-Policy"] = EDITION_CSP
    return resp


PAGE_SIZE = 20
FEED_ISSUES = 20  # an entry carries a whole issue (~100 KB): older ones are on /archive
ATOM = "http://www.w3.org/2005/Atom"


def archive_index() -> Response:
    """Past issues, newest first, PAGE_SIZE a page (`?page=2`)."""
    config = site().config
    try:
        page = int(request.args.get("page", "1"))
    except ValueError:
        abort(404)
    issues = list_issues(config)
    pages = max(1, -(-len(issues) // PAGE_SIZE))
    if not 1 <= page <= pages:
        abort(404)
    shown = issues[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
    entries = [found[0] for found in (read_issue(config, i, whole=False) for i in shown) if found]
    html = render_template("archive.html", issues=entries, page=page, pages=pages)
    return Response(html, mimetype="text/html")


def archive_feed() -> Response:
    """Atom: the newest FEED_ISSUES issues, each with its whole HTML."""
    config = site().config
    found = (read_issue(config, i) for i in list_issues(config)[:FEED_ISSUES])
    xml = atom_feed(config, [f for f in found if f is not None])
    resp = Response(xml, mimetype="application/atom+xml")
    # Aggregators poll: an unchanged feed answers 304 to their If-None-Match.
    resp.add_etag()
    return resp.make_conditional(request)


def atom_feed(config: Config, issues: list[tuple[ArchivedIssue, str]]) -> bytes:
    """RFC 4287 Atom: one entry per issue, newest first, its body HTML as escaped content."""
    links = Links(config.newsletter.base_url)
    index = links.archive("").rstrip("/")
    ET.register_namespace("", ATOM)
    feed = ET.Element(f"{{{ATOM}}}feed", {"xml:lang": config.newsletter.language})
    _text(feed, "id", index)
    _text(feed, "title", config.newsletter.name)
    _text(feed, "subtitle", f"Every issue of {config.newsletter.name}, as sent")
    newest = max((a.written for a, _ in issues), default=datetime.fromtimestamp(0, UTC))
    _text(feed, "updated", _stamp(newest))
    author = ET.SubElement(feed, f"{{{ATOM}}}author")
    _text(author, "name", config.newsletter.name)
    _link(feed, f"{index}/feed.xml", "self", "application/atom+xml")
    _link(feed, index, "alternate", "text/html")
    for issue, page in issues:
        entry = ET.SubElement(feed, f"{{{ATOM}}}entry")
        url = links.archive(issue.issue)
        _text(entry, "id", url)
        _text(entry, "title", issue.title)
        _text(entry, "published", f"{issue.issue}T00:00:00Z")
        _text(entry, "updated", _stamp(issue.written))
        _link(entry, url, "alternate", "text/html")
        _text(entry, "content", issue_body(page)).set("type", "html")
    return ET.tostring(feed, encoding="utf-8", xml_declaration=True)


def _text(parent: ET.Element, tag: str, value: str) -> ET.Element:
    el = ET.SubElement(parent, f"{{{ATOM}}}{tag}")
    el.text = value
    return el


def _link(parent: ET.Element, href: str, rel: str, kind: str) -> None:
    ET.SubElement(parent, f"{{{ATOM}}}link", {"href": href, "rel": rel, "type": kind})


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
