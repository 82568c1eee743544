"""How the pages write times, spans and states, and the duration chart's
geometry (chm.web.format, chm.web.chart): pure functions, no database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import pytest

from chm.web.chart import (
    HEIGHT,
    LEFT,
    MIN_SLOTS,
    PLOT_HEIGHT,
    PLOT_WIDTH,
    STUB,
    TOP,
    duration_chart,
)
from chm.web.format import age_text, badge, first_line, relative_text, span_text, time_text

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("delta", "text"),
    [
        (timedelta(0), "now"),
        (timedelta(milliseconds=999), "now"),
        (timedelta(seconds=1), "1 s ago"),
        (timedelta(seconds=59), "59 s ago"),
        (timedelta(minutes=1), "1 min ago"),
        (timedelta(minutes=59, seconds=59), "59 min ago"),
        (timedelta(hours=1), "1 h ago"),
        (timedelta(hours=3, minutes=59), "3 h ago"),
        (timedelta(hours=47, minutes=59), "47 h ago"),
        (timedelta(hours=48), "2 d ago"),
        (timedelta(days=400), "400 d ago"),
        (-timedelta(minutes=20), "in 20 min"),
        (-timedelta(seconds=30), "in 30 s"),
        (-timedelta(days=3), "in 3 d"),
    ],
)
def test_relative_time(delta: timedelta, text: str) -> None:
    assert relative_text(NOW - delta, NOW) == text


def test_relative_time_reads_any_zone_as_the_same_instant() -> None:
    berlin = timezone(timedelta(hours=1))
    assert relative_text(datetime(2026, 11, 28, 10, 0, tzinfo=berlin), NOW) == "3 h ago"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (0.9, "0 s"),
        (45, "45 s"),
        (60, "1 min"),
        (200, "3 min 20 s"),
        (3600, "1 h"),
        (7500, "2 h 5 min"),
        (86400, "1 d"),
        (3 * 86400 + 4 * 3600 + 59, "3 d 4 h"),
        (-5, "0 s"),
    ],
)
def test_spans(seconds: float, text: str) -> None:
    assert span_text(seconds) == text


def test_ages_round_down_to_one_unit() -> None:
    assert [age_text(s) for s in (59, 119, 3599, 7199, 172_799, 172_800)] == [
        "59 s",
        "1 min",
        "59 min",
        "1 h",
        "47 h",
        "2 d",
    ]


def test_a_time_in_utc_with_its_age_and_the_machine_value() -> None:
    berlin = timezone(timedelta(hours=1))
    shown = time_text(datetime(2026, 11, 28, 10, 15, 30, 123456, tzinfo=berlin), NOW)
    assert shown.datetime == "2026-11-28T09:15:30Z"
    assert shown.text == "2026-11-28 09:15 UTC (2 h ago)"
    assert shown.title == "2026-11-28 09:15:30 UTC"


@pytest.mark.parametrize(
    ("word", "shape", "css"),
    [
        ("success", "✓", "status-good status-success"),
        ("failed", "✕", "status-bad status-failed"),
        ("running", "▶", "status-progress status-running"),
        ("queued", "◷", "status-waiting status-queued"),
        ("cancelled", "⊘", "status-neutral status-cancelled"),
        ("skipped", "↷", "status-neutral status-skipped"),
        ("missed", "✕", "status-bad status-missed"),
        ("firing", "✕", "status-bad status-firing"),
    ],
)
def test_every_state_has_a_word_a_shape_and_a_colour(word: str, shape: str, css: str) -> None:
    shown = badge(word)
    assert (shown.word, shown.shape, shown.css) == (word, shape, css)


def test_no_run_is_a_dash_and_words_for_it() -> None:
    assert badge(None).word == "none" and badge(None).shape == "—"
    assert badge("no_runs").word == "no runs"


def test_first_line_of_an_error() -> None:
    assert first_line("  \nKeyError: 'x'\n  File ...") == "KeyError: 'x'"
    assert first_line("   ") is None and first_line(None) is None
    long = first_line("x" * 400, limit=10)
    assert long == "x" * 9 + "…"


@dataclass
class FakeRun:
    id: int
    status: str
    duration_seconds: float | None
    event_at: datetime | None


def runs_newest_first(*durations: float | None) -> list[FakeRun]:
    """Runs given oldest first (as read left to right), returned newest first."""
    runs = [
        FakeRun(i + 1, "failed" if d == 30 else "success", d, NOW - timedelta(hours=10 - i))
        for i, d in enumerate(durations)
    ]
    return list(reversed(runs))


def test_bars_run_oldest_to_newest_with_heights_in_proportion() -> None:
    chart = duration_chart(runs_newest_first(60, 120, 30, None))
    assert [bar.run_id for bar in chart.bars] == ["1", "2", "3", "4"]
    heights = [bar.height for bar in chart.bars]
    assert heights[1] == PLOT_HEIGHT  # the longest fills the plot
    assert heights[0] == PLOT_HEIGHT / 2
    assert heights[2] == PLOT_HEIGHT / 4
    assert heights[3] == STUB  # no duration: a stub
    # Every bar stands on the baseline, left to right, inside the plot.
    for bar in chart.bars:
        assert bar.y + bar.height == pytest.approx(TOP + PLOT_HEIGHT)
    xs = [bar.x for bar in chart.bars]
    assert xs == sorted(xs) and xs[0] >= LEFT
    # Four runs take four of the MIN_SLOTS slots, the newest at the right edge.
    slot = PLOT_WIDTH / MIN_SLOTS
    assert xs[1] - xs[0] == pytest.approx(slot, abs=0.01)
    right = chart.bars[-1].x + chart.bars[-1].width
    assert LEFT + PLOT_WIDTH - slot < right <= LEFT + PLOT_WIDTH
    assert chart.bars[2].css == "status-bad status-failed"
    assert chart.bars[1].label == "Run 2, success, 2 min, 2026-11-28 03:00 UTC"
    assert chart.bars[3].label.startswith("Run 4, success, no duration")


def test_the_axis_and_the_words_say_the_same() -> None:
    chart = duration_chart(runs_newest_first(60, 120, 30, None))
    assert [(t.y, t.label) for t in chart.ticks] == [
        (TOP + PLOT_HEIGHT, "0 s"),
        (TOP + PLOT_HEIGHT / 2, "1 min"),
        (TOP, "2 min"),
    ]
    assert chart.description == (
        "Durations of the latest 4 runs, oldest first: median 1 min, longest 2 min, "
        "shortest 30 s. 1 without a duration."
    )
    assert chart.height == HEIGHT


def test_charts_of_nothing_and_of_zero() -> None:
    assert duration_chart([]).bars == [] and duration_chart([]).description == "No runs yet."
    undated = duration_chart(runs_newest_first(None, None))
    assert undated.description == "None of the latest 2 runs has a duration."
    assert [b.height for b in undated.bars] == [STUB, STUB] and len(undated.ticks) == 1
    zero = duration_chart(runs_newest_first(0, 0))
    assert [b.height for b in zero.bars] == [0.0, 0.0]


def test_fifty_runs_fill_the_plot() -> None:
    chart = duration_chart(runs_newest_first(*([60.0] * 50)))
    assert chart.bars[0].x < LEFT + PLOT_WIDTH / 50
    assert chart.bars[-1].x + chart.bars[-1].width > LEFT + PLOT_WIDTH - PLOT_WIDTH / 50
