"""How the pages write times, spans and states: pure functions, the templates' filters.

Every time is shown in UTC with its age relative to the page's clock
("2026-11-28 02:00 UTC (3 h ago)"); every state as a word, a shape and a
colour (``Badge``): the shape and the colour repeat the word, never replace it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from chm.core.timeutil import as_utc, isoformat_z

MINUTE = 60
HOUR = 60 * MINUTE
DAY = 24 * HOUR


def utc_text(value: datetime) -> str:
    """``2026-11-28 02:00 UTC``: minutes are what an operator reads."""
    return as_utc(value).strftime("%Y-%m-%d %H:%M UTC")


def span_text(seconds: float) -> str:
    """A length of time, in its largest unit and the next one: ``45 s``,
    ``3 min 20 s``, ``2 h 5 min``, ``3 d 4 h`` (the smaller unit dropped when 0)."""
    whole = max(0, int(seconds))
    if whole < MINUTE:
        return f"{whole} s"
    for unit, name, small, small_name in (
        (DAY, "d", HOUR, "h"),
        (HOUR, "h", MINUTE, "min"),
        (MINUTE, "min", 1, "s"),
    ):
        if whole >= unit:
            big, rest = divmod(whole, unit)
            part = rest // small
            return f"{big} {name} {part} {small_name}" if part else f"{big} {name}"
    raise AssertionError("unreachable")  # pragma: no cover


def age_text(seconds: float) -> str:
    """An age in one unit, rounded down: ``45 s``, ``12 min``, ``3 h``, ``2 d``."""
    whole = max(0, int(seconds))
    if whole < MINUTE:
        return f"{whole} s"
    if whole < HOUR:
        return f"{whole // MINUTE} min"
    if whole < 2 * DAY:
        return f"{whole // HOUR} h"
    return f"{whole // DAY} d"


def relative_text(value: datetime, now: datetime) -> str:
    """``3 h ago``, ``in 20 min``, ``now`` (within a second)."""
    seconds = (as_utc(now) - as_utc(value)).total_seconds()
    if abs(seconds) < 1:
        return "now"
    if seconds > 0:
        return f"{age_text(seconds)} ago"
    return f"in {age_text(-seconds)}"


@dataclass(frozen=True)
class TimeText:
    """What a ``<time>`` element carries: the machine value, the text and its title."""

    datetime: str  # RFC 3339, Z
    text: str  # 2026-11-28 02:00 UTC (3 h ago)
    title: str  # to the second


def time_text(value: datetime, now: datetime) -> TimeText:
    utc = as_utc(value)
    return TimeText(
        datetime=isoformat_z(utc.replace(microsecond=0)),
        text=f"{utc_text(utc)} ({relative_text(utc, now)})",
        title=utc.strftime("%Y-%m-%d %H:%M:%S UTC"),
    )


@dataclass(frozen=True)
class Badge:
    """A state as word, shape and colour: ``css`` picks the colour, ``shape`` is
    decorative (aria-hidden), ``word`` is the text everyone reads."""

    word: str
    shape: str
    css: str


# Run statuses, alert states, overdue states, sources' states: one family of
# colours each meaning the same thing (bad, good, in progress, waiting, neutral).
_SHAPES: dict[str, tuple[str, str]] = {
    "success": ("✓", "good"),
    "failed": ("✕", "bad"),
    "running": ("▶", "progress"),
    "queued": ("◷", "waiting"),
    "cancelled": ("⊘", "neutral"),
    "skipped": ("↷", "neutral"),
    "unknown": ("?", "neutral"),
    "firing": ("✕", "bad"),
    "resolved": ("✓", "good"),
    "missed": ("✕", "bad"),
    "late": ("◷", "waiting"),
    "ok": ("✓", "good"),
    "failing": ("✕", "bad"),
    "stale": ("◷", "bad"),
    "never": ("—", "neutral"),
    "unscheduled": ("—", "neutral"),
    "active": ("▶", "progress"),
    "ended": ("—", "neutral"),
    "upcoming": ("◷", "waiting"),
    "acknowledged": ("✓", "neutral"),
}
NO_STATE = "none"


def badge(word: str | None) -> Badge:
    """The badge of a state word; None (no run at all) is ``none`` with a dash."""
    if word is None or word in (NO_STATE, "no_runs"):
        return Badge("no runs" if word == "no_runs" else NO_STATE, "—", "status-none")
    shape, family = _SHAPES.get(word, ("•", "neutral"))
    return Badge(word.replace("_", " "), shape, f"status-{family} status-{word}")


def first_line(text: str | None, limit: int = 300) -> str | None:
    """A stored error's first non-blank line, cut at ``limit`` characters."""
    if not text or not text.strip():
        return None
    line = text.strip().splitlines()[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"
