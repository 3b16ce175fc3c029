"""ISO 8601 durations: what the config accepts, calendar arithmetic, and how durations and dates
are said in Russian and English."""

from __future__ import annotations

from datetime import datetime

import pytest

from consent_ivr import durations
from consent_ivr.durations import Duration

pytestmark = pytest.mark.unit


# ---- parse and check --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("P1Y", Duration(years=1)),
        ("P6M", Duration(months=6)),
        ("P30D", Duration(days=30)),
        ("P2W", Duration(weeks=2)),
        ("PT12H", Duration(hours=12)),
        ("PT90M", Duration(minutes=90)),
        ("PT45S", Duration(seconds=45)),
        ("P1Y6M", Duration(years=1, months=6)),
        ("P1DT12H", Duration(days=1, hours=12)),
        ("P1Y2M3W4DT5H6M7S", Duration(1, 2, 3, 4, 5, 6, 7)),
        ("P0D", Duration()),
    ],
)
def test_parse(text: str, expected: Duration) -> None:
    assert durations.parse(text) == expected
    assert durations.check(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "P",
        "PT",
        "P1YT",
        "1Y",
        "P1",
        "P1.5Y",
        "P-1D",
        "p1y",
        "P1D1Y",  # units out of order
        "P1H",  # hours need the T
        "PT1D",
        "1 year",
    ],
)
def test_parse_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError) as exc:
        durations.parse(text)
    message = str(exc.value)
    assert repr(text) in message
    assert "ISO 8601" in message
    assert "P1Y" in message  # an example of what is expected
    with pytest.raises(ValueError):
        durations.check(text)


def test_parse_refuses_what_is_not_text() -> None:
    with pytest.raises(ValueError) as exc:
        durations.parse(5)  # type: ignore[arg-type]
    assert "ISO 8601" in str(exc.value)


def test_is_zero() -> None:
    assert durations.parse("P0D").is_zero
    assert durations.parse("PT0S").is_zero
    assert not durations.parse("PT1S").is_zero


# ---- after ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "duration", "expected"),
    [
        (datetime(2026, 1, 31, 10, 30), "P1M", datetime(2026, 2, 28, 10, 30)),
        (datetime(2028, 1, 31, 10, 30), "P1M", datetime(2028, 2, 29, 10, 30)),  # leap year
        (datetime(2026, 3, 31), "P1M", datetime(2026, 4, 30)),
        (datetime(2026, 8, 31), "P6M", datetime(2027, 2, 28)),
        (datetime(2026, 12, 15), "P1M", datetime(2027, 1, 15)),
        (datetime(2026, 11, 30), "P14M", datetime(2028, 1, 30)),
        (datetime(2028, 2, 29), "P1Y", datetime(2029, 2, 28)),
        (datetime(2026, 5, 10), "P5Y", datetime(2031, 5, 10)),
        (datetime(2026, 5, 10), "P30D", datetime(2026, 6, 9)),
        (datetime(2026, 12, 25), "P2W", datetime(2027, 1, 8)),
        (datetime(2026, 5, 10, 23), "PT2H", datetime(2026, 5, 11, 1)),
        # Months on the calendar first, then days: 31 Jan + 1 month = 28 Feb, + 1 day = 1 Mar.
        (datetime(2026, 1, 31), "P1M1D", datetime(2026, 3, 1)),
        (datetime(2026, 5, 10, 8), "P0D", datetime(2026, 5, 10, 8)),
    ],
)
def test_after(start: datetime, duration: str, expected: datetime) -> None:
    assert durations.parse(duration).after(start) == expected


# ---- spoken -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "words"),
    [
        ("P1Y", "1 год"),
        ("P2Y", "2 года"),
        ("P4Y", "4 года"),
        ("P5Y", "5 лет"),
        ("P11Y", "11 лет"),
        ("P12Y", "12 лет"),
        ("P14Y", "14 лет"),
        ("P21Y", "21 год"),
        ("P22Y", "22 года"),
        ("P25Y", "25 лет"),
        ("P101Y", "101 год"),
        ("P111Y", "111 лет"),
        ("P1M", "1 месяц"),
        ("P3M", "3 месяца"),
        ("P6M", "6 месяцев"),
        ("P1W", "1 неделю"),
        ("P2W", "2 недели"),
        ("P1D", "1 день"),
        ("P3D", "3 дня"),
        ("P30D", "30 дней"),
        ("P31D", "31 день"),
        ("PT1H", "1 час"),
        ("PT12H", "12 часов"),
        ("PT1M", "1 минуту"),
        ("PT2M", "2 минуты"),
        ("PT1S", "1 секунду"),
        ("PT5S", "5 секунд"),
        ("P1Y6M", "1 год 6 месяцев"),
    ],
)
def test_spoken_russian(duration: str, words: str) -> None:
    assert durations.spoken(duration, "ru") == words


@pytest.mark.parametrize(
    ("duration", "words"),
    [
        ("P1Y", "1 year"),
        ("P5Y", "5 years"),
        ("P21Y", "21 years"),
        ("P1M", "1 month"),
        ("P6M", "6 months"),
        ("P1W", "1 week"),
        ("P30D", "30 days"),
        ("PT1H", "1 hour"),
        ("PT1S", "1 second"),
        ("P1Y6M", "1 year and 6 months"),
        ("P1Y2M3D", "1 year, 2 months and 3 days"),
        ("P0D", "0 days"),
    ],
)
def test_spoken_english(duration: str, words: str) -> None:
    assert durations.spoken(duration, "en") == words


def test_spoken_takes_a_parsed_duration() -> None:
    assert durations.spoken(Duration(years=2), "ru") == "2 года"
    assert durations.spoken(Duration(days=1), "en") == "1 day"


def test_zero_is_said_in_russian() -> None:
    assert durations.spoken("P0D", "ru") == "0 дней"


@pytest.mark.parametrize(
    ("day", "language", "words"),
    [
        (datetime(2026, 11, 30), "ru", "30 ноября 2026 года"),
        (datetime(2026, 1, 1, 23, 59), "ru", "1 января 2026 года"),
        (datetime(2027, 5, 9), "ru", "9 мая 2027 года"),
        (datetime(2026, 11, 30), "en", "30 November 2026"),
        (datetime(2026, 1, 1), "en", "1 January 2026"),
    ],
)
def test_spoken_date(day: datetime, language: str, words: str) -> None:
    assert durations.spoken_date(day, language) == words
