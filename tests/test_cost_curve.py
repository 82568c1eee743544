"""The cost curve's reading and plot (``bench/cost_curve_plot.py``) and its count of
the runs a plan reads (``bench/cost_curve.py``): pure functions, no database."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from bench.cost_curve import runs_rows
from bench.cost_curve_plot import MEASURES, reading, slope, svg, table

RUNS = [1e6, 5e6, 20e6]
PAGE = next(m for m in MEASURES if m.name == "oldest history page")
PRUNE = next(m for m in MEASURES if m.name == "prune to 14 days")


def test_slope_is_zero_when_flat_and_one_when_growing_as_the_runs() -> None:
    assert slope(RUNS, [3.0, 3.0, 3.0]) == pytest.approx(0.0)
    assert slope(RUNS, [2.0, 10.0, 40.0]) == pytest.approx(1.0)


def test_a_flat_time_with_flat_rows_reads_flat() -> None:
    assert reading(PAGE, RUNS, [1.5, 1.4, 1.6], [51, 51, 51]).startswith("✅ flat")


def test_rows_read_growing_where_the_need_is_flat_is_flagged() -> None:
    text = reading(PAGE, RUNS, [1.5, 1.5, 121.0], [51, 51, 98_435])
    assert text.startswith("❌ grows: reads x1,930 the runs it must")


def test_time_growing_with_the_runs_it_must_read_passes() -> None:
    text = reading(PRUNE, RUNS, [1_000, 25_000, 110_000], [0.16e6, 4.2e6, 19.2e6])
    assert text.startswith("✅ grows with the runs it must read")


def test_time_growing_faster_than_the_runs_read_is_flagged() -> None:
    text = reading(PRUNE, RUNS, [1_000, 60_000, 900_000], [0.16e6, 4.2e6, 19.2e6])
    assert text.startswith("❌ grows faster than the runs it reads")


def test_runs_rows_counts_every_loop_and_the_filtered_rows_of_runs_scans_only() -> None:
    plan = {
        "Node Type": "Nested Loop",
        "Actual Rows": 10,
        "Actual Loops": 1,
        "Plans": [
            {"Relation Name": "pipelines", "Actual Rows": 10, "Actual Loops": 1},
            {
                "Relation Name": "runs",
                "Actual Rows": 2,
                "Rows Removed by Filter": 3,
                "Actual Loops": 10,
            },
        ],
    }
    assert runs_rows(plan) == 50


def _document() -> dict[str, Any]:
    def size(name: str, runs: int, days: int, scale: float) -> dict[str, Any]:
        measures = {
            "latest run": {"p50_ms": 0.7, "reads": {"runs_rows": 1}},
            "oldest history page": {
                "p50_ms": 1.5 * scale,
                "reads": {"runs_rows": 51 * scale},
                "page_number": {"median": days / 2},
            },
        }
        return {"spec": {"name": name, "runs": runs, "days": days}, "measures": measures}

    return {
        "sizes": {
            "history_1m": size("history_1m", 1_000_000, 18, 1),
            "large": size("large", 5_000_000, 90, 1),
            "history_20m": size("history_20m", 20_000_000, 360, 80),
        }
    }


def test_the_table_has_a_column_per_size_and_says_not_run_for_a_missing_measure() -> None:
    lines = table(_document()).splitlines()
    assert "1 M runs (18 d) | 5 M runs (90 d) | 20 M runs (360 d)" in lines[0]
    latest = next(line for line in lines if line.startswith("| latest run |"))
    assert "✅ flat" in latest
    summary = next(line for line in lines if line.startswith("| client summary"))
    assert summary.count("not run") == 3


def test_the_plot_is_svg_with_a_line_per_measured_series_in_each_panel() -> None:
    root = ET.fromstring(svg(_document()))
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 2 * 2  # two measures with values, time and rows panels
