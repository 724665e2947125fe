"""How fast the `digest` command answers, against a bare `python -c pass`, in the same run.

    python -m bench.cli_startup [--runs 20]

Each figure is starts per second of a fresh process (median of `--runs`), the installed `digest`
script against the same interpreter doing nothing. The goal is a ratio of at least 1/6.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path


def starts_per_second(command: list[str], runs: int) -> float:
    """1 / the median wall time of `runs` fresh processes running `command`."""
    subprocess.run(command, capture_output=True, check=True)  # warm the page cache
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return 1 / statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cli_startup", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv)
    script = str(Path(sys.executable).parent / "digest")
    reference = starts_per_second([sys.executable, "-c", "pass"], args.runs)
    for name, flag in (("cli_version", "--version"), ("cli_help", "--help")):
        ours = starts_per_second([sys.executable, script, flag], args.runs)
        print(f"{name}: ours {ours:.1f}/s, reference {reference:.1f}/s, ratio {ours / reference:.3f}")


if __name__ == "__main__":
    main()
