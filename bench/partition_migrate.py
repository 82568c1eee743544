"""The live migration of ``bench/partitioning.py`` (``--phase migrate``): the
plain ``runs`` becomes the partition of everything before a boundary, each
step timed with a reader and a writer running (see that module's doc and
``bench/partition_layout.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import orjson
import psycopg

from bench import partition_layout as layout
from bench.dataset import AS_OF
from bench.partition_probes import connect, page_rows, prober, writer
from bench.partitioning import Sample, measure_reads, measure_upsert
from chm.core.db import create_db_engine


def migrate(url: str, interval: str, sample: Sample, repeat: int) -> dict[str, Any]:
    """The live procedure on ``public.runs`` (see the module doc), step by step."""
    engine = create_db_engine(url)
    steps: dict[str, Any] = {}
    with connect(url) as conn:
        runs_before = conn.execute("SELECT count(*) FROM runs").fetchone()[0]  # type: ignore[index]
        boundary = layout.next_bound(
            layout.floor_bound(
                conn.execute("SELECT max(created_at) FROM runs").fetchone()[0], interval
            ),  # type: ignore[index]
            interval,
        )
        low, high = conn.execute("SELECT min(id), max(id) FROM runs").fetchone()  # type: ignore[misc]
        pipeline = sample.pipelines[len(sample.pipelines) // 2]
        upserts = measure_upsert({"old upsert, no trigger": (engine, False)}, pipeline, 5)
        write = writer(url, sample.pipelines[1], AS_OF)
        with prober(url, "public", sample.pipelines).running() as probe:

            @contextmanager
            def step(name: str) -> Iterator[None]:
                print(f"  {name}", flush=True)
                started = time.perf_counter()
                yield
                ended = time.perf_counter()
                steps[name] = {
                    "seconds": round(ended - started, 3),
                    "reader": probe.during(started, ended),
                    "writer": write.during(started, ended),
                }

            with step("1. run_keys + dual-write trigger"):
                conn.execute(layout.KEYS_DDL.format(schema="public"))
                conn.execute(layout.DUAL_WRITE)
            upserts |= measure_upsert({"old upsert, with trigger": (engine, False)}, pipeline, 5)
            with step("2. backfill run_keys (100,000 ids a batch)"):
                for start in range(low, high + 1, 100_000):
                    conn.execute(
                        "INSERT INTO run_keys (id, pipeline_id, external_run_id, created_at)"
                        " SELECT id, pipeline_id, external_run_id, created_at FROM runs"
                        " WHERE id >= %s AND id < %s ON CONFLICT DO NOTHING",
                        (start, start + 100_000),
                    )
            with step("3a. CREATE UNIQUE INDEX CONCURRENTLY (id, created_at)"):
                conn.execute(
                    "CREATE UNIQUE INDEX CONCURRENTLY uq_runs_id_created_at"
                    " ON runs (id, created_at)"
                )
            with step("3b. ADD CONSTRAINT UNIQUE USING INDEX"):
                conn.execute(
                    "ALTER TABLE runs ADD CONSTRAINT uq_runs_id_created_at"
                    " UNIQUE USING INDEX uq_runs_id_created_at"
                )
            upserts |= measure_upsert({"keyed upsert, plain table": (engine, True)}, pipeline, 5)
            with write.running():
                with step("4a. ADD CHECK (created_at < boundary) NOT VALID"):
                    conn.execute(
                        "ALTER TABLE runs ADD CONSTRAINT ck_runs_created_before"
                        f" CHECK (created_at < '{boundary.isoformat()}') NOT VALID"
                    )
                with step("4b. VALIDATE CONSTRAINT"):
                    conn.execute("ALTER TABLE runs VALIDATE CONSTRAINT ck_runs_created_before")
                with step("5. partitioned parent, indexes, partitions, DEFAULT"):
                    indexes = layout.create_parent(conn, boundary, interval)
                with step("6. swap: rename, ATTACH old table, rename back"):
                    layout.swap(conn, boundary, indexes)
                time.sleep(1)  # the writer goes on against the partitioned table
        committed = len(write.timings) - len(write.errors)
        runs_after, keys_after = conn.execute(
            "SELECT (SELECT count(*) FROM runs), (SELECT count(*) FROM run_keys)"
        ).fetchone()  # type: ignore[misc]
        kind = conn.execute("SELECT relkind FROM pg_class WHERE relname = 'runs'").fetchone()
        rows = page_rows(pipeline, 10, boundary + timedelta(hours=1), "after-swap")
        conn.execute(layout.keyed_upsert(), {"rows": orjson.dumps(rows).decode()})
        landed = conn.execute(
            "SELECT DISTINCT tableoid::regclass::text FROM runs WHERE external_run_id LIKE"
            " 'bench-partition-after-swap-%%'"
        ).fetchall()
        try:
            old = page_rows(pipeline, 1, AS_OF, "old")
            conn.execute(layout.plain_upsert(), {"rows": orjson.dumps(old).decode()})
            old_store = "accepted"
        except psycopg.Error as error:
            old_store = str(error).splitlines()[0]
    upserts |= measure_upsert({"keyed upsert, partitioned": (engine, True)}, pipeline, 5)
    engine.dispose()
    after = create_db_engine(url)
    try:
        reads = measure_reads({"migrated": after}, sample, repeat)
    finally:
        after.dispose()
    assert kind == ("p",), kind
    assert runs_after == runs_before + committed * 50, (runs_before, runs_after, committed)
    assert keys_after == runs_after, (keys_after, runs_after)
    return {
        "boundary": boundary.isoformat(),
        "runs_before": runs_before,
        "steps": steps,
        "writer": {"pages_committed": committed, "errors": sorted(set(write.errors))},
        "after_swap": {
            "runs": runs_after,
            "keys": keys_after,
            "new_run_landed_in": [row[0] for row in landed],
            "old_upsert": old_store,
        },
        "upsert_page_ms": upserts,
        "reads_after": {
            name: {
                key: value
                for key, value in figures["migrated"].items()
                if key in ("median_ms", "buffers", "index_scans", "plan")
            }
            for name, figures in reads.items()
        },
    }
