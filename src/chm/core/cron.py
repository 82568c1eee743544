"""Cron schedules: five-field expressions, IANA zones, and their ticks.

A pipeline's ``schedule`` is a five-field cron expression (minute, hour, day
of month, month, day of week) read in its ``schedule_timezone``. The ticks
come from ``cronsim`` (the library behind healthchecks.io's cron checks),
which treats daylight-saving changes as Debian's cron does and as a person
expects:

- a fixed-time job whose time does not exist on the spring-forward night
  (02:30 in Europe/Berlin on the last Sunday of March) runs when the clocks
  have jumped, at 03:00, once;
- a fixed-time job in the hour that repeats in autumn runs once, at the first
  of the two;
- a job with a wildcard hour (``*/15 * * * *``) runs in both copies of the
  repeated hour, as the wall clock shows them.

Every time given and returned here is an aware datetime; ticks come back in
UTC. Nothing here touches a database.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

# The presets cron implementations share, as the five fields they mean.
PRESETS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MAX_CRON_LENGTH = 200
# A tick is searched this far at most: a schedule that never fires (30 February)
# is refused when it is set, rather than searched forever.
_HORIZON_YEARS = 8
_ZONE_NAME = re.compile(r"^[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*$")


class CronError(ValueError):
    """A cron expression CHM cannot use; the message says why."""


class TimezoneError(ValueError):
    """A time zone name that is not in the IANA database."""


def normalize_cron(expression: str) -> str:
    """``expression`` as CHM stores it: five fields separated by one space
    (a preset such as ``@daily`` becomes its five fields), or CronError."""
    text = " ".join(expression.split())
    if not text:
        raise CronError("the cron expression is empty")
    if len(text) > MAX_CRON_LENGTH:
        raise CronError(f"the cron expression is longer than {MAX_CRON_LENGTH} characters")
    if text.startswith("@"):
        preset = PRESETS.get(text.lower())
        if preset is None:
            known = ", ".join(sorted(PRESETS))
            raise CronError(f"{text!r} is not a schedule preset (known: {known})")
        return preset
    fields = text.split(" ")
    if len(fields) != 5:
        raise CronError(
            f"a cron expression has five fields (minute hour day-of-month month day-of-week); "
            f"{text!r} has {len(fields)}"
        )
    text = text.upper()
    try:
        CronSim(text, datetime(2000, 1, 1, tzinfo=UTC))
    except CronSimError as error:
        raise CronError(f"{text!r} is not a valid cron expression: {error}") from None
    return text


def check_timezone(name: str) -> str:
    """``name`` when it names an IANA time zone, else TimezoneError."""
    zone(name)
    return name


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``, or TimezoneError."""
    if not _ZONE_NAME.match(name) or len(name) > 64:
        raise TimezoneError(f"{name!r} is not an IANA time zone name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise TimezoneError(
            f"{name!r} is not an IANA time zone (such as 'Europe/Berlin')"
        ) from None


def latest_tick(cron: str, timezone: str, at: datetime) -> datetime | None:
    """The latest tick of ``cron`` in ``timezone`` at or before ``at``, in UTC;
    None when there is none in the eight years before."""
    floor = at.astimezone(UTC) - timedelta(days=366 * _HORIZON_YEARS)
    # cronsim walks strictly before its start; ticks fall on whole minutes, so
    # a start one second on includes a tick at ``at`` itself.
    start = (at + timedelta(seconds=1)).astimezone(zone(timezone))
    for tick in CronSim(cron, start, reverse=True):
        utc = tick.astimezone(UTC)
        if utc < floor:
            return None
        if utc <= at:
            return _last_tick_until(cron, timezone, utc, at)
    return None  # pragma: no cover - cronsim's walk does not end


