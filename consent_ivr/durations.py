"""ISO 8601 durations (``P1Y``, ``P6M``, ``P30D``, ``PT12H``) as config values, calendar
arithmetic on them, and how they and dates are said aloud in each prompt language.

A consent's validity and a purpose's retention are durations in the config and in the record,
so the product can compute with them (expiry, erasure) and the prompts can say them; the words
come from here rather than from a second, hand-written copy that could disagree.
"""

from __future__ import annotations

import calendar
import functools
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

_PATTERN = re.compile(
    r"^P(?!$)(?:(?P<years>\d+)Y)?(?:(?P<months>\d+)M)?(?:(?P<weeks>\d+)W)?(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?$"
)


@dataclass(frozen=True)
class Duration:
    years: int = 0
    months: int = 0
    weeks: int = 0
    days: int = 0
    hours: int = 0
    minutes: int = 0
    seconds: int = 0

    def after(self, start: datetime) -> datetime:
        """``start`` plus this duration, years and months on the calendar (31 Jan + P1M is the
        last day of February)."""
        month_index = start.month - 1 + self.months + 12 * self.years
        year, month = start.year + month_index // 12, month_index % 12 + 1
        day = min(start.day, calendar.monthrange(year, month)[1])
        moved = start.replace(year=year, month=month, day=day)
        return moved + timedelta(
            weeks=self.weeks,
            days=self.days,
            hours=self.hours,
            minutes=self.minutes,
            seconds=self.seconds,
        )

    @property
    def is_zero(self) -> bool:
        return not any(
            (self.years, self.months, self.weeks, self.days, self.hours, self.minutes, self.seconds)
        )


def parse(text: str) -> Duration:
    """Parse an ISO 8601 duration; ValueError names what was expected."""
    if isinstance(text, str):
        return _parse(text)
    raise _not_a_duration(text)


def _not_a_duration(text: object) -> ValueError:
    return ValueError(
        f"{text!r} is not an ISO 8601 duration; expected e.g. P1Y, P6M, P30D, P2W or PT1H"
    )


@functools.lru_cache(maxsize=256)
def _parse(text: str) -> Duration:
    # Cached: a record's validity is parsed on every read of its state (the API's hot path),
    # and a deployment has a handful of distinct values. Duration is frozen.
    match = _PATTERN.match(text.strip())
    if match is None:
        raise _not_a_duration(text)
    return Duration(**{k: int(v) for k, v in match.groupdict().items() if v})


# Expiry and erasure dates must be computable for any date the product may see.
_LONGEST = datetime(9000, 1, 1)


def check(text: str) -> str:
    """For validators: the duration text, or ValueError saying what was expected."""
    if not isinstance(text, str):
        raise ValueError(
            f"expected an ISO 8601 duration such as P5Y, P6M or P30D (the words said aloud "
            f"are made from it), got {text!r}"
        )
    duration = parse(text)
    try:
        duration.after(_LONGEST)
    except (OverflowError, ValueError):
        raise ValueError(f"{text!r} is too long: at most about 1000 years") from None
    return text.strip()


# ---- words ------------------------------------------------------------------------------------

# Russian plural forms: one (1, 21...), few (2-4, 22-24...), many (the rest).
_RU_UNITS = {
    "years": ("год", "года", "лет"),
    "months": ("месяц", "месяца", "месяцев"),
    "weeks": ("неделю", "недели", "недель"),
    "days": ("день", "дня", "дней"),
    "hours": ("час", "часа", "часов"),
    "minutes": ("минуту", "минуты", "минут"),
    "seconds": ("секунду", "секунды", "секунд"),
}
_EN_UNITS = {
    "years": ("year", "years"),
    "months": ("month", "months"),
    "weeks": ("week", "weeks"),
    "days": ("day", "days"),
    "hours": ("hour", "hours"),
    "minutes": ("minute", "minutes"),
    "seconds": ("second", "seconds"),
}
_RU_MONTHS = [
    "января",
    "февраля",
    "марта",
    "апреля",
    "мая",
    "июня",
    "июля",
    "августа",
    "сентября",
    "октября",
    "ноября",
    "декабря",
]
_EN_MONTHS = tuple(calendar.month_name)[1:]
LANGUAGES = ("ru", "en")


def _ru_form(n: int, forms: tuple[str, str, str]) -> str:
    if n % 10 == 1 and n % 100 != 11:
        return forms[0]
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return forms[1]
    return forms[2]


def spoken(duration: str | Duration, language: str) -> str:
    """``P5Y`` as "5 лет" / "5 years"; ``P1Y6M`` as "1 год 6 месяцев" / "1 year and 6 months"."""
    d = parse(duration) if isinstance(duration, str) else duration
    parts = []
    for unit in _EN_UNITS:
        n = getattr(d, unit)
        if not n:
            continue
        if language == "ru":
            parts.append(f"{n} {_ru_form(n, _RU_UNITS[unit])}")
        else:
            singular, plural = _EN_UNITS[unit]
            parts.append(f"{n} {singular if n == 1 else plural}")
    if not parts:
        return "0 дней" if language == "ru" else "0 days"
    if language == "en" and len(parts) > 1:
        return ", ".join(parts[:-1]) + " and " + parts[-1]
    return " ".join(parts)


def spoken_date(day: datetime, language: str) -> str:
    """A date as people say it: "30 ноября 2026 года" / "30 November 2026"."""
    if language == "ru":
        return f"{day.day} {_RU_MONTHS[day.month - 1]} {day.year} года"
    return f"{day.day} {_EN_MONTHS[day.month - 1]} {day.year}"
