"""Ingestion against its physical limit, and the ingester's memory (issue 6).

    .venv/bin/python -m bench.ingest_limit [--runs 100000] [--repeat 3] [--backend sqlite]

For each database, ``--repeat`` times on a fresh scratch database each:

- CHM: ``bench/ingest.py``'s measure: 100,000 runs from a local fake generic
  feed in pages of 1,000, first ingest then an identical replay, through
  ``chm.ingestion.engine.ingest`` (HTTP, JSON, mapping, redaction, upsert,
  one commit per page);
- raw: the same rows, already decoded and mapped to column values before the
  clock starts, upserted page by page (one commit per page, as CHM) by a bare
  script with the driver's fastest upsert and no HTTP: on PostgreSQL a
  ``COPY`` into a staging table merged by ``INSERT ... SELECT ... ON CONFLICT
  DO UPDATE ... WHERE <a value differs>``, and psycopg's pipelined
  ``executemany`` of the same ``INSERT ... ON CONFLICT``, whichever is faster;
  on SQLite ``executemany`` of it, with CHM's connection settings (WAL,
  ``synchronous=NORMAL``, foreign keys on).

CHM / raw is CHM's throughput divided by raw's (first ingest with first
ingest, replay with replay). Targets: first ingest >= 0.5 of raw; CHM's
replay at least as fast as its first ingest.

Memory: ``chm ingest`` as a subprocess (the real CLI, a sources file naming
the local feed) on 20,000 and on 100,000 runs; its peak RSS is the VmHWM of
its own process, read as it exits. It must not grow with the number of pages.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from bench.dataset import RUN_COLUMNS
from bench.ingest import EXTERNAL_ID, feed, make_pages, measure, scratch_database
from chm.core.db import create_db_engine, make_session_factory
from chm.core.migrate import upgrade
from chm.models import Client, Pipeline

PAGE_SIZE = 1_000
STATUS_WORDS = {
    "succeeded": "success",
    "failed": "failed",
    "running": "running",
    "queued": "queued",
    "cancelled": "cancelled",
}
# The runs table's columns but the generated id, as bench.dataset loads them.
COLUMNS = RUN_COLUMNS[1:]
DATA = COLUMNS[2:11]  # what a replay compares, as CHM does
UPDATE_SET = ", ".join(f"{c} = excluded.{c}" for c in (*DATA, "ingested_at", "updated_at"))


def _upsert_sql(dialect: str, source: str) -> str:
    differs = " OR ".join(
        f"runs.{c} IS DISTINCT FROM excluded.{c}"
        if dialect == "postgresql"
        else f"runs.{c} IS NOT excluded.{c}"
        for c in DATA
    )
    return (
        f"INSERT INTO runs ({', '.join(COLUMNS)}) {source}"
        f" ON CONFLICT (pipeline_id, external_run_id) DO UPDATE SET {UPDATE_SET}"
        f" WHERE {differs}"
    )


Page = list[tuple[Any, ...]]


def prepare(pages: list[bytes], pipeline_id: int, dialect: str) -> list[Page]:
    """The feed's pages as column values (outside the clock): what a connector hands
    to the database, in each driver's own types."""
    now = datetime.now(UTC)
    prepared = []
    for body in pages:
        rows = []
        for run in json.loads(body)["runs"]:
            started = datetime.fromisoformat(run["started_at"])
            finished = datetime.fromisoformat(run["finished_at"]) if run["finished_at"] else None
            duration = (finished - started).total_seconds() if finished else None
            values: list[Any] = [
                pipeline_id,
                run["run_id"],
                STATUS_WORDS[run["status"]],
                run["status"],
                started,
                finished,
                duration,
                False,
                json.dumps(run["metrics"]),
                run["error"],
                json.dumps(run),
                now,
                now,
                now,
            ]
            if dialect == "sqlite":  # CHM's SQLite storage: UTC wall-time text, 0/1
                values = [
                    v.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
                    if isinstance(v, datetime)
                    else int(v)
                    if isinstance(v, bool)
                    else v
                    for v in values
                ]
            rows.append(tuple(values))
        prepared.append(rows)
    return prepared


def _make_pipeline(url: str) -> int:
    engine = create_db_engine(url)
    upgrade(engine)
    with make_session_factory(engine, write=True).begin() as session:
        client = Client(name="Bench")
        session.add(client)
        session.flush()
        pipeline = Pipeline(
            client_id=client.id,
            name="bench",
            platform="generic",
            pipeline_type="batch",
            environment="prod",
            external_id=EXTERNAL_ID,
        )
        session.add(pipeline)
        session.flush()
        pipeline_id = pipeline.id
    engine.dispose()
    return pipeline_id


