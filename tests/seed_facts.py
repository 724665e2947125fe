"""Facts of the seed page (a Responsible Statecraft front page, ../shared/seeds): what real
articles look like, for fixtures. Each constant is copied from the page as it reads there.
"""

from __future__ import annotations

# The label above the Iran story: a format and a section, as RebelMouse puts it in the feed.
IRAN_LABEL = "Analysis | Middle East"
IRAN_TITLE = "How will Iran respond to renewed conflict between Azerbaijan and Armenia?"
IRAN_LEDE = (
    "The complicated nature of the geopolitics of the region has made it more difficult for Iran to "
    "clearly define its policy towards the Nagorno-Karabakh conflict."
)
IRAN_IMAGE_TEXT = "Shutterstock_1133241797-scaled"  # what the CMS gives as the photo's text
IRAN_CREDIT = (
    "Escalation between Armenia and Azerbaijan over the territory of Nagorno-Karabakh in April 2016. "
    "Albert_Khachatryan / Shutterstock.com"
)

SUDAN_TITLE = "Sudan's bloody war is immune to Trump's art of the deal"
SUDAN_IMAGE_TEXT = "Sudan al-Fashir El Fasher"
SUDAN_CREDIT = (
    "The grandmother of Ikram Abdelhameed looks on next to her family while sitting at a camp for "
    "displaced people who fled from al-Fashir to Tawila, North Darfur, Sudan, October 27, 2025. "
    "REUTERS/Mohammed Jamal"
)

TRUMP_XI_TITLE = "Can Trump finally break with Biden's failed China policy?"
TRUMP_XI_IMAGE_TEXT = "Trump Xi Jinping"
# 275 characters: longer than the old 250-character credit limit.
TRUMP_XI_CREDIT = (
    "U.S. President Donald Trump and Chinese President Xi Jinping react as they hold a bilateral meeting "
    "at Gimhae International Airport, on the sidelines of the Asia-Pacific Economic Cooperation (APEC) "
    "summit, in Busan, South Korea, October 30, 2025. REUTERS/Evelyn Hockstein TPX"
)

IRAQ_TITLE = "Iraq faces first quiet election in decades. Don't let that fool you."
IRAQ_IMAGE_TEXT = "Iraq elections 2025"
IRAQ_CREDIT = (
    "Supporters attend a ceremony announcing the Reconstruction and Development Coalition election "
    "platform ahead of Iraq’s upcoming parliamentary elections in Karbala, Iraq, October 10, 2025. "
    "REUTERS/Thaier Al-Sudani"
)

CREDITS = (IRAN_CREDIT, SUDAN_CREDIT, TRUMP_XI_CREDIT, IRAQ_CREDIT)
# The page's other sections: QIOSK is its short-news section, which staff may leave out.
QIOSK = "QIOSK"
