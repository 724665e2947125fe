"""`[bounces]` in digest.toml: defaults, and bad values named by file and key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from digest.config import BouncesConfig, load_config
from digest.errors import ConfigError

README = Path(__file__).resolve().parents[1] / "README.md"


def test_defaults_and_a_full_section(tmp_path: Path) -> None:
    assert BouncesConfig().soft_limit == 3 and BouncesConfig().soft_window_days == 30
    path = tmp_path / "digest.toml"
    path.write_text(
        "[bounces]\nsoft_limit = 5\nsoft_window_days = 14\nmailbox = 'imaps://mail.example.org/Bounces'\n"
        "username = 'bounces'\nses_topic_arns = ['arn:aws:sns:us-east-1:1:ses']\n",
        encoding="utf-8",
    )
    b = load_config(path).bounces
    assert (b.soft_limit, b.soft_window_days, b.mailbox, b.ses_topic_arns) == (
        5,
        14,
        "imaps://mail.example.org/Bounces",
        ("arn:aws:sns:us-east-1:1:ses",),
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("soft_limit = 0", "[bounces] soft_limit: must be a positive number"),
        ("soft_window_days = -1", "[bounces] soft_window_days: must be a positive number"),
        ("webhook_max_age_seconds = 0", "[bounces] webhook_max_age_seconds: must be a positive number"),
        ("mailbox = 'pop3://plain.example.org'", "[bounces] mailbox: 'pop3://plain.example.org' is not"),
        ("mailbox = 'imap://plain.example.org'", "[bounces] mailbox: 'imap://plain.example.org' is not"),
        ("mailbox = '/var/mail/bounces'", "[bounces] mailbox: '/var/mail/bounces' is not"),
        ("timeout = 0", "[bounces] timeout: must be a positive number"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "digest.toml"
    path.write_text(f"[bounces]\n{text}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).replace(str(path), "digest.toml").startswith(f"digest.toml: {expected}")


def test_every_key_is_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    for f in dataclasses.fields(BouncesConfig):
        assert f"`[bounces] {f.name}`" in text, f.name
    for var in (
        "DIGEST_BOUNCES_PASSWORD",
        "DIGEST_SENDGRID_WEBHOOK_KEY",
        "DIGEST_MAILGUN_WEBHOOK_SIGNING_KEY",
        "DIGEST_POSTMARK_WEBHOOK_USER",
        "DIGEST_POSTMARK_WEBHOOK_PASSWORD",
        "DIGEST_RESEND_WEBHOOK_SECRET",
    ):
        assert var in text, var
