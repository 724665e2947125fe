"""Shared helpers and constants for the subscriber, web and token tests.

The database fixtures live in `subscriber_fixtures` (load them with
`pytest_plugins = ("subscriber_fixtures",)`).
"""

from __future__ import annotations

import json
import os
import re
import socket

import pytest
from shared_data import TESTDATA
from sqlalchemy import Engine, event

from digest.db import make_engine

POSTGRES_URL = os.environ.get("DIGEST_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
EMAIL_CASES = TESTDATA / "email_addresses/python_email_validator"
REGIONS = ("Middle East", "Africa", "Asia-Pacific", "Europe", "Americas", "Global")
TEST_SECRET = "test-secret-not-for-production"


def engine_in_schema(url: str, schema: str) -> Engine:
    """An engine on `url` whose every connection has `schema` as its search_path."""
    engine = make_engine(url)

    @event.listens_for(engine, "connect")
    def _search_path(dbapi_conn, _record):  # type: ignore[no-untyped-def]
        cur = dbapi_conn.cursor()
        cur.execute(f'SET search_path TO "{schema}"')
        cur.close()
        dbapi_conn.commit()

    return engine


def postgres_answers(host: str = "127.0.0.1", port: int = 5432) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _email_cases() -> dict | None:
    path = EMAIL_CASES / "email_validator_syntax_cases.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def cases(group: str) -> list:
    """pytest params for one group of the python-email-validator syntax cases.

    When ../shared/testdata is absent the list holds one skipped param saying so.
    """
    data = _email_cases()
    if data is None:
        reason = "shared test data ../shared/testdata/email_addresses is absent"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason))]
    for g in data["groups"]:
        if g["test_function"] == group:
            return [pytest.param(c, id=f"{group}-{i}") for i, c in enumerate(g["cases"])]
    raise KeyError(group)


CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
CONFIRM_RE = re.compile(r"(https?://\S+/confirm/[A-Za-z0-9_.\-]+)")


def csrf_from(html: str) -> str:
    m = CSRF_RE.search(html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def confirm_link(message) -> str:
    """The confirm URL in a confirmation EmailMessage."""
    body = message.get_body(("plain",)).get_content()
    m = CONFIRM_RE.search(body)
    assert m, f"no confirm link in: {body!r}"
    return m.group(1)
