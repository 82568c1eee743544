"""The cost curve's table (Markdown) and log-log plot (SVG), from ``bench/cost_curve.py``'s results.

The plot is drawn here, without a plotting library: two panels side by side,
time and runs rows read against the runs in the database, both axes in
powers of ten, one line per measure, and a dashed slope-1 line (a cost that
grows as the history does) for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any

from bench.dataset import CURVE

Figures = dict[str, Any]


@dataclass(frozen=True)
class Measure:
    """One line of the table and of the plot."""

    name: str  # the key in a size's "measures"
    how: str
    must: str  # the runs it must read, whatever the history
    ms: Callable[[Figures], float]
    rows: Callable[[Figures], float]
    note: Callable[[Figures], str] = lambda f: ""
    need_is_flat: bool = True  # what it must read does not grow with the history


def _http(f: Figures) -> float:
    return float(f["p50_ms"])


def _median(f: Figures) -> float:
    return float(f["median_ms"])


def _reads(f: Figures) -> float:
    return float(f["reads"]["runs_rows"])


def _evaluation_rows(f: Figures) -> float:
    return float(sum(statement["runs_rows"] for statement in f["reads"].values()))


def _page(f: Figures) -> str:
    return f"page {f['page_number']['median']:,.0f}"


def _prune_note(f: Figures) -> str:
    return f"{f['runs_per_s']:,} runs/s, batch {f['batch_ms']['median']:,.0f} ms"


HTTP = "HTTP, p50 at c=1"
PAGE = "51 (a page and one more)"
MEASURES = (
    Measure("latest run", HTTP, "1 (an index top-1)", _http, _reads),
    Measure("first history page", HTTP, PAGE, _http, _reads),
    Measure("middle history page", HTTP, PAGE, _http, _reads, _page),
    Measure("oldest history page", HTTP, PAGE, _http, _reads, _page),
    Measure(
        "client summary (24 h)",
        HTTP,
        "the client's runs of the window, 2 probes a pipeline",
        _http,
        _reads,
    ),
    Measure(
        "flaky pipelines (30 d), all",
        "in process, median",
        "every run of the 30 days",
        _median,
        _reads,
        need_is_flat=False,
    ),
    Measure(
        "flaky pipelines (30 d), one",
        "in process, median",
        "the client's runs of the 30 days",
        _median,
        _reads,
        need_is_flat=False,
    ),
    Measure(
        "overdue report, all",
        "API in process, median",
        "a probe of each expectation's window, the latest run of the overdue",
        _median,
        _reads,
    ),
    Measure(
        "overdue report, one", "API in process, median", "the same, 50 pipelines", _median, _reads
    ),
    Measure(
        "alert evaluation",
        "evaluate(), steady, median",
        "per pair: top-1 probes, the window's runs, the last 31 finished runs",
        lambda f: float(f["steady"]["median_s"]) * 1000,
        _evaluation_rows,
        lambda f: f"{sum(f['rules'].values()):,} rules",
    ),
    Measure(
        "prune, the oldest day",
        "total; rows = runs deleted",
        "the day's runs",
        lambda f: float(f["seconds"]) * 1000,
        lambda f: float(f["runs_deleted"]),
        _prune_note,
    ),
    Measure(
        "prune to 14 days",
        "total; rows = runs deleted",
        "the runs it deletes",
        lambda f: float(f["seconds"]) * 1000,
        lambda f: float(f["runs_deleted"]),
        _prune_note,
        need_is_flat=False,
    ),
)
FLAT_SLOPE = 0.15  # on a log-log scale: x1.57 from 1 to 20 million runs


def _sizes(document: Figures) -> list[str]:
    return [name for name in CURVE if name in document["sizes"]]


def _value(document: Figures, size: str, measure: Measure, of: str) -> float | None:
    figures = document["sizes"][size]["measures"].get(measure.name)
    if figures is None:
        return None
    return measure.ms(figures) if of == "ms" else measure.rows(figures)


def _ms(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:,.1f} s"
    return f"{value:.2f} ms" if value < 10 else f"{value:,.0f} ms"


def _count(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1e6:.2f} M"
    return f"{value / 1000:.1f} k" if value >= 10_000 else f"{value:,.0f}"


def slope(runs: list[float], values: list[float]) -> float:
    """The least-squares slope of log(value) over log(runs): 0 flat, 1 as the runs."""
    xs = [math.log10(r) for r in runs]
    ys = [math.log10(max(v, 1e-9)) for v in values]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread


def reading(measure: Measure, runs: list[float], times: list[float], rows: list[float]) -> str:
    """Flat, or grows with (or faster than) the rows it reads; and whether it
    reads more as the history grows when what it must read does not."""
    if len(runs) < 2:
        return "-"
    time_slope, rows_slope = slope(runs, times), slope(runs, rows)
    slopes = f"(slope {time_slope:.2f}; of the runs read {rows_slope:.2f})"
    if measure.need_is_flat and rows_slope > FLAT_SLOPE:
        return f"❌ grows: reads x{rows[-1] / rows[0]:,.0f} the runs it must {slopes}"
    if time_slope <= FLAT_SLOPE:
        return f"✅ flat {slopes}"
    if time_slope <= rows_slope + FLAT_SLOPE:
        return f"✅ grows with the runs it must read {slopes}"
    return f"❌ grows faster than the runs it reads {slopes}"


def table(document: Figures) -> str:
    sizes = _sizes(document)
    runs = [float(document["sizes"][s]["spec"]["runs"]) for s in sizes]
    heads = [
        f"{document['sizes'][s]['spec']['runs'] / 1e6:g} M runs"
        f" ({document['sizes'][s]['spec']['days']} d)"
        for s in sizes
    ]
    lines = [
        f"| measure | how | must read (runs) | {' | '.join(heads)} | reading |",
        f"| --- | --- | --- | {' | '.join('---:' for _ in sizes)} | --- |",
    ]
    for measure in MEASURES:
        cells, measured, times, rows = [], [], [], []
        for size, count in zip(sizes, runs, strict=True):
            figures = document["sizes"][size]["measures"].get(measure.name)
            if figures is None:
                cells.append("not run")
                continue
            ms, read = measure.ms(figures), measure.rows(figures)
            measured.append(count)
            times.append(ms)
            rows.append(read)
            note = measure.note(figures)
            cells.append(f"{_ms(ms)} (reads {_count(read)}{'; ' + note if note else ''})")
        lines.append(
            f"| {measure.name} | {measure.how} | {measure.must} | {' | '.join(cells)}"
            f" | {reading(measure, measured, times, rows)} |"
        )
    return "\n".join(lines)


# --- the SVG ---------------------------------------------------------------------------

COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#637939",
)
DASHES = ("", "6 3")  # a second look for the lines sharing a colour family
WIDTH, PANEL_W, PANEL_H = 980, 400, 300
LEFT, TOP, GAP = 70, 40, 90


@dataclass(frozen=True)
class Axes:
    """A log-log panel: data to pixels."""

    x0: float
    y0: float
    runs: tuple[float, float]
    values: tuple[float, float]

    def x(self, runs: float) -> float:
        low, high = (math.log10(v) for v in self.runs)
        return self.x0 + (math.log10(runs) - low) / (high - low) * PANEL_W

    def y(self, value: float) -> float:
        low, high = (math.log10(v) for v in self.values)
        return self.y0 + PANEL_H - (math.log10(value) - low) / (high - low) * PANEL_H


def _decades(values: list[float]) -> tuple[float, float]:
    """Whole powers of ten around ``values``, at least two of them apart (room for the
    slope-1 guide, which rises by the 20 times between the sizes)."""
    positive = [v for v in values if v > 0]
    low = math.floor(math.log10(min(positive)))
    high = max(math.ceil(math.log10(max(positive))), low + 2)
    return 10.0**low, 10.0**high


def _label(value: float) -> str:
    if value >= 1e6:
        return f"{value / 1e6:g} M"
    return f"{value / 1e3:g} k" if value >= 1e3 else f"{value:g}"


def _panel(
    axes: Axes, title: str, unit: str, sizes: list[float], series: list[list[float | None]]
) -> list[str]:
    out = [
        f'<text x="{axes.x0 + PANEL_W / 2}" y="{axes.y0 - 14}" text-anchor="middle"'
        f' font-weight="bold">{escape(title)}</text>',
        f'<rect x="{axes.x0}" y="{axes.y0}" width="{PANEL_W}" height="{PANEL_H}"'
        ' fill="none" stroke="#444"/>',
    ]
    low, high = (round(math.log10(v)) for v in axes.values)
    for power in range(low, high + 1):
        y = axes.y(10.0**power)
        out.append(
            f'<line x1="{axes.x0}" y1="{y:.1f}" x2="{axes.x0 + PANEL_W}" y2="{y:.1f}"'
            ' stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{axes.x0 - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{_label(10.0**power)}</text>"
        )
    for runs in sizes:
        x = axes.x(runs)
        out.append(
            f'<line x1="{x:.1f}" y1="{axes.y0}" x2="{x:.1f}" y2="{axes.y0 + PANEL_H}"'
            ' stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{x:.1f}" y="{axes.y0 + PANEL_H + 16}" text-anchor="middle">'
            f"{_label(runs)}</text>"
        )
    out.append(
        f'<text x="{axes.x0 + PANEL_W / 2}" y="{axes.y0 + PANEL_H + 34}"'
        ' text-anchor="middle">runs in the database (log)</text>'
    )
    out.append(
        f'<text transform="translate({axes.x0 - 50},{axes.y0 + PANEL_H / 2}) rotate(-90)"'
        f' text-anchor="middle">{escape(unit)} (log)</text>'
    )
    # A slope-1 guide from the panel's lower left corner: what "grows as the runs" looks like.
    start = axes.values[0] * 1.0
    end = start * sizes[-1] / sizes[0]
    out.append(
        f'<line x1="{axes.x(sizes[0]):.1f}" y1="{axes.y(start):.1f}"'
        f' x2="{axes.x(sizes[-1]):.1f}" y2="{axes.y(end):.1f}"'
        ' stroke="#999" stroke-width="1.5" stroke-dasharray="2 4"/>'
    )
    for index, values in enumerate(series):
        colour, dash = COLOURS[index % len(COLOURS)], DASHES[index // len(COLOURS)]
        points = [
            (axes.x(runs), axes.y(value))
            for runs, value in zip(sizes, values, strict=True)
            if value is not None and value > 0
        ]
        if len(points) >= 2:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"'
                + (f' stroke-dasharray="{dash}"' if dash else "")
                + "/>"
            )
        out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>' for x, y in points]
    return out


def svg(document: Figures) -> str:
    sizes = _sizes(document)
    runs = [float(document["sizes"][s]["spec"]["runs"]) for s in sizes]
    times = [[_value(document, s, m, "ms") for s in sizes] for m in MEASURES]
    rows = [[_value(document, s, m, "rows") for s in sizes] for m in MEASURES]
    x_range = (runs[0] / 1.25, runs[-1] * 1.25)
    flat_times = [v for line in times for v in line if v is not None]
    flat_rows = [v for line in rows for v in line if v is not None and v > 0]
    left = Axes(LEFT, TOP, x_range, _decades(flat_times))
    right = Axes(LEFT + PANEL_W + GAP, TOP, x_range, _decades(flat_rows))
    legend_top = TOP + PANEL_H + 60
    rows_of_legend = math.ceil((len(MEASURES) + 1) / 3)
    height = legend_top + rows_of_legend * 20 + 20
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}"'
        f' viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
    ]
    out += _panel(left, "time (median)", "milliseconds", runs, times)
    out += _panel(right, "runs rows read", "rows", runs, rows)
    entries = [
        (m.name, COLOURS[i % len(COLOURS)], DASHES[i // len(COLOURS)])
        for i, m in enumerate(MEASURES)
    ]
    entries.append(("slope 1: grows as the runs", "#999", "2 4"))
    for index, (name, colour, dash) in enumerate(entries):
        x = LEFT + (index % 3) * 300
        y = legend_top + (index // 3) * 20
        out.append(
            f'<line x1="{x}" y1="{y}" x2="{x + 26}" y2="{y}" stroke="{colour}" stroke-width="2"'
            + (f' stroke-dasharray="{dash}"' if dash else "")
            + "/>"
        )
        out.append(f'<text x="{x + 32}" y="{y + 4}">{escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write_svg(document: Figures, path: Path) -> None:
    if len(_sizes(document)) >= 2:
        path.write_text(svg(document))
