from __future__ import annotations

from pathlib import Path

import pytest

from digest.cli import main
from digest.config import Config, load_config
from digest.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "digest.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_embedded_defaults_when_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DIGEST_CONFIG", raising=False)
    config = load_config()
    assert config == Config()
    assert config.sources[0].kind == "sample"
    assert config.transport.kind == "outbox"


def test_full_file_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[newsletter]
name = "RS Weekly"
sender = "RS <news@rs.example>"
timezone = "Europe/Berlin"
[regions]
order = ["Africa", "Middle East"]
fallback = "Africa"
[regions.aliases]
"Middle East" = ["MENA"]
[[sources]]
kind = "rss"
url = "https://rs.example/feed"
[transport]
kind = "smtp"
[transport.smtp]
host = "mail.rs.example"
port = 587
security = "starttls"
[database]
url = "sqlite:///data/rs.db"
""",
    )
    config = load_config(path)
    assert config.newsletter.name == "RS Weekly"
    assert config.regions.aliases == {"Middle East": ("MENA",)}
    assert config.transport.smtp.port == 587
    assert config.sources[0].url == "https://rs.example/feed"
    assert config.list_id == "rs-weekly.newsletter.example.org"
    assert config.resolve_path("data/rs.db") == tmp_path / "data/rs.db"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("colour = 1", "digest.toml: colour: unknown key"),
        ("[newsletter]\nnmae = 'x'", "digest.toml: [newsletter] nmae: unknown key"),
        ("[transport]\nkind = 'pigeon'", "digest.toml: [transport] kind: must be one of outbox, smtp"),
        ("[transport.smtp]\nport = 'x'", "digest.toml: [transport.smtp] port: must be a whole number"),
        ("[newsletter]\ntimezone = 'Mars/Olympus'", "digest.toml: [newsletter] timezone: unknown time zone"),
        ("[schedule]\ntime = '25:00'", "digest.toml: [schedule] time: must be HH:MM"),
        (
            "[regions.aliases]\nAtlantis = ['x']",
            "digest.toml: [regions.aliases] Atlantis: is not in [regions] order",
        ),
        ("[[sources]]\nkind = 'rss'", "digest.toml: [[sources]] #1 url: a rss source needs url or path"),
        ("[newsletter\n", "digest.toml: not valid TOML"),
        # Values that would crash or forge headers later are refused when the file is read.
        ("[database]\nurl = 'nonsense'", "digest.toml: [database] url: 'nonsense' is not a database URL"),
        ("[database]\nurl = 'nosuchdb://x'", "digest.toml: [database] url: no database driver"),
        ("[collect]\nwindow_days = 800000", "digest.toml: [collect] window_days: must be at most 366"),
        ("[collect]\nfetch_timeout = nan", "digest.toml: [collect] fetch_timeout: must be a finite number"),
        ("[newsletter]\nsender = '@'", "digest.toml: [newsletter] sender: must be an e-mail address"),
        (
            '[newsletter]\nunsubscribe_mailto = "a@b.org>\\r\\nBcc: evil@x.com"',
            "digest.toml: [newsletter] unsubscribe_mailto: must be on one line",
        ),
        (
            "[newsletter]\nunsubscribe_mailto = 'a@b.org> x'",
            "digest.toml: [newsletter] unsubscribe_mailto: must be an e-mail",
        ),
        (
            "[newsletter]\nsender = 'RS <a@b.org> extra'",
            "digest.toml: [newsletter] sender: must be an e-mail address",
        ),
        ("[transport.smtp]\nport = 99999", "digest.toml: [transport.smtp] port: must be between 1 and 65535"),
    ],
)
def test_bad_values_name_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value).replace(str(path), "digest.toml")
    assert message.startswith(expected)
    assert "\n" not in message


def test_cli_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[transport]\nkind = 'pigeon'\n")
    assert main(["-c", str(path), "send", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "[transport] kind" in err and str(path) in err


def test_cli_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    assert main(["-c", str(missing), "send", "--dry-run"]) == 2
    assert f"{missing}: file not found" in capsys.readouterr().err


def test_sqlite_file_in_a_missing_folder_is_created(tmp_path: Path) -> None:
    from digest.db import make_engine, migrate

    engine = make_engine(f"sqlite:///{tmp_path / 'new' / 'folder' / 'digest.db'}")
    migrate(engine)
    assert (tmp_path / "new" / "folder" / "digest.db").is_file()