def _psql_dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def raw_pg_copy(url: str, pages: list[Page]) -> float:
    with psycopg.connect(_psql_dsn(url)) as conn:
        conn.execute(
            "CREATE TEMP TABLE staging (pipeline_id bigint, external_run_id text, status text,"
            " source_status text, started_at timestamptz, finished_at timestamptz,"
            " duration_seconds float8, duration_from_source boolean, metrics jsonb,"
            " error_message text, source_payload jsonb, ingested_at timestamptz,"
            " created_at timestamptz, updated_at timestamptz) ON COMMIT DELETE ROWS"
        )
        conn.commit()
        merge = _upsert_sql("postgresql", f"SELECT {', '.join(COLUMNS)} FROM staging")
        started = time.perf_counter()
        for page in pages:
            with conn.cursor() as cur:
                with cur.copy(f"COPY staging ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                    for row in page:
                        copy.write_row(row)
                cur.execute(merge)
            conn.commit()
        return time.perf_counter() - started


def raw_pg_executemany(url: str, pages: list[Page]) -> float:
    statement = _upsert_sql("postgresql", f"VALUES ({', '.join('%s' for _ in COLUMNS)})")
    # VALUES gives text to jsonb columns: cast them as the staging table does.
    statement = statement.replace(
        f"VALUES ({', '.join('%s' for _ in COLUMNS)})",
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s::jsonb, %s, %s, %s)",
    )
    with psycopg.connect(_psql_dsn(url)) as conn:
        started = time.perf_counter()
        for page in pages:
            with conn.cursor() as cur:
                cur.executemany(statement, page)
            conn.commit()
        return time.perf_counter() - started


def raw_sqlite(url: str, pages: list[Page]) -> float:
    statement = _upsert_sql("sqlite", f"VALUES ({', '.join('?' for _ in COLUMNS)})")
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    for pragma in ("journal_mode=WAL", "foreign_keys=ON", "synchronous=NORMAL"):
        conn.execute(f"PRAGMA {pragma}")
    try:
        started = time.perf_counter()
        for page in pages:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(statement, page)
            conn.execute("COMMIT")
        return time.perf_counter() - started
    finally:
        conn.close()


RawUpsert = Callable[[str, list[Page]], float]
RAW_METHODS: dict[str, dict[str, RawUpsert]] = {
    "sqlite": {"executemany": raw_sqlite},
    "postgresql": {"copy+merge": raw_pg_copy, "executemany": raw_pg_executemany},
}


def measure_raw(backend: str, pages: list[bytes], runs: int) -> dict[str, Any]:
    """First upsert and replay of every page by each raw method, on a fresh database each."""
    result: dict[str, Any] = {}
    for method, upsert in RAW_METHODS[backend].items():
        with scratch_database(backend) as url:
            pipeline_id = _make_pipeline(url)
            prepared = prepare(pages, pipeline_id, backend)
            first = upsert(url, prepared)
            replay = upsert(url, prepared)
        result[method] = {
            "first": {"seconds": round(first, 3), "runs_per_second": round(runs / first)},
            "replay": {"seconds": round(replay, 3), "runs_per_second": round(runs / replay)},
        }
    return result


# Runs `chm ingest` in this interpreter and, at exit, writes the process's own
# VmHWM: the peak RSS of its memory map since exec. (wait4's ru_maxrss would
# not do: Linux carries the parent's peak across fork and exec into it, and
# the parent here holds every page of the feed.)
_PEAK_WRAPPER = """
import atexit, os, re, sys
from pathlib import Path

def _peak():
    status = Path("/proc/self/status").read_text()
    kib = re.search(r"^VmHWM:\\s+(\\d+) kB", status, re.MULTILINE).group(1)
    Path(os.environ["BENCH_PEAK_FILE"]).write_text(kib)

atexit.register(_peak)
from chm.cli import app
sys.argv = ["chm", "ingest", "--json"]
app()
"""


