"""Print the query plans of "latest run" and "a deep history page" for a pipeline
holding 120,000 runs, on SQLite and PostgreSQL (the output of docs/query-plans.md).

    .venv/bin/python bench/explain_plans.py
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import sqlalchemy as sa

from chm.core.db import create_db_engine
from chm.core.migrate import upgrade
from chm.models import Run
from chm.runs.ordering import KEYSET, ORDER_BY

RUNS = 120_000
PIPELINES = 50
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def seed(engine: sa.Engine) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO clients (id, name, name_key, is_active, created_at, updated_at)"
                " VALUES (1, 'A', 'a', true, :t, :t)"
            ),
            {"t": now},
        )
        for pid in range(1, PIPELINES + 1):
            conn.execute(
                sa.text(
                    "INSERT INTO pipelines (id, client_id, name, name_key, platform, pipeline_type,"
                    " environment, is_active, created_at, updated_at)"
                    " VALUES (:id, 1, :n, :n, 'airflow', 'batch', 'prod', true, :t, :t)"
                ),
                {"id": pid, "n": f"p{pid}", "t": now},
            )
    table = Run.__table__
    batch = []
    for i in range(RUNS + PIPELINES * 2000):
        pipeline_id = 1 if i < RUNS else 2 + i % (PIPELINES - 1)
        started = None if i % 97 == 0 else now - timedelta(minutes=i)
        batch.append(
            {
                "pipeline_id": pipeline_id,
                "external_run_id": f"r{i}",
                "status": "success" if i % 7 else "failed",
                "started_at": started,
                "finished_at": None
                if started is None or i % 11 == 0
                else started + timedelta(seconds=90),
                "duration_from_source": False,
                "metrics": {},
                "created_at": now,
                "updated_at": now,
            }
        )
        if len(batch) == 20_000:
            with engine.begin() as conn:
                conn.execute(sa.insert(table), batch)
            batch = []
    if batch:
        with engine.begin() as conn:
            conn.execute(sa.insert(table), batch)
    with engine.begin() as conn:
        conn.execute(sa.text("ANALYZE"))


def explain(engine: sa.Engine, title: str, query: sa.Select) -> None:  # type: ignore[type-arg]
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    analyze = (
        "EXPLAIN QUERY PLAN "
        if engine.dialect.name == "sqlite"
        else "EXPLAIN (ANALYZE, COSTS OFF, BUFFERS) "
    )
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(analyze + sql).all()
        started = time.perf_counter()
        for _ in range(20):
            conn.execute(query).all()
        per_query_ms = (time.perf_counter() - started) / 20 * 1000
    print(f"### {engine.dialect.name}: {title} ({per_query_ms:.2f} ms per query)\n")
    print("```")
    for row in rows:
        print(row[-1])
    print("```\n")


def report(engine: sa.Engine) -> None:
    with engine.connect() as conn:
        # a cursor about 100,000 runs deep into pipeline 1's history
        deep = conn.execute(
            sa.select(Run).where(Run.pipeline_id == 1).order_by(*ORDER_BY).offset(100_000).limit(1)
        ).one()
    explain(
        engine,
        "latest run",
        sa.select(Run).where(Run.pipeline_id == 1).order_by(*ORDER_BY).limit(1),
    )
    explain(
        engine,
        "history page 2,001 (cursor 100,000 runs deep)",
        sa.select(Run)
        .where(Run.pipeline_id == 1, KEYSET.after([deep.started_at, deep.finished_at, deep.id]))
        .order_by(*ORDER_BY)
        .limit(51),
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_db_engine(f"sqlite:///{Path(tmp) / 'plans.db'}")
        upgrade(engine)
        seed(engine)
        report(engine)
        engine.dispose()
    name = "chm_explain_plans"
    with psycopg.connect(ADMIN, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    try:
        engine = create_db_engine(f"postgresql://postgres@127.0.0.1:5432/{name}")
        upgrade(engine)
        seed(engine)
        report(engine)
        engine.dispose()
    finally:
        with psycopg.connect(ADMIN, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


if __name__ == "__main__":
    main()
