"""The digest where mail clients are less kind than Chromium: simulated in Chromium, and checked
against caniemail's data with the npm package doiuse-email.

Simulations (headless Chromium through Playwright):
- Yahoo Mail and AOL ignore `box-sizing`: every declaration of it is stripped.
- Gmail's apps with non-Gmail accounts drop `<style>`: every style block is stripped too.
- Outlook blocks images by default, as does any offline demo: image requests fail.
- Apple Mail in dark mode: `prefers-color-scheme: dark`.

Photos are data URLs, so nothing leaves the machine. Chromium tests skip without /usr/bin/chromium
and Playwright; the doiuse-email test skips without node and npm, or when npm cannot install it.
"""

from __future__ import annotations

import base64
import fnmatch
import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from render_helpers import renderer, sample_digest, synthetic_digest

from digest import screenshot
from digest.models import Digest, Section, Teaser
from digest.personal import fill

REPO = Path(__file__).resolve().parent.parent
PERSONAL = {
    "email": "reader@example.org",
    "name": "Reader",
    "unsubscribe_url": "https://newsletter.example.org/unsubscribe/" + "t" * 80,
    "preferences_url": "https://newsletter.example.org/preferences/" + "t" * 80,
}
ACCENT = "rgb(138, 28, 28)"  # #8a1c1c
ACCENT_DARK = "rgb(224, 138, 138)"  # #e08a8a: the accent lightened for a dark background

needs_chromium = pytest.mark.skipif(
    not screenshot.available(), reason="needs /usr/bin/chromium (Debian package chromium) and playwright"
)


