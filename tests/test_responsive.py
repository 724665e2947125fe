"""The digest in headless Chromium at phone and desktop widths: layout, overflow, contrast.

One browser for the whole module; each width is one page. Screenshots go to pytest's temp
folder (path printed with -s), or to $DIGEST_SCREENSHOTS when set, for a person to look at.
Skips when /usr/bin/chromium or Playwright is missing (CI installs both).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from render_helpers import renderer, sample_digest, synthetic_digest

from digest import screenshot
from digest.personal import fill

pytestmark = pytest.mark.chromium
if not screenshot.available():
    pytest.skip("needs /usr/bin/chromium (Debian package chromium) and playwright", allow_module_level=True)

PERSONAL = {
    "email": "reader@example.org",
    "name": "Reader",
    "unsubscribe_url": "https://newsletter.example.org/unsubscribe/" + "t" * 80,
    "preferences_url": "https://newsletter.example.org/preferences/" + "t" * 80,
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with screenshot.chromium() as b:
        yield b


@pytest.fixture(scope="module")
def shots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    env = os.environ.get("DIGEST_SCREENSHOTS")
    path = Path(env) if env else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def html() -> str:
    """The sample issue with its photos loaded: local data, since the page is offline (an image
    that does not load has no height now that blocked images must leave no hole)."""
    from test_clients import PHOTO

    page = fill(renderer().render(sample_digest()).html, PERSONAL)
    return re.sub(r'src="https?://[^"]+"', f'src="{PHOTO}"', page)


def _page(browser: Any, html: str, width: int, shots_dir: Path, name: str, **kw: Any) -> Any:
    page = screenshot.open_page(browser, html, width)
    if kw.get("dark"):
        page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(shots_dir / f"{name}-{width}.png"), full_page=True)
    return page


# Boxes of each teaser's photo and title, in document order.
_TEASER_BOXES = """() => [...document.querySelectorAll('h3.title')].map(h => {
  const section = h.closest('.story');
  const img = section.querySelector('img');
  const r = e => {
    const b = e.getBoundingClientRect();
    return {x: b.left, y: b.top, r: b.right, b: b.bottom};
  };
  return {title: r(h), img: img ? r(img) : null};
})"""

_OVERFLOW = """() => ({
  scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth,
  wide: [...document.querySelectorAll('body *')]
          .filter(e => e.getBoundingClientRect().right > innerWidth + 0.5)
          .map(e => e.tagName + '.' + e.className).slice(0, 5)
})"""


@pytest.mark.parametrize("width", [320, 375])
def test_phone_width_has_no_horizontal_scroll_and_stacks_photos(
    browser: Any, html: str, shots_dir: Path, width: int
) -> None:
    page = _page(browser, html, width, shots_dir, "digest")
    o = page.evaluate(_OVERFLOW)
    assert o["scroll"] <= o["client"], f"horizontal scroll at {width}px: {o}"
    assert not o["wide"], f"elements past the right edge at {width}px: {o['wide']}"
    boxes = page.evaluate(_TEASER_BOXES)
    assert boxes
    for b in boxes:
        assert b["img"] is not None
        assert b["img"]["b"] <= b["title"]["y"], "photo must sit above the title on a phone"
        assert b["img"]["r"] - b["img"]["x"] > width * 0.8, "photo should use the phone's width"


@pytest.mark.parametrize("width", [600, 1024])
def test_desktop_width_puts_photos_beside_text(browser: Any, html: str, shots_dir: Path, width: int) -> None:
    page = _page(browser, html, width, shots_dir, "digest")
    o = page.evaluate(_OVERFLOW)
    assert o["scroll"] <= o["client"], o
    for b in page.evaluate(_TEASER_BOXES):
        assert b["img"]["r"] <= b["title"]["x"], "photo must sit left of the text"
        assert b["img"]["y"] < b["title"]["b"] and b["title"]["y"] < b["img"]["b"], "side by side"


def test_thirty_story_digest_lays_out_at_375(browser: Any, shots_dir: Path) -> None:
    d = synthetic_digest(30)
    # one story with unbreakable words, as feeds do with URLs and long compound names
    s0 = d.sections[0]
    long = "https://example.org/" + "x" * 120
    t = replace(s0.teasers[1], title="Unbreakable " + "y" * 90, lede=f"See {long} now", image_credit=long)
    d = replace(d, sections=(replace(s0, teasers=(s0.teasers[0], t, *s0.teasers[2:])), *d.sections[1:]))
    html = fill(renderer().render(d).html, PERSONAL)
    page = _page(browser, html, 375, shots_dir, "digest30")
    o = page.evaluate(_OVERFLOW)
    assert o["scroll"] <= o["client"], o
    assert len(page.evaluate(_TEASER_BOXES)) == 29  # the lead is shown on top, not as a teaser


# WCAG 2 contrast of every text element's colour against the first opaque background behind it.
_CONTRAST = """() => {
  const rgb = s => (s.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map(v => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const bg = e => {
    for (; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const out = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const e = n.parentElement;
    if (!n.textContent.trim() || !e.offsetParent || getComputedStyle(e).opacity === '0') continue;
    if (e.closest('[style*="display:none"]')) continue;
    const a = lum(rgb(getComputedStyle(e).color)), b = lum(bg(e));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    out.push({text: n.textContent.trim().slice(0, 40), ratio: Math.round(ratio * 100) / 100});
  }
  return out;
}"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_text_contrast_is_readable(browser: Any, html: str, shots_dir: Path, scheme: str) -> None:
    page = _page(browser, html, 600, shots_dir, f"digest-{scheme}", dark=scheme == "dark")
    results = page.evaluate(_CONTRAST)
    assert len(results) > 20
    low = [r for r in results if r["ratio"] < 4.5]
    assert not low, f"text under WCAG AA contrast (4.5:1) in {scheme} mode: {low[:5]}"
