"""The dashboard's charts as SVG, drawn by pygal on the server.

Why pygal and SVG files: the console's pages allow no scripts (CSP `default-src 'none'`), so a
JavaScript charting library would need the policy loosened. pygal draws plain SVG in Python
(no numpy, unlike matplotlib). Its SVG carries its own <style>, which the pages' CSP would block
if the SVG were inlined; served as an image of its own, it is styled by that style and still
cannot run anything (pygal's tooltip script is switched off, and <img> never runs SVG scripts).
Each chart has its numbers as a table beside it, for screen readers and for copying.
"""

from __future__ import annotations

from typing import Any

import pygal
from pygal.etree import etree
from pygal.graph.graph import Graph
from pygal.style import Style

from digest.web.console import Week


def _style(primary: str, accent: str) -> Style:
    # Text colours reach 4.5:1 on white (WCAG AA); the series use the newsletter's colours.
    return Style(
        background="#ffffff",
        plot_background="#ffffff",
        foreground="#1b1b1b",
        foreground_strong="#1b1b1b",
        foreground_subtle="#595959",
        colors=(primary, accent, "#4a4a4a"),
        font_family="-apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif",
        label_font_size=13,
        major_label_font_size=13,
        legend_font_size=13,
        title_font_size=16,
        value_font_size=12,
    )


def _config(primary: str, accent: str, **options: object) -> dict[str, object]:
    return {
        "style": _style(primary, accent),
        "js": [],  # no tooltip script: the page allows none, and <img> would not run it
        "disable_xml_declaration": False,
        "width": 640,
        "height": 320,
        "legend_at_bottom": True,
        "print_values": False,
        **options,
    }


def regions_chart(chose: dict[str, int], everything: int, *, primary: str, accent: str) -> bytes:
    """Readers per region: those who chose it, stacked on those who get every region."""
    chart = pygal.HorizontalStackedBar(**_config(primary, accent, title="Readers per region"))
    # Horizontal bars are drawn bottom up: reversed, the first region is on top.
    chart.x_labels = list(reversed(chose))
    chart.add("Chose the region", list(reversed(chose.values())))
    chart.add("Get every region", [everything] * len(chose))
    return _svg(chart)


def growth_chart(weeks: list[Week], *, primary: str, accent: str) -> bytes:
    """Readers who joined and left, week by week."""
    chart = pygal.Bar(**_config(primary, accent, title="Joined and left, week by week", x_label_rotation=0))
    chart.x_labels = [f"{w.start:%d %b}" for w in weeks]
    chart.x_labels_major_every = 2
    chart.show_minor_x_labels = False
    chart.add("Joined", [w.joined for w in weeks])
    chart.add("Left", [w.left for w in weeks])
    return _svg(chart)


def _svg(chart: Graph) -> bytes:
    """The chart's SVG without pygal's inline config <script> (the tooltips it configures are off)."""
    tree = chart.render_tree()
    for parent in list(tree.iter()):
        for child in list(parent):
            if str(child.tag).rsplit("}", 1)[-1] == "script":
                parent.remove(child)
    return etree.tostring(tree, encoding="utf-8", xml_declaration=True)


def clicks_by_region_chart(regions: list[dict[str, Any]], *, primary: str, accent: str) -> bytes:
    """One issue's clicks per region (people's, and what scanners fetched), drawn beside
    `recipients_by_region_chart`: two scales, so two charts of one size, side by side."""
    rows = list(reversed(regions))  # drawn bottom up: reversed, the first region is on top
    people = [int(r["human"]) for r in rows]
    filtered = [int(r["filtered"]) for r in rows]
    top = max((h + f for h, f in zip(people, filtered, strict=True)), default=0)
    chart = pygal.HorizontalStackedBar(**_config(primary, accent, **_region_options("Clicks by region", top)))
    chart.x_labels = [str(r["region"]) for r in rows]
    chart.add("People", people)
    chart.add("Filtered (scanners)", filtered)
    return _svg(chart)


def recipients_by_region_chart(regions: list[dict[str, Any]], *, primary: str, accent: str) -> bytes:
    """Messages of the issue sent carrying each region."""
    rows = list(reversed(regions))
    counts = [int(r["recipients"]) for r in rows]
    options = _region_options("Recipients per region", max(counts, default=0))
    chart = pygal.HorizontalBar(**_config(primary, accent, **options))
    chart.x_labels = [str(r["region"]) for r in rows]
    chart.add("Recipients", counts)
    return _svg(chart)


def _region_options(title: str, top: int) -> dict[str, object]:
    """Whole-number ticks (pygal would mark 0.2, 0.4... on small counts); 480 px wide, so two
    fit side by side on a desktop page and each shrinks to a phone's width."""
    step = max(1, -(-top // 5))
    return {"title": title, "width": 480, "height": 300, "y_labels": list(range(0, top + step + 1, step))}
