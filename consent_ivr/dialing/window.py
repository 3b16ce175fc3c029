"""The calling window in the person's local time: which zones a number may be in, whether the
window is open now, and when it next opens. Pure functions of the clock they are given."""

from __future__ import annotations

import zoneinfo
from datetime import datetime, timedelta

import phonenumbers
from phonenumbers import timezone as number_zones

from consent_ivr.clock import utc
from consent_ivr.dialing.config import DAYS, Window, minutes

UNKNOWN = "Etc/Unknown"


def zones_of(phone: str) -> tuple[str, ...]:
    """The time zones an E.164 number may be in, as phonenumbers knows them (a mobile number
    of a large country may be in many)."""
    try:
        parsed = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return (UNKNOWN,)
    return tuple(number_zones.time_zones_for_number(parsed)) or (UNKNOWN,)


def zones_to_check(window: Window, zones: tuple[str, ...]) -> tuple[str, ...] | None:
    """The zones in which the window must be open; None when the number cannot be placed in
    any (its zone is unknown and no `timezone` is configured)."""
    known = tuple(z for z in zones if z != UNKNOWN)
    if len(known) == 1:
        return known
    if window.timezone is not None:
        return (window.timezone,)
    return known or None


def _open_in(window: Window, zone: str, at: datetime) -> bool:
    local = utc(at).astimezone(zoneinfo.ZoneInfo(zone))
    now_min = local.hour * 60 + local.minute
    return DAYS[local.weekday()] in window.days and (
        minutes(window.start) <= now_min < minutes(window.end)
    )


def is_open(window: Window, zones: tuple[str, ...], at: datetime) -> bool:
    checked = zones_to_check(window, zones)
    return checked is not None and all(_open_in(window, z, at) for z in checked)


def next_open(window: Window, zones: tuple[str, ...], at: datetime) -> datetime | None:
    """The first moment from `at` (to the minute) when the window is open in every zone that
    counts; None when it never is (within two weeks: the zones never share an open hour)."""
    if zones_to_check(window, zones) is None:
        return None
    t = utc(at)
    if is_open(window, zones, t):
        return t
    t = t.replace(second=0, microsecond=0) + timedelta(minutes=1)
    end = t + timedelta(days=14)
    step = timedelta(minutes=15)
    while t < end:
        if is_open(window, zones, t):
            # Back to the minute it opened.
            back = t - step + timedelta(minutes=1)
            while back < t and not is_open(window, zones, back):
                back += timedelta(minutes=1)
            return max(back, utc(at))
        t += step
    return None
