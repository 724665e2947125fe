"""`digest serve` serves the web editions a send wrote, and a page for readers without a link."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from subscriber_helpers import TEST_SECRET

from digest.archive import write_archive
from digest.config import config_from_dict
from digest.pipeline import prepare_issue
from digest.web import create_app

pytest_plugins = ("subscriber_fixtures",)


def test_archive_is_served_and_nothing_else(db_engine, tmp_path: Path) -> None:
    config = config_from_dict({"web": {"archive_dir": str(tmp_path / "archive")}})
    issue = prepare_issue(config, datetime(2026, 11, 20, 14, tzinfo=UTC))
    written = write_archive(config, issue.digest, issue.renderer)
    (tmp_path / "secret.html").write_text("not for the web", encoding="utf-8")
    client = create_app(config, db_engine, secret_key=TEST_SECRET).test_client()

    page = client.get(f"/archive/{written.stem}")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "Keep reading" in page.text and "/unsubscribe/" not in page.text
    csp = page.headers["Content-Security-Policy"]
    assert "script-src" not in csp and "default-src 'none'" in csp  # no scripts, inline styles only
    assert client.get("/archive/2020-01-01").status_code == 404
    assert client.get("/archive/..%2Fsecret").status_code == 404
    assert client.get("/archive/secret").status_code == 404


def test_generic_preferences_page_points_to_the_personal_links(db_engine) -> None:
    config = config_from_dict({})
    client = create_app(config, db_engine, secret_key=TEST_SECRET).test_client()
    page = client.get("/preferences")
    assert page.status_code == 200
    assert "links at its foot" in page.text and "/subscribe" in page.text
