"""`digest bounces classify FILE... [--json]`: what each file is and says; never fails for a file."""

from __future__ import annotations

import json

import pytest
from bounce_helpers import SECRET, TOKENS, dsn
from shared_data import TESTDATA

from digest import cli
from digest.message import make_message_id

CORPUS = TESTDATA / "bounces"
pytestmark = pytest.mark.skipif(not (CORPUS / "expected.json").is_file(), reason=f"no corpus at {CORPUS}")


@pytest.fixture(autouse=True)
def _only_bounces(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", ("digest.commands.bounces",))


def _json(capsys, *files: str) -> list[dict]:
    capsys.readouterr()
    assert cli.main(["bounces", "classify", "--json", *files]) == 0
    return json.loads(capsys.readouterr().out)


def test_each_kind_and_bad_files_never_fail_the_command(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DIGEST_SECRET_KEY", raising=False)
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 10)
    cut = tmp_path / "cut.eml"
    raw = (CORPUS / "lhost-postfix-02.eml").read_bytes()
    cut.write_bytes(raw[: len(raw) // 3])
    names = ["lhost-postfix-02.eml", "arf-01.eml", "rfc3464-28.eml", "is-not-bounce-01.eml"]
    files = [str(CORPUS / n) for n in names] + [str(junk), str(tmp_path / "missing.eml"), str(cut)]
    results = _json(capsys, *files)
    assert [r["kind"] for r in results] == [
        "bounce",
        "complaint",
        "delivered",
        "not-report",
        "error",
        "error",
        "error",
    ]
    assert results[4]["error"] == "not an e-mail (no header fields)"
    assert results[5]["error"].startswith("cannot read it")
    assert results[6]["error"].startswith("truncated report")
    first = results[0]["findings"][1]
    assert first | {"diagnostic": ""} == {
        "recipient": "userunknown@example.co.jp",
        "kind": "bounce",
        "hard": True,
        "reason": "userunknown",
        "side": "gone",
        "status": "5.1.1",
        "reply": "550",
        "how": "delivery-status fields",
        "feedback_type": "",
        "diagnostic": "",
    }
    assert results[1]["findings"][0]["feedback_type"] == "abuse"
    assert "ours" not in results[0]  # no key, no claim about whose message it was


def test_text_output_and_whose_message_it_was(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET_KEY", SECRET)
    mid = make_message_id("run5", 42, "news.example.org", signature=TOKENS.message_signature("run5", 42))
    path = tmp_path / "ours.eml"
    path.write_bytes(dsn("reader@example.com", mid))
    assert _json(capsys, str(path))[0]["ours"] == {"run": "run5", "subscriber": 42, "by": "message-id"}
    assert cli.main(["bounces", "classify", str(path), str(CORPUS / "arf-01.eml")]) == 0
    out = capsys.readouterr().out
    assert f"{path}: bounce; ours: run run5, subscriber 42 (by message-id)" in out
    assert "  reader@example.com  hard userunknown 5.1.1  [delivery-status fields]" in out
    assert "arf-01.eml: complaint" in out


def test_an_mbox_file_of_several_reports_gives_each_ones_findings(tmp_path, capsys, monkeypatch):
    """A mailbox saved as one mbox file: every report in it is read, in order (sisimai reads a
    file so), and a "From " line inside a body (escaped or not after a blank line) splits nothing."""
    monkeypatch.delenv("DIGEST_SECRET_KEY", raising=False)
    first = dsn("reader@example.com", "<a@news.example.org>")
    second = dsn("other@example.net", "<b@news.example.org>", status="4.2.2").replace(
        b"Your message could not be delivered.", b"Your message could not be delivered.\r\nFrom here on: "
    )
    path = tmp_path / "saved.mbox"
    path.write_bytes(
        b"From MAILER-DAEMON  Thu Apr 29 23:34:45 2026\n" + first + b"\n"
        b"From MAILER-DAEMON  Fri Apr 30 01:02:03 2026\n" + second
    )
    (result,) = _json(capsys, str(path))
    assert result["kind"] == "bounce"
    assert [(f["recipient"], f["reason"]) for f in result["findings"]] == [
        ("reader@example.com", "userunknown"),
        ("other@example.net", "mailboxfull"),
    ]
    assert result["message_ids"][:2] == ["a@news.example.org", "b@news.example.org"]
