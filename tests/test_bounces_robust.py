"""No report can stop the classifier: any charset, broken MIME, junk, cut-off reports."""

from __future__ import annotations

import random

import pytest
from shared_data import TESTDATA

from subscribers.bounces import Kind, classify

CORPUS = TESTDATA / "bounces"
pytestmark = pytest.mark.skipif(not (CORPUS / "expected.json").is_file(), reason=f"no corpus at {CORPUS}")


def japanese_report_with_broken_boundary() -> bytes:
    """lhost-postfix-03 (a real report from a Japanese host, returned message in ISO-2022-JP), with
    the carrier's words as raw 8-bit EUC-JP glued to a boundary line: Python then keeps the
    delivery status inside a us-ascii text part full of undecodable bytes. This raised
    UnicodeEncodeError before, and stopped every fetch after it."""
    lines = (CORPUS / "lhost-postfix-03.eml").read_bytes().split(b"\n")
    assert lines[37].startswith(b"--X1111111111111")
    lines[37] += "\u672a\u914d\u9054".encode("euc-jp")
    return b"\n".join(lines)


def test_an_iso_2022_jp_report_with_raw_8bit_bytes_is_read():
    report = classify(japanese_report_with_broken_boundary())
    assert report.error == ""
    assert [(f.address, f.kind, f.status) for f in report.findings] == [
        ("kijitora@example.net", Kind.BOUNCE, "5.0.0")
    ]
    assert "20140701000000.000000000000@e1.example.ne.jp" in report.message_ids


JUNK = (
    "\u65e5\u672c\u8a9e".encode("shift_jis"),
    "\u65e5\u672c".encode("iso-2022-jp"),
    bytes(range(128, 256)),
)
LABELS = (b"iso-2022-jp", b"shift_jis", b"x-no-such-charset", b"utf-7", b'"')


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.eml")))
def test_no_charset_or_garbling_makes_the_classifier_raise(name):
    """Every corpus file, with wrong charset labels and raw bytes of other charsets in random lines
    (boundaries included): read, never an exception, never "cannot be read"."""
    rng = random.Random(name)
    raw = (CORPUS / name).read_bytes()
    for _ in range(4):
        mutated = raw.replace(b"charset=", b"charset=" + rng.choice(LABELS), rng.randint(0, 3))
        lines = mutated.split(b"\n")
        for _ in range(5):
            k = rng.randrange(1, len(lines))  # not the first header line: the message stays an e-mail
            lines[k] = lines[k][: rng.randint(0, 40)] + rng.choice(JUNK) + lines[k][40:]
        report = classify(b"\n".join(lines))
        assert not report.error.startswith("cannot be read"), report.error


def test_binary_junk_is_an_error_not_an_exception():
    for junk in (bytes(range(256)) * 40, b"\x89PNG\r\n\x1a\n" + bytes(5000), b""):
        report = classify(junk)
        assert report.findings == () and report.error == "not an e-mail (no header fields)"


def test_a_cut_off_report_says_it_was_cut_off():
    raw = (CORPUS / "lhost-postfix-02.eml").read_bytes()
    whole = classify(raw)
    assert not whole.truncated and whole.findings
    cut = classify(raw[: len(raw) // 3])
    assert cut.truncated and cut.findings == ()
