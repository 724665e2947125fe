"""A million readers: import them from a Mailchimp export, then send them the issue, DKIM-signed.

    python -m bench.million [--subscribers 1000000] [--reference 50000]

Not part of `make bench` (it takes a quarter of an hour or more). Each step is a fresh `digest`
process, as staff would run it, in a folder of its own with a SQLite database:
  1. `digest subscribers import` of a Mailchimp export of N readers (Mailchimp's columns; tags
     naming regions and aliases);
  2. `digest send` with `[dkim] enabled` (RSA-2048) over the default SMTP pool (4 connections)
     into Postfix's smtp-sink (aiosmtpd where Postfix is absent).
Printed: the import time and rate, the send time and rate, the peak resident memory of each
process, and `million_send: ours X/s, reference Y/s, ratio Z` where the reference is 4 bare
smtplib threads sending `--reference` prebuilt messages of the same size, in the same run.
"""

from __future__ import annotations

import argparse
import csv
import resource
import tempfile
from pathlib import Path

from bench.send_cli import bare_rate, digest_cli, write_site
from bench.send_throughput import Fixture, figure, smtp_server

TAGS = ('"Africa"', '"Europe"', '"MENA"', '"Asia-Pacific","Europe"', "", '"US"')


def write_export(path: Path, count: int) -> None:
    """A Mailchimp subscribed-members export, written row by row (it is a few hundred MB)."""
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["Email Address", "First Name", "Last Name", "OPTIN_TIME", "CC", "REGION", "TAGS"])
        for i in range(count):
            writer.writerow(
                [
                    f"reader{i}@mail{i % 500}.example.org",
                    "Reader",
                    str(i),
                    "2024-01-05 10:00:00",
                    "US",
                    "CA",
                    TAGS[i % 6],
                ]
            )


def children_peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.million", description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", type=int, default=1_000_000)
    parser.add_argument("--reference", type=int, default=50_000, help="messages the bare reference sends")
    args = parser.parse_args(argv)
    n = args.subscribers
    fx = Fixture(1)
    with tempfile.TemporaryDirectory() as tmp, smtp_server() as (host, port, server):
        folder = Path(tmp)
        site = write_site(folder, host, port, dkim=True)
        export = folder / "mailchimp.csv"
        write_export(export, n)
        import_seconds, proc = digest_cli(site, "subscribers", "import", str(export))
        import_peak = children_peak_mb()
        rate = n / import_seconds
        print(f"import: {n} readers in {import_seconds:.1f} s ({rate:.0f} rows/s), peak {import_peak:.0f} MB")
        print(f"  {proc.stdout.strip()}")
        send_seconds, _proc = digest_cli(site, "send")
        send_peak = children_peak_mb()  # the larger of the two processes
        print(
            f"send: {n} messages, DKIM-signed, into {server} in {send_seconds:.1f} s "
            f"({n / send_seconds:.0f}/s), start-up, collect, render and freeze included; "
            f"peak of both processes {send_peak:.0f} MB"
        )
        reference = bare_rate(fx, host, port, args.reference)
        figure(
            "million_send",
            n / send_seconds,
            reference,
            extra=f"reference: 4 bare smtplib threads, {args.reference} prebuilt messages, unsigned",
        )
        print(f"total: {(import_seconds + send_seconds) / 60:.1f} minutes for import and send")


if __name__ == "__main__":
    main()
