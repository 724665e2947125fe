"""`python -m bench` runs end to end and reports each figure against the reference measured in
the same run (tiny sizes; how fast is never asserted, only that the report is what it says).

A plain import: a broken bench import fails here, never skips.
"""

from __future__ import annotations

import re

import pytest

from bench import __main__ as bench_main

ROW = re.compile(r"^(?P<label>.+?)\s+(?P<value>\d+\.\d{3}) (?P<unit>ms|us)\s+(?P<ratio>\d+\.\d{3})x")
LABELS = [
    "reference: bare mjml2html of the same MJML",
    "render one variant (Jinja2 + MJML + text)",
    "Jinja2 -> MJML source",
    "MJML -> HTML (our compile path)",
    "text part",
    "personalise one recipient (of 50)",
    "naive: one EmailMessage per recipient",
]


def test_bench_reports_every_figure_as_a_ratio_to_the_bare_compile(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert bench_main.main(["--articles", "6", "--recipients", "50", "--repeat", "1"]) == 0
    rows = {m["label"].strip(): m for m in map(ROW.match, capsys.readouterr().out.splitlines()) if m}
    assert list(rows) == LABELS
    seconds = {label: float(m["value"]) / (1e3 if m["unit"] == "ms" else 1e6) for label, m in rows.items()}
    reference = seconds[LABELS[0]]
    assert reference > 0 and all(s > 0 for s in seconds.values()), seconds
    for label, m in rows.items():
        # Each ratio is that row's time over the reference's, both measured in this run.
        assert float(m["ratio"]) == pytest.approx(seconds[label] / reference, rel=0.02, abs=0.002), label
