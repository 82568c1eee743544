"""An alert's summary: one line a person reads (monitoring contract, "Alerts").

Pure functions, one per rule type, from what the evaluation's statement
selected to text, e.g. "orders_daily (Acme, airflow/prod) failed 3 times in a
row". The summary is written once, when the alert fires; the latest run's
error text is added by the sender, not stored here.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from chm.core.cron import TimezoneError
from chm.core.cron import zone as cron_zone


def subject(pipeline: str, client: str, platform: str, environment: str) -> str:
    """``orders_daily (Acme, airflow/prod)``."""
    return f"{pipeline} ({client}, {platform}/{environment})"


def span(seconds: float) -> str:
    """A duration as a person says it: ``45 s``, ``12 min``, ``2 h 10 min``.

    Under 90 seconds in seconds; then in minutes (rounded down: an age or a
    duration is never said to be longer than it is); from an hour on, in
    hours and minutes.
    """
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{math.floor(seconds)} s"
    minutes = math.floor(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h" if rest == 0 else f"{hours} h {rest} min"


def _times(count: int) -> str:
    return "once" if count == 1 else "twice" if count == 2 else f"{count} times"


def on_failure(who: str) -> str:
    return f"{who} has failed (latest run)"


def failures_in_window(who: str, failures: int, window_minutes: int) -> str:
    return f"{who} failed {_times(failures)} in the last {window_minutes} minutes"


def consecutive_failures(who: str, streak: int) -> str:
    return f"{who} failed {streak} time{'' if streak == 1 else 's'} in a row"


def long_running(who: str, status: str, since: datetime, now: datetime, threshold: int) -> str:
    verb = "queued" if status == "queued" else "running"
    age = span((now - since).total_seconds())
    return f"{who} has been {verb} for {age} (over {threshold} min)"


# The multiplication sign, as people write it (escaped: the source stays ASCII).
TIMES = "\u00d7"


def duration_anomaly(who: str, duration: float, median: float, p95: float) -> str:
    """Names the bound the run went over: 3 x the median, or 1.5 x the p95."""
    took = span(duration)
    if 3 * median >= 1.5 * p95:
        return f"{who} took {took}, over 3{TIMES} its usual {span(median)}"
    return (
        f"{who} took {took}, over 1.5{TIMES} its 95th percentile of {span(p95)}"
        f" (usual {span(median)})"
    )


def _moment(at: datetime, zone: ZoneInfo | None = None) -> str:
    """``2030-06-01 02:30 Europe/Berlin``; in UTC without a zone. Ticks and their
    due times fall on whole minutes."""
    if zone is None:
        return f"{at.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    return f"{at.astimezone(zone):%Y-%m-%d %H:%M} {zone.key}"


def _scheduled(expected_at: datetime, timezone: str) -> str:
    """The tick in the pipeline's zone and in UTC (which also tells the two
    02:30s of a repeated autumn hour apart); in UTC alone for a UTC schedule."""
    utc = _moment(expected_at)
    if timezone == "UTC":
        return utc
    try:
        zone = cron_zone(timezone)
    except TimezoneError:  # the zone was valid when stored; tzdata may change
        return utc
    return f"{_moment(expected_at, zone)} ({utc})"


def missed_schedule(
    who: str,
    state: str,
    expected_at: datetime,
    timezone: str,
    due_by: datetime,
    run_status: str | None,
) -> str:
    """``missed``: no run for the tick by its grace; ``late``: its run is still
    queued or running at its deadline."""
    scheduled = _scheduled(expected_at, timezone)
    if state == "missed":
        return f"{who} missed its run scheduled for {scheduled}: none by {_moment(due_by)}"
    verb = "queued" if run_status == "queued" else "running"
    return (
        f"{who} is late: its run scheduled for {scheduled} is still {verb}"
        f" past its deadline, {_moment(due_by)}"
    )
