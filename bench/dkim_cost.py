"""What DKIM costs: per message, and for a whole send over 4 connections, each in the same run.

    python -m bench.dkim_cost [--messages 500] [--send 2000] [--repeat 3]

  * dkim_sign: personalise + sign (RSA-2048, relaxed/relaxed, `digest.dkim`) against
    personalise alone, one thread; dkimpy's own `dkim.sign` of the same bytes is printed below
    it for comparison (it canonicalises the whole message in Python);
  * dkim_send_4conn: a whole run (ledger, tokens, splicing, `SmtpTransport` with 4 connections)
    into Postfix's smtp-sink (aiosmtpd where Postfix is absent) with `[dkim]` on, against the
    same run unsigned; alternating runs, the median of `--repeat`. The goal is a ratio >= 0.8.
The keys are made for the run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.send_throughput import Fixture, figure, smtp_server
from digest.dkim import SIGNED_HEADERS, DkimSigner
from digest.pipeline import Personaliser


def rate(fn: Callable[[], object], messages: int, repeat: int) -> float:
    """Messages per second: the median of `repeat` timed runs of `fn` (which makes `messages`)."""
    fn()  # warm-up
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return messages / statistics.median(runs)


def rsa_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def per_message(fx: Fixture, sign: DkimSigner, pem: bytes, messages: int, repeat: int) -> None:
    personalise = Personaliser(fx.tokens, fx.links, run_id="bench", domain="example.org")
    people = [(r, personalise(r)) for r in fx.recipients[:messages]]
    template = fx.template

    def unsigned() -> None:
        for recipient, personal in people:
            template.personalise(recipient, personal)

    def signed() -> None:
        for recipient, personal in people:
            template.outbound(recipient, personal, key="k", envelope_sender="b@x", sign=sign).wire()

    reference = rate(unsigned, len(people), repeat)
    ours = rate(signed, len(people), repeat)
    size = len(fx.prebuilt) / 1024
    figure(
        "dkim_sign",
        ours,
        reference,
        extra=f"{1e3 / ours - 1e3 / reference:.2f} ms per {size:.0f} KiB message",
    )
    try:
        import dkim
    except ImportError:
        return
    names = [h.encode() for h in SIGNED_HEADERS if h.lower() != "reply-to"] + [b"From"]

    def dkimpy() -> None:
        for recipient, personal in people[:50]:
            wire = template.personalise(recipient, personal)
            dkim.sign(
                wire,
                b"bench",
                b"example.org",
                pem,
                canonicalize=(b"relaxed", b"relaxed"),
                include_headers=names,
            )

    print(f"  for comparison, dkimpy's dkim.sign of the same messages: {rate(dkimpy, 50, 1):.0f}/s")


def send_figure(fx: Fixture, sign: DkimSigner, repeat: int) -> None:
    messages = len(fx.recipients)
    with tempfile.TemporaryDirectory() as tmp, smtp_server() as (host, port, server):
        signed, unsigned = [], []
        for _ in range(repeat):  # alternating, so load on the machine hits both alike
            elapsed, totals = fx.run(host, port, 4, Path(tmp))
            assert totals == {"sent": messages}, totals
            unsigned.append(elapsed)
            elapsed, totals = fx.run(host, port, 4, Path(tmp), sign=sign)
            assert totals == {"sent": messages}, totals
            signed.append(elapsed)
    figure(
        "dkim_send_4conn",
        messages / statistics.median(signed),
        messages / statistics.median(unsigned),
        extra=f"{messages} messages into {server} over 4 connections, RSA-2048 signed against unsigned, "
        f"median of {repeat}",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dkim_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--send", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    pem = rsa_pem()
    sign = DkimSigner(domain="example.org", selector="bench", private_key=pem)
    fx = Fixture(max(args.messages, args.send))
    per_message(fx, sign, pem, args.messages, args.repeat)
    fx.recipients = fx.recipients[: args.send]
    send_figure(fx, sign, args.repeat)


if __name__ == "__main__":
    main()