def png_data_url(width: int, height: int, rgb: tuple[int, int, int] = (120, 130, 140)) -> str:
    """A solid-colour PNG of this size as a data URL: a photo with a real aspect, no network."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + bytes(rgb) * width
    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


PHOTO = png_data_url(120, 80)  # 3:2, as news photos are


def with_labels(digest: Digest, *, photo: str | None = PHOTO) -> Digest:
    """Format labels and bylines on every other story, local photos (or the feed's, when None)."""

    def dress(t: Teaser, i: int) -> Teaser:
        return replace(
            t,
            image_url=(photo if photo is not None else t.image_url) if t.image_url else None,
            format_label="Analysis" if i % 2 == 0 else "",
            byline="Trita Parsi and Jane Longname-Example" if i % 2 == 0 else "",
        )

    sections = tuple(
        Section(s.region, tuple(dress(t, i) for i, t in enumerate(s.teasers))) for s in digest.sections
    )
    lead = dress(digest.lead, 0) if digest.lead else None
    return replace(digest, sections=sections, lead=lead)


def strip_box_sizing(html: str) -> str:
    """The HTML as Yahoo Mail and AOL read it: no box-sizing, in style blocks or attributes."""
    return re.sub(r"(?i)(?:-webkit-|-moz-)?box-sizing\s*:\s*[^;}\"']*;?", "", html)


def strip_styles(html: str) -> str:
    """The HTML as a client that drops <style> reads it (and ignores box-sizing, to be safe)."""
    return strip_box_sizing(re.sub(r"(?is)<style\b[^>]*>.*?</style>", "", html))


SIMULATIONS = {"no-box-sizing": strip_box_sizing, "no-style": strip_styles}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not screenshot.available():
        pytest.skip("needs /usr/bin/chromium (Debian package chromium) and playwright")
    with screenshot.chromium() as b:
        yield b


@pytest.fixture(scope="module")
def shots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("DIGEST_SCREENSHOTS")
    path = Path(env) if env else tmp_path_factory.mktemp("client-shots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def heavy_html() -> str:
    """A 30-story issue with photos, credits as long as collect allows, labels and bylines."""
    return fill(renderer().render(with_labels(synthetic_digest(30))).html, PERSONAL)


def _open(browser: Any, html: str, width: int, shots_dir: Path, name: str, *, dark: bool = False) -> Any:
    page = screenshot.open_page(browser, html, width)
    if dark:
        page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(shots_dir / f"{name}-{width}.png"), full_page=True)
    return page


_SCROLL = "() => ({scroll: document.scrollingElement.scrollWidth, viewport: innerWidth})"

# Each story's photo and title boxes, in document order.
_STORIES = """() => [...document.querySelectorAll('.story')].filter(s => s.querySelector('img')).map(s => {
  const r = e => {
    const b = e.getBoundingClientRect();
    return {x: b.left, y: b.top, r: b.right, b: b.bottom};
  };
  return {img: r(s.querySelector('img')), title: r(s.querySelector('h3'))};
})"""


# --- layouts without box-sizing, and without <style> -----------------------------------------


@needs_chromium
@pytest.mark.chromium
@pytest.mark.parametrize("width", [320, 375])
@pytest.mark.parametrize("simulation", sorted(SIMULATIONS))
def test_phone_widths_never_scroll_sideways(
    browser: Any, heavy_html: str, shots_dir: Path, simulation: str, width: int
) -> None:
    page = _open(browser, SIMULATIONS[simulation](heavy_html), width, shots_dir, simulation)
    o = page.evaluate(_SCROLL)
    assert o["scroll"] <= o["viewport"], f"{simulation} at {width} px scrolls sideways: {o}"
    stories = page.evaluate(_STORIES)
    assert len(stories) == 29  # the lead is on top, not a teaser
    for s in stories:
        assert s["img"]["b"] <= s["title"]["y"], "on a phone the photo sits above the text"
        assert s["img"]["r"] <= width


@needs_chromium
@pytest.mark.chromium
@pytest.mark.parametrize("simulation", sorted(SIMULATIONS))
def test_photos_sit_beside_the_text_at_600(
    browser: Any, heavy_html: str, shots_dir: Path, simulation: str
) -> None:
    page = _open(browser, SIMULATIONS[simulation](heavy_html), 600, shots_dir, simulation)
    o = page.evaluate(_SCROLL)
    assert o["scroll"] <= o["viewport"], o
    stories = page.evaluate(_STORIES)
    assert len(stories) == 29
    for s in stories:
        img, title = s["img"], s["title"]
        assert img["r"] <= title["x"], f"{simulation}: the text dropped below the photo: {s}"
        assert img["y"] < title["b"] and title["y"] < img["b"], f"{simulation}: not side by side: {s}"


# What a client without <style> must still show, read from computed styles.
_LOOKS = """() => {
  const cs = e => getComputedStyle(e);
  const inner = e => e.clientWidth - parseFloat(cs(e).paddingLeft) - parseFloat(cs(e).paddingRight);
  return {
    credits: [...document.querySelectorAll('.credit')]
      .map(e => ({size: parseFloat(cs(e).fontSize), color: cs(e).color})),
    headings: [...document.querySelectorAll('h2')].map(e => cs(e).color),
    labels: [...document.querySelectorAll('.label')].map(e => cs(e).color),
    photos: [...document.images]
      .map(i => ({width: i.getBoundingClientRect().width, column: inner(i.closest('a').parentElement)})),
  };
}"""


def _rgb(color: str) -> tuple[int, ...]:
    return tuple(int(float(v)) for v in re.findall(r"[\d.]+", color)[:3])


@needs_chromium
@pytest.mark.chromium
@pytest.mark.parametrize("width", [375, 600])
def test_without_style_credits_headings_and_photos_keep_their_look(
    browser: Any, heavy_html: str, shots_dir: Path, width: int
) -> None:
    page = _open(browser, strip_styles(heavy_html), width, shots_dir, "no-style-looks")
    looks = page.evaluate(_LOOKS)
    assert len(looks["credits"]) == 30
    for credit in looks["credits"]:
        r, g, b = _rgb(credit["color"])
        assert credit["size"] <= 12.5, f"credit is not small: {credit}"
        assert max(r, g, b) - min(r, g, b) < 16 and 40 < r < 160, f"credit is not grey: {credit}"
    assert len(looks["headings"]) == 6 + 1  # six regions and the lead's label
    assert set(looks["headings"]) == {ACCENT}, looks["headings"]
    assert looks["labels"] and set(looks["labels"]) == {ACCENT}
    assert len(looks["photos"]) == 30
    for photo in looks["photos"]:
        assert abs(photo["width"] - photo["column"]) <= 1, f"photo is not at its column's width: {photo}"


# --- images blocked ---------------------------------------------------------------------------

_IMAGES = """() => [...document.images].map(i => {
  const s = getComputedStyle(i), b = i.getBoundingClientRect();
  return {alt: i.alt, complete: i.complete, loaded: i.naturalWidth > 0, height: b.height, width: b.width,
          background: s.backgroundColor, font: s.fontFamily, size: s.fontSize, color: s.color};
})"""


@needs_chromium
@pytest.mark.chromium
@pytest.mark.parametrize("alt", ["feed", "none"])
def test_blocked_images_leave_no_hole(browser: Any, shots_dir: Path, alt: str) -> None:
    """The feed's remote photos, with every request refused: Outlook's default, any offline demo."""
    digest = with_labels(sample_digest(), photo=None)
    if alt == "none":  # a source without alt text: the empty alt the headline beside it allows
        digest = replace(
            digest,
            lead=replace(digest.lead, image_alt="") if digest.lead else None,
            sections=tuple(
                Section(s.region, tuple(replace(t, image_alt="") for t in s.teasers)) for s in digest.sections
            ),
        )
    html = fill(renderer().render(digest).html, PERSONAL)
    page = _open(browser, html, 600, shots_dir, f"images-blocked-{alt}")
    images = page.evaluate(_IMAGES)
    assert images and not any(i["loaded"] for i in images), "the photos should have failed to load"
    lead = images[0]
    assert lead["width"] > 500
    # Today's 568 x 379 box is gone: alt text takes a line or two, an empty alt takes nothing.
    limit = 60 if alt == "feed" else 1
    for i in images:
        assert i["height"] <= limit, f"a blocked photo holds an empty box: {i}"
        assert i["background"] not in ("rgba(0, 0, 0, 0)", "transparent"), i
        assert "Georgia" in i["font"] and i["size"] == "14px", f"alt text is unstyled: {i}"


# --- dark mode, footer ------------------------------------------------------------------------


@needs_chromium
@pytest.mark.chromium
def test_dark_mode_keeps_the_accent_on_labels(browser: Any, heavy_html: str, shots_dir: Path) -> None:
    light = _open(browser, heavy_html, 600, shots_dir, "labels-light").evaluate(_LOOKS)
    dark = _open(browser, heavy_html, 600, shots_dir, "labels-dark", dark=True).evaluate(_LOOKS)
    assert set(light["headings"]) | set(light["labels"]) == {ACCENT}
    assert set(dark["headings"]) | set(dark["labels"]) == {ACCENT_DARK}


@needs_chromium
@pytest.mark.chromium
@pytest.mark.parametrize("width", [320, 375])
def test_footer_links_never_wrap_inside_a_link(
    browser: Any, heavy_html: str, shots_dir: Path, width: int
) -> None:
    page = _open(browser, heavy_html, width, shots_dir, "footer")
    lines = page.evaluate(
        "() => [...document.querySelectorAll('.foot a')]"
        ".map(a => [a.textContent.replace(/\\s+/g, ' '), a.getClientRects().length])"
    )
    assert [text for text, _ in lines] == ["Choose your regions", "Unsubscribe", "View in browser"]
    assert all(n == 1 for _, n in lines), f"a footer link breaks over two lines at {width} px: {lines}"


# --- caniemail's data, through doiuse-email ---------------------------------------------------

CLIENTS = ("gmail.*", "outlook.*", "yahoo.*", "apple-mail.*")

# Features doiuse-email reports as unsupported that do no harm here: (feature, clients, why).
ALLOWED: tuple[tuple[str, str, str], ...] = (
    (
        "<body> element",
        "outlook.android outlook.ios yahoo.android yahoo.ios",
        "these apps replace <body> with a <div>; MJML repeats the page background on the first <div>",
    ),
    (
        "@media",
        "gmail.mobile-webmail outlook.windows outlook.windows-mail",
        "no layout needs a media query: inline max-widths set photo beside text at 600 px and below it "
        "when narrower, and Outlook for Windows gets a table; the queries only widen phone photos",
    ),
    (
        "Class selector|Type selector|ID selector|Descendant combinator|Attribute selector"
        "|Chaining selectors",
        "gmail.mobile-webmail",
        "Gmail's mobile web client drops <style> whole; the no-style Chromium tests check what remains",
    ),
    (
        "Chaining selectors",
        "outlook.windows outlook.windows-mail",
        "doiuse counts two classes joined by a descendant combinator as chaining: only MJML's "
        "Thunderbird rule `.moz-text-html .mj-column-per-100`; no selector chains classes",
    ),
    (
        "Attribute selector",
        "outlook.windows outlook.windows-mail",
        "only the [data-ogsc] rules for Outlook.com's dark mode, in a <style> of their own",
    ),
    (
        "aria-label attribute|role attribute",
        "outlook.windows-mail yahoo.*",
        "accessibility hints (MJML's aria-label, role=presentation on tables): nothing visible "
        "depends on them",
    ),
    ("border-radius", "outlook.windows outlook.windows-mail", "the Keep reading button has square corners"),
    (
        "display:none|overflow",
        "gmail.mobile-webmail outlook.* yahoo.android",
        "only the hidden preheader: where it is not hidden it reads as a line of the issue's own titles, "
        "and Outlook for Windows hides it with mso-hide",
    ),
    (
        "outline",
        "outlook.windows outlook.windows-mail",
        "MJML's image reset `outline:none`: no outline either way",
    ),
    (
        "word-break",
        "outlook.windows-mail yahoo.*",
        "MJML's guard for a word wider than its column; only such a word (a bare URL in a lede) can widen "
        "the column where it is ignored",
    ),
)

_ERROR_RE = re.compile(r"^`(?P<feature>.+)` is not supported by `(?P<client>[^`]+)`$")


def _allowed(feature: str, client: str) -> int | None:
    """The index of the allowlist entry that covers this finding, if any."""
    for i, (features, clients, _why) in enumerate(ALLOWED):
        if feature in features.split("|") and any(fnmatch.fnmatch(client, c) for c in clients.split()):
            return i
    return None


@pytest.fixture(scope="session")
def doiuse_email() -> Path:
    """tests/doiuse_check.mjs, with doiuse-email installed from package-lock.json into node_modules/.

    Installed once (`npm ci`) and kept until the lock file asks for another version.
    """
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("needs node and npm (Debian packages nodejs and npm) to run doiuse-email")
    lock = json.loads((REPO / "package-lock.json").read_text(encoding="utf-8"))
    wanted = lock["packages"]["node_modules/doiuse-email"]["version"]
    installed = REPO / "node_modules" / "doiuse-email" / "package.json"
    if not installed.exists() or json.loads(installed.read_text(encoding="utf-8"))["version"] != wanted:
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode != 0:
            pytest.skip(
                "npm ci could not install doiuse-email (is the npm registry reachable?): "
                + done.stderr[-500:]
            )
    return REPO / "tests" / "doiuse_check.mjs"


def doiuse(script: Path, html: str, tmp_path: Path) -> dict[str, list[str]]:
    page = tmp_path / "digest.html"
    page.write_text(html, encoding="utf-8")
    done = subprocess.run(
        ["node", str(script), str(page), *CLIENTS], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"doiuse_check.mjs failed: {done.stderr}"
    return json.loads(done.stdout)


def _digest_with_every_teaser_kind() -> Digest:
    d = with_labels(sample_digest(), photo=None)
    first = d.sections[0]
    no_photo = replace(first.teasers[0], url=first.teasers[0].url + "#text-only", image_url=None)
    return replace(d, sections=(replace(first, teasers=(*first.teasers, no_photo)), *d.sections[1:]))


@pytest.mark.parametrize("archive", [False, True], ids=["email", "web-edition"])
def test_caniemail_finds_nothing_outside_the_allowlist(
    doiuse_email: Path, tmp_path: Path, archive: bool
) -> None:
    rendered = renderer().render(_digest_with_every_teaser_kind(), archive=archive).html
    html = rendered if archive else fill(rendered, PERSONAL)
    result = doiuse(doiuse_email, html, tmp_path)
    findings = [_ERROR_RE.match(e) for e in result["errors"]]
    assert all(findings), [e for e, m in zip(result["errors"], findings, strict=True) if not m]
    unexplained = sorted({m.group(0) for m in findings if m and _allowed(m["feature"], m["client"]) is None})
    assert not unexplained, "features these clients do not support:\n" + "\n".join(unexplained)
    if not archive:  # every entry must still be needed: the allowlist stays short and true
        used = {_allowed(m["feature"], m["client"]) for m in findings if m}
        stale = [ALLOWED[i][0] for i in range(len(ALLOWED)) if i not in used]
        assert not stale, f"allowlist entries nothing needs any more: {stale}"
    assert "box-sizing" not in html  # Yahoo Mail and AOL ignore it: no layout may depend on it
