"""A real crash: `digest send` is killed (SIGKILL) while the SMTP server holds a message.

The message the server accepted while the sender died is recorded as `unknown` and never
sent again; everyone else gets exactly one copy when the run is resumed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from site_helpers import make_site
from sqlalchemy import select

from digest.cli import main
from digest.config import load_config
from digest.db import make_engine, session_factory
from digest.models import DeliveryStatus
from digest.send import Delivery

READERS = [f"reader{i}@example.org" for i in range(8)]


def test_killed_mid_send_then_resumed(tmp_path: Path, smtp_server, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("DIGEST_SECRET_KEY", "Xr5Kq2Vw8Ln3Tz7Bc1Hm6Jd4Fg9Ps0YaQe7Wn2Rb5Mk-t3")
    config_path = make_site(tmp_path, smtp_server, {email: {} for email in READERS})
    config = load_config(config_path)
    engine = make_engine(config.database.url, base_dir=config.base_dir)

    proc = subprocess.Popen(
        [sys.executable, "-m", "digest.cli", "-c", str(config_path), "send"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "DIGEST_SECRET_KEY": "Xr5Kq2Vw8Ln3Tz7Bc1Hm6Jd4Fg9Ps0YaQe7Wn2Rb5Mk-t3"},
    )

    def kill_on_third(count: int) -> None:
        if count == 3:
            # The server has the 3rd message; the sender dies before hearing "250".
            os.kill(proc.pid, signal.SIGKILL)

    smtp_server.on_message = kill_on_third
    assert proc.wait(timeout=60) == -signal.SIGKILL, proc.stderr.read().decode()
    smtp_server.on_message = None
    assert len(smtp_server.messages) == 3

    # Resumes the interrupted run; it finishes with one unknown row, which staff must judge: exit 3.
    assert main(["-c", str(config_path), "send"]) == 3

    received = Counter(rcpts[0] for _f, rcpts, _d in smtp_server.messages)
    assert set(received) == set(READERS), "someone was skipped"
    assert max(received.values()) == 1, f"someone got two copies: {received}"
    with session_factory(engine)() as s:
        statuses = Counter(s.scalars(select(Delivery.status)))
    assert statuses == {DeliveryStatus.SENT: 7, DeliveryStatus.UNKNOWN: 1}
