"""Section labels as sites write them ("Analysis | Middle East"), and articles no region takes."""

from __future__ import annotations

import argparse
import io
import json

import pytest
import seed_facts as seed
from collect_fixtures import NOW, article, make_config, rss, rss_item
from rich.console import Console

from digest.build import build_digest
from digest.collect import LeftOut, RegionMap, clean_articles, collect
from digest.commands import collect as collect_command
from digest.config import DEFAULT_REGION_ORDER, Config
from digest.errors import ConfigError
from digest.models import Teaser


def regions(**kw: object) -> RegionMap:
    return RegionMap.from_config(make_config(regions=kw) if kw else Config())


@pytest.mark.parametrize(
    "label",
    [
        seed.IRAN_LABEL,  # as the seed page and RebelMouse feeds write it
        "Analysis / Middle East",
        "Analysis - Middle East",
        "Analysis – Middle East",
        "Analysis > Middle East",
        "ANALYSIS|middle-east",
        "Middle East | Analysis",  # the format on the other side
        "News > World > Middle East",  # a breadcrumb: the deepest level that is a region
    ],
)
def test_format_and_section_label_maps_to_the_region(label):
    r = regions()
    assert r.region_for([label]) == "Middle East", label
    expected = "News" if label.startswith("News") else "Analysis"
    assert r.format_for([label]) == expected


def test_separators_do_not_split_names_written_with_them():
    r = RegionMap(["Middle East", "Asia-Pacific", "Israel/Palestine"], {})
    assert r.region_for(["Asia-Pacific"]) == "Asia-Pacific"
    assert r.region_for(["Asia - Pacific"]) == "Asia-Pacific"  # the whole label first
    assert r.region_for(["Israel/Palestine"]) == "Israel/Palestine"
    assert r.region_for(["Opinion | Asia-Pacific"]) == "Asia-Pacific"
    label = r.label("Opinion | Asia-Pacific")
    assert (label.format, label.sections) == ("Opinion", ("Asia-Pacific",))


@pytest.mark.parametrize(
    "known", ["Analysis", "Reporting", "News", "Opinion", "Commentary", "Interview", "Review"]
)
def test_known_formats_are_never_regions_and_are_found_alone_too(known):
    r = regions(fallback="")
    assert r.region_for([known]) is None
    assert r.format_for([known, "Africa"]) == known  # WordPress style: two categories
    assert r.region_for([f"{known} | Africa"]) == "Africa"
    assert r.region_for([f"Africa / {known.lower()}"]) == "Africa"


def test_ignore_applies_to_every_spelling_and_the_fallback_never_publishes_it():
    r = regions(ignore=["QIOSK"], fallback="Global")
    for cats in (
        ["QIOSK"],
        ["News | QIOSK"],
        ["QIOSK / Middle East"],
        ["Reporting > qiosk"],
        ["Analysis", "Qiosk"],
    ):
        assert r.ignored(cats) == "QIOSK", cats
    assert r.ignored([seed.IRAN_LABEL]) is None
    # The whole label can be ignored as written, and a format can be left out with it.
    assert regions(ignore=["Analysis | Middle East"]).ignored([seed.IRAN_LABEL]) == "Analysis | Middle East"
    assert regions(ignore=["Opinion"]).ignored(["Opinion | Africa"]) == "Opinion"

    arts = [
        article(guid="q", url="https://e.org/q", title="QIOSK briefs", categories=("News | QIOSK",)),
        article(guid="s", url="https://e.org/s", title="Sports", categories=("Analysis | Sports",)),
    ]
    config = make_config(regions={"ignore": ["QIOSK"], "fallback": "Global"})
    result = clean_articles(arts, config, NOW)
    assert [(a.title, a.region) for a in result.articles] == [("Sports", "Global")]
    assert result.left_out == [LeftOut("QIOSK briefs", "https://e.org/q", "in ignored section 'QIOSK'")]


