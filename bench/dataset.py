"""The benchmark data set: N clients, M pipelines, R runs over D days, reproducible by seed.

    .venv/bin/python -m bench.dataset --size large --database postgresql://postgres@127.0.0.1:5432/postgres
    .venv/bin/python -m bench.dataset --size small --database sqlite

One generator feeds both databases, so SQLite and PostgreSQL hold the same
rows. It is loaded by bulk means into a database migrated with
``alembic upgrade head`` (``chm.core.migrate.upgrade``): on PostgreSQL a
``COPY ... FREEZE`` into the emptied table, on SQLite ``executemany`` in
large transactions; the runs table's indexes and constraints (read back from
the migrated schema, never restated here) are dropped for the load and
rebuilt after it, then statistics are taken.

The result is cached: a PostgreSQL database ``chm_bench_<size>`` or a SQLite
file ``bench/.data/chm_bench_<size>.db``, stamped with the generator's
fingerprint (version, sizes, seed). A later run with the same fingerprint
reuses it (after ``upgrade`` applies any newer migration); another
fingerprint rebuilds it. A load builds under a temporary name and is renamed
into place only when complete. The benchmarks only read the cached data.

The mix, as a production CHM would hold it:

- 50 pipelines per client by default; one client in 25 and one pipeline in 20
  inactive; five platforms, three environments;
- pipelines run at different rates: a tenth hourly, three tenths every few
  hours, the rest daily (run counts per pipeline in the ratio 24 : 6 : 1);
- run times spread over the ``days`` before the reference time ``AS_OF``, ids
  in time order (as inserted);
- statuses: mostly success; failed 0.5 % (30 % on one pipeline in ten, the
  flaky ones, 5 % on two in ten); about 1 % cancelled, unknown or skipped;
  runs of the last hours still running or queued, and a few stuck for good;
- 2 % of runs without ``started_at``, 0.1 % without any timestamp;
- log-normal durations (median per pipeline between 1 and 20 minutes);
- ingested runs (nine in ten) carry the source's payload and word.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import math
import os
import random
import shutil
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from chm.core.db import create_db_engine
from chm.core.migrate import upgrade

GENERATOR_VERSION = 1
AS_OF = datetime(2026, 11, 28, tzinfo=UTC)
PIPELINES_PER_CLIENT = 50
PLATFORMS = ("airflow", "databricks", "adf", "dbt_cloud", "generic")
ENVIRONMENTS = ("prod", "staging", "dev")
DATA_DIR = Path(__file__).resolve().parent / ".data"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@dataclass(frozen=True)
class Spec:
    """What to generate; ``name`` names the cached database."""

    name: str
    pipelines: int
    runs: int
    days: int = 90
    clients: int = 0  # 0: one per PIPELINES_PER_CLIENT pipelines
    seed: int = 42

    @property
    def client_count(self) -> int:
        return self.clients or math.ceil(self.pipelines / PIPELINES_PER_CLIENT)

    @property
    def per_client(self) -> int:
        return math.ceil(self.pipelines / self.client_count)

    def fingerprint(self) -> str:
        return json.dumps({"generator": GENERATOR_VERSION, **asdict(self)}, sort_keys=True)


SIZES = {
    "small": Spec("small", pipelines=100, runs=50_000),
    "medium": Spec("medium", pipelines=1_000, runs=500_000),
    "large": Spec("large", pipelines=10_000, runs=5_000_000),
    # The cost curve (bench/cost_curve.py): large's inventory and rates, with a
    # shorter and a longer history. 55,556 runs a day in every one, so the
    # last day, week or month holds the same runs at every size and only the
    # depth of history grows: 18, 90 and 360 days.
    "history_1m": Spec("history_1m", pipelines=10_000, runs=1_000_000, days=18),
    "history_20m": Spec("history_20m", pipelines=10_000, runs=20_000_000, days=360),
}
# The cost curve's sizes, smallest first.
CURVE = ("history_1m", "large", "history_20m")


def custom_spec(pipelines: int, runs: int, days: int) -> Spec:
    for spec in SIZES.values():
        if (spec.pipelines, spec.runs, spec.days) == (pipelines, runs, days):
            return spec
    return Spec(f"{pipelines}_{runs}_{days}", pipelines=pipelines, runs=runs, days=days)


# --- the rows ---------------------------------------------------------------


def _ts(value: datetime) -> str:
    """UTC wall time as CHM stores it on SQLite (and PostgreSQL reads in a UTC session)."""
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def client_rows(spec: Spec) -> list[tuple[Any, ...]]:
    """(id, name, name_key, is_active, created_at, updated_at)"""
    at = _ts(AS_OF - timedelta(days=spec.days + 30))
    return [
        (c, f"Client {c:05d}", f"client {c:05d}", c % 25 != 0, at, at)
        for c in range(1, spec.client_count + 1)
    ]


def pipeline_rows(spec: Spec) -> list[tuple[Any, ...]]:
    """(id, client_id, name, name_key, platform, pipeline_type, environment,
    external_id, is_active, created_at, updated_at)"""
    at = _ts(AS_OF - timedelta(days=spec.days + 30))
    rows = []
    for p in range(1, spec.pipelines + 1):
        platform = PLATFORMS[p % len(PLATFORMS)]
        rows.append(
            (
                p,
                1 + (p - 1) // spec.per_client,
                f"pipeline_{p:05d}",
                f"pipeline_{p:05d}",
                platform,
                "elt" if p % 4 == 0 else "batch",
                ENVIRONMENTS[p % len(ENVIRONMENTS)],
                f"{platform}-{p}",
                p % 20 != 0,
                at,
                at,
            )
        )
    return rows


RUN_COLUMNS = (
    "id",
    "pipeline_id",
    "external_run_id",
    "status",
    "source_status",
    "started_at",
    "finished_at",
    "duration_seconds",
    "duration_from_source",
    "metrics",
    "error_message",
    "source_payload",
    "ingested_at",
    "created_at",
    "updated_at",
)
SOURCE_WORDS = {
    "success": "succeeded",
    "failed": "failed",
    "running": "running",
    "queued": "queued",
    "cancelled": "cancelled",
    "skipped": "skipped",
    "unknown": "upstream_failed",
}
ERRORS = (
    "task load_orders failed: connection reset by peer",
    "dbt test failed: not_null_orders_id (3 rows)",
    "OutOfMemoryError: Java heap space in stage 4",
    "timeout after 3600 s waiting for upstream",
)


def run_rows(spec: Spec) -> Iterator[tuple[Any, ...]]:
    """The runs, in id (= time) order, as tuples of RUN_COLUMNS; timestamps as
    UTC wall-time text, booleans as bool, JSON as text."""
    rng = random.Random(spec.seed)
    pipelines = range(1, spec.pipelines + 1)
    # Run rates (hourly : every few hours : daily = 24 : 6 : 1) and each
    # pipeline's typical duration, fixed per pipeline.
    rates = [24.0 if p % 10 == 1 else 6.0 if p % 10 in (2, 5, 8) else 1.0 for p in pipelines]
    cumulative = list(itertools.accumulate(rates))
    median_log = [math.log(60 * (1 + 19 * rng.random())) for _ in pipelines]
    failure_rate = [0.3 if p % 10 == 0 else 0.05 if p % 10 in (3, 6) else 0.005 for p in pipelines]
    span = spec.days * 86400.0
    step = span / spec.runs
    start = AS_OF - timedelta(days=spec.days)
    as_of_s = span
    choose = rng.choices
    for first in range(0, spec.runs, 10_000):
        count = min(10_000, spec.runs - first)
        chosen = choose(pipelines, cum_weights=cumulative, k=count)
        for n, pid in enumerate(chosen):
            i = first + n + 1
            offset = (i - 1 + rng.random()) * step  # seconds since start
            dice, shape = rng.random(), rng.random()
            age = as_of_s - offset
            if dice < 0.0002 or (age < 3 * 3600 and dice < 0.3):
                status = "running"
            elif age < 3600 and dice < 0.45:
                status = "queued"
            elif dice < failure_rate[pid - 1]:
                status = "failed"
            elif dice > 0.997:
                status = "unknown"
            elif dice > 0.993:
                status = "cancelled"
            elif dice > 0.99:
                status = "skipped"
            else:
                status = "success"
            open_run = status in ("running", "queued")
            duration = round(min(43200.0, rng.lognormvariate(median_log[pid - 1], 0.8)), 3)
            t = start + timedelta(seconds=offset)
            started = None if shape < 0.02 else _ts(t)
            finished = None if shape < 0.001 or open_run else _ts(t + timedelta(seconds=duration))
            ingested = shape > 0.1
            created = _ts(t + timedelta(seconds=30))
            word = SOURCE_WORDS[status] if ingested else None
            payload = (
                f'{{"run_id": "r{i}", "status": "{word}", "attempt": 1, '
                f'"trigger": {{"kind": "schedule"}}}}'
                if ingested
                else None
            )
            yield (
                i,
                pid,
                f"r{i}" if ingested else f"manual-{i}",
                status,
                word,
                started,
                finished,
                None if started is None or finished is None else duration,
                False,
                f'{{"rows": {int(duration * 97) % 100_000}}}',
                ERRORS[i % len(ERRORS)] if status == "failed" else None,
                payload,
                (finished or created) if ingested else None,
                created,
                finished or created,
            )


# --- PostgreSQL ---------------------------------------------------------------


def _pg_admin(admin_url: str) -> str:
    return make_url(admin_url).set(drivername="postgresql").render_as_string(False)


def _pg_url(admin_url: str, database: str) -> str:
    return make_url(admin_url).set(database=database).render_as_string(False)


def _pg_copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if value is True:
        return "t"
    if value is False:
        return "f"
    return str(value)  # the generator's text holds no tab, newline or backslash


def _pg_lines(rows: Iterator[tuple[Any, ...]], batch: int = 20_000) -> Iterator[bytes]:
    text = _pg_copy_text
    while chunk := list(itertools.islice(rows, batch)):
        yield "".join("\t".join(map(text, row)) + "\n" for row in chunk).encode()


def _pg_runs_structure(conn: psycopg.Connection[Any]) -> tuple[list[str], list[str]]:
    """The runs table's index definitions and key constraints, as migrated."""
    constraints = conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = 'runs'::regclass AND contype IN ('p', 'u', 'f') ORDER BY contype"
    ).fetchall()
    backing = {name for name, _ in constraints}
    indexes = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'runs'"
        " AND schemaname = current_schema()"
    ).fetchall()
    drops = [f'ALTER TABLE runs DROP CONSTRAINT "{name}"' for name, _ in constraints]
    drops += [f'DROP INDEX "{name}"' for name, _ in indexes if name not in backing]
    # pg_constraint orders f, p, u: primary key first, then unique, foreign key last.
    order = {"PRIMARY": 0, "UNIQUE": 1, "FOREIGN": 2}
    creates = [
        f'ALTER TABLE runs ADD CONSTRAINT "{name}" {definition}'
        for name, definition in sorted(constraints, key=lambda c: order[c[1].split()[0]])
    ]
    creates += [definition for name, definition in indexes if name not in backing]
    return drops, creates


