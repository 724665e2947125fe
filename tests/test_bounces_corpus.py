"""Every real DSN and complaint in ../shared/testdata/bounces, against sisimai's expectations.

Per recipient, in the report's order (run with -s for the figure and the misses):
- detected: we have a finding for it, of the right kind (bounce, complaint, delivered);
- address: a well-formed address (the oracle does not name them), and no extra findings in the
  file (a report's own address must not come out as a failed recipient);
- hard: ours is sisimai's `hardbounce` (the address is gone: userunknown, hostunknown,
  hasmoved, a permanent notaccept);
- reason: the same reason, sisimai names outside our set read through `SISIMAI_EQUIVALENT`;
- status: the same RFC 3463 code. Where the oracle has a sisimai pseudo code (x.0.9xx, which
  "does not appear in the e-mail"), no code or one of the same class agrees.
"""

from __future__ import annotations

import json
import re

import pytest
from shared_data import TESTDATA

from subscribers.bounces import Kind, Report, classify, classify_messages
from subscribers.reasons import from_name

CORPUS = TESTDATA / "bounces"
pytestmark = pytest.mark.skipif(
    not (CORPUS / "expected.json").is_file(), reason=f"bounce corpus not found at {CORPUS}"
)
ADDRESS = re.compile(r"[^@\s<>]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+")


def _expected_kind(reason: str) -> Kind:
    return {"feedback": Kind.COMPLAINT, "delivered": Kind.DELIVERED}.get(reason, Kind.BOUNCE)


def _status_agrees(ours: str, theirs: str) -> bool:
    if ours == theirs:
        return True
    pseudo = (
        len(theirs.split(".")[-1]) == 3 and theirs.split(".")[1] == "0" and theirs.split(".")[2][0] == "9"
    )
    return pseudo and ours[:1] in ("", theirs[:1])


def measure() -> tuple[dict[str, int], list[str]]:
    expected = json.loads((CORPUS / "expected.json").read_text(encoding="utf-8"))
    keys = ("recipients", "detected", "address", "hard", "reason", "status", "files", "file_kind", "extra")
    totals = dict.fromkeys(keys, 0)
    misses: list[str] = []
    label = {Kind.COMPLAINT: "complaint", Kind.BOUNCE: "bounce", Kind.DELIVERED: "delivered"}
    for name, want in sorted(expected.items()):
        # A file may be an mbox of several reports (rfc3464-28): each is read, as sisimai does.
        reports = classify_messages((CORPUS / name).read_bytes())
        report = Report(tuple(f for r in reports for f in r.findings), ())
        totals["files"] += 1
        totals["file_kind"] += label.get(report.kind, "not-bounce") == want["kind"]  # type: ignore[arg-type]
        extra = len(report.findings) > len(want["results"])
        totals["extra"] += extra
        if extra:
            misses.append(f"{name}: {len(report.findings)} findings for {len(want['results'])} recipients")
        for i, row in enumerate(want["results"]):
            totals["recipients"] += 1
            if i >= len(report.findings):
                misses.append(f"{name}#{i}: no finding")
                continue
            got = report.findings[i]
            detected = got.kind == _expected_kind(row["reason"])
            totals["detected"] += detected
            complaint_without_address = got.kind == Kind.COMPLAINT and got.address == ""
            totals["address"] += (
                bool(ADDRESS.fullmatch(got.address)) or complaint_without_address
            ) and not extra
            totals["hard"] += got.hard == row["hard"]
            want_reason = from_name(row["reason"])
            totals["reason"] += got.reason == want_reason
            ok = _status_agrees(got.status, row["status"])
            totals["status"] += ok
            if not (ok and got.reason == want_reason and got.hard == row["hard"] and detected):
                misses.append(
                    f"{name}#{i}: ours {got.kind.value} {got.status or '-'} {got.reason} hard={got.hard} "
                    f"| sisimai {row['status'] or '-'} {row['reason']} hard={row['hard']} "
                    f"| {got.diagnostic[:120]!r}"
                )
    return totals, misses


def test_bounce_corpus_agreement(record_property, capsys):
    totals, misses = measure()
    n = totals["recipients"]
    figure = (
        f"bounce corpus ({totals['files']} files, {n} recipients): detected {totals['detected']}/{n}, "
        f"address {totals['address']}/{n}, hard {totals['hard']}/{n}, reason {totals['reason']}/{n}, "
        f"status {totals['status']}/{n}; report kind {totals['file_kind']}/{totals['files']} files"
    )
    with capsys.disabled():
        print("\n" + figure + "\n" + "\n".join(misses))
    record_property("bounce_corpus", figure)
    # Floors a little under what was measured (see the README).
    # Measured: detected, address, hard, reason and status 158 of 158; kind 143 of 143.
    assert totals["detected"] >= 157, "\n".join(misses)
    assert totals["address"] >= 157, "\n".join(misses)
    assert totals["hard"] >= 157, "\n".join(misses)
    assert totals["reason"] >= 157, "\n".join(misses)
    assert totals["status"] >= 157, "\n".join(misses)
    assert totals["file_kind"] >= 142


def test_ordinary_mail_is_no_report():
    for name in ("is-not-bounce-01.eml", "is-not-bounce-02.eml"):
        assert classify((CORPUS / name).read_bytes()).findings == ()


def test_complaint_without_recipient_still_names_the_message():
    """arf-11 redacts every recipient field: the finding has no address, the report its Message-ID."""
    report = classify((CORPUS / "arf-11.eml").read_bytes())
    assert [(f.kind, f.address) for f in report.findings] == [(Kind.COMPLAINT, "")]


def test_the_alias_a_failure_was_expanded_from_is_not_one_more_failure():
    """Sendmail's "(expanded from: <alias>)" under a piped recipient: flufl.bounce reads the alias
    as a failure, the fields name the real one."""
    report = classify((CORPUS / "rfc3464-04.eml").read_bytes())
    assert [f.address for f in report.findings] == ["kijitora@mailx-53.neko.example.edu"]
