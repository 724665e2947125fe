"""`python -m bench` runs end to end (tiny sizes; the figures themselves are not asserted)."""

from __future__ import annotations

import pytest

bench_main = pytest.importorskip("bench.__main__", reason="run from the repository root")


def test_bench_runs_and_reports_against_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main.main(["--articles", "6", "--recipients", "50", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "reference: bare mjml2html" in out
    assert "render one variant" in out and "personalise one recipient" in out
    assert "1.000x" in out
