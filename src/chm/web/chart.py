"""The pipeline page's duration chart, drawn on the server as inline SVG.

One bar per run, oldest on the left and the newest at the right edge (a
few runs take a few narrow slots, not the whole width), its height the
run's duration on a scale from 0 to the longest duration shown; a run without a duration
(still running, or no times) is a short dashed stub at the baseline, so the
sequence keeps its gaps. Colour follows the status (the CSS classes of the
badges), and every bar has a ``<title>``; the chart as a whole has a title
and a description that says the same in words (and the history table below
gives every value).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from statistics import median
from typing import Any

from chm.web.format import badge, span_text, utc_text

WIDTH = 640
HEIGHT = 200
LEFT = 96  # room for the axis labels
TOP = 10
BOTTOM = 10
PLOT_WIDTH = WIDTH - LEFT - 8
PLOT_HEIGHT = HEIGHT - TOP - BOTTOM
STUB = 3.0  # the height of a run without a duration
BAR_FILL = 0.7  # of each slot's width
MIN_SLOTS = 20  # the plot's width holds at least this many bars


@dataclass(frozen=True)
class Bar:
    run_id: str
    status: str
    css: str
    x: float
    y: float
    width: float
    height: float
    duration_seconds: float | None
    label: str  # the bar's <title>


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


@dataclass(frozen=True)
class DurationChart:
    width: int
    height: int
    left: int
    top: int
    plot_width: int
    plot_height: int
    bars: list[Bar]
    ticks: list[Tick]
    longest: float | None
    description: str

    @property
    def baseline(self) -> float:
        return float(self.top + self.plot_height)


def _describe(bars: list[Bar], durations: list[float]) -> str:
    if not bars:
        return "No runs yet."
    runs = f"the latest {len(bars)} run{'s' if len(bars) != 1 else ''}"
    if not durations:
        return f"None of {runs} has a duration."
    without = len(bars) - len(durations)
    text = (
        f"Durations of {runs}, oldest first: median {span_text(median(durations))}, "
        f"longest {span_text(max(durations))}, shortest {span_text(min(durations))}."
    )
    if without:
        text += f" {without} without a duration."
    return text


def duration_chart(runs: Sequence[Any]) -> DurationChart:
    """The chart of ``runs`` (rows with ``id``, ``status``, ``duration_seconds``
    and ``event_at``), given newest first as the history lists them."""
    ordered = list(reversed(runs))  # oldest on the left
    durations = [float(r.duration_seconds) for r in ordered if r.duration_seconds is not None]
    longest = max(durations) if durations else None
    slots = max(len(ordered), MIN_SLOTS)
    slot = PLOT_WIDTH / slots
    width = slot * BAR_FILL
    first = slots - len(ordered)  # right-aligned: the newest run at the right edge
    bars = []
    for index, run in enumerate(ordered):
        duration = None if run.duration_seconds is None else float(run.duration_seconds)
        if duration is None:
            height = STUB
        elif longest:
            height = PLOT_HEIGHT * duration / longest
        else:
            height = 0.0  # every duration shown is 0
        when = utc_text(run.event_at) if isinstance(run.event_at, datetime) else "no time"
        spent = "no duration" if duration is None else span_text(duration)
        bars.append(
            Bar(
                run_id=str(run.id),
                status=run.status,
                css=badge(run.status).css,
                x=round(LEFT + (first + index) * slot + (slot - width) / 2, 2),
                y=round(TOP + PLOT_HEIGHT - height, 2),
                width=round(width, 2),
                height=round(height, 2),
                duration_seconds=duration,
                label=f"Run {run.id}, {run.status}, {spent}, {when}",
            )
        )
    ticks = [Tick(float(TOP + PLOT_HEIGHT), "0 s")]
    if longest:
        ticks += [
            Tick(TOP + PLOT_HEIGHT / 2, span_text(longest / 2)),
            Tick(float(TOP), span_text(longest)),
        ]
    return DurationChart(
        width=WIDTH,
        height=HEIGHT,
        left=LEFT,
        top=TOP,
        plot_width=PLOT_WIDTH,
        plot_height=PLOT_HEIGHT,
        bars=bars,
        ticks=ticks,
        longest=longest,
        description=_describe(bars, durations),
    )
