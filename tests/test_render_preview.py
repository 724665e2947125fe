"""`digest preview`: HTML, text and (with Chromium) PNG files of this week's digest."""

from __future__ import annotations

import argparse
import struct
from pathlib import Path

import pytest

from digest import screenshot
from digest.commands import preview
from digest.errors import DigestError
from digest.personal import MARKER_RE


def run_preview(*argv: str) -> int:
    # The preview module alone: the full CLI also loads the other command modules.
    parser = argparse.ArgumentParser()
    parser.add_argument("-c", "--config")
    preview.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "digest.toml"
    path.write_text('[newsletter]\nname = "Preview Weekly"\n')
    return path


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_preview_writes_html_and_text_with_example_personal_values(tmp_path: Path, config: Path) -> None:
    out = tmp_path / "out" / "digest.html"
    assert run_preview("-c", str(config), "preview", "--out", str(out), "--no-screenshot") == 0
    html = out.read_text()
    text = (tmp_path / "out" / "digest.html.txt").read_text()
    assert "Preview Weekly" in html and "Preview Weekly" in text
    assert not MARKER_RE.search(html) and not MARKER_RE.search(text)
    assert "https://newsletter.example.org/unsubscribe/EXAMPLE-TOKEN" in html
    assert "Unsubscribe: https://newsletter.example.org/unsubscribe/EXAMPLE-TOKEN" in text
    assert not list((tmp_path / "out").glob("*.png"))


def test_preview_of_one_variant_and_of_the_archive(tmp_path: Path, config: Path) -> None:
    out = tmp_path / "africa.html"
    run_preview("-c", str(config), "preview", "--out", str(out), "--regions", "Africa", "--no-screenshot")
    html = out.read_text()
    assert "Sudan" in html and "Iraq" not in html
    archive = tmp_path / "archive.html"
    run_preview("-c", str(config), "preview", "--out", str(archive), "--archive", "--no-screenshot")
    assert "/unsubscribe/" not in archive.read_text() and "web edition" in archive.read_text()


def test_preview_rejects_unknown_region_and_odd_width(tmp_path: Path, config: Path) -> None:
    out = str(tmp_path / "x.html")
    with pytest.raises(DigestError, match="unknown Atlantis"):
        run_preview("-c", str(config), "preview", "--out", out, "--regions", "Atlantis")
    with pytest.raises(DigestError, match="--width 50"):
        run_preview("-c", str(config), "preview", "--out", out, "--width", "50")


def test_placeholder_images_are_local_and_keep_sizes(tmp_path: Path, config: Path) -> None:
    out = tmp_path / "p.html"
    run_preview("-c", str(config), "preview", "--out", str(out), "--placeholder-images", "--no-screenshot")
    html = out.read_text()
    assert "wp-content/uploads" not in html
    assert html.count('src="data:image/svg+xml,') >= 7
    assert 'width="208" class="photo"' in html


@pytest.mark.chromium
@pytest.mark.skipif(not screenshot.available(), reason="needs /usr/bin/chromium and playwright")
def test_preview_screenshot_at_phone_width(tmp_path: Path, config: Path) -> None:
    out = tmp_path / "digest.html"
    run_preview("-c", str(config), "preview", "--out", str(out), "--width", "375", "--placeholder-images")
    png = tmp_path / "digest.375.png"
    width, height = png_size(png)
    assert width == 375 and height > 2000


def test_preview_starts_where_the_next_send_would(tmp_path: Path, config: Path) -> None:
    """With window = "since_last_send", preview reads the ledger as send does."""
    from datetime import UTC, datetime, timedelta

    from digest.db import make_engine, migrate, session_factory
    from digest.send import SendRun, start_run

    config.write_text(
        config.read_text()
        + '[collect]\nwindow = "since_last_send"\n[database]\nurl = "sqlite:///ledger.db"\n'
    )
    engine = make_engine("sqlite:///ledger.db", base_dir=tmp_path)
    migrate(engine)
    with session_factory(engine)() as s:
        # The last send collected up to 30 hours ago: only the sample's newest story came since.
        run = s.get(SendRun, start_run(s, [], issue="x", window_end=datetime.now(UTC) - timedelta(hours=30)))
        run.status, run.open_slot = "finished", None
        s.commit()
    engine.dispose()
    out = tmp_path / "out" / "digest.html"
    assert run_preview("-c", str(config), "preview", "--out", str(out), "--no-screenshot") == 0
    text = (tmp_path / "out" / "digest.html.txt").read_text()
    assert "Iraq faces first quiet election" in text  # 20 hours old
    assert "Sudan's bloody war" not in text  # 34 hours old: the last send had it
