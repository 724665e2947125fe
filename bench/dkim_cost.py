"""DKIM cost per message: personalise + sign against personalise alone, in the same run.

    python -m bench.dkim_cost [--messages 500] [--repeat 5]

The digest is the bundled sample, rendered once; every message is one recipient's spliced
bytes (the reference), then the same with dkimpy's relaxed/relaxed RSA-2048 signature over the
headers `digest.dkim` signs (ours: dkimpy with its RSA step in OpenSSL, as `digest.dkim` runs
it). A second line gives dkimpy with its own pure-Python RSA, for comparison. The key is made
for the run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

import dkim
import dkim.crypto
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from digest.config import Config
from digest.dkim import DkimSigner
from digest.models import Recipient
from digest.personal import Links
from digest.pipeline import Personaliser, Variants, list_headers, prepare_issue
from subscribers.tokens import Tokens


def rate(fn: Callable[[], object], messages: int, repeat: int) -> float:
    """Messages per second: the median of `repeat` timed runs of `fn` (which makes `messages`)."""
    fn()  # warm-up
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return messages / statistics.median(runs)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.dkim_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    now = datetime.now(UTC)
    config = Config()
    issue = prepare_issue(config, now)
    variants = Variants(issue.digest, issue.renderer, list_headers(config), date=now)
    _rendered, template = variants.get(variants.key_for(None))
    personalise = Personaliser(
        Tokens("bench-secret"), Links(config.newsletter.base_url), run_id="bench", domain="x"
    )
    people = [
        (r, personalise(r))
        for r in (Recipient(i + 1, f"reader{i}@example.org", f"Reader {i}") for i in range(args.messages))
    ]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    sign = DkimSigner(domain="example.org", selector="bench", private_key=key)

    def unsigned() -> None:
        for recipient, personal in people:
            template.personalise(recipient, personal)

    def signed() -> None:
        for recipient, personal in people:
            sign(template.personalise(recipient, personal))

    reference = rate(unsigned, len(people), args.repeat)
    ours = rate(signed, len(people), args.repeat)
    openssl_step = dkim.RSASSA_PKCS1_v1_5_sign
    dkim.RSASSA_PKCS1_v1_5_sign = dkim.crypto.RSASSA_PKCS1_v1_5_sign  # dkimpy's own, for a moment
    try:
        pure = rate(signed, len(people), max(1, args.repeat // 2))
    finally:
        dkim.RSASSA_PKCS1_v1_5_sign = openssl_step
    size = len(template.personalise(*people[0])) / 1024
    print(f"dkim_sign: ours {ours:.0f}/s, reference {reference:.0f}/s, ratio {ours / reference:.3f}")
    print(
        f"  {1e3 / ours - 1e3 / reference:.2f} ms of signing per {size:.0f} KiB message "
        f"(RSA-2048, relaxed/relaxed); with dkimpy's pure-Python RSA: {pure:.0f}/s, "
        f"{1e3 / pure - 1e3 / reference:.2f} ms"
    )


if __name__ == "__main__":
    main()
