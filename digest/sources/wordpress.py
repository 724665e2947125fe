"""The WordPress REST API: /wp-json/wp/v2/posts?after=...&_embed, page by page.

`_embed` brings the featured image (URL, alt text, size, caption and the credit that
WordPress keeps in `media_details.image_meta.credit`), the category names and the author in
the same answer, so one request per page is enough. Never raises for bad input.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from digest.models import Article
from digest.sources import SourceResult
from digest.sources.extract import (
    CREDIT_LINE,
    find_credit,
    first_image,
    join_names,
    lede_source,
    plain_text,
    safe_url,
    sanitize_html,
)
from digest.sources.http import DEFAULT_MAX_BYTES, Fetcher, FetchError
from digest.sources.local import FileTooBig, read_capped, too_big_warning

PER_PAGE = 50
# The widest photo in the e-mail is the lead story's, 568 px (templates/digest.mjml.j2: the
# 600 px body less its padding); twice that is sharp on 2x screens.
COLUMN_WIDTH = 568
MAX_IMAGE_WIDTH = 2 * COLUMN_WIDTH
ACCEPT_JSON = "application/json"


def posts_endpoint(url: str) -> str:
    """The posts endpoint for a site URL; a URL already under /wp-json/ is used as given."""
    parts = urlsplit(url)
    if "/wp-json/" in parts.path or parts.query.startswith("rest_route="):
        return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + "/wp-json/wp/v2/posts", "", ""))


def page_url(endpoint: str, after: datetime, page: int) -> str:
    query = {
        "after": after.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "_embed": "1",
        "per_page": str(PER_PAGE),
        "page": str(page),
        "orderby": "date",
        "order": "desc",
    }
    return f"{endpoint}?{urlencode(query)}"


def fetch_posts(url: str, fetcher: Fetcher, *, name: str, after: datetime, max_pages: int) -> SourceResult:
    """Every post published after `after`, following X-WP-TotalPages up to max_pages."""
    result = SourceResult(name=name)
    endpoint = posts_endpoint(url)
    page = 1
    total_pages = 1
    while page <= total_pages:
        current = page_url(endpoint, after, page)
        try:
            response = fetcher.get(current, accept=ACCEPT_JSON, conditional=False)
        except FetchError as err:
            result.warnings.append(f"{name}: cannot fetch page {page} of {endpoint} ({err.reason})")
            break
        part = parse_posts(response.body, name=name)
        result.articles.extend(part.articles)
        result.warnings.extend(part.warnings)
        if part.warnings and not part.articles:
            break
        header = response.headers.get("X-WP-TotalPages") or response.headers.get("x-wp-totalpages") or "1"
        total_pages = int(header) if header.isdigit() else 1
        if total_pages > max_pages and page == 1:
            result.warnings.append(
                f"{name}: {total_pages} pages of posts; reading only the first {max_pages} (max_pages)"
            )
        total_pages = min(total_pages, max_pages)
        page += 1
    return result


def read_posts_file(path: Path, *, name: str, max_bytes: int = DEFAULT_MAX_BYTES) -> SourceResult:
    """Posts saved from the API as a JSON file (offline runs, tests), under the same cap as HTTP."""
    try:
        data = read_capped(path, max_bytes)
    except FileTooBig as err:
        return SourceResult(name=name, warnings=[too_big_warning(name, err)])
    except OSError as err:
        return SourceResult(name=name, warnings=[f"{name}: cannot read {path} ({err.strerror})"])
    return parse_posts(data, name=name)


def parse_posts(data: bytes, *, name: str, max_image_width: int = MAX_IMAGE_WIDTH) -> SourceResult:
    result = SourceResult(name=name)
    try:
        posts = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as err:
        result.warnings.append(f"{name}: the WordPress API did not answer JSON ({err})")
        return result
    if isinstance(posts, dict) and "code" in posts:
        result.warnings.append(f"{name}: the WordPress API answered an error ({posts.get('code')})")
        return result
    if not isinstance(posts, list):
        result.warnings.append(f"{name}: the WordPress API did not answer a list of posts")
        return result
    result.add(
        (
            post_article(post, name, max_image_width=max_image_width) if isinstance(post, dict) else None
            for post in posts
        ),
        unreadable="posts without an http(s) link or a date",
    )
    return result


def post_article(
    post: dict[str, Any], source: str, *, max_image_width: int = MAX_IMAGE_WIDTH
) -> Article | None:
    link = safe_url(_str(post.get("link")))
    published = _wp_date(post.get("date_gmt")) or _wp_date(post.get("date"))
    if not link or published is None:
        return None
    content_html = sanitize_html(_rendered(post.get("content")), base_url=link)
    summary_html = sanitize_html(_rendered(post.get("excerpt")), base_url=link)
    embedded = post.get("_embedded") if isinstance(post.get("_embedded"), dict) else {}
    image_url, alt, width, height, credit = _featured(embedded, link, max_image_width)
    if image_url is None:
        found = first_image(content_html, link)
        if found:
            image_url, alt = found
    credit = credit or find_credit(content_html)
    title = plain_text(_rendered(post.get("title"))) or link
    guid = _rendered(post.get("guid")) or str(post.get("id") or "") or link
    return Article(
        guid=plain_text(guid) or link,
        url=link,
        title=title,
        lede=lede_source(summary_html, content_html),
        published=published,
        categories=_terms(embedded, "category"),
        image_url=image_url,
        image_alt=alt,
        image_credit=credit,
        image_width=width,
        image_height=height,
        author=_author(embedded),
        source=source,
    )


def _featured(
    embedded: dict[str, Any], base: str, max_width: int
) -> tuple[str | None, str, int | None, int | None, str | None]:
    """(url, alt, width, height, credit) of the featured image, in the size the e-mail needs."""
    media = embedded.get("wp:featuredmedia")
    if not isinstance(media, list) or not media or not isinstance(media[0], dict):
        return None, "", None, None, None
    m = media[0]
    details = m.get("media_details") if isinstance(m.get("media_details"), dict) else {}
    meta = details.get("image_meta") if isinstance(details.get("image_meta"), dict) else {}
    caption_html = sanitize_html(_rendered(m.get("caption")))
    caption = plain_text(caption_html)
    meta_credit = plain_text(_str(meta.get("credit")))
    credit = meta_credit or find_credit(caption_html) or caption or None
    # The alt text, else the caption, which describes the photo, unless it became the credit.
    describes = bool(meta_credit) and caption != credit and not CREDIT_LINE.match(caption)
    alt = plain_text(_str(m.get("alt_text"))) or (caption if describes else "")
    source_url = safe_url(_str(m.get("source_url")), base)
    original = (source_url, _int(details.get("width")), _int(details.get("height")))
    url, width, height = best_size(details.get("sizes"), original, max_width, base)
    return url, alt, width, height, credit


def best_size(
    sizes: Any, original: tuple[str | None, int | None, int | None], max_width: int, base: str = ""
) -> tuple[str | None, int | None, int | None]:
    """The largest of WordPress's `media_details.sizes` at most `max_width` wide, as (url, width, height).

    WordPress keeps the upload (often 2,560 px, "-scaled") and smaller copies. The e-mail needs
    twice its column width at most (sharp on 2x screens); more is only weight. Copies with the
    original's shape come first: a theme's square crop is another picture. When every copy is
    wider, the narrowest of them; with no sizes known, the original.
    """
    url, width, height = original
    candidates: list[tuple[int, int, str]] = []
    if isinstance(sizes, dict):
        for size in sizes.values():
            if not isinstance(size, dict):
                continue
            w, h = _int(size.get("width")), _int(size.get("height"))
            src = safe_url(_str(size.get("source_url")), base)
            mime = _str(size.get("mime_type"))
            if w and h and src and (not mime or mime.startswith("image/")):
                candidates.append((w, h, src))
    if url and width and height:
        candidates.append((width, height, url))
    if not candidates:
        return url, width, height
    if width and height:
        ratio = width / height
        same_shape = [c for c in candidates if abs(c[0] / c[1] - ratio) <= 0.02 * ratio]
        candidates = same_shape or candidates
    fitting = [c for c in candidates if c[0] <= max_width]
    w, h, src = max(fitting) if fitting else min(candidates)
    return src, w, h


def _terms(embedded: dict[str, Any], taxonomy: str) -> tuple[str, ...]:
    out: list[str] = []
    groups = embedded.get("wp:term")
    for group in groups if isinstance(groups, list) else []:
        for term in group if isinstance(group, list) else []:
            if isinstance(term, dict) and term.get("taxonomy") == taxonomy:
                name = plain_text(_str(term.get("name")))
                if name and name not in out:
                    out.append(name)
    return tuple(out)


def _author(embedded: dict[str, Any]) -> str | None:
    """`_embedded.author`: every author's name (co-author plugins list several), as one byline."""
    authors = embedded.get("author")
    if not isinstance(authors, list):
        return None
    return join_names([plain_text(_str(a.get("name"))) for a in authors if isinstance(a, dict)]) or None


def _wp_date(value: Any) -> datetime | None:
    """WordPress dates have no zone: `date_gmt` is UTC; `date` (site time, only used when
    `date_gmt` is missing) is taken as UTC too, at worst a few hours off."""
    if not isinstance(value, str) or not value:
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _rendered(value: Any) -> str:
    if isinstance(value, dict):
        return _str(value.get("rendered"))
    return _str(value)


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 100_000 else None
