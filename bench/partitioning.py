"""Native time partitioning of runs, simulated on the benchmark data set (issue 17).

    .venv/bin/python -m bench.partitioning                        # large, weekly partitions
    .venv/bin/python -m bench.partitioning --interval month --keep-days 58
    .venv/bin/python -m bench.partitioning --phase migrate --json out.json

Standalone (not in ``make bench``, not in the test suite). Works on scratch
copies of the cached data set (``bench/dataset.py``; 10,000 pipelines and
5,000,000 runs at ``large``), dropped afterwards. The layout and every
statement it adds are in ``bench/partition_layout.py``; the retention and
the live migration in ``bench/partition_retention.py`` and
``bench/partition_migrate.py``; the reader and writer that run beside them in
``bench/partition_probes.py``. The design and the figures: docs/scaling.md
and bench/README.md, "Partitioning runs by time".

Phases (``--phase``, all by default):

1. ``reads``: beside the plain ``runs`` the copy gets a schema ``part`` with
   ``runs`` partitioned by RANGE (created_at), the same indexes but the
   unique key, a DEFAULT partition and ``run_keys``, filled by copying the
   plain table in id batches with every index in place (the rate of a live
   copy). The same statements, compiled by CHM's own code, then run on both
   (a second engine's ``search_path`` finds ``part.runs`` first), taking
   turns, warm, ``--repeat`` rounds, medians: a pipeline's latest run, a
   first and a deep history page, a run by id, the latest status of all
   pipelines (``latest_status_query``, and the same rows from one LATERAL
   top-1 per pipeline), the board's ``pipeline_states_query``, the status
   board and a 7-day failures report; and for each statement its plan's
   shape, shared buffers, index scans and planning time (load-independent).
2. ``upsert``: one page of 1,000 runs stored as new, replayed, changed: the
   read of the stored runs and the write, as ``chm.ingestion.store`` does on
   PostgreSQL, on the plain table (``plain_upsert``, ``ON CONFLICT
   (pipeline_id, external_run_id)``) and on the partitioned one through
   ``run_keys`` (``keyed_upsert``), taking turns; rolled back.
3. ``retention``: the cutoff is the partition bound at or before ``AS_OF -
   --keep-days`` (a retention job drops a partition as soon as it is wholly
   expired, when the kept runs sit in it). Plain: ``chm.worker.retention.prune``
   in batches, then ``VACUUM``. Partitioned: read the runs to rescue (the
   pipelines' kept runs, any run started after the cutoff), detach the
   expired partitions and put the rescued runs back in one transaction,
   delete their keys, drop them, then the batched prune (deleting keys too)
   for what is left before the cutoff, then ``VACUUM run_keys``. A reader
   asks latest runs all along (its worst wait is the lock). Both must leave
   the same runs: checked.
4. ``migrate`` (a second copy): the live procedure on the plain ``runs``
   itself, each step timed with a reader and (from the unique (id,
   created_at) on) a writer running: the key table and its dual-write
   trigger, its backfill, the unique index, the CHECK on created_at, the
   partitioned parent, then the swap that attaches the old table as the
   partition of everything before the boundary. Then a write lands in a new
   partition, the old upsert is refused, and the reads are timed again.

Prints the figures and the load average (and with ``--json FILE`` writes them).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import Engine, event

from bench import dataset
from bench import partition_layout as layout
from bench.dataset import AS_OF
from bench.partition_layout import PART
from bench.partition_probes import (
    connect,
    median_ms,
    page_rows,
    partition_sizes,
    size_mb,
)
from bench.partition_retention import retention_partitioned, retention_plain, same_runs
from bench.reports import REPORTS, time_report
from bench.run import emit, load_average, wait_quiet
from chm.core.db import create_db_engine, make_session_factory
from chm.models import Client, Pipeline
from chm.reports.sql import FixedClock, Scope
from chm.reports.status import latest_status_query, pipeline_states_query
from chm.runs.ordering import KEYSET, ORDER_BY
from chm.runs.serialize import RUN_COLUMNS, RUNS

PAGE = 50
UPSERT_PAGE = 1000
SAMPLE = 100  # pipelines, evenly spread over the ids: each rate and platform
DEEP = timedelta(days=45)
# --- reads --------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    pipelines: list[int]
    deep: dict[int, list[Any]]  # a pipeline's position 45 days back
    run_ids: list[int]


def take_sample(engine: Engine) -> Sample:
    with engine.connect() as conn:
        every = list(conn.scalars(sa.text("SELECT id FROM pipelines ORDER BY id")))
        pipelines = every[:: max(1, len(every) // SAMPLE)]
        deep: dict[int, list[Any]] = {}
        for p in pipelines:
            row = conn.execute(
                sa.select(RUNS.c.started_at, RUNS.c.finished_at, RUNS.c.id)
                .where(RUNS.c.pipeline_id == p, RUNS.c.event_at < AS_OF - DEEP)
                .order_by(*ORDER_BY)
                .limit(1)
            ).first()
            if row is not None:
                deep[p] = list(row)
    return Sample(pipelines, deep, [position[2] for position in deep.values()])


def history(pipeline_id: int, position: list[Any] | None = None) -> sa.Select[Any]:
    query = sa.select(*RUN_COLUMNS).where(RUNS.c.pipeline_id == pipeline_id)
    if position is not None:
        query = query.where(KEYSET.after(position))
    return KEYSET.statement(query, None, PAGE)


def latest_status_lateral(clock: FixedClock) -> sa.Select[Any]:
    """``latest_status_query``'s rows from one LATERAL top-1 per pipeline that
    carries the run's columns, instead of a top-1 of ids joined back by id (a
    join by id alone cannot be pruned to one partition): how much of the
    partitioned table's cost is the rewrite's to save."""
    latest = (
        sa.select(RUNS.c.id, RUNS.c.status, RUNS.c.started_at, RUNS.c.finished_at)
        .where(RUNS.c.pipeline_id == Pipeline.id, RUNS.c.event_at < clock.at())
        .order_by(*ORDER_BY)
        .limit(1)
        .lateral("latest_run")
    )
    return (
        sa.select(
            Client.id.label("client_id"),
            Client.name.label("client_name"),
            Pipeline.id.label("pipeline_id"),
            Pipeline.name.label("pipeline_name"),
            Pipeline.platform,
            Pipeline.environment,
            latest.c.id.label("latest_run_id"),
            latest.c.status.label("latest_status"),
            latest.c.started_at,
            latest.c.finished_at,
        )
        .select_from(Pipeline)
        .join(Client, Client.id == Pipeline.client_id)
        .outerjoin(latest, sa.true())
        .where(*Scope().filters())
        .order_by(Client.name_key, Client.id, Pipeline.name_key, Pipeline.id)
    )


def statements(sample: Sample) -> dict[str, list[sa.Executable]]:
    clock = FixedClock(AS_OF)
    return {
        "latest run": [
            sa.select(*RUN_COLUMNS).where(RUNS.c.pipeline_id == p).order_by(*ORDER_BY).limit(1)
            for p in sample.pipelines
        ],
        "history page (50)": [history(p) for p in sample.pipelines],
        "deep page (45 days back)": [history(p, pos) for p, pos in sample.deep.items()],
        "run by id": [sa.select(*RUN_COLUMNS).where(RUNS.c.id == i) for i in sample.run_ids],
        "latest status, all pipelines": [latest_status_query(clock, Scope())],
        "latest status, LATERAL form": [latest_status_lateral(clock)],
        "pipeline_states_query (board)": [
            pipeline_states_query(clock, clock.at(-timedelta(hours=24)), Scope())
        ],
    }


def _scan_loops(node: dict[str, Any]) -> int:
    own = node.get("Actual Loops", 0) if "Scan" in node["Node Type"] else 0
    return int(own) + sum(_scan_loops(child) for child in node.get("Plans", []))


def _shape(node: dict[str, Any]) -> str:
    """A plan as nested node types, equal siblings counted: ``Limit(Merge Append(17 x ...))``."""
    children: dict[str, int] = {}
    for child in node.get("Plans", []):
        text = _shape(child)
        children[text] = children.get(text, 0) + 1
    inner = ", ".join(f"{n} x {text}" if n > 1 else text for text, n in children.items())
    return f"{node['Node Type']}({inner})" if inner else node["Node Type"]


def explain(engine: Engine, statement: sa.Executable) -> dict[str, Any]:
    """The statement as the driver got it, explained: buffers, scans, planning."""
    sent: list[tuple[str, Any]] = []

    def record(_c: Any, _cur: Any, sql: str, params: Any, *_: Any) -> None:
        sent.append((sql, params))

    with engine.connect() as conn:
        event.listen(engine, "before_cursor_execute", record)
        try:
            conn.execute(statement).all()
        finally:
            event.remove(engine, "before_cursor_execute", record)
        sql, params = sent[-1]
        plan = conn.exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params
        ).scalar_one()[0]
    top = plan["Plan"]
    return {
        "buffers": top.get("Shared Hit Blocks", 0) + top.get("Shared Read Blocks", 0),
        "index_scans": _scan_loops(top),
        "planning_ms": round(plan["Planning Time"], 2),
        "shape": _shape(top),
    }


def measure_reads(engines: dict[str, Engine], sample: Sample, repeat: int) -> dict[str, Any]:
    """Each statement family on each layout, the layouts taking turns each round."""
    families = statements(sample)
    rounds: dict[str, dict[str, list[float]]] = {
        name: {layout_name: [] for layout_name in engines} for name in families
    }
    conns = {name: engine.connect() for name, engine in engines.items()}
    try:
        for attempt in range(repeat + 1):
            for name, family in families.items():
                for layout_name, conn in conns.items():
                    times = []
                    for statement in family:
                        started = time.perf_counter()
                        conn.execute(statement).all()
                        times.append(time.perf_counter() - started)
                    if attempt:  # the first round warms
                        rounds[name][layout_name].append(statistics.median(times))
    finally:
        for conn in conns.values():
            conn.close()
    out: dict[str, Any] = {}
    for name, family in families.items():
        out[name] = {}
        for layout_name, engine in engines.items():
            plans = [explain(engine, s) for s in family[:20]]
            out[name][layout_name] = {
                "median_ms": median_ms(rounds[name][layout_name]),
                "rounds_ms": [round(v * 1000, 2) for v in rounds[name][layout_name]],
                "statements": len(family),
                "buffers": statistics.median(p["buffers"] for p in plans),
                "index_scans": statistics.median(p["index_scans"] for p in plans),
                "planning_ms": statistics.median(p["planning_ms"] for p in plans),
                "plan": plans[0]["shape"],
            }
    for report in ("status board (chm status)", "failures-over-time (day, 7 d)"):
        out[report] = {
            layout_name: {
                "median_ms": round(
                    statistics.median(time_report(engine, REPORTS[report], Scope(), repeat)), 1
                )
            }
            for layout_name, engine in engines.items()
        }
    return out


# --- the upsert ---------------------------------------------------------------------


def measure_upsert(
    targets: dict[str, tuple[Engine, bool]], pipeline_id: int, rounds: int
) -> dict[str, Any]:
    """A page of UPSERT_PAGE runs stored new, replayed, changed (the read of the
    stored runs + the write, as ``RunStore.upsert_page`` does) on each target
    (an engine, and whether it goes through ``run_keys``), the targets taking
    turns each round, each round rolled back."""
    steps: dict[str, dict[str, list[float]]] = {
        name: {"new": [], "replay": [], "changed": []} for name in targets
    }
    for attempt in range(rounds + 1):
        new = page_rows(pipeline_id, UPSERT_PAGE, AS_OF, f"upsert-{attempt}")
        changed = [dict(row, status="failed", source_status="failed") for row in new]
        keys = sorted(row["external_run_id"] for row in new)
        for name, (engine, keyed) in targets.items():
            read, statement = (
                (layout.KEYED_READ, layout.keyed_upsert())
                if keyed
                else (layout.PLAIN_READ, layout.plain_upsert())
            )
            with make_session_factory(engine, write=True)() as session:
                for step, rows, expected in (
                    ("new", new, UPSERT_PAGE),
                    ("replay", new, 0),
                    ("changed", changed, UPSERT_PAGE),
                ):
                    started = time.perf_counter()
                    conn = session.connection()
                    conn.exec_driver_sql(read, (pipeline_id, keys)).all()
                    document = orjson.dumps(rows).decode()
                    written = conn.exec_driver_sql(statement, {"rows": document}).all()
                    elapsed = time.perf_counter() - started
                    assert len(written) == expected, (name, step, len(written), expected)
                    if attempt:
                        steps[name][step].append(elapsed)
                session.rollback()
    return {
        name: {step: median_ms(times) for step, times in by_step.items()}
        for name, by_step in steps.items()
    }


# --- building the side-by-side layout ----------------------------------------------


def build(
    url: str, interval: str, batch: int
) -> tuple[list[tuple[datetime, datetime]], dict[str, Any]]:
    """``part.runs`` and ``part.run_keys`` filled from the plain table in id
    batches, every index in place (as a live copy would write them)."""
    with connect(url) as conn:
        first, last, low, high = conn.execute(
            "SELECT min(created_at), max(created_at), min(id), max(id) FROM public.runs"
        ).fetchone()  # type: ignore[misc]
        ranges = layout.create_partitioned(conn, PART, interval, first, last)
        columns = layout.copied_columns(conn)
        seconds, copied = [], 0
        started = time.perf_counter()
        for start in range(low, high + 1, batch):
            batch_started = time.perf_counter()
            copied += layout.copy_id_range(conn, PART, columns, start, start + batch)
            seconds.append(time.perf_counter() - batch_started)
            if len(seconds) % 10 == 0:
                print(
                    f"  copied {copied:,} runs ({time.perf_counter() - started:.0f} s)", flush=True
                )
        copy_s = time.perf_counter() - started
        vacuum_started = time.perf_counter()
        conn.execute(f"VACUUM (ANALYZE) {PART}.runs")
        conn.execute(f"VACUUM (ANALYZE) {PART}.run_keys")
        vacuum_s = time.perf_counter() - vacuum_started
        figures = {
            "partitions": len(ranges),
            "runs_copied": copied,
            "copy_s": round(copy_s),
            "copy_runs_per_s": round(copied / copy_s),
            "batch": batch,
            "batch_median_s": round(statistics.median(seconds), 2),
            "batch_max_s": round(max(seconds), 2),
            "vacuum_analyze_s": round(vacuum_s),
            "size_mb": {
                "plain_runs": size_mb(conn, "public.runs"),
                "partitioned_runs": partition_sizes(conn),
                "run_keys": size_mb(conn, "part.run_keys"),
            },
        }
    return ranges, figures


# --- the run -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=sorted(dataset.SIZES), default="large")
    parser.add_argument("--admin-url", default=dataset.ADMIN_URL, help="the PostgreSQL server")
    parser.add_argument("--interval", choices=layout.INTERVALS, default="week")
    parser.add_argument("--keep-days", type=int, default=60, help="days kept before AS_OF")
    parser.add_argument("--batch-size", type=int, default=5000, help="the prune's batch")
    parser.add_argument("--copy-batch", type=int, default=100_000, help="ids per copy batch")
    parser.add_argument("--repeat", type=int, default=7, help="rounds of each read")
    parser.add_argument(
        "--phase",
        action="append",
        choices=("reads", "upsert", "retention", "migrate"),
        help="what to run (repeatable; default: all)",
    )
    parser.add_argument("--wait-quiet", type=float, default=60, help="seconds, at most")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    phases = args.phase or ["reads", "upsert", "retention", "migrate"]
    spec = dataset.SIZES[args.size]
    cutoff = layout.floor_bound(AS_OF - timedelta(days=args.keep_days), args.interval)
    figures: dict[str, Any] = {
        "size": args.size,
        "interval": args.interval,
        "cutoff": cutoff.isoformat(),
        "load_average": {"start": load_average()},
    }
    if set(phases) - {"migrate"}:
        with dataset.scratch_copy(spec, "postgresql", args.admin_url, "partition") as url:
            print(f"building the {args.interval}ly partitioned layout", flush=True)
            ranges, figures["build"] = build(url, args.interval, args.copy_batch)
            plain = create_db_engine(url)
            part = create_db_engine(
                url, connect_args={"options": f"-c jit=off -c search_path={PART},public"}
            )
            sample = take_sample(plain)
            figures["quiet"] = wait_quiet(args.wait_quiet)
            if "reads" in phases:
                print("reads", flush=True)
                figures["reads"] = measure_reads(
                    {"plain": plain, "partitioned": part}, sample, args.repeat
                )
                figures["load_average"]["reads"] = load_average()
            if "upsert" in phases:
                print("upsert", flush=True)
                pipeline = sample.pipelines[len(sample.pipelines) // 2]
                figures["upsert_page_ms"] = measure_upsert(
                    {
                        "plain (ON CONFLICT (pipeline_id, external_run_id))": (plain, False),
                        "partitioned (through run_keys)": (part, True),
                    },
                    pipeline,
                    args.repeat,
                )
            if "retention" in phases:
                print(f"retention, cutoff {cutoff.isoformat()}", flush=True)
                figures["load_average"]["retention_start"] = load_average()
                figures["retention"] = {
                    "plain": retention_plain(url, cutoff, args.batch_size, sample.pipelines),
                    "partitioned": retention_partitioned(
                        url, part, cutoff, args.batch_size, ranges, sample.pipelines
                    ),
                }
                figures["retention"]["check"] = same_runs(url)
                figures["load_average"]["retention_end"] = load_average()
                figures["reads_after_retention"] = {
                    name: {k: v["median_ms"] for k, v in by_layout.items()}
                    for name, by_layout in measure_reads(
                        {"plain": plain, "partitioned": part}, sample, args.repeat
                    ).items()
                }
            plain.dispose()
            part.dispose()
    if "migrate" in phases:
        # Imported here: it imports this module's reads and upsert.
        from bench.partition_migrate import migrate

        with dataset.scratch_copy(spec, "postgresql", args.admin_url, "partition_live") as url:
            print("live migration", flush=True)
            engine = create_db_engine(url)
            sample = take_sample(engine)
            engine.dispose()
            figures["load_average"]["migrate_start"] = load_average()
            figures["migrate"] = migrate(url, args.interval, sample, args.repeat)
    figures["load_average"]["end"] = load_average()
    emit(figures, str(args.json) if args.json else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
