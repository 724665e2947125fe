"""`digest bounces classify` over 1,000 real reports, against flufl.bounce alone on the same bytes.

    python -m bench.bounce_classify [--reports 1000] [--repeat 3]

The reports are the corpus in ../shared/testdata/bounces, repeated to reach `--reports` files
in a temporary folder:
  * bounce_classify_cli: the whole command, `digest bounces classify --json FILE...` in a new
    process (start-up, reading, classifying, JSON out), timed from outside;
  * bounce_classify_inprocess: `classify()` on each file's bytes, in this process;
  * the reference: `flufl.bounce.all_failures` on each message (the library our classifier uses
    for non-standard reports), on the same bytes in the same run: parsing plus its detectors,
    without status codes or reasons.
Each figure is the median of `--repeat` runs. The issue asks for 1,000 reports in under 10 s.
"""

from __future__ import annotations

import argparse
import email
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from flufl.bounce import all_failures

from subscribers.bounces import classify

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "testdata" / "bounces"


def _files(folder: Path, count: int) -> list[Path]:
    sources = sorted(CORPUS.glob("*.eml"))
    out = []
    for i in range(count):
        path = folder / f"{i:05d}-{sources[i % len(sources)].name}"
        path.write_bytes(sources[i % len(sources)].read_bytes())
        out.append(path)
    return out


def _timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if not CORPUS.is_dir():
        sys.exit(f"no corpus at {CORPUS}")
    with tempfile.TemporaryDirectory() as tmp:
        files = _files(Path(tmp), args.reports)
        blobs = [p.read_bytes() for p in files]
        command = [sys.executable, "-m", "digest.cli", "bounces", "classify", "--json", *map(str, files)]
        cli, cpu, ours, ref = [], [], [], []
        for _ in range(args.repeat):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            cli.append(_timed(lambda: subprocess.run(command, check=True, stdout=subprocess.DEVNULL)))
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            ref.append(_timed(lambda: [all_failures(email.message_from_bytes(b)) for b in blobs]))
            ours.append(_timed(lambda: [classify(b) for b in blobs]))
    n = args.reports
    c, o, r = statistics.median(cli), statistics.median(ours), statistics.median(ref)
    spent = statistics.median(cpu)
    print(
        f"bounce_classify_cli: ours {n / c:.0f}/s, reference {n / r:.0f}/s, ratio {r / c:.2f} "
        f"({c:.2f} s wall, {spent:.2f} s CPU for {n} reports, start-up included)"
    )
    print(f"bounce_classify_inprocess: ours {n / o:.0f}/s, reference {n / r:.0f}/s, ratio {r / o:.2f}")


if __name__ == "__main__":
    main()
