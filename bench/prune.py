"""How fast retention deletes old runs (issue 13), on the benchmark data set.

    .venv/bin/python -m bench.prune                      # large: 5,000,000 runs, PostgreSQL
    .venv/bin/python -m bench.prune --size small --keep-days 60 --batch-size 5000
    .venv/bin/python -m bench.prune --backend sqlite --size medium

takes the data set of ``--size`` from ``bench/dataset.py`` (generated once and
cached), prunes a copy of it, never the cached one (PostgreSQL: ``CREATE
DATABASE ... TEMPLATE chm_bench_<size>``; SQLite: a copy of the file), and
drops the copy afterwards. The prune is ``chm.worker.retention.prune``, as the
worker and ``chm db prune`` run it: runs whose event time is more than
``--keep-days`` days before the data set's end (``AS_OF``; 60 of its 90 days
kept removes about a third) are deleted in batches of ``--batch-size``, each
pipeline's latest run before the cutoff kept.

Prints (and with ``--json FILE`` writes) the runs deleted, seconds, runs/s,
the batches and the duration of each batch's transaction (median, p95, the
longest: how long one batch holds its locks), the dry run's count and time,
and the load average before and after. It checks that the prune deleted what
the dry run counted and that exactly one run per pipeline is left before the
cutoff. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from bench import dataset
from bench.dataset import AS_OF
from bench.run import load_average, wait_quiet
from chm.core.db import create_db_engine
from chm.core.settings import Settings
from chm.core.types import UTCDateTime
from chm.models import Run
from chm.worker.retention import prune

DEFAULT_BATCH = int(Settings.model_fields["retention_batch"].default)


def counts(engine: Engine, cutoff: Any) -> dict[str, int]:
    """Runs, runs before the cutoff, and pipelines with a run before it."""
    at = sa.literal(cutoff, UTCDateTime())
    with engine.connect() as conn:
        runs = conn.execute(sa.select(sa.func.count()).select_from(Run)).scalar_one()
        old, pipelines = conn.execute(
            sa.select(sa.func.count(), sa.func.count(sa.distinct(Run.pipeline_id))).where(
                Run.event_at < at
            )
        ).one()
    return {"runs": runs, "old_runs": old, "pipelines_with_old_runs": pipelines}


def nearest_rank(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * share) - 1)]


def measure(url: str, keep_days: int, batch_size: int) -> dict[str, Any]:
    cutoff = AS_OF - timedelta(days=keep_days)
    engine = create_db_engine(url)
    try:
        before = counts(engine, cutoff)
        dry = prune(engine, older_than=cutoff, batch_size=batch_size, dry_run=True)
        print(
            f"cutoff {cutoff.isoformat()}: {before['runs']:,} runs, {before['old_runs']:,}"
            f" before the cutoff; dry run: {dry.runs_deleted:,} to delete"
            f" ({dry.elapsed_s:.2f} s)",
            flush=True,
        )
        marks: list[float] = []

        def mark() -> bool:  # asked before each batch: the gaps are the batches
            marks.append(time.perf_counter())
            return False

        load_before = load_average()
        report = prune(engine, older_than=cutoff, batch_size=batch_size, should_stop=mark)
        marks.append(time.perf_counter())
        load_after = load_average()
        after = counts(engine, cutoff)
    finally:
        engine.dispose()
    batch_ms = [(b - a) * 1000 for a, b in itertools.pairwise(marks)]
    assert report.runs_deleted == dry.runs_deleted, (report, dry)
    assert after["runs"] == before["runs"] - report.runs_deleted, (before, after)
    assert after["old_runs"] == after["pipelines_with_old_runs"], after  # one kept each
    assert after["pipelines_with_old_runs"] == before["pipelines_with_old_runs"], after
    return {
        "cutoff": cutoff.isoformat(),
        "keep_days": keep_days,
        "batch_size": batch_size,
        "runs_before": before["runs"],
        "runs_deleted": report.runs_deleted,
        "runs_after": after["runs"],
        "pipelines_touched": report.pipelines_touched,
        "seconds": round(report.elapsed_s, 2),
        "runs_per_s": round(report.runs_deleted / report.elapsed_s) if report.elapsed_s else None,
        "batches": report.batches,
        "batch_ms": {
            "median": round(statistics.median(batch_ms), 1),
            "p95": round(nearest_rank(batch_ms, 0.95), 1),
            "max": round(max(batch_ms), 1),
        },
        "dry_run": {"runs": dry.runs_deleted, "seconds": round(dry.elapsed_s, 2)},
        "load_average": {"before": load_before, "after": load_after},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=sorted(dataset.SIZES), default="large")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--admin-url", default=dataset.ADMIN_URL, help="the PostgreSQL server")
    parser.add_argument("--keep-days", type=int, default=60, help="days kept before AS_OF")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH)
    parser.add_argument("--wait-quiet", type=float, default=120, help="seconds, at most")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    spec = dataset.SIZES[args.size]
    copy = (
        dataset.postgres_copy(spec, args.admin_url, "prune")
        if args.backend == "postgresql"
        else None
    )
    with copy or dataset.sqlite_copy(spec, "prune") as url:
        quiet = wait_quiet(args.wait_quiet)
        result = measure(url, args.keep_days, args.batch_size)
    result = {"backend": args.backend, "size": args.size, "quiet": quiet, **result}
    print(
        f"{args.backend} {args.size}: deleted {result['runs_deleted']:,} of"
        f" {result['runs_before']:,} runs ({result['pipelines_touched']:,} pipelines) in"
        f" {result['seconds']} s = {result['runs_per_s']:,} runs/s; {result['batches']}"
        f" batches of {args.batch_size}, each {result['batch_ms']['median']} ms median,"
        f" p95 {result['batch_ms']['p95']}, max {result['batch_ms']['max']};"
        f" load average {result['load_average']['before']} -> {result['load_average']['after']}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
