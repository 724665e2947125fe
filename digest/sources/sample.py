"""The bundled sample feed: real articles from the seed page, dated relative to now.

An RSS 2.0 document with `category`, `dc:creator`, `media:content`, `media:description` and
`media:credit`, so the demo goes through the same parsing path as a real site's feed. The
seed page labels its pieces the way RebelMouse feeds do, format and section in one category
("Analysis | Middle East"); its photos' texts are the CMS's, a file name among them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from email.utils import format_datetime
from xml.sax.saxutils import escape

from digest.models import Article

SITE = "https://responsiblestatecraft.org"

# (hours before now, title, categories, lede, photo credit, slug). The first four are the
# seed page's articles; the rest are sample items so that more regions appear.
SAMPLE_ITEMS: tuple[tuple[int, str, tuple[str, ...], str, str, str], ...] = (
    (
        20,
        "Iraq faces first quiet election in decades. Don't let that fool you.",
        ("Middle East",),
        "Iraqis head to the polls on November 11 for parliamentary elections, however surveys predict "
        "record-low turnout, which may complicate creation of a government.",
        "Supporters attend a ceremony announcing the Reconstruction and Development Coalition election "
        "platform ahead of Iraq’s upcoming parliamentary elections in Karbala, Iraq, October 10, 2025. "
        "REUTERS/Thaier Al-Sudani",
        "iraq-elections-2025",
    ),
    (
        34,
        "Sudan's bloody war is immune to Trump's art of the deal",
        ("Africa",),
        "For over 500 days, the world watched as the paramilitary Rapid Support Forces (RSF) methodically "
        "strangled the last major army garrison in Darfur through siege, starvation, and indiscriminate "
        "bombardment.",
        "The grandmother of Ikram Abdelhameed looks on next to her family while sitting at a camp for "
        "displaced people who fled from al-Fashir to Tawila, North Darfur, Sudan, October 27, 2025. "
        "REUTERS/Mohammed Jamal",
        "sudan-el-fasher",
    ),
    (
        52,
        "Can Trump finally break with Biden's failed China policy?",
        ("Asia-Pacific",),
        "President Donald Trump and Chinese President Xi Jinping emerged from much anticipated meeting in "
        "South Korea Thursday with a broad framework for a deal moving forward.",
        "U.S. President Donald Trump and Chinese President Xi Jinping react as they hold a bilateral meeting "
        "at Gimhae International Airport, on the sidelines of the Asia-Pacific Economic Cooperation (APEC) "
        "summit, in Busan, South Korea, October 30, 2025. REUTERS/Evelyn Hockstein TPX",
        "trump-xi-china-policy",
    ),
    (
        70,
        "How will Iran respond to renewed conflict between Azerbaijan and Armenia?",
        ("Analysis | Middle East",),
        "The complicated nature of the geopolitics of the region has made it more difficult for Iran to "
        "clearly define its policy towards the Nagorno-Karabakh conflict.",
        "Escalation between Armenia and Azerbaijan over the territory of Nagorno-Karabakh in April 2016. "
        "Albert_Khachatryan / Shutterstock.com",
        "iran-azerbaijan-armenia",
    ),
    (
        90,
        "Sample: Europe's winter of talks over Ukraine",
        ("Europe",),
        "A sample article for the demo: negotiators return to the table as the front line freezes, and "
        "European capitals weigh what a ceasefire would ask of them.",
        "A snow-covered street in Kyiv (sample image). Example Agency",
        "sample-europe-ukraine-talks",
    ),
    (
        110,
        "Sample: Washington's new debate over war powers in the Caribbean",
        ("Latin America",),
        "A sample article for the demo: strikes at sea have revived an old question about who in "
        "Washington decides when the country goes to war.",
        "The U.S. Capitol at dusk (sample image). Example Agency",
        "sample-americas-war-powers",
    ),
    (
        130,
        "Sample: The Sahel's juntas look for new partners",
        ("Africa",),
        "A sample article for the demo: after the departure of French troops, military governments across "
        "the Sahel are signing security deals with new suppliers.",
        "A market in Niamey, Niger (sample image). Example Agency",
        "sample-sahel-partners",
    ),
    (
        100,
        "Sample: QIOSK briefs of the week",
        ("QIOSK",),
        "A sample short-news item with no region: it shows how items outside the configured regions are "
        "handled.",
        "",
        "sample-qiosk-briefs",
    ),
    (
        24 * 12,
        "Sample: An article from two weeks ago",
        ("Middle East",),
        "This sample item is older than the week window, so it must not appear in this week's digest.",
        "",
        "sample-old-article",
    ),
)


# The text the seed page's CMS gives each photo, by slug: one is the upload's file name, which
# collect drops (an empty alt is better than a file name read aloud).
SAMPLE_IMAGE_TEXT = {
    "iran-azerbaijan-armenia": "Shutterstock_1133241797-scaled",
    "sudan-el-fasher": "Sudan al-Fashir El Fasher",
    "trump-xi-china-policy": "Trump Xi Jinping",
    "iraq-elections-2025": "Iraq elections 2025",
}
# The seed page shows no bylines; the made-up sample items get one, so the demo shows it.
SAMPLE_AUTHOR = "Sample Author"


def sample_feed_xml(now: datetime) -> str:
    """The sample feed as RSS 2.0 text, with every date relative to `now` (timezone-aware)."""
    items = []
    for hours, title, categories, lede, credit, slug in SAMPLE_ITEMS:
        url = f"{SITE}/{slug}/"
        cats = "".join(f"<category>{escape(c)}</category>" for c in categories)
        media = ""
        if credit:
            image = f"{SITE}/wp-content/uploads/sample/{slug}.jpg"
            described = SAMPLE_IMAGE_TEXT.get(slug, "")
            media = (
                f'<media:content url="{escape(image)}" medium="image" type="image/jpeg" width="1200" '
                f'height="800">'
                + (f"<media:description>{escape(described)}</media:description>" if described else "")
                + f"<media:credit>{escape(credit)}</media:credit></media:content>"
            )
        items.append(
            "<item>"
            f"<title>{escape(title)}</title><link>{escape(url)}</link>"
            f'<guid isPermaLink="false">sample-{slug}</guid>'
            f"<pubDate>{format_datetime(now - timedelta(hours=hours))}</pubDate>"
            + (f"<dc:creator>{escape(SAMPLE_AUTHOR)}</dc:creator>" if slug.startswith("sample-") else "")
            + f"{cats}<description>{escape('<p>' + escape(lede) + '</p>')}</description>"
            f"{media}</item>"
        )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<rss version="2.0" xmlns:media="http://search.yahoo.com/mrss/" '
        'xmlns:dc="http://purl.org/dc/elements/1.1/">'
        "<channel><title>Responsible Statecraft (sample)</title>"
        f"<link>{SITE}/</link><description>Sample feed bundled with digest</description>"
        f"{''.join(items)}</channel></rss>\n"
    )


# --- a full-size issue, for benchmarks and size tests ---------------------------------------

SYNTHETIC_LEDE = (
    "Negotiators met again this week as pressure mounted on all sides to reach an agreement "
    "before winter; diplomats say the outline of a deal is there, but the hardest questions, "
    "from sequencing to verification, remain open and the politics at home are getting harder for all."
)
# As long as collect lets a credit be ([collect] credit_length, 300): real ones run to 275.
SYNTHETIC_CREDIT = (
    "Delegates arrive for talks at the foreign ministry in the capital as negotiators from both "
    "sides resume work on a ceasefire text after a night of strikes near the border crossing, on "
    "the sidelines of the security summit, November 19, 2026. "
    "REUTERS/Example Photographer-Longname TPX IMAGES OF THE DAY"
)


def synthetic_articles(count: int, regions: tuple[str, ...], now: datetime) -> list[Article]:
    """`count` articles as long as collect lets them be (280-character ledes, credits near
    [collect] credit_length, photos), spread over `regions`: the worst case for the e-mail's size
    and render time. No alt text, as in most feeds: the teaser's alt is then empty."""
    articles = []
    for i in range(count):
        region = regions[i % len(regions)]
        slug = f"{region.lower().replace(' ', '-')}-story-{i:02d}"
        articles.append(
            Article(
                guid=f"synthetic-{i}",
                url=f"{SITE}/2026/11/{slug}/",
                title=f"{region}: talks resume as pressure builds on both sides, story {i}",
                lede=SYNTHETIC_LEDE,
                published=now - timedelta(hours=2 + i),
                region=region,
                categories=(region,),
                image_url=f"{SITE}/wp-content/uploads/2026/11/{slug}.jpg",
                image_alt="",
                image_credit=SYNTHETIC_CREDIT,
                image_width=1200,
                image_height=800,
            )
        )
    return articles
