"""What a schedule expects at a time: the contract's definition in Python.

For a pipeline with a schedule, at ``as_of``: T is the latest tick with
``T + grace <= as_of``; a run whose event time is in ``[T - grace, as_of]``
answers it. A tick before ``since`` (the pipeline's creation or its schedule's
last change, whichever is later) expects nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache

from chm.core.cron import latest_tick


@dataclass(frozen=True)
class Expectation:
    """One tick and the times derived from it (all UTC)."""

    expected_at: datetime  # T, the tick
    window_start: datetime  # T - grace: the earliest event time that answers T
    due_missed: datetime  # T + grace: no run in the window from then on is missed
    due_late: datetime | None  # T + deadline: a run still open from then on is late


def derive(tick: datetime, grace_minutes: int, deadline_minutes: int | None) -> Expectation:
    """The times the contract derives from ``tick``."""
    grace = timedelta(minutes=grace_minutes)
    due_late = None if deadline_minutes is None else tick + timedelta(minutes=deadline_minutes)
    return Expectation(tick, tick - grace, tick + grace, due_late)


@lru_cache(maxsize=16_384)
def _due_tick(cron: str, timezone: str, at: datetime) -> datetime | None:
    # Many pipelines share a schedule and a grace: one walk serves them all.
    return latest_tick(cron, timezone, at)


def expect(
    cron: str,
    timezone: str,
    grace_minutes: int,
    deadline_minutes: int | None,
    since: datetime,
    as_of: datetime,
) -> Expectation | None:
    """The tick the schedule expects a run for at ``as_of``, or None (no tick
    is due yet, or the latest due tick is before ``since``)."""
    tick = _due_tick(cron, timezone, as_of - timedelta(minutes=grace_minutes))
    if tick is None or tick < since:
        return None
    return derive(tick, grace_minutes, deadline_minutes)


def since_of(created_at: datetime, schedule_set_at: datetime | None) -> datetime:
    """From when a pipeline's schedule expects runs."""
    return created_at if schedule_set_at is None else max(created_at, schedule_set_at)