def load_postgres(url: str, spec: Spec) -> None:
    with psycopg.connect(url, autocommit=False) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        conn.execute("SET maintenance_work_mem = '1GB'")
        with conn.cursor() as cur:
            with cur.copy(
                "COPY clients (id, name, name_key, is_active, created_at, updated_at) FROM STDIN"
            ) as copy:
                for row in client_rows(spec):
                    copy.write_row(row)
            with cur.copy(
                "COPY pipelines (id, client_id, name, name_key, platform, pipeline_type,"
                " environment, external_id, is_active, created_at, updated_at) FROM STDIN"
            ) as copy:
                for row in pipeline_rows(spec):
                    copy.write_row(row)
        drops, creates = _pg_runs_structure(conn)
        for statement in drops:
            conn.execute(statement)
        # TRUNCATE in the loading transaction lets COPY write frozen, all-visible
        # rows: no hint-bit rewrite and no long VACUUM afterwards.
        conn.execute("TRUNCATE runs")
        started = time.perf_counter()
        with conn.cursor().copy(
            f"COPY runs ({', '.join(RUN_COLUMNS)}) FROM STDIN WITH (FREEZE)"
        ) as copy:
            for n, block in enumerate(_pg_lines(run_rows(spec)), 1):
                copy.write(block)
                if n % 50 == 0:
                    done = n * 20_000
                    print(f"  runs {done:,} ({time.perf_counter() - started:.0f} s)", flush=True)
        print(f"  copied {spec.runs:,} runs in {time.perf_counter() - started:.0f} s", flush=True)
        conn.commit()
        started = time.perf_counter()
        for statement in creates:
            conn.execute(statement)
            conn.commit()
        print(f"  rebuilt indexes in {time.perf_counter() - started:.0f} s", flush=True)
        for table in ("clients", "pipelines", "runs"):
            conn.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                f" (SELECT max(id) FROM {table}))"
            )
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")


