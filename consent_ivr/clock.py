"""The one clock: timezone-aware UTC everywhere, and the one way to write a time."""

from datetime import UTC, datetime


def now() -> datetime:
    return datetime.now(UTC)


def utc(dt: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything we store is UTC."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def iso(dt: datetime | None) -> str | None:
    """ISO 8601 UTC with microseconds and a Z, as records and SMS statuses show times."""
    return None if dt is None else utc(dt).isoformat(timespec="microseconds").replace("+00:00", "Z")
