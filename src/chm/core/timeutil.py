"""Time helpers: every timestamp in CHM is timezone-aware UTC."""

from __future__ import annotations

import email.utils
import re
from datetime import UTC, datetime

_SECONDS = re.compile(r"^\d+(\.\d+)?$")


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Return ``value`` in UTC; a naive value is read as UTC (contract: Conventions)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def isoformat_z(value: datetime) -> str:
    """RFC 3339 with a ``Z`` suffix, as every response carries."""
    return as_utc(value).isoformat().replace("+00:00", "Z")


def derived_duration(started_at: datetime | None, finished_at: datetime | None) -> float | None:
    """A run's duration in seconds from its times, when it has both."""
    if started_at is None or finished_at is None:
        return None
    return (finished_at - started_at).total_seconds()


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """An HTTP ``Retry-After`` as seconds from ``now``: delay-seconds, or an HTTP
    date (one already past gives 0); None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if _SECONDS.match(text):
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or utcnow())).total_seconds())