def test_the_seed_label_keeps_its_format_on_the_article_and_the_teaser():
    a = article(
        title=seed.IRAN_TITLE, lede=seed.IRAN_LEDE, categories=(seed.IRAN_LABEL,), author="By Jane  Doe"
    )
    [cleaned] = clean_articles([a], make_config(), NOW).articles
    assert (cleaned.region, cleaned.format_label, cleaned.author) == ("Middle East", "Analysis", "Jane Doe")
    digest = build_digest([cleaned], newsletter="N", issue_date=NOW.date(), region_order=DEFAULT_REGION_ORDER)
    teaser = digest.sections[0].teasers[0]
    assert (teaser.region, teaser.format_label, teaser.byline) == ("Middle East", "Analysis", "Jane Doe")
    # No alt in the source: an empty one, never the headline again.
    assert Teaser.from_article(cleaned, "Middle East").image_alt == ""
    # A format the source named itself wins over the one found in the categories.
    [own] = clean_articles(
        [article(categories=(seed.IRAN_LABEL,), format_label="Reporting")], make_config(), NOW
    ).articles
    assert own.format_label == "Reporting"


def test_formats_are_configurable_and_may_not_be_regions():
    r = RegionMap.from_config(make_config(regions={"formats": ["Dispatch"]}))
    assert (
        r.format_for(["Dispatch | Europe"]) == "Dispatch" and r.region_for(["Dispatch | Europe"]) == "Europe"
    )
    assert r.format_for(["Analysis | Europe"]) == ""  # no longer a known format
    with pytest.raises(
        ConfigError, match=r"\[regions\] formats: 'Mideast' is also a name of the region 'Middle East'"
    ):
        make_config(regions={"formats": ["Analysis", "Mideast"]})


def test_a_left_out_article_keeps_its_url_and_a_poorer_copy_never_takes_its_place():
    """The issue's case: a bare duplicate (lede "dup", no photo, no credit) became the top story."""
    full = {
        "url": "https://responsiblestatecraft.org/trump-xi-china-policy/",
        "title": seed.TRUMP_XI_TITLE,
        "lede": "President Donald Trump and Chinese President Xi Jinping emerged with a framework.",
        "image_url": "https://responsiblestatecraft.org/wp-content/uploads/trump-xi.jpg",
        "image_credit": seed.TRUMP_XI_CREDIT,
    }
    bare = {"title": seed.TRUMP_XI_TITLE, "lede": "dup", "categories": ("Asia-Pacific",), "source": "B"}
    # 1. The first copy is in an ignored section: the bare copy of its URL stays out too.
    arts = [
        article(guid="1", categories=("QIOSK",), source="A", **full),
        article(guid="2", url=full["url"] + "?utm_source=partner", **bare),
    ]
    result = clean_articles(arts, make_config(regions={"ignore": ["QIOSK"]}), NOW)
    assert result.articles == []
    assert [why for _, why in result.dropped] == ["duplicate", "in ignored section 'QIOSK'"]
    # 2. The first copy names no known region: the merged article is published with its own
    #    text, photo and credit, and the region the other copy knew.
    arts[0] = article(guid="1", categories=("Trade",), source="A", **full)
    [kept] = clean_articles(arts, make_config(), NOW).articles
    assert (kept.lede, kept.image_url, kept.region) == (full["lede"], full["image_url"], "Asia-Pacific")
    assert kept.image_credit == seed.TRUMP_XI_CREDIT
    digest = build_digest([kept], newsletter="N", issue_date=NOW.date(), region_order=DEFAULT_REGION_ORDER)
    assert digest.lead is not None and digest.lead.lede != "dup"
    # 3. The same GUID in the same feed with another URL: dropped, lending nothing.
    arts = [
        article(guid="7", categories=("Trade",), source="A", **full),
        article(guid="7", url="https://responsiblestatecraft.org/other/", **{**bare, "source": "A"}),
    ]
    result = clean_articles(arts, make_config(), NOW)
    assert result.articles == []
    assert [item.url for item in result.left_out] == [full["url"]]


