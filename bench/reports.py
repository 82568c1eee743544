"""How fast each report answers on a large history, for one client and for all.

    .venv/bin/python bench/reports.py --database postgresql://postgres@127.0.0.1:5432/postgres \\
        --pipelines 10000 --runs 5000000 --days 90

creates a scratch database (``chm_bench_<pipelines>_<runs>`` on PostgreSQL, a
file under the temporary directory for ``--database sqlite``), migrates it,
fills it (PostgreSQL: ``INSERT ... SELECT generate_series``; SQLite:
``executemany``), then times every report through the same functions the API
calls, for one client and for all clients, and prints the median and p95
(nearest rank) of ``--repeat`` runs after one warm-up. ``--keep`` leaves the
database for another run, which then skips the load. Not part of the test
suite.

The data: 50 pipelines per client, one client in 25 and one pipeline in 20
inactive, five platforms; runs spread evenly over ``--days`` before the
reference time, one pipeline in ten flaky (30 % failures), some runs
without timestamps, recent runs still running or queued and a few stuck.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from chm.core.db import create_db_engine, make_session_factory
from chm.core.migrate import upgrade
from chm.reports import durations, failures, flaky, status
from chm.reports.board import build_board
from chm.reports.params import OutputFormat, ReportContext
from chm.reports.sql import Bucket, Scope
from chm.reports.views import VIEWS

AS_OF = datetime(2026, 11, 28, tzinfo=UTC)
PIPELINES_PER_CLIENT = 50
PLATFORMS = ("airflow", "databricks", "adf", "dbt_cloud", "generic")
ENVIRONMENTS = ("prod", "staging", "dev")
TARGET_ONE_MS, TARGET_ALL_MS = 100.0, 2000.0


def scratch_url(base: str, pipelines: int, runs: int) -> str:
    if base == "sqlite":
        return f"sqlite:///{Path(tempfile.gettempdir()) / f'chm_bench_{pipelines}_{runs}.db'}"
    return make_url(base).set(database=f"chm_bench_{pipelines}_{runs}").render_as_string(False)


def database_exists(url: str, admin: str | None) -> bool:
    if url.startswith("sqlite"):
        return Path(make_url(url).database or "").exists()
    name = make_url(url).database
    with psycopg.connect(admin or "", autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return found is not None


def create_database(url: str, admin: str | None) -> None:
    if url.startswith("sqlite"):
        Path(make_url(url).database or "").unlink(missing_ok=True)
        return
    with psycopg.connect(admin or "", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{make_url(url).database}"')


def drop_database(url: str, admin: str | None) -> None:
    if url.startswith("sqlite"):
        Path(make_url(url).database or "").unlink(missing_ok=True)
        return
    with psycopg.connect(admin or "", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def load_postgres(engine: Engine, pipelines: int, runs: int, days: int) -> None:
    clients = math.ceil(pipelines / PIPELINES_PER_CLIENT)
    params = {
        "clients": clients,
        "pipelines": pipelines,
        "per_client": PIPELINES_PER_CLIENT,
        "as_of": AS_OF,
        "span": timedelta(days=days),
        "platforms": list(PLATFORMS),
        "environments": list(ENVIRONMENTS),
    }
    with engine.begin() as conn:
        conn.execute(sa.text("SELECT setseed(0.42)"))
        conn.execute(
            sa.text(
                "INSERT INTO clients (id, name, name_key, is_active, created_at, updated_at)"
                " SELECT c, 'Client ' || lpad(c::text, 5, '0'), 'client ' || lpad(c::text, 5, '0'),"
                " c % 25 <> 0, :as_of, :as_of FROM generate_series(1, :clients) c"
            ),
            params,
        )
        conn.execute(
            sa.text(
                "INSERT INTO pipelines (id, client_id, name, name_key, platform, pipeline_type,"
                " environment, is_active, created_at, updated_at)"
                " SELECT p, 1 + (p - 1) / :per_client, 'pipeline_' || p, 'pipeline_' || p,"
                " (CAST(:platforms AS text[]))[1 + p % 5], 'batch',"
                " (CAST(:environments AS text[]))[1 + p % 3], p % 20 <> 0,"
                " :as_of, :as_of FROM generate_series(1, :pipelines) p"
            ),
            params,
        )
    chunk = 1_000_000
    for first in range(1, runs + 1, chunk):
        last = min(runs, first + chunk - 1)
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(sa.text(RUNS_INSERT_SQL), {**params, "first": first, "last": last})
        print(f"  runs {first:,}..{last:,} in {time.perf_counter() - started:.1f} s", flush=True)
    with engine.begin() as conn:
        for table in ("clients", "pipelines", "runs"):
            conn.execute(
                sa.text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" (SELECT max(id) FROM {table}))"
                )
            )
    # VACUUM (not in a transaction): statistics, and the visibility map that
    # lets index-only scans skip the table.
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql("VACUUM ANALYZE")


# One row per run: a pipeline, a time in the span, and the dice that decide
# its status and shape (see the module docstring).
RUNS_INSERT_SQL = """
INSERT INTO runs (id, pipeline_id, external_run_id, status, started_at, finished_at,
                  duration_seconds, duration_from_source, metrics, created_at, updated_at)
