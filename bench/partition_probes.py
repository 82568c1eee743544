"""What runs beside a step of ``bench/partitioning.py``: connections, a reader
asking latest runs and a writer storing pages, each timing its calls, and the
page of runs both the writer and the upsert measurement store.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import psycopg
from sqlalchemy.engine import make_url

from bench import partition_layout as layout


def libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(False)


def connect(url: str, search_path: str = "public") -> psycopg.Connection[Any]:
    options = f"-c jit=off -c timezone=UTC -c search_path={search_path}"
    return psycopg.connect(libpq(url), autocommit=True, options=options)


def median_ms(values: Sequence[float]) -> float:
    return round(statistics.median(values) * 1000, 2)


PROBE_SQL = (
    "SELECT id, status FROM runs WHERE pipeline_id = %s"
    " ORDER BY coalesce(started_at, '-infinity'::timestamptz) DESC,"
    " coalesce(finished_at, '-infinity'::timestamptz) DESC, id DESC LIMIT 1"
)


# --- readers and writers running beside a step ------------------------------------


@dataclass
class Background:
    """A thread that repeats ``work`` on its own connection, timing each call."""

    url: str
    search_path: str
    work: Callable[[psycopg.Connection[Any], int], None]
    pause_s: float
    timings: list[tuple[float, float]] = field(default_factory=list)  # (end, seconds)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _loop(self) -> None:
        with connect(self.url, self.search_path) as conn:
            n = 0
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    self.work(conn, n)
                except psycopg.Error as error:
                    self.errors.append(f"{type(error).__name__}: {error}".splitlines()[0])
                self.timings.append((time.perf_counter(), time.perf_counter() - started))
                n += 1
                time.sleep(self.pause_s)

    @contextmanager
    def running(self) -> Iterator[Background]:
        thread = threading.Thread(target=self._loop, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()

    def during(self, start: float, end: float) -> dict[str, Any]:
        """The calls that overlapped [start, end] (one blocked by a lock ends after it)."""
        inside = sorted(s for at, s in self.timings if at >= start and at - s <= end)
        if not inside:
            return {"calls": 0}
        return {
            "calls": len(inside),
            "median_ms": median_ms(inside),
            "max_ms": round(inside[-1] * 1000, 1),
        }


def prober(url: str, search_path: str, pipelines: Sequence[int]) -> Background:
    def ask(conn: psycopg.Connection[Any], n: int) -> None:
        conn.execute(PROBE_SQL, (pipelines[n % len(pipelines)],)).fetchall()

    return Background(url, search_path, ask, pause_s=0.005)


def page_rows(pipeline_id: int, count: int, at: datetime, tag: str) -> list[dict[str, Any]]:
    """A page of new runs as the store writes them (``PAGE_TYPES``)."""
    rows = []
    for i in range(count):
        started = at - timedelta(minutes=30) + timedelta(seconds=i)
        rows.append(
            {
                "pipeline_id": pipeline_id,
                "external_run_id": f"bench-partition-{tag}-{i:05d}",
                "status": "success",
                "source_status": "success",
                "started_at": started,
                "finished_at": started + timedelta(minutes=1),
                "duration_seconds": 60.0,
                "duration_from_source": False,
                "metrics": {},
                "error_message": None,
                "source_payload": {"state": "success"},
                "source_updated_at": None,
                "source_attempt": None,
                "ingested_at": at,
                "created_at": at,
                "updated_at": at,
            }
        )
    return rows


def writer(url: str, pipeline_id: int, at: datetime) -> Background:
    """Pages of 50 new runs through the keyed upsert, each committed."""
    statement = layout.keyed_upsert()

    def write(conn: psycopg.Connection[Any], n: int) -> None:
        rows = page_rows(pipeline_id, 50, at + timedelta(seconds=n), f"writer-{n}")
        conn.execute(statement, {"rows": orjson.dumps(rows).decode()}).fetchall()

    return Background(url, "public", write, pause_s=0.05)


def wal_lsn(conn: psycopg.Connection[Any]) -> int:
    return int(conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()[0])  # type: ignore[index]


def size_mb(conn: psycopg.Connection[Any], *tables: str) -> float:
    total = sum(
        conn.execute("SELECT pg_total_relation_size(%s::regclass)", (t,)).fetchone()[0]  # type: ignore[index]
        for t in tables
    )
    return round(total / 2**20)


def partition_sizes(conn: psycopg.Connection[Any]) -> float:
    total = conn.execute(
        "SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0) FROM pg_inherits"
        " WHERE inhparent = 'part.runs'::regclass"
    ).fetchone()[0]  # type: ignore[index]
    return round(total / 2**20)
