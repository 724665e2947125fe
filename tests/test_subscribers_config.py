"""The [web] section of digest.toml."""

from __future__ import annotations

import pytest

from digest.config import WebConfig, config_from_dict
from digest.errors import ConfigError


def test_defaults():
    web = config_from_dict({}).web
    assert web == WebConfig()
    assert (web.host, web.port, web.rate_window_minutes) == ("127.0.0.1", 8080, 60)
    assert (web.confirm_limit_per_mailbox, web.confirm_window_hours, web.limiter_url) == (2, 24, "")


def test_values_are_read():
    web = config_from_dict({"web": {"port": 9000, "primary_color": "#000", "trusted_proxies": 1}}).web
    assert (web.port, web.primary_color, web.trusted_proxies) == (9000, "#000", 1)


@pytest.mark.parametrize(
    "web,key",
    [
        ({"primary_color": "red; } body { display:none"}, "[web] primary_color"),
        ({"accent_color": "#12345"}, "[web] accent_color"),
        ({"port": 70000}, "[web] port"),
        ({"confirm_limit_per_mailbox": 0}, "[web] confirm_limit_per_mailbox"),
        ({"confirm_window_hours": 0}, "[web] confirm_window_hours"),
        ({"limiter_url": "localhost:6379"}, "[web] limiter_url"),
        ({"confirm_limit_per_address": 3}, "[web] confirm_limit_per_address: was replaced by"),
        ({"trusted_proxies": -1}, "[web] trusted_proxies"),
        ({"colour": "#fff"}, "[web] colour"),
        ({"port": "80"}, "[web] port"),
    ],
)
def test_bad_values_name_the_key(web, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict({"web": web})
