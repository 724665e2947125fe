"""`digest demo` end to end: every .eml it writes is parsed with the `email` package and checked."""

from __future__ import annotations

import email
import html as html_lib
import re
from email import policy
from email.message import EmailMessage
from pathlib import Path

import pytest

from digest.cli import main
from digest.sources.sample import SAMPLE_ITEMS
from subscribers.tokens import DEV_SECRET, Purpose, Tokens

GMAIL_CLIP_BYTES = 102 * 1024
TITLES = {title: cats for _h, title, cats, *_rest in SAMPLE_ITEMS}


@pytest.fixture(scope="module")
def outbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("outbox")
    assert main(["demo", "--outbox", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def messages(outbox: Path) -> dict[str, tuple[bytes, EmailMessage]]:
    out = {}
    for path in sorted(outbox.glob("*.eml")):
        raw = path.read_bytes()
        msg = email.message_from_bytes(raw, policy=policy.default)
        out[msg["To"].addresses[0].addr_spec] = (raw, msg)
    return out


def parts(msg: EmailMessage) -> tuple[str, str]:
    return msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()


def test_one_message_per_active_subscriber_who_has_articles(messages: dict) -> None:
    assert set(messages) == {
        "ada@example.org",
        "grace.hopper@example.com",
        "amina@example.net",
        "kenji@example.jp",
        "zoe@example.fr",
        "lucia@example.com.br",
    }  # not the unsubscribed, the unconfirmed, nor the Global-only reader (no Global articles)


def test_preview_is_written(outbox: Path) -> None:
    html = (outbox / "preview.html").read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>") and "Keep reading" in html
    assert "@@digest:" not in html


def test_wire_format(messages: dict) -> None:
    for addr, (raw, msg) in messages.items():
        assert b"\n" not in raw.replace(b"\r\n", b""), f"{addr}: bare line ending"
        assert max(len(line) for line in raw.split(b"\r\n")) <= 998, addr
        assert msg.get_content_type() == "multipart/alternative"
        assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
        for part in msg.iter_parts():
            assert part.get_content_charset() == "utf-8"
        for header in ("From", "To", "Subject", "Date", "Message-ID", "List-Id", "List-Unsubscribe"):
            assert msg[header], f"{addr}: no {header}"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        _text, html = parts(msg)
        assert len(html.encode("utf-8")) < GMAIL_CLIP_BYTES
        assert "@@digest:" not in raw.decode("utf-8", "replace")


def test_message_ids_are_unique(messages: dict) -> None:
    ids = [msg["Message-ID"] for _raw, msg in messages.values()]
    assert len(set(ids)) == len(ids)


def test_list_unsubscribe_carries_signed_https_and_mailto(messages: dict) -> None:
    tokens = Tokens(DEV_SECRET)
    ids = set()
    for addr, (_raw, msg) in messages.items():
        links = re.findall(r"<([^>]+)>", msg["List-Unsubscribe"])
        assert links[0].startswith("https://") and links[1].startswith("mailto:")
        token = links[0].rsplit("/", 1)[1]
        ids.add(tokens.read(token, Purpose.UNSUBSCRIBE))
        with pytest.raises(ValueError):
            tokens.read(token, Purpose.CONFIRM)  # bound to its purpose
        _text, html = parts(msg)
        assert links[0] in html, f"{addr}: footer unsubscribe link differs from the header"
    assert len(ids) == len(messages)


def test_africa_only_reader_gets_only_africa(messages: dict) -> None:
    text, html = parts(messages["amina@example.net"][1])
    africa = [t for t, cats in TITLES.items() if "Africa" in cats]
    others = [t for t, cats in TITLES.items() if "Africa" not in cats]
    for title in africa:
        assert title in text
    for title in others:
        assert title not in text and title.replace("'", "&#x27;") not in html and title not in html
    assert "== AFRICA ==" in text and "== MIDDLE EAST ==" not in text


def test_all_regions_reader_gets_every_section_in_order(messages: dict) -> None:
    text, _html = parts(messages["ada@example.org"][1])
    headings = re.findall(r"^== (.+) ==$", text.replace("\r\n", "\n"), re.M)
    assert headings == ["MIDDLE EAST", "AFRICA", "ASIA-PACIFIC", "EUROPE", "AMERICAS"]
    assert "Top photo credit: The grandmother of Ikram Abdelhameed" in text
    assert "Sample: An article from two weeks ago" not in text


def test_non_ascii_names_survive(messages: dict) -> None:
    assert messages["zoe@example.fr"][1]["To"].addresses[0].display_name == "Zoë Dubois"


def test_demo_runs_again_cleanly(outbox: Path) -> None:
    assert main(["demo", "--outbox", str(outbox)]) == 0
    assert len(list(outbox.glob("*.eml"))) == 6


def test_web_edition_is_written_without_personal_links(outbox: Path, messages: dict) -> None:
    (page,) = (outbox / "archive").glob("*.html")
    html = page.read_text(encoding="utf-8")
    assert "@@digest:" not in html and "/unsubscribe/" not in html
    shown = html_lib.unescape(html)
    for title, categories in TITLES.items():
        if title != "Sample: An article from two weeks ago" and "QIOSK" not in categories:
            assert title in shown
    _text, mail_html = parts(messages["ada@example.org"][1])
    assert f"/archive/{page.stem}" in mail_html  # the e-mail's "view in browser" link names this page
