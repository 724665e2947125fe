"""Where the public oracles are: ../shared/testdata beside the checkout, or $DIGEST_TESTDATA.

Tests read them from there and skip when they are absent; nothing is copied into the project.
"""

from __future__ import annotations

import os
from pathlib import Path

TESTDATA = Path(
    os.environ.get("DIGEST_TESTDATA") or Path(__file__).resolve().parents[2] / "shared" / "testdata"
)
