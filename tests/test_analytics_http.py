"""Per-story click counts through HTTP against the real app, on a real SQLite file.

A sent issue's links go through /r/<token>; a scanner fetching every link (the hidden one too)
within 2 s is counted as filtered, a person following one link later once, HEAD is filtered,
a changed token is 404, the redirect tells nothing about the reader, counts survive a restart.
"""

from __future__ import annotations

import http.client
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from analytics_helpers import (
    BROWSER,
    DISGUISED_SCANNER,
    LINK_SECRET,
    Clock,
    config_for,
    links_in,
    send_to,
    serving,
)
from conftest import free_port

from digest.clicks import click_report
from digest.db import make_engine, session_factory

ALL_REGIONS = "all@example.org"
SAME_VARIANT = "also-all@example.org"
ONE_REGION = "one@example.org"


def fetch(url: str, *, method: str = "GET", agent: str = BROWSER) -> http.client.HTTPResponse:
    """One request, redirects not followed (a scanner or browser would then go to the article)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request(
        method, parts.path + (f"?{parts.query}" if parts.query else ""), headers={"User-Agent": agent}
    )
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp


@pytest.fixture(autouse=True)
def secret_key(monkeypatch) -> None:
    """The send signs links with the same key the web app checks them with."""
    monkeypatch.setenv("DIGEST_SECRET_KEY", LINK_SECRET)


@pytest.fixture
def sent(tmp_path):
    port = free_port()
    config = config_for(f"http://127.0.0.1:{port}", tmp_path)
    issue = send_to(
        config, tmp_path, {ALL_REGIONS: None, SAME_VARIANT: None, ONE_REGION: {config.regions.order[0]}}
    )
    first_region = config.regions.order[0]
    return issue, port, first_region


def report(sent_issue) -> dict:
    engine = make_engine(f"sqlite:///{sent_issue.db_path}")
    try:
        with session_factory(engine)() as s:
            return click_report(s, sent_issue.run_id)
    finally:
        engine.dispose()


def test_story_links_are_per_variant_and_never_per_reader(sent) -> None:
    issue, port, _ = sent
    base = f"http://127.0.0.1:{port}"
    html = issue.html(ALL_REGIONS)
    links = links_in(html, base)
    assert len(links) > 3
    # Two readers of one variant get byte-identical story links: nothing in them names a reader.
    assert links_in(issue.html(SAME_VARIANT), base) == links
    assert set(links_in(issue.html(ONE_REGION), base)).isdisjoint(links)  # another variant
    assert "https://" not in "".join(links)  # no article URL in the token: it cannot be pointed elsewhere
    # The text part links through us too, but carries no hidden link (it could not be hidden).
    text_links = set(links_in(issue.text(ALL_REGIONS), base))
    assert text_links and text_links < set(links)
    hidden = [u for u in links if u.rsplit("/", 1)[1].split(".")[0].endswith("-h")]
    assert len(hidden) == 1 and hidden[0] not in text_links
    assert f'href="{hidden[0]}" tabindex="-1" aria-hidden="true" style="display:none' in html


def test_a_scanner_is_filtered_and_a_person_counted_once(sent) -> None:
    issue, port, _ = sent
    clock = Clock()
    with serving(issue.config, issue.db_path, clock, port) as (base, _app, _engine):
        links = links_in(issue.html(ALL_REGIONS), base)
        stories = [u for u in links if not u.split(".")[-2].endswith("-h")]
        hidden = [u for u in links if u not in stories]
        # The gateway fetches every link of the message, hidden one last, within 2 s.
        for url in stories + hidden:
            assert fetch(url, agent=DISGUISED_SCANNER).status in (200, 302)
            clock.advance(2 / len(links))
        clock.advance(3600)
        chosen = stories[1]
        answer = fetch(chosen)  # a person, an hour later, follows one story...
        assert answer.status == 302
        fetch(chosen)  # ...and opens it again: still one reader's click
    counts = report(issue)
    assert counts["human"] == 1
    assert counts["filtered"] == len(stories)
    target = answer.headers["Location"]
    clicked = [s for s in counts["stories"] if target.startswith(s["url"])]
    assert [(s["human"], s["filtered"]) for s in clicked] == [(1, 1)]
    assert counts["stories"][0]["url"] == clicked[0]["url"]  # the most-clicked story comes first


def test_head_and_known_scanner_agents_are_filtered(sent) -> None:
    issue, port, _ = sent
    clock = Clock()
    with serving(issue.config, issue.db_path, clock, port) as (base, _app, _engine):
        story = links_in(issue.text(ALL_REGIONS), base)[0]
        assert fetch(story, method="HEAD").status == 302
        clock.advance(60)
        assert fetch(story, agent="Mozilla/5.0 (compatible; BingPreview/1.0b)").status == 302
        assert fetch(story, agent="").status == 302
    counts = report(issue)
    assert (counts["human"], counts["filtered"]) == (0, 3)


def test_a_changed_token_is_404_and_nothing_redirects_elsewhere(sent) -> None:
    issue, port, _ = sent
    with serving(issue.config, issue.db_path, Clock(), port) as (base, _app, _engine):
        story = links_in(issue.text(ALL_REGIONS), base)[0]
        payload, signature = story.rsplit(".", 1)
        run_variant, index = payload.rsplit("-", 1)
        swapped = "A" if signature[0] != "A" else "B"
        assert fetch(f"{payload}.{swapped}{signature[1:]}").status == 404  # signature changed
        assert fetch(f"{run_variant}-{int(index) + 1}.{signature}").status == 404  # story changed
        assert fetch(f"{base}/r/https%3A%2F%2Fevil.example").status == 404
        assert fetch(f"{base}/r/x" * 50).status == 404
        answer = fetch(f"{story}?url=https://evil.example/&next=//evil.example")
        assert answer.status == 302 and "evil" not in answer.headers["Location"]
    assert report(issue)["human"] == 1


def test_the_redirect_never_reveals_the_reader(sent) -> None:
    issue, port, _ = sent
    with serving(issue.config, issue.db_path, Clock(), port) as (base, _app, _engine):
        story = links_in(issue.text(ALL_REGIONS), base)[0]
        answer = fetch(story)
    location = answer.headers["Location"]
    assert answer.status == 302
    assert answer.headers.get("Set-Cookie") is None  # nothing to recognise the reader by later
    query = parse_qs(urlsplit(location).query)
    assert query["utm_source"] == ["newsletter"]
    assert query["utm_campaign"][0].startswith("digest-20")  # the issue's date, no one's id
    for reader in (ALL_REGIONS, SAME_VARIANT, ONE_REGION):
        assert reader not in location and reader.split("@")[0] not in location
    assert answer.headers["Referrer-Policy"] == "no-referrer"


def test_counts_survive_a_restart(sent) -> None:
    issue, port, first_region = sent
    clock = Clock()
    with serving(issue.config, issue.db_path, clock, port) as (base, _app, _engine):
        story = links_in(issue.text(ONE_REGION), base)[0]
        assert fetch(story).status == 302
    # The process stopped; a new one on the same database file still reports the click...
    with serving(issue.config, issue.db_path, clock, port) as (base, _app, _engine):
        clock.advance(120)
        assert fetch(story, agent=BROWSER + " second").status == 302
    counts = report(issue)
    assert counts["human"] == 2
    # ...in its region and in the one-region variant, per 100 recipients of that variant.
    region = next(r for r in counts["regions"] if r["region"] == first_region)
    assert region["human"] == 2 and region["recipients"] == 3
    variant = next(v for v in counts["variants"] if v["regions"] == [first_region])
    assert variant["recipients"] == 1 and variant["per_100_recipients"] == 200.0


def test_runs_show_json_carries_the_clicks(sent, capsys, monkeypatch) -> None:
    issue, port, _ = sent
    with serving(issue.config, issue.db_path, Clock(), port) as (base, _app, _engine):
        fetch(links_in(issue.text(ALL_REGIONS), base)[0])
    from digest.cli import main

    config_file = issue.db_path.parent / "digest.toml"
    config_file.write_text(
        f'[newsletter]\nbase_url = "http://127.0.0.1:{port}"\n[database]\nurl = "sqlite:///{issue.db_path}"\n',
        encoding="utf-8",
    )
    assert main(["--config", str(config_file), "runs", "show", issue.run_id, "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    clicks = record["clicks"]
    assert clicks["human"] == 1
    assert set(clicks["stories"][0]) == {"url", "title", "region", "human", "filtered"}
    assert {v["recipients"] for v in clicks["variants"]} == {2, 1}
    assert main(["--config", str(config_file), "runs", "show", issue.run_id]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "Clicks: 1 by people, 0 filtered as mail scanners'" in text
    assert f"1 {clicks['stories'][0]['title'][:20]}" in text


def test_analytics_off_keeps_direct_links(tmp_path) -> None:
    port = free_port()
    config = config_for(f"http://127.0.0.1:{port}", tmp_path, enabled=False)
    issue = send_to(config, tmp_path, {ALL_REGIONS: None})
    html = issue.html(ALL_REGIONS)
    assert "/r/" not in html and "/o/" not in html
    assert 'href="https://' in html


def test_opens_are_off_by_default_and_on_a_pixel_per_variant(sent, tmp_path) -> None:
    issue, port, _ = sent
    assert "/o/" not in issue.html(ALL_REGIONS)
    assert issue.config.analytics.opens is False
    config = config_for(f"http://127.0.0.1:{port}", tmp_path / "opens", opens=True)
    (tmp_path / "opens").mkdir()
    with_opens = send_to(config, tmp_path / "opens", {ALL_REGIONS: None, SAME_VARIANT: None})
    base = f"http://127.0.0.1:{port}"
    pixels = links_in(with_opens.html(ALL_REGIONS), base, "/o/")
    assert len(pixels) == 1 and links_in(with_opens.html(SAME_VARIANT), base, "/o/") == pixels
    assert "/o/" not in with_opens.text(ALL_REGIONS)
    clock = Clock()
    with serving(config, with_opens.db_path, clock, port):
        answer = fetch(pixels[0])
        assert answer.status == 200 and answer.headers["Content-Type"] == "image/gif"
        clock.advance(60)
        fetch(pixels[0], agent=DISGUISED_SCANNER, method="HEAD")
    opens = report(with_opens)["opens"]
    assert opens == {"label": "opens (includes privacy-proxy loads)", "counted": 1, "filtered": 1}
