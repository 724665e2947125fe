"""Every real DSN and complaint in ../shared/testdata/bounces, against sisimai's expectations.

The figure printed (run with -s, or read it in the -ra summary) is the agreement per recipient:
- hard/soft: ours says "suppress now" exactly when the oracle's status is 5.x.x. That is our
  policy's meaning of hard; sisimai's own `hardbounce` flag means "the address is gone" and is
  false for most 5.x.x (blocked, filtered, mailbox full...), so it is compared apart, through
  our reason (userunknown, hostunknown, hasmoved).
- kind: complaint, bounce or delivered, as the oracle's reason says.
- status: the same RFC 3463 code. Where the oracle has a sisimai pseudo code (x.0.9xx, which
  "does not appear in the e-mail"), no code or one of the same class agrees.
"""

from __future__ import annotations

import json

import pytest
from shared_data import TESTDATA

from subscribers.bounces import Kind, classify

CORPUS = TESTDATA / "bounces"
pytestmark = pytest.mark.skipif(
    not (CORPUS / "expected.json").is_file(), reason=f"bounce corpus not found at {CORPUS}"
)

GONE = {"userunknown", "hostunknown", "hasmoved"}


def _expected_kind(reason: str) -> Kind:
    return {"feedback": Kind.COMPLAINT, "delivered": Kind.DELIVERED}.get(reason, Kind.BOUNCE)


def _status_agrees(ours: str, theirs: str) -> bool:
    if ours == theirs:
        return True
    pseudo = (
        len(theirs.split(".")[-1]) == 3 and theirs.split(".")[1] == "0" and theirs.split(".")[2][0] == "9"
    )
    return pseudo and ours[:1] in ("", theirs[:1])


def test_bounce_corpus_agreement(record_property, capsys):
    expected = json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))
    totals = dict.fromkeys(("recipients", "hard", "gone", "kind", "status", "files", "file_kind"), 0)
    misses: list[str] = []
    for name, want in sorted(expected.items()):
        report = classify((CORPUS / name).read_bytes())
        totals["files"] += 1
        label = {Kind.COMPLAINT: "complaint", Kind.BOUNCE: "bounce", Kind.DELIVERED: "delivered"}
        totals["file_kind"] += label.get(report.kind, "not-bounce") == want["kind"]  # type: ignore[arg-type]
        for i, row in enumerate(want["results"]):
            totals["recipients"] += 1
            if i >= len(report.findings):
                misses.append(f"{name}#{i}: no finding")
                continue
            got = report.findings[i]
            totals["kind"] += got.kind == _expected_kind(row["reason"])
            totals["hard"] += got.hard == row["status"].startswith("5")
            totals["gone"] += (got.reason in GONE) == row["hard"]
            ok = _status_agrees(got.status, row["status"])
            totals["status"] += ok
            if not ok:
                misses.append(f"{name}#{i}: status {got.status or '-'} != {row['status']}")
    n = totals["recipients"]
    figure = (
        f"bounce corpus ({totals['files']} files, {n} recipients): hard/soft {totals['hard']}/{n}, "
        f"kind {totals['kind']}/{n}, status {totals['status']}/{n}, "
        f"sisimai hardbounce {totals['gone']}/{n}; report kind {totals['file_kind']}/{totals['files']} files"
    )
    with capsys.disabled():
        print("\n" + figure)
    record_property("bounce_corpus", figure)
    # Floors a little under what was measured (151, 156, 150, 135 of 158; 142 of 143 files).
    assert totals["hard"] >= 148, "\n".join(misses)
    assert totals["kind"] >= 154, "\n".join(misses)
    assert totals["status"] >= 146, "\n".join(misses)
    assert totals["gone"] >= 130
    assert totals["file_kind"] >= 140


def test_ordinary_mail_is_no_report():
    for name in ("is-not-bounce-01.eml", "is-not-bounce-02.eml"):
        assert classify((CORPUS / name).read_bytes()).findings == ()


def test_complaint_without_recipient_still_names_the_message():
    """arf-11 redacts every recipient field: the finding has no address, the report its Message-ID."""
    report = classify((CORPUS / "arf-11.eml").read_bytes())
    assert [(f.kind, f.address) for f in report.findings] == [(Kind.COMPLAINT, "")]
