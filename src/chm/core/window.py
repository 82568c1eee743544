"""Half-open time windows ``since <= t < until``, as the summary, the run
listings and the reports take them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from chm.core.errors import ValidationFailed
from chm.core.timeutil import utcnow

DEFAULT_WINDOW = timedelta(hours=24)
_EARLIEST = datetime.min.replace(tzinfo=UTC)


def check_window(since: datetime | None, until: datetime | None) -> None:
    """Half-open windows ``since <= t < until`` need ``until`` after ``since``."""
    if since is not None and until is not None and until <= since:
        raise ValidationFailed.one("until", "not_after_since", "until must be after since")


def resolve_window(
    since: datetime | None, until: datetime | None, default: timedelta = DEFAULT_WINDOW
) -> tuple[datetime, datetime]:
    """Fill a half-open window from its defaults: ``until`` now, ``since`` one default before."""
    if until is None:
        until = utcnow()
    if since is None:
        # Near the start of the calendar the window starts at its first instant.
        since = until - default if until - _EARLIEST > default else _EARLIEST
    check_window(since, until)
    return since, until