def _last_tick_until(cron: str, timezone: str, tick: datetime, at: datetime) -> datetime:
    """The last tick from ``tick`` up to ``at``. Walking backwards, cronsim steps
    over a fixed-time job's tick in the first copy of the hour that repeats in
    autumn when it starts from the second copy (02:10 CET on the last Sunday of
    October in Berlin finds the day before's 02:30, not that night's 02:30
    CEST); the forward walk follows the DST rules exactly, so it finds any
    tick between."""
    for later in CronSim(cron, tick.astimezone(zone(timezone))):
        utc = later.astimezone(UTC)
        if utc > at:
            break
        tick = max(tick, utc)
    return tick


def ticks_after(
    cron: str, timezone: str, after: datetime, until: datetime, limit: int
) -> list[datetime]:
    """At most ``limit`` ticks of ``cron`` in ``timezone``, ``after < tick <= until``, in UTC."""
    ticks: list[datetime] = []
    if limit <= 0 or until <= after:
        return ticks
    for tick in CronSim(cron, after.astimezone(zone(timezone))):
        utc = tick.astimezone(UTC)
        if utc > until:
            break
        if utc > after:
            ticks.append(utc)
            if len(ticks) >= limit:
                break
    return ticks


# --- Quartz (Databricks jobs) ------------------------------------------------------

_QUARTZ_DAY_NAMES = {"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}


def quartz_to_cron(expression: str) -> str:
    """A Quartz cron expression (``sec min hour dom month dow [year]``) as the
    five-field cron that fires at the same times, or CronError saying why it
    cannot be one (a seconds field other than 0, a year field, a day-of-week
    form five fields do not have)."""
    fields = expression.split()
    if len(fields) not in (6, 7):
        raise CronError(
            f"Quartz cron {expression!r} has {len(fields)} fields; Quartz has six or seven"
        )
    seconds, minute, hour, dom, month, dow = fields[:6]
    if not (seconds.isdigit() and int(seconds) == 0):
        raise CronError(
            f"Quartz cron {expression!r} fires on seconds ({seconds!r}); "
            "a five-field cron cannot express it"
        )
    if len(fields) == 7 and fields[6] not in ("*", "?"):  # every year
        raise CronError(
            f"Quartz cron {expression!r} names years ({fields[6]!r}); "
            "a five-field cron cannot express it"
        )
    dom = "*" if dom == "?" else dom
    dow = "*" if dow == "?" else _quartz_day_of_week(expression, dow)
    return normalize_cron(" ".join((minute, hour, dom, month, dow)))


def _quartz_day_of_week(expression: str, field: str) -> str:
    """Quartz numbers days 1-7 from Sunday; cron 0-6 from Sunday."""

    def day(token: str) -> str:
        if token.upper() in _QUARTZ_DAY_NAMES:
            return token.upper()
        if token.isdigit() and 1 <= int(token) <= 7:
            return str(int(token) - 1)
        raise CronError(f"Quartz cron {expression!r}: day of week {token!r} has no five-field form")

    parts = []
    for part in field.split(","):
        step = ""
        if "/" in part:
            part, step = part.split("/", 1)
            step = "/" + step
        if part == "*":
            # Quartz steps over 1-7; cron's "*" is 0-7 (7 is Sunday again).
            parts.append("0-6" + step if step else part)
        elif part.endswith("L") and len(part) > 1:
            parts.append(day(part[:-1]) + "L" + step)
        elif "#" in part:
            weekday, nth = part.split("#", 1)
            parts.append(f"{day(weekday)}#{nth}{step}")
        elif "-" in part:
            first, last = part.split("-", 1)
            parts.append(f"{day(first)}-{day(last)}{step}")
        elif step:
            # A start and a step: Quartz steps up to Saturday (7); cron would
            # step on to its 7, Sunday again. The range says where to stop.
            parts.append(f"{_day_number(day(part))}-6{step}")
        else:
            parts.append(day(part))
    return ",".join(parts)


def _day_number(day: str) -> int:
    """A cron day of week (a number 0-6 or a name) as its number, Sunday 0."""
    names = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
    return names.index(day) if day in names else int(day)