def _pg_exists(admin: str, name: str) -> tuple[bool, str | None]:
    with psycopg.connect(admin, autocommit=True) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (name,),
        ).fetchone()
    return (row is not None, row[0] if row else None)


def ensure_postgres(spec: Spec, admin_url: str = ADMIN_URL, *, rebuild: bool = False) -> str:
    admin = _pg_admin(admin_url)
    name = f"chm_bench_{spec.name}"
    url = _pg_url(admin_url, name)
    exists, stamp = _pg_exists(admin, name)
    if exists and stamp == spec.fingerprint() and not rebuild:
        try:
            _upgrade(url)
            print(f"reusing PostgreSQL database {name}", flush=True)
            return url
        except Exception as error:  # e.g. a revision this checkout does not know
            print(f"cannot reuse {name} ({type(error).__name__}); rebuilding", flush=True)
    building = f"{name}_building"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{building}"')
    print(f"generating {describe(spec)} into PostgreSQL {name}", flush=True)
    started = time.perf_counter()
    try:
        _upgrade(_pg_url(admin_url, building))
        load_postgres(_pg_url(admin_url, building), spec)
    except BaseException:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{building}" WITH (FORCE)')
        raise
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
        conn.execute(
            sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(name), sql.Literal(spec.fingerprint())
            )
        )
    print(f"generated in {time.perf_counter() - started:.0f} s", flush=True)
    return url


