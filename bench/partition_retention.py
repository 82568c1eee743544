"""Retention both ways for ``bench/partitioning.py`` (``--phase retention``):
today's batched prune on the plain table, then ``VACUUM``; on the partitioned
one, the expired partitions detached and dropped with their rescued runs put
back, their keys deleted, and the batched prune for what is left. Both must
leave the same runs (``same_runs``).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from bench import partition_layout as layout
from bench.partition_layout import PART
from bench.partition_probes import connect, partition_sizes, prober, size_mb, wal_lsn
from chm.core.db import create_db_engine, make_session_factory
from chm.worker.retention import _batch_statement, prune


def retention_plain(
    url: str, cutoff: datetime, batch: int, pipelines: Sequence[int]
) -> dict[str, Any]:
    engine = create_db_engine(url)
    with connect(url) as conn:
        before_mb, wal = size_mb(conn, "public.runs"), wal_lsn(conn)
        with prober(url, "public", pipelines).running() as probe:
            started = time.perf_counter()
            report = prune(engine, older_than=cutoff, batch_size=batch)
            ended = time.perf_counter()
        wal_mb = round((wal_lsn(conn) - wal) / 2**20)
        vacuum_started = time.perf_counter()
        conn.execute("VACUUM public.runs")
        vacuum_s = time.perf_counter() - vacuum_started
        after_mb = size_mb(conn, "public.runs")
    engine.dispose()
    return {
        "runs_deleted": report.runs_deleted,
        "batches": report.batches,
        "prune_s": round(ended - started, 1),
        "vacuum_s": round(vacuum_s, 1),
        "total_s": round(ended - started + vacuum_s, 1),
        "wal_mb": wal_mb,
        "size_mb": {"before": before_mb, "after_vacuum": after_mb},
        "reader": probe.during(started, ended),
    }


def prune_with_keys(engine: Engine, cutoff: datetime, batch: int) -> tuple[int, int]:
    """``chm.worker.retention``'s batches on the partitioned table, each deleting
    its runs' keys in the same transaction (what its prune would become)."""
    sessions = make_session_factory(engine, write=True)
    deleted, batches, position = 0, 0, None
    while True:
        with sessions.begin() as session:
            rows = session.execute(_batch_statement(cutoff, batch, position)).all()
            if rows:
                session.execute(
                    sa.text("DELETE FROM run_keys WHERE id = ANY(:ids)"),
                    {"ids": [row.id for row in rows]},
                )
        deleted, batches = deleted + len(rows), batches + 1
        if len(rows) < batch:
            return deleted, batches
        last = max(rows, key=lambda row: (row.event_at, row.id))
        position = [last.event_at, last.id]


def retention_partitioned(
    url: str,
    engine: Engine,
    cutoff: datetime,
    batch: int,
    ranges: Sequence[tuple[datetime, datetime]],
    pipelines: Sequence[int],
) -> dict[str, Any]:
    expired = [layout.partition_name(low) for low, high in ranges if high <= cutoff]
    with connect(url, f"{PART},public") as conn:
        columns = layout.copied_columns(conn, PART)
        before_mb, keys_before = partition_sizes(conn), size_mb(conn, "part.run_keys")
        in_expired = sum(
            conn.execute(f"SELECT count(*) FROM {PART}.{p}").fetchone()[0]  # type: ignore[index]
            for p in expired
        )
        wal = wal_lsn(conn)
        marks: dict[str, float] = {}
        with prober(url, f"{PART},public", pipelines).running() as probe:
            marks["start"] = time.perf_counter()
            prepared_at = conn.execute("SELECT now()").fetchone()[0]  # type: ignore[index]
            kept = [
                row[0]
                for row in conn.execute(layout.kept_run_ids_sql(), {"cutoff": cutoff})
                if row[0]
            ]
            rescue = sorted(
                {i for p in expired for i in layout.rescued_ids(conn, f"{PART}.{p}", cutoff, kept)}
            )
            marks["rescue read"] = time.perf_counter()
            moved = layout.detach_and_rescue(conn, PART, expired, rescue, columns, prepared_at)
            marks["detach + put back"] = time.perf_counter()
            keys_deleted, key_batches = 0, []
            for p in expired:
                count, seconds = layout.delete_keys_of(conn, PART, p, 50_000)
                keys_deleted += count
                key_batches += seconds
            marks["keys deleted"] = time.perf_counter()
            for p in expired:
                conn.execute(f"DROP TABLE {PART}.{p}")
            marks["drop"] = time.perf_counter()
            remainder, remainder_batches = prune_with_keys(engine, cutoff, batch)
            marks["remainder prune"] = time.perf_counter()
        wal_mb = round((wal_lsn(conn) - wal) / 2**20)
        vacuum_started = time.perf_counter()
        conn.execute(f"VACUUM {PART}.run_keys")
        vacuum_s = time.perf_counter() - vacuum_started
        after_mb, keys_after = partition_sizes(conn), size_mb(conn, "part.run_keys")
    names = list(marks)
    steps = {b: round(marks[b] - marks[a], 2) for a, b in itertools.pairwise(names)}
    return {
        "partitions_dropped": expired,
        "runs_in_them": in_expired,
        "runs_put_back": moved,
        "runs_deleted": in_expired - moved + remainder,
        "remainder_deleted": remainder,
        "remainder_batches": remainder_batches,
        "keys_deleted": keys_deleted,
        "key_batch_max_ms": round(max(key_batches) * 1000, 1),
        "steps_s": steps,
        "vacuum_keys_s": round(vacuum_s, 1),
        "total_s": round(marks[names[-1]] - marks["start"] + vacuum_s, 1),
        "wal_mb": wal_mb,
        "size_mb": {
            "runs_before": before_mb,
            "runs_after": after_mb,
            "keys_before": keys_before,
            "keys_after_vacuum": keys_after,
        },
        "reader": probe.during(marks["start"], marks[names[-1]]),
        "reader_during_detach": probe.during(marks["rescue read"], marks["detach + put back"]),
    }


def same_runs(url: str) -> dict[str, Any]:
    """Both retentions left the same runs; every partitioned run has its key."""
    digest = "SELECT count(*), sum(id), sum(hashint8(id)::bigint) FROM {}"
    with connect(url) as conn:
        plain = conn.execute(digest.format("public.runs")).fetchone()
        part = conn.execute(digest.format("part.runs")).fetchone()
        keys = conn.execute("SELECT count(*) FROM part.run_keys").fetchone()
        orphans = conn.execute(
            "SELECT count(*) FROM part.run_keys k WHERE NOT EXISTS (SELECT 1 FROM part.runs r"
            " WHERE r.id = k.id AND r.created_at = k.created_at)"
        ).fetchone()
    assert plain == part, (plain, part)
    assert plain is not None
    assert keys == (plain[0],), (keys, plain)
    assert orphans == (0,), orphans
    return {"runs_left": plain[0], "identical": True, "keys_match": True}