SELECT i, pid, 'bench-' || i, st,
       CASE WHEN shape < 0.02 THEN NULL ELSE t END,
       CASE WHEN shape < 0.001 OR st IN ('running', 'queued') THEN NULL
            ELSE t + d * interval '1 second' END,
       CASE WHEN shape < 0.02 OR st IN ('running', 'queued') THEN NULL ELSE d END,
       false, '{}'::jsonb, t + interval '1 minute', t + interval '1 minute'
FROM (
  SELECT i, pid, t, d, shape,
         CASE WHEN dice < 0.0002 THEN 'running'
              WHEN t > CAST(:as_of AS timestamptz) - interval '3 hours' AND dice < 0.3
                THEN 'running'
              WHEN t > CAST(:as_of AS timestamptz) - interval '1 hour' AND dice < 0.4
                THEN 'queued'
              WHEN dice < CASE WHEN pid % 10 = 0 THEN 0.3 WHEN pid % 10 < 3 THEN 0.05
                               ELSE 0.005 END THEN 'failed'
              WHEN dice > 0.995 THEN 'unknown'
              WHEN dice > 0.99 THEN 'cancelled'
              ELSE 'success' END AS st
  FROM (
    SELECT i, 1 + i % :pipelines AS pid,
           CAST(:as_of AS timestamptz) - random() * CAST(:span AS interval) AS t,
           round((1 + random() * random() * 7200)::numeric, 3)::float8 AS d,
           random() AS dice, random() AS shape
    FROM generate_series(:first, :last) i
  ) base
) runs
"""


def _sqlite_time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


def _sqlite_runs(pipelines: int, runs: int, days: int) -> Iterator[tuple[Any, ...]]:
    rng = random.Random(42)
    span = days * 86400.0
    for i in range(1, runs + 1):
        pid = 1 + i % pipelines
        t = AS_OF - timedelta(seconds=rng.random() * span)
        d = round(1 + rng.random() * rng.random() * 7200, 3)
        dice, shape = rng.random(), rng.random()
        fail = 0.3 if pid % 10 == 0 else 0.05 if pid % 10 < 3 else 0.005
        if dice < 0.0002 or (t > AS_OF - timedelta(hours=3) and dice < 0.3):
            st = "running"
        elif t > AS_OF - timedelta(hours=1) and dice < 0.4:
            st = "queued"
        elif dice < fail:
            st = "failed"
        elif dice > 0.995:
            st = "unknown"
        elif dice > 0.99:
            st = "cancelled"
        else:
            st = "success"
        open_run = st in ("running", "queued")
        started = None if shape < 0.02 else _sqlite_time(t)
        finished = None if shape < 0.001 or open_run else _sqlite_time(t + timedelta(seconds=d))
        duration = None if shape < 0.02 or open_run else d
        created = _sqlite_time(t + timedelta(minutes=1))
        yield (i, pid, f"bench-{i}", st, started, finished, duration, 0, "{}", created, created)


def load_sqlite(engine: Engine, pipelines: int, runs: int, days: int) -> None:
    as_of = _sqlite_time(AS_OF)
    clients = math.ceil(pipelines / PIPELINES_PER_CLIENT)
    raw = sqlite3.connect(make_url(engine.url).database or "")
    raw.executemany(
        "INSERT INTO clients (id, created_at, updated_at, name, name_key, is_active)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [
            (c, as_of, as_of, f"Client {c:05d}", f"client {c:05d}", int(c % 25 != 0))
            for c in range(1, clients + 1)
        ],
    )
    raw.executemany(
        "INSERT INTO pipelines (id, created_at, updated_at, client_id, name, name_key, platform,"
        " pipeline_type, environment, is_active) VALUES (?, ?, ?, ?, ?, ?, ?, 'batch', ?, ?)",
        [
            (
                p,
                as_of,
                as_of,
                1 + (p - 1) // PIPELINES_PER_CLIENT,
                f"pipeline_{p}",
                f"pipeline_{p}",
                PLATFORMS[p % 5],
                ENVIRONMENTS[p % 3],
                int(p % 20 != 0),
            )
            for p in range(1, pipelines + 1)
        ],
    )
    rows = _sqlite_runs(pipelines, runs, days)
    insert = (
        "INSERT INTO runs (id, pipeline_id, external_run_id, status, started_at, finished_at,"
        " duration_seconds, duration_from_source, metrics, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    )
    done = 0
    while batch := [row for _, row in zip(range(200_000), rows, strict=False)]:
        raw.executemany(insert, batch)
        raw.commit()
        done += len(batch)
        print(f"  runs {done:,}", flush=True)
    raw.execute("ANALYZE")
    raw.commit()
    raw.close()


def _median_client(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text("SELECT max(id) / 2 FROM clients")).scalar_one())


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", default="sqlite", help="'sqlite' or a PostgreSQL URL")
    parser.add_argument("--pipelines", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=500_000)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    parser.add_argument("--views", action="store_true", help="also time SELECT * of each view")
    args = parser.parse_args(argv)

    admin = None if args.database == "sqlite" else args.database
    url = scratch_url(args.database, args.pipelines, args.runs)
    shown = make_url(url).render_as_string(hide_password=True)
    if not database_exists(url, admin):
        print(f"loading {args.pipelines:,} pipelines, {args.runs:,} runs into {shown}", flush=True)
        create_database(url, admin)
        engine = create_db_engine(url)
        started = time.perf_counter()
        try:
            upgrade(engine)
            loader = load_sqlite if url.startswith("sqlite") else load_postgres
            loader(engine, args.pipelines, args.runs, args.days)
        except BaseException:
            engine.dispose()
            drop_database(url, admin)  # never leave a half-loaded database to reuse
            raise
        print(f"loaded in {time.perf_counter() - started:.0f} s", flush=True)
    else:
        print(f"reusing {shown}", flush=True)
        engine = create_db_engine(url)
    one_client = _median_client(engine)
    results: dict[str, dict[str, dict[str, float]]] = {}
    header = f"{'report':34} {'one client ms':>18} {'all clients ms':>18}"
    print(
        f"\n{engine.dialect.name}, as of {AS_OF:%Y-%m-%d}, client {one_client}, "
        f"{args.repeat} runs each (median / p95)\n{header}"
    )
    try:
        for name, report in REPORTS.items():
            row: dict[str, dict[str, float]] = {}
            for label, scope in (("one", Scope(client_id=one_client)), ("all", Scope())):
                timings = time_report(engine, report, scope, args.repeat)
                row[label] = {
                    "median": statistics.median(timings),
                    "p95": nearest_rank(timings, 95),
                }
            results[name] = row
            one, every = row["one"], row["all"]
            flag = "" if one["p95"] < TARGET_ONE_MS and every["p95"] < TARGET_ALL_MS else "  (!)"
            print(
                f"{name:34} {one['median']:8.1f} / {one['p95']:7.1f}"
                f" {every['median']:8.1f} / {every['p95']:7.1f}{flag}",
                flush=True,
            )
        print(
            f"\n(!) above {TARGET_ONE_MS:.0f} ms for one client or {TARGET_ALL_MS:.0f} ms for all"
        )
        if args.views:
            results["views"] = time_views(url, args.repeat)
    finally:
        engine.dispose()
        if not args.keep:
            drop_database(url, admin)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
