"""How fast each report answers on a large history, for one client and for all.

    .venv/bin/python -m bench.reports --database postgresql://postgres@127.0.0.1:5432/postgres \\
        --pipelines 10000 --runs 5000000 --days 90

takes the benchmark data set of that size from ``bench/dataset.py`` (generated
once and cached: a ``chm_bench_<size>`` database on PostgreSQL, a file under
``bench/.data/`` for ``--database sqlite``; ``--rebuild`` regenerates it),
then times every report through the same functions the API calls, for one
active client and for all clients, and prints the median and p95 (nearest
rank) of ``--repeat`` runs after one warm-up. Not part of the test suite;
``make bench`` runs it with the other benchmarks (``bench/run.py``).

The data (see ``bench/dataset.py``): 50 pipelines per client, one client in
25 and one pipeline in 20 inactive, five platforms; runs over ``--days``
before the reference time, one pipeline in ten flaky (30 % failures), some
runs without timestamps, recent runs still running or queued and a few stuck.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from bench import dataset
from bench.dataset import AS_OF
from chm.core.db import create_db_engine, make_session_factory
from chm.reports import durations, failures, flaky, status
from chm.reports.board import build_board
from chm.reports.params import OutputFormat, ReportContext
from chm.reports.sql import Bucket, Scope
from chm.reports.views import VIEWS

TARGET_ONE_MS, TARGET_ALL_MS = 100.0, 2000.0


def _median_client(engine: Engine) -> int:
    """An active client near the middle (an inactive one's reports would be empty)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT min(id) FROM clients WHERE is_active"
                    " AND id >= (SELECT max(id) / 2 FROM clients)"
                )
            ).scalar_one()
        )


Report = Callable[[Session, ReportContext], object]

REPORTS: dict[str, Report] = {
    "failures-over-time (day, 7 d)": lambda s, c: failures.failures_over_time_report(
        s, c, Bucket.day, None, None
    ),
    "failures-over-time (hour, 48 h)": lambda s, c: failures.failures_over_time_report(
        s, c, Bucket.hour, c.as_of - timedelta(hours=48), None
    ),
    "latest-status": lambda s, c: status.latest_status_report(s, c, None),
    "failures-by-client": failures.failures_by_client_report,
    "flaky-pipelines (30 d)": lambda s, c: flaky.flaky_pipelines_report(s, c, 30, 10),
    "failure-rate-by-platform (7 d)": lambda s, c: failures.failure_rate_by_platform_report(
        s, c, None, None
    ),
    "duration-distribution (7 d)": lambda s, c: durations.duration_distribution_report(
        s, c, None, None, None, None
    ),
    "status-changes (24 h)": lambda s, c: status.status_changes_report(s, c, None, None),
    "stuck-runs (6 h)": lambda s, c: status.stuck_runs_report(s, c, timedelta(hours=6)),
    "status board (chm status)": lambda s, c: build_board(
        s,
        c.as_of,
        timedelta(hours=6),
        (str(c.scope.client_id), "bench") if c.scope.client_id else None,
    ),
}


def nearest_rank(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def time_report(engine: Engine, report: Report, scope: Scope, repeat: int) -> list[float]:
    sessions = make_session_factory(engine)
    context = ReportContext(as_of=AS_OF, scope=scope, output=OutputFormat.json)
    timings = []
    for attempt in range(repeat + 1):
        with sessions() as session:
            started = time.perf_counter()
            report(session, context)
            elapsed = (time.perf_counter() - started) * 1000
        if attempt:  # the first is a warm-up
            timings.append(elapsed)
    return timings


def time_views(url: str, repeat: int) -> dict[str, dict[str, float]]:
    """SELECT * of each BI view (all clients, as of the database's now())."""
    engine = create_db_engine(url)
    results = {}
    print(f"\n{'view':34} {'ms (median / p95)':>18}")
    try:
        for view in VIEWS:
            timings = []
            for attempt in range(repeat + 1):
                with engine.connect() as conn:
                    started = time.perf_counter()
                    conn.exec_driver_sql(f"SELECT * FROM {view.name}").fetchall()
                    elapsed = (time.perf_counter() - started) * 1000
                if attempt:
                    timings.append(elapsed)
            median, p95 = statistics.median(timings), nearest_rank(timings, 95)
            results[view.name] = {"median": median, "p95": p95}
            print(f"{view.name:34} {median:8.1f} / {p95:7.1f}")
    finally:
        engine.dispose()
    return results


def time_reports(
    engine: Engine, repeat: int, out: Callable[[str], None] = print
) -> dict[str, dict[str, dict[str, float]]]:
    """Every report for one (active) client and for all: median and p95 in ms."""
    one_client = _median_client(engine)
    results: dict[str, dict[str, dict[str, float]]] = {}
    header = f"{'report':34} {'one client ms':>18} {'all clients ms':>18}"
    out(
        f"\n{engine.dialect.name}, as of {AS_OF:%Y-%m-%d}, client {one_client}, "
        f"{repeat} runs each (median / p95)\n{header}"
    )
    for name, report in REPORTS.items():
        row: dict[str, dict[str, float]] = {}
        for label, scope in (("one", Scope(client_id=one_client)), ("all", Scope())):
            timings = time_report(engine, report, scope, repeat)
            row[label] = {
                "median": statistics.median(timings),
                "p95": nearest_rank(timings, 95),
            }
        results[name] = row
        one, every = row["one"], row["all"]
        flag = "" if one["p95"] < TARGET_ONE_MS and every["p95"] < TARGET_ALL_MS else "  (!)"
        out(
            f"{name:34} {one['median']:8.1f} / {one['p95']:7.1f}"
            f" {every['median']:8.1f} / {every['p95']:7.1f}{flag}"
        )
    out(f"\n(!) above {TARGET_ONE_MS:.0f} ms for one client or {TARGET_ALL_MS:.0f} ms for all")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="sqlite", help="'sqlite' or a PostgreSQL URL")
    parser.add_argument("--pipelines", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=500_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rebuild", action="store_true", help="regenerate the cached data")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument("--views", action="store_true", help="also time SELECT * of each view")
    args = parser.parse_args(argv)

    spec = dataset.custom_spec(args.pipelines, args.runs, args.days)
    url = dataset.ensure(spec, args.database, rebuild=args.rebuild)
    engine = create_db_engine(url)
    try:
        results: dict[str, Any] = time_reports(engine, args.repeat, partial(print, flush=True))
        if args.views:
            results["views"] = time_views(url, args.repeat)
    finally:
        engine.dispose()
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
