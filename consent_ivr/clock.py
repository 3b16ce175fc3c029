"""The one clock: timezone-aware UTC everywhere, the one way to write a time, and the one way
for a background task to wait."""

import asyncio
import contextlib
from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def utc(dt: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 UTC with microseconds and a Z, as records and SMS statuses show times."""
    return None if dt is None else utc(dt).isoformat(timespec="microseconds").replace("+00:00", "Z")


async def pause(seconds: float, until: asyncio.Event) -> bool:
    """Sleep `seconds` (none if negative), or less if `until` is set meanwhile (a stop, a
    call that ended); True if it is set."""
    if seconds > 0 and not until.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(until.wait(), seconds)
    else:
        await asyncio.sleep(0)  # a loop that pauses for nothing still lets others run
    return until.is_set()