# --- SQLite -------------------------------------------------------------------


def load_sqlite(path: Path, spec: Spec) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("PRAGMA cache_size = -1000000")  # 1 GB
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO clients (id, name, name_key, is_active, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            client_rows(spec),
        )
        conn.executemany(
            "INSERT INTO pipelines (id, client_id, name, name_key, platform, pipeline_type,"
            " environment, external_id, is_active, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            pipeline_rows(spec),
        )
        # Indexes declared by the migrations (not the constraints' own), rebuilt after.
        indexes = conn.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'runs'"
            " AND sql IS NOT NULL"
        ).fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        conn.execute("COMMIT")
        insert = (
            f"INSERT INTO runs ({', '.join(RUN_COLUMNS)})"
            f" VALUES ({', '.join('?' for _ in RUN_COLUMNS)})"
        )
        rows = run_rows(spec)
        started, done = time.perf_counter(), 0
        while chunk := list(itertools.islice(rows, 500_000)):
            conn.execute("BEGIN")
            conn.executemany(insert, chunk)
            conn.execute("COMMIT")
            done += len(chunk)
            print(f"  runs {done:,} ({time.perf_counter() - started:.0f} s)", flush=True)
        started = time.perf_counter()
        conn.execute("BEGIN")
        for _, sql in indexes:
            conn.execute(sql)
        conn.execute("COMMIT")
        print(f"  rebuilt indexes in {time.perf_counter() - started:.0f} s", flush=True)
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def sqlite_path(spec: Spec) -> Path:
    return DATA_DIR / f"chm_bench_{spec.name}.db"


