"""The dashboard's views (digest/web/dashboard.py), called alone: each is a top-level function that
finds what it needs through `site()` and `g.staff`, so it runs in a bare request context of the
real app, without the route table, the log-in or the other views."""

from __future__ import annotations

import pytest
from flask import g
from staff_helpers import (  # noqa: F401  (cheap_password_hashes is an autouse fixture)
    EDITOR,
    ORIGIN,
    cheap_password_hashes,
    close_site,
    make_site,
    staff_config,
)

from digest.db import session_factory
from digest.web import dashboard, staff_store
from subscribers import store


@pytest.fixture
def site(tmp_path):
    s = make_site(staff_config(ORIGIN, tmp_path, outbox=True))
    with session_factory(s.engine).begin() as db:
        store.add_subscriber(db, "amina@example.net", regions={"Africa"}, source="cli")
        store.add_subscriber(db, "zoe@example.fr", source="cli")
    yield s
    close_site(s)


def test_the_dashboard_view_alone(site):
    with session_factory(site.engine)() as db:
        editor = staff_store.get_by_email(db, EDITOR)
    with site.app.test_request_context("/staff/"):
        g.staff = editor
        resp = dashboard.dashboard()
    assert resp.status_code == 200
    assert "schedule “weekly”" in resp.get_data(as_text=True)
    assert "style-src 'self'" in resp.headers["Content-Security-Policy"]


def test_the_charts_alone(site):
    with site.app.test_request_context("/staff/charts/regions.svg"):
        regions = dashboard.chart_regions()
        growth = dashboard.chart_growth()
    for resp in (regions, growth):
        assert resp.mimetype == "image/svg+xml" and b"<script" not in resp.get_data()
        assert resp.headers["Content-Security-Policy"] == "default-src 'none'; style-src 'unsafe-inline'"
    assert b">Africa</text>" in regions.get_data()
