"""The scanner filter alone, on an injected clock: no sleeps."""

from __future__ import annotations

from digest.scanners import ScannerFilter, is_scanner_agent

BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 Version/18.1 Safari/605.1.15"


class Seconds:
    def __init__(self) -> None:
        self.t = 1_000.0

    def __call__(self) -> float:
        return self.t


def click(
    f: ScannerFilter, link, *, message="m1", kind="story", method="GET", agent=BROWSER, address="10.0.0.1"
):
    return f.judge(
        address=address,
        user_agent=agent,
        method=method,
        message=message,
        link=link,
        kind=kind,
        count_key=link,
    )


def test_the_hidden_link_marks_earlier_and_later_clicks_of_that_message() -> None:
    clock = Seconds()
    f = ScannerFilter(clock, burst_links=100)
    assert click(f, 1).filtered is False
    clock.t += 30
    assert click(f, 2).filtered is False
    verdict = click(f, "h", kind="hidden")
    assert verdict.filtered and verdict.reclassify == (1, 2)  # counted as human, now filtered
    assert click(f, 3).reason == "hidden"
    assert click(f, 1, message="m2").filtered is False  # another message (variant) is judged apart


def test_a_burst_of_links_is_a_scanner_and_a_slow_reader_is_not() -> None:
    clock = Seconds()
    f = ScannerFilter(clock, burst_links=3, burst_seconds=10)
    for link in (1, 2, 3):
        clock.t += 20  # one story every 20 s: a person reading
        assert click(f, link, address="10.0.0.2").filtered is False
    click(f, 1)
    clock.t += 1
    click(f, 2)
    clock.t += 1
    verdict = click(f, 3)
    assert verdict.reason == "burst" and verdict.reclassify == (1, 2)


def test_a_repeat_counts_once_and_memory_is_forgotten() -> None:
    clock = Seconds()
    f = ScannerFilter(clock, memory_seconds=600)
    assert click(f, 1).count is True
    clock.t += 5
    assert click(f, 1).count is False
    clock.t += 601
    click(f, 2, address="10.9.9.9")  # any request lets the filter forget silent clients
    assert len(f) == 1
    assert click(f, 1).count is True  # forgotten: after 10 minutes a repeat counts again


def test_head_and_agents() -> None:
    f = ScannerFilter(Seconds())
    assert click(f, 1, method="HEAD").reason == "head"
    assert click(f, 2).reason == "head"  # the client is marked: its GETs are a scanner's too
    assert is_scanner_agent("") and is_scanner_agent("Mozilla/5.0 (compatible; Barracuda Sentinel)")
    assert is_scanner_agent("python-requests/2.32") and not is_scanner_agent(BROWSER)


def test_no_address_is_kept() -> None:
    f = ScannerFilter(Seconds())
    click(f, 1, address="203.0.113.7")
    assert "203.0.113.7" not in repr(f._clients)  # keyed hashes only (key random per process)