def ingester_peak_rss(backend: str, runs: int) -> dict[str, Any]:
    """``chm ingest`` of ``runs`` runs in a subprocess: its peak RSS (VmHWM at exit)."""
    pages = make_pages(runs, PAGE_SIZE)
    with feed(pages) as base_url, scratch_database(backend) as url:
        _make_pipeline(url)
        with tempfile.TemporaryDirectory() as tmp:
            sources = Path(tmp) / "sources.toml"
            sources.write_text(
                "[[sources]]\n"
                'name = "bench"\nplatform = "generic"\nenvironment = "prod"\n'
                f'base_url = "{base_url}"\ntimeout_s = 60\n'
            )
            peak_file = Path(tmp) / "peak"
            env = {k: v for k, v in os.environ.items() if not k.startswith("CHM_")}
            env.update(
                CHM_DATABASE_URL=url,
                CHM_CONFIG=str(sources),
                CHM_LOG_LEVEL="WARNING",
                BENCH_PEAK_FILE=str(peak_file),
            )
            started = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", _PEAK_WRAPPER],
                env=env,
                capture_output=True,
                check=False,
            )
            elapsed = time.perf_counter() - started
            peak_kib = int(peak_file.read_text())
    report = json.loads(done.stdout)
    if done.returncode != 0 or report["runs_created"] != runs:
        raise RuntimeError(f"chm ingest failed: exit {done.returncode}, {report}")
    return {
        "runs": runs,
        "pages": report["pages"],
        "seconds": round(elapsed, 2),
        "peak_rss_mib": round(peak_kib / 1024, 1),
    }


def _stats(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[max(0, -(-95 * len(ordered) // 100) - 1)]
    return {"median": statistics.median(ordered), "p95": p95, "runs": len(ordered)}


def run(backends: list[str], runs: int, repeat: int, memory_runs: list[int]) -> dict[str, Any]:
    pages = make_pages(runs, PAGE_SIZE)
    results: dict[str, Any] = {"runs": runs, "page_size": PAGE_SIZE, "repeat": repeat}
    for backend in backends:
        chm: dict[str, list[float]] = {"first": [], "replay": []}
        raw: dict[str, dict[str, list[float]]] = {}
        for attempt in range(repeat):
            with feed(pages) as base_url:
                measured = measure(backend, base_url, runs)
            for label in chm:
                chm[label].append(measured[label]["runs_per_second"])
            for method, figures in measure_raw(backend, pages, runs).items():
                for label in ("first", "replay"):
                    raw.setdefault(method, {"first": [], "replay": []})[label].append(
                        figures[label]["runs_per_second"]
                    )
            print(
                f"  {backend} #{attempt + 1}: CHM first {measured['first']['runs_per_second']:,}"
                f" replay {measured['replay']['runs_per_second']:,} runs/s",
                flush=True,
            )
        # The limit: the faster raw method, by median first-ingest throughput.
        best = max(raw, key=lambda m: statistics.median(raw[m]["first"]))
        entry: dict[str, Any] = {
            "chm": {label: _stats(v) for label, v in chm.items()},
            "raw": {m: {label: _stats(v) for label, v in f.items()} for m, f in raw.items()},
            "raw_method": best,
        }
        for label in ("first", "replay"):
            entry[f"chm_over_raw_{label}"] = round(
                entry["chm"][label]["median"] / entry["raw"][best][label]["median"], 3
            )
        entry["replay_over_first"] = round(
            entry["chm"]["replay"]["median"] / entry["chm"]["first"]["median"], 3
        )
        entry["memory"] = [ingester_peak_rss(backend, n) for n in memory_runs]
        results[backend] = entry
        print_entry(backend, entry)
    return results


def print_entry(backend: str, entry: dict[str, Any]) -> None:
    best = entry["raw_method"]
    print(f"\n{backend}: runs/s, median / p95-slowest of {entry['chm']['first']['runs']} runs")
    for label in ("first", "replay"):
        chm, raw = entry["chm"][label], entry["raw"][best][label]
        print(
            f"  {label:7} CHM {chm['median']:>9,.0f}   raw ({best}) {raw['median']:>9,.0f}"
            f"   CHM/raw {entry[f'chm_over_raw_{label}']:.2f}"
        )
    print(f"  CHM replay / first {entry['replay_over_first']:.2f}")
    for figures in entry["memory"]:
        print(
            f"  chm ingest {figures['runs']:>7,} runs ({figures['pages']} pages):"
            f" peak RSS {figures['peak_rss_mib']} MiB in {figures['seconds']} s"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), action="append")
    parser.add_argument("--memory-runs", type=int, nargs="*", default=[20_000, 100_000])
    parser.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = parser.parse_args()
    backends = args.backend or ["sqlite", "postgresql"]
    results = run(backends, args.runs, args.repeat, args.memory_runs)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
