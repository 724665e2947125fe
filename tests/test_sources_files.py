"""A folder of hand-curated articles (Markdown with front matter, JSON)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import seed_facts as seed

from digest.sources.files import markdown_paragraphs, read_folder

NY = ZoneInfo("America/New_York")


def test_markdown_and_json_articles(tmp_path):
    (tmp_path / "01-iraq.md").write_text(
        "---\n"
        "title: Iraq's quiet election\n"
        "url: https://example.org/iraq/?utm_source=x\n"
        "date: 2025-11-06T09:00:00-05:00\n"
        "region: Middle East\n"
        "image: https://example.org/iraq.jpg\n"
        "credit: REUTERS/Thaier Al-Sudani\n"
        "---\n"
        "# Heading\n\n"
        "By Staff\n\n"
        "Iraqis head to the polls on **November 11** for [parliamentary elections](https://x.org), "
        "with record-low turnout expected.\n\n"
        "More text.\n",
        "utf-8",
    )
    items = [
        {
            "title": "Sudan <war>",
            "url": "https://example.org/sudan/",
            "date": "2025-11-05",
            "categories": ["Africa"],
            "lede": "Plain lede & more.",
        },
        {
            "title": "Second",
            "url": "https://example.org/second/",
            "date": "2025-11-05T10:00:00Z",
            "section": "Europe",
            "body": "Photo credit: AP\n\nA body paragraph long enough to count as a lede.",
        },
    ]
    (tmp_path / "02-more.json").write_text(json.dumps(items), "utf-8")
    (tmp_path / "notes.txt").write_text("ignored")
    result = read_folder(tmp_path, name="Curated", tz=NY)
    assert result.warnings == []
    iraq, sudan, second = result.articles
    assert iraq.title == "Iraq's quiet election"
    assert iraq.categories == ("Middle East",)
    assert iraq.published == datetime(2025, 11, 6, 14, 0, tzinfo=UTC)
    assert iraq.lede.startswith("Iraqis head to the polls on November 11 for parliamentary elections, with")
    assert iraq.image_credit == "REUTERS/Thaier Al-Sudani"
    assert sudan.title == "Sudan <war>"  # plain text stays plain text
    assert sudan.lede == "Plain lede & more."
    assert sudan.published == datetime(2025, 11, 5, 0, 0, tzinfo=NY)  # a bare date: midnight, newsletter time
    assert second.categories == ("Europe",)
    assert second.image_credit == "AP"
    assert second.lede == "A body paragraph long enough to count as a lede."


def test_bad_files_are_warnings_naming_them(tmp_path):
    (tmp_path / "a.md").write_text("no front matter here", "utf-8")
    (tmp_path / "b.md").write_text("---\ntitle: [unclosed\n---\n", "utf-8")
    (tmp_path / "c.md").write_text(
        "---\ntitle: T\nurl: javascript:alert(1)\ndate: 2025-11-05\n---\n", "utf-8"
    )
    (tmp_path / "d.json").write_text("{broken", "utf-8")
    (tmp_path / "e.md").write_text("---\ntitle: T\nurl: https://example.org/e\n---\n", "utf-8")
    (tmp_path / "f.md").write_bytes(b"---\ntitle: \xff\n---\n")
    result = read_folder(tmp_path, name="Curated")
    assert result.articles == []
    assert len(result.warnings) == 6
    for name, warning in zip("abcdef", result.warnings, strict=True):
        assert warning.startswith(f"Curated: {name}.") or f"{name}.md" in warning, warning
    assert "url is missing or not an http(s) URL" in result.warnings[2]
    assert "date is missing" in result.warnings[4]


def test_missing_folder_is_a_warning(tmp_path):
    result = read_folder(tmp_path / "nope", name="Curated")
    assert result.warnings == [f"Curated: {tmp_path / 'nope'} is not a folder"]


def test_markdown_paragraphs_escape_html():
    assert markdown_paragraphs("A <script>x</script> [link](https://x) *em*") == (
        "<p>A &lt;script&gt;x&lt;/script&gt; link em</p>"
    )


def test_front_matter_author_format_label_and_caption(tmp_path):
    (tmp_path / "iran.md").write_text(
        "---\n"
        f'title: "{seed.IRAN_TITLE}"\n'
        "url: https://responsiblestatecraft.org/iran-azerbaijan-armenia/\n"
        "date: 2025-11-04T09:00:00-05:00\n"
        f'categories: ["{seed.IRAN_LABEL}"]\n'
        "author: [Trita Parsi, Jon Hoffman]\n"
        "image: https://responsiblestatecraft.org/iran.jpg\n"
        "caption: Armenian positions near Nagorno-Karabakh\n"
        f'credit: "{seed.IRAN_CREDIT}"\n'
        "---\n"
        f"{seed.IRAN_LEDE}\n",
        "utf-8",
    )
    (tmp_path / "sudan.json").write_text(
        json.dumps({"title": seed.SUDAN_TITLE, "url": "https://e.org/sudan/", "date": "2025-11-05",
                    "section": "Africa", "format": "Reporting", "author": "Jane Doe", "image": "https://e.org/s.jpg"}),
        "utf-8",
    )  # fmt: skip
    result = read_folder(tmp_path, name="Curated", tz=NY)
    assert result.warnings == []
    iran, sudan = result.articles
    assert iran.categories == (seed.IRAN_LABEL,) and iran.format_label == ""  # collect finds "Analysis"
    assert iran.author == "Trita Parsi and Jon Hoffman"
    assert iran.image_alt == "Armenian positions near Nagorno-Karabakh"
    assert iran.image_credit == seed.IRAN_CREDIT
    assert (sudan.format_label, sudan.author, sudan.image_alt) == ("Reporting", "Jane Doe", "")


def test_a_file_over_the_cap_is_a_warning_naming_it(tmp_path):
    (tmp_path / "big.json").write_text(json.dumps([{"title": "x" * 100}] * 100), "utf-8")
    (tmp_path / "ok.md").write_text("---\ntitle: T\nurl: https://e.org/t\ndate: 2025-11-05\n---\n", "utf-8")
    result = read_folder(tmp_path, name="Curated", max_bytes=1_000)
    assert [a.title for a in result.articles] == ["T"]
    [warning] = result.warnings
    assert warning.startswith(f"Curated: {tmp_path / 'big.json'} is ") and warning.endswith(
        "over the 1,000-byte cap ([collect] fetch_max_bytes); skipped"
    )