def ensure_sqlite(spec: Spec, *, rebuild: bool = False) -> str:
    path = sqlite_path(spec)
    stamp = path.with_suffix(".json")
    url = f"sqlite:///{path}"
    fresh = path.exists() and stamp.exists() and stamp.read_text() == spec.fingerprint()
    if fresh and not rebuild:
        try:
            _upgrade(url)
            print(f"reusing SQLite file {path}", flush=True)
            return url
        except Exception as error:  # e.g. a revision this checkout does not know
            print(f"cannot reuse {path} ({type(error).__name__}); rebuilding", flush=True)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    building = path.with_name(path.name + ".building")
    _remove_sqlite(building)
    print(f"generating {describe(spec)} into SQLite {path}", flush=True)
    started = time.perf_counter()
    try:
        _upgrade(f"sqlite:///{building}")
        load_sqlite(building, spec)
    except BaseException:
        _remove_sqlite(building)
        raise
    _remove_sqlite(path)
    stamp.unlink(missing_ok=True)
    os.replace(building, path)
    stamp.write_text(spec.fingerprint())
    print(f"generated in {time.perf_counter() - started:.0f} s", flush=True)
    return url


def _remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# --- both ---------------------------------------------------------------------


def _upgrade(url: str) -> None:
    engine = create_db_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


def describe(spec: Spec) -> str:
    return (
        f"{spec.client_count:,} clients, {spec.pipelines:,} pipelines, "
        f"{spec.runs:,} runs over {spec.days} days (seed {spec.seed})"
    )


def ensure(spec: Spec, backend: str, *, rebuild: bool = False) -> str:
    """The URL of a database holding ``spec``'s data: ``backend`` is 'sqlite'
    or a PostgreSQL URL of the server (its database part is ignored)."""
    if backend == "sqlite":
        return ensure_sqlite(spec, rebuild=rebuild)
    return ensure_postgres(spec, backend, rebuild=rebuild)


# CREATE DATABASE ... TEMPLATE waits for the template's other sessions this long.
COPY_WAIT_S = 120


@contextmanager
def postgres_copy(spec: Spec, admin_url: str, purpose: str) -> Iterator[str]:
    """A scratch copy of the cached PostgreSQL data set, dropped on leaving."""
    source = make_url(ensure(spec, admin_url)).database
    admin = make_url(admin_url).set(drivername="postgresql").render_as_string(False)
    copy = f"chm_bench_{purpose}_{spec.name}_{os.getpid()}"
    started, deadline = time.perf_counter(), time.monotonic() + COPY_WAIT_S
    with psycopg.connect(admin, autocommit=True) as conn:
        while True:
            try:
                conn.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{source}"')
                break
            except psycopg.errors.ObjectInUse:
                # Another session is connected to the cached data set: wait.
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)
    print(f"copied {source} to {copy} in {time.perf_counter() - started:.0f} s", flush=True)
    try:
        yield make_url(admin_url).set(database=copy).render_as_string(False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')
        print(f"dropped {copy}", flush=True)


def scratch_copy(
    spec: Spec, backend: str, admin_url: str, purpose: str
) -> contextlib.AbstractContextManager[str]:
    """A scratch copy of the cached data set on ``backend`` ("postgresql" or
    "sqlite"), dropped on leaving: what a benchmark that writes works on."""
    if backend == "postgresql":
        return postgres_copy(spec, admin_url, purpose)
    return sqlite_copy(spec, purpose)


@contextmanager
def sqlite_copy(spec: Spec, purpose: str) -> Iterator[str]:
    """A scratch copy of the cached SQLite data set, removed on leaving."""
    source = Path(make_url(ensure(spec, "sqlite")).database or "")
    copy = source.with_name(f"chm_bench_{purpose}_{spec.name}_{os.getpid()}.db")
    started = time.perf_counter()
    shutil.copyfile(source, copy)
    print(f"copied {source.name} to {copy.name} in {time.perf_counter() - started:.0f} s")
    try:
        yield f"sqlite:///{copy}"
    finally:
        for path in (copy, Path(f"{copy}-wal"), Path(f"{copy}-shm")):
            path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--database", default="sqlite", help="'sqlite' or a PostgreSQL URL")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--rebuild", action="store_true", help="regenerate even if cached")
    args = parser.parse_args(argv)
    spec = SIZES[args.size]
    if args.seed is not None:
        spec = replace(spec, name=f"{spec.name}_seed{args.seed}", seed=args.seed)
    url = ensure(spec, args.database, rebuild=args.rebuild)
    print(make_url(url).render_as_string(hide_password=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
