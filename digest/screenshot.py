"""Screenshots of rendered e-mails in headless Chromium (Debian package `chromium`), via Playwright.

Optional at run time: `available()` says whether Chromium and Playwright are both present, and
callers skip screenshots otherwise. Playwright's own browser download does not work on our
machines, so it drives the system Chromium; phone widths need a Playwright viewport because
Chromium's --window-size stops at 500 px.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
# Root needs --no-sandbox; the rest stop Chromium calling home from a test or a preview.
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
)


def available() -> bool:
    return CHROMIUM.exists() and importlib.util.find_spec("playwright") is not None


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless Chromium (a Playwright Browser); closed on exit."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS))
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Any, html: str, width: int, *, offline: bool = True) -> Any:
    """A page `width` CSS pixels wide showing `html`; offline: remote requests fail at once."""
    page = browser.new_page(viewport={"width": width, "height": 800})
    if offline:
        page.route(
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url.startswith(("data:", "file:", "about:"))
                else route.abort()
            ),
        )
    page.set_content(html, wait_until="load")
    return page


def screenshot(html: str, png: Path, width: int, *, offline: bool = True) -> Path:
    """Write a full-page PNG of `html` at `width` px."""
    with chromium() as browser:
        page = open_page(browser, html, width, offline=offline)
        page.screenshot(path=str(png), full_page=True)
    return png