def test_left_out_articles_are_data_for_the_run_record():
    arts = [
        article(guid="1", url="https://e.org/1", title="Sports", categories=("Analysis | Sports",)),
        article(guid="2", url="https://e.org/2", title="Old", published=NOW.replace(year=2024)),
        article(guid="3", url="https://e.org/1", title="Sports again", categories=("Sports",)),  # a copy
        article(guid="4", url="https://e.org/4", title="Briefs", categories=("QIOSK",)),
    ]
    result = clean_articles(arts, make_config(regions={"ignore": ["QIOSK"]}), NOW)
    assert result.left_out == [
        ("Sports", "https://e.org/1", "no known region in ['Analysis | Sports', 'Sports']"),
        ("Briefs", "https://e.org/4", "in ignored section 'QIOSK'"),
    ]
    assert [item.ignored for item in result.left_out] == [False, True]
    assert json.dumps([item._asdict() for item in result.left_out])  # stored as JSON on the run


def _collect_output(tmp_path, *argv: str, toml: str = "") -> str:
    (tmp_path / "digest.toml").write_text(f'{toml}\n[[sources]]\nkind = "sample"\nname = "Sample"\n', "utf-8")
    parser = argparse.ArgumentParser()
    parser.add_argument("--config")
    collect_command.register(parser.add_subparsers())
    args = parser.parse_args(["--config", str(tmp_path / "digest.toml"), "collect", *argv])
    out = io.StringIO()
    assert collect_command.run(args, Console(file=out, width=200)) == 0
    return out.getvalue()


def test_digest_collect_warns_of_articles_no_region_took_without_being_asked(tmp_path):
    text = _collect_output(tmp_path, "--now", "2025-11-07T09:00:00-05:00")
    assert "warning: 1 article of the week fit no region and was left out" in text
    assert "Sample: QIOSK briefs of the week (no known region in ['QIOSK'])" in text
    assert "https://responsiblestatecraft.org/sample-qiosk-briefs/" in text
    assert "outside the week window" not in text  # --dropped lists those
    # Ignored on purpose: a note, not a warning.
    text = _collect_output(
        tmp_path, "--now", "2025-11-07T09:00:00-05:00", toml='[regions]\nignore = ["QIOSK"]\n'
    )
    assert "warning: 1 article" not in text
    assert "note: 1 article left out by [regions] ignore:" in text
    data = json.loads(_collect_output(tmp_path, "--json", "--now", "2025-11-07T09:00:00-05:00"))
    assert data["left_out"] == [
        {
            "title": "Sample: QIOSK briefs of the week",
            "url": "https://responsiblestatecraft.org/sample-qiosk-briefs/",
            "reason": "no known region in ['QIOSK']",
        }
    ]
    iran = next(a for r in data["regions"] for a in r["articles"] if a["title"] == seed.IRAN_TITLE)
    assert (iran["region"], iran["format_label"]) == ("Middle East", "Analysis")


def test_digest_preview_and_send_print_the_same_warning(tmp_path, capsys, monkeypatch):
    from digest.cli import main

    monkeypatch.chdir(tmp_path)
    toml = tmp_path / "digest.toml"
    toml.write_text(
        '[database]\nurl = "sqlite:///digest.db"\n[transport]\nkind = "outbox"\n'
        f'[web]\narchive_dir = "{tmp_path / "archive"}"\n',
        "utf-8",
    )
    assert main(["-c", str(toml), "preview", "--out", str(tmp_path / "p.html"), "--no-screenshot"]) == 0
    out = capsys.readouterr().out
    assert "1 article of the week fit no region and was left out" in out and "QIOSK briefs" in out
    assert main(["-c", str(toml), "send", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "1 article of the week fit no region and was left out" in out and "QIOSK briefs" in out


def test_collect_through_feeds_with_rebelmouse_labels(tmp_path):
    items = rss_item("iran", categories=(seed.IRAN_LABEL,)) + rss_item("qiosk", categories=("News | QIOSK",))
    (tmp_path / "feed.xml").write_bytes(rss(items))
    config = make_config(
        tmp_path,
        sources=[{"kind": "rss", "name": "RS", "path": "feed.xml"}],
        regions={"ignore": ["QIOSK"], "fallback": "Global"},
    )
    result = collect(config, NOW)
    assert [(a.title, a.region, a.format_label) for a in result.articles] == [
        ("iran", "Middle East", "Analysis")
    ]
    assert [item.title for item in result.left_out] == ["qiosk"]
