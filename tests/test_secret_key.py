"""Issue 19, finding 4: the development key and weak keys are refused where they would be
public. `--dev-secret` only for a demo on this machine (outbox, http, loopback); a
DIGEST_SECRET_KEY must carry at least 32 bytes of entropy; the error names what to set."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

import pytest
from flask import Flask

from digest import cli
from digest.config import config_from_dict
from digest.db import make_engine, migrate
from digest.errors import ConfigError
from digest.secret_key import HOW_TO_MAKE, check_secret_key, entropy_bits
from digest.web import create_app
from subscribers.tokens import DEV_SECRET

DEMO = '[newsletter]\nbase_url = "http://127.0.0.1:8080"\n[database]\nurl = "sqlite:///s.db"\n'


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list:
    """`digest serve` and `digest run` reach the point of serving, without binding a port."""
    calls: list = []
    monkeypatch.setattr(Flask, "run", lambda self, **kw: calls.append(kw))
    monkeypatch.delenv("DIGEST_SECRET_KEY", raising=False)
    return calls


def _site(tmp_path: Path, text: str) -> str:
    path = tmp_path / "digest.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(
    ("toml", "host", "named"),
    [
        (
            DEMO + '[transport]\nkind = "smtp"\n[transport.smtp]\nhost = "127.0.0.1"\n',
            None,
            "[transport] kind",
        ),
        (DEMO.replace("http://127.0.0.1:8080", "https://news.example.org"), None, "https"),
        (DEMO.replace("http://127.0.0.1:8080", "http://news.example.org"), None, "loopback"),
        (DEMO, "0.0.0.0", "0.0.0.0"),
    ],
)
@pytest.mark.parametrize("command", ["serve", "run"])
def test_dev_secret_refused_outside_a_local_demo(tmp_path, served, capsys, toml, host, named, command):
    args = ["-c", _site(tmp_path, toml), command, "--dev-secret"] + (["--host", host] if host else [])
    assert cli.main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "--dev-secret" in err and named in err and "DIGEST_SECRET_KEY" in err and "token_urlsafe" in err
    assert served == []


def test_dev_secret_still_opens_the_demo(tmp_path, served, capsys):
    """`make demo` prints `serve --dev-secret` on its outbox config: that keeps working."""
    assert cli.main(["-c", _site(tmp_path, DEMO), "serve", "--dev-secret"]) == 0
    assert served and served[0]["host"] == "127.0.0.1"
    assert "public key" in capsys.readouterr().err


@pytest.mark.parametrize(
    "weak",
    ["a", "secret", "a" * 200, "ab" * 100, "correct-horse", DEV_SECRET, secrets.token_hex(16)],
    # Named, not shown: a random value in a test id differs between pytest-xdist's workers.
    ids=["letter", "word", "letter-repeated", "pair-repeated", "passphrase", "dev-secret", "hex-128-bits"],
)
def test_weak_secret_keys_are_refused(tmp_path, weak, monkeypatch):
    monkeypatch.setenv("DIGEST_SECRET_KEY", weak)
    engine = make_engine(f"sqlite:///{tmp_path / 'd.db'}")
    migrate(engine)
    with pytest.raises(ConfigError, match="DIGEST_SECRET_KEY") as caught:
        create_app(config_from_dict({}), engine, send_mail=lambda _m: None)
    assert HOW_TO_MAKE in str(caught.value)


def test_weak_secret_key_stops_a_send(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DIGEST_SECRET_KEY", "a")
    site = _site(tmp_path, DEMO + '[transport]\nkind = "outbox"\n')
    assert cli.main(["-c", site, "send"]) == 2
    assert "DIGEST_SECRET_KEY" in capsys.readouterr().err


@pytest.mark.parametrize(
    "strong",
    [
        secrets.token_urlsafe(48),
        secrets.token_urlsafe(32),
        secrets.token_hex(32),
        base64.b64encode(secrets.token_bytes(32)).decode(),  # openssl rand -base64 32
    ],
    ids=["token_urlsafe-48", "token_urlsafe-32", "token_hex-32", "base64-32"],
)
def test_generated_keys_pass(strong):
    assert check_secret_key(strong) == strong
    assert entropy_bits(strong) >= 256
