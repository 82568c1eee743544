"""How long alert evaluation takes over the benchmark data set (issue 14).

    .venv/bin/python -m bench.evaluate          # large (10,000 pipelines, 5M runs), PostgreSQL
    .venv/bin/python -m bench.evaluate --backend sqlite --size large --plans
    .venv/bin/python -m bench.evaluate --url postgresql://.../scratch   # a copy you made

takes the data set of ``--size`` from ``bench/dataset.py`` (generated once and
cached) and evaluates a copy of it, never the cached one (PostgreSQL:
``CREATE DATABASE ... TEMPLATE chm_bench_<size>``; SQLite: a copy of the
file), dropped afterwards. Into the copy go the rules an operations team
would keep: for every client one rule of each type (``on_failure``,
``failures_in_window`` 3 in 24 h, ``consecutive_failures`` 3,
``long_running`` 120 min, ``duration_anomaly``), and a pipeline-scoped
``on_failure`` rule on one pipeline in 50 (another destination). Then, at the
data set's reference time (``AS_OF``):

1. each rule type's statement alone (``--repeat`` times; the median), with
   its plan (``EXPLAIN``; on PostgreSQL ``EXPLAIN (ANALYZE, BUFFERS)``), and a
   check that no runs table is read whole (a sequential scan, or SQLite's
   ``SCAN runs``);
2. ``evaluate()`` as the worker calls it: the first evaluation (every alert
   fires, with its deliveries), then ``--repeat`` evaluations on the same
   data (nothing changes: the steady state the worker sees every minute),
   then one an hour later (some alerts resolve, some fire).

Prints (and with ``--json FILE`` writes) the figures. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from bench import dataset
from bench.dataset import AS_OF
from bench.run import load_average, wait_quiet
from chm.alerts.destinations import Destination, Destinations
from chm.alerts.evaluate import CONDITIONS, evaluate, evaluation_dialect
from chm.core.db import create_db_engine, make_session_factory
from chm.core.migrate import upgrade
from chm.core.settings import Settings
from chm.models import Alert, AlertDelivery, AlertRule, Client, Pipeline

PIPELINE_RULE_EVERY = 50


@contextmanager
def given(url: str) -> Iterator[str]:
    yield url


def add_rules(engine: Engine) -> dict[str, int]:
    """One rule of each type per client, and a pipeline-scoped on_failure rule on
    one pipeline in 50; none when the copy already has rules."""
    now = AS_OF - timedelta(days=1)
    with engine.begin() as conn:
        if conn.execute(sa.select(sa.func.count()).select_from(AlertRule)).scalar_one():
            print("the database has rules already: kept as they are", flush=True)
        else:
            clients = conn.execute(sa.select(Client.id).order_by(Client.id)).scalars().all()
            pipelines = conn.execute(
                sa.select(Pipeline.id).where(Pipeline.id % PIPELINE_RULE_EVERY == 1)
            ).scalars()
            per_client: list[dict[str, Any]] = [
                {"rule_type": "on_failure"},
                {"rule_type": "failures_in_window", "threshold": 3, "window_minutes": 1440},
                {"rule_type": "consecutive_failures", "threshold": 3},
                {"rule_type": "long_running", "threshold": 120},
                {"rule_type": "duration_anomaly"},
            ]
            base = {"is_enabled": True, "created_at": now, "updated_at": now}
            rows = [
                {
                    **base,
                    "threshold": None,
                    "window_minutes": None,
                    **fields,
                    "client_id": client,
                    "pipeline_id": None,
                    "destination": "webhook:ops",
                }
                for client in clients
                for fields in per_client
            ]
            rows += [
                {
                    **base,
                    "rule_type": "on_failure",
                    "threshold": None,
                    "window_minutes": None,
                    "client_id": None,
                    "pipeline_id": pipeline,
                    "destination": "slack:#pipeline-owners",
                }
                for pipeline in pipelines
            ]
            conn.execute(sa.insert(AlertRule), rows)
        # As autovacuum (PostgreSQL) or the last ANALYZE (SQLite) would have it.
        conn.exec_driver_sql("ANALYZE alert_rules")
        counts = conn.execute(
            sa.select(AlertRule.rule_type, sa.func.count()).group_by(AlertRule.rule_type)
        ).all()
    return {row[0]: row[1] for row in counts}


def explain(engine: Engine, statement: sa.Select[Any]) -> list[str]:
    compiled = statement.compile(engine, compile_kwargs={"literal_binds": True})
    sql = str(compiled)
    sqlite = engine.dialect.name == "sqlite"
    analyze = "EXPLAIN QUERY PLAN " if sqlite else "EXPLAIN (ANALYZE, BUFFERS) "
    with make_session_factory(engine).begin() as session:
        evaluation_dialect(engine).prepare(session)
        rows = session.connection().exec_driver_sql(analyze + sql).all()
    return [row[-1] if isinstance(row[-1], str) else str(row) for row in rows]


def reads_runs_whole(plan: list[str]) -> list[str]:
    """Plan lines that read the runs table whole."""
    return [
        line.strip()
        for line in plan
        if ("Seq Scan on runs" in line)
        or (line.strip().startswith("SCAN") and " runs" in line and "USING" not in line)
    ]


def time_statements(engine: Engine, repeat: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for condition in CONDITIONS:
        statement = condition.statement(AS_OF)
        times, rows = [], 0
        with make_session_factory(engine).begin() as session:
            evaluation_dialect(engine).prepare(session)  # as evaluate() runs them
            for _ in range(repeat):
                started = time.perf_counter()
                rows = len(session.execute(statement).all())
                times.append(time.perf_counter() - started)
        plan = explain(engine, statement)
        whole = reads_runs_whole(plan)
        figures[condition.rule_type.value] = {
            "rows": rows,
            "median_s": round(statistics.median(times), 4),
            "reads_runs_whole": whole,
            "plan": plan,
        }
        print(
            f"  {condition.rule_type.value:<22} {rows:>6} pairs holding,"
            f" {statistics.median(times) * 1000:8.1f} ms median"
            + (f"  READS RUNS WHOLE: {whole}" if whole else ""),
            flush=True,
        )
    return figures


def measure(url: str, repeat: int, show_plans: bool) -> dict[str, Any]:
    engine = create_db_engine(url)
    upgrade(engine)
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    environ = {"OPS_URL": "http://127.0.0.1:9/hook"}
    destinations = Destinations([Destination(name="ops", kind="webhook", url_env="OPS_URL")])
    try:
        with engine.begin() as conn:  # a copy evaluated before (--url): start afresh
            conn.execute(sa.delete(AlertDelivery))
            conn.execute(sa.delete(Alert))
        rules = add_rules(engine)
        with engine.connect() as conn:
            pipelines = conn.execute(sa.select(sa.func.count()).select_from(Pipeline)).scalar_one()
            runs = conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one()
        print(f"{pipelines:,} pipelines, {runs:,} runs; rules {rules}", flush=True)
        print("each rule type's statement alone:", flush=True)
        statements = time_statements(engine, repeat)
        if show_plans:
            for name, figure in statements.items():
                print(f"--- {name}\n" + "\n".join(figure["plan"]))
        load_before = load_average()
        first = evaluate(engine, AS_OF, settings, destinations, environ)
        print(f"first evaluation: {first}", flush=True)
        steady = [evaluate(engine, AS_OF, settings, destinations, environ) for _ in range(repeat)]
        assert all(r.fired == 0 and r.resolved == 0 for r in steady), steady
        later = evaluate(engine, AS_OF + timedelta(hours=1), settings, destinations, environ)
        print(f"an hour later: {later}", flush=True)
        load_after = load_average()
        with engine.connect() as conn:
            alerts = conn.execute(sa.select(sa.func.count()).select_from(Alert)).scalar_one()
            deliveries = conn.execute(
                sa.select(sa.func.count()).select_from(AlertDelivery)
            ).scalar_one()
    finally:
        engine.dispose()
    steady_s = [r.elapsed_s for r in steady]
    return {
        "pipelines": pipelines,
        "runs": runs,
        "rules": rules,
        "statements": statements,
        "first": {
            "seconds": round(first.elapsed_s, 3),
            "fired": first.fired,
            "deliveries": first.deliveries,
        },
        "steady": {
            "median_s": round(statistics.median(steady_s), 3),
            "max_s": round(max(steady_s), 3),
            "evaluations": len(steady_s),
        },
        "hour_later": {
            "seconds": round(later.elapsed_s, 3),
            "fired": later.fired,
            "resolved": later.resolved,
        },
        "alerts": alerts,
        "deliveries": deliveries,
        "load_average": {"before": load_before, "after": load_after},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=sorted(dataset.SIZES), default="large")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--admin-url", default=dataset.ADMIN_URL, help="the PostgreSQL server")
    parser.add_argument("--url", help="evaluate this database (a copy you made) instead")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--plans", action="store_true", help="print every statement's plan")
    parser.add_argument("--wait-quiet", type=float, default=120, help="seconds, at most")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    spec = dataset.SIZES[args.size]
    if args.url:
        copy = given(args.url)
    elif args.backend == "postgresql":
        copy = dataset.postgres_copy(spec, args.admin_url, "evaluate")
    else:
        copy = dataset.sqlite_copy(spec, "evaluate")
    with copy as url:
        quiet = wait_quiet(args.wait_quiet)
        result = measure(url, args.repeat, args.plans)
    backend = make_url(url).get_backend_name()
    result = {"backend": backend, "size": args.size, "quiet": quiet, **result}
    print(
        f"{backend} {result['pipelines']:,} pipelines / {result['runs']:,} runs,"
        f" {sum(result['rules'].values()):,} rules: first evaluation {result['first']['seconds']} s"
        f" ({result['first']['fired']:,} alerts fired), steady {result['steady']['median_s']} s"
        f" median (max {result['steady']['max_s']} s), an hour later"
        f" {result['hour_later']['seconds']} s; load average"
        f" {result['load_average']['before']} -> {result['load_average']['after']}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
