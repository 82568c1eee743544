"""How fast the overdue report answers for 10,000 scheduled pipelines (issue 15).

    .venv/bin/python -m bench.overdue                      # large, PostgreSQL
    .venv/bin/python -m bench.overdue --backend sqlite --repeat 5 --json out.json

takes the data set of ``--size`` from ``bench/dataset.py`` (generated once and
cached; 10,000 pipelines and 5,000,000 runs at ``large``) and works on a copy
of it, dropped afterwards. Into the copy go schedules for every pipeline, the
mix a consultancy keeps:

- 4 in 10 daily at the pipeline's own minute and hour (staggered, as teams do),
- 3 in 10 hourly at the pipeline's own minute,
- 2 in 10 every 15 minutes,
- 1 in 10 on weekdays at 06:00,

in UTC, Europe/Berlin and America/New_York in turn, grace 15 to 60 minutes,
a deadline on one pipeline in three, every schedule set 60 days before the
data set's reference time (``AS_OF``), and the ticks stored as at ``AS_OF``.
Then, after one warm-up, ``--repeat`` times each (the median and the worst):

1. ``GET /api/v1/reports/overdue-pipelines?as_of=AS_OF`` through the app in
   this process (the HTTP path minus the socket: parameters, the Python
   expectations, the statement, JSON), for all clients and for one client,
   and its CSV;
2. ``SELECT * FROM chm_overdue_pipelines`` (the view, at the database's clock;
   the ticks stored as at now first);
3. alert evaluation's ``missed_schedule`` statement with one rule per client,
   at ``AS_OF``.

Prints the figures (and with ``--json FILE`` writes them). Not part of the
test suite.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from bench import dataset
from bench.dataset import AS_OF
from bench.run import emit, load_average, wait_quiet
from chm.app import create_app
from chm.core.db import create_db_engine, make_session_factory
from chm.core.migrate import upgrade
from chm.core.settings import Settings
from chm.models import AlertRule, Client, Pipeline
from chm.schedules.ticks import rewrite_ticks

ZONES = ("UTC", "Europe/Berlin", "America/New_York")
SET_BEFORE = timedelta(days=60)
TARGET_S = 1.0


def schedule_of(pipeline_id: int) -> tuple[str, str, int, int | None]:
    """The schedule, zone, grace and deadline the bench gives a pipeline."""
    kind = pipeline_id % 10
    minute, hour = (pipeline_id * 7) % 60, (pipeline_id * 5) % 24
    if kind < 4:
        cron = f"{minute} {hour} * * *"
    elif kind < 7:
        cron = f"{minute} * * * *"
    elif kind < 9:
        cron = "*/15 * * * *"
    else:
        cron = "0 6 * * MON-FRI"
    grace = 15 + (pipeline_id % 4) * 15
    deadline = 120 if pipeline_id % 3 == 0 else None
    return cron, ZONES[pipeline_id % len(ZONES)], grace, deadline


def add_schedules(engine: Engine, at: datetime) -> dict[str, Any]:
    """Every pipeline scheduled, set 60 days before ``AS_OF``; ticks stored as at ``at``."""
    started = time.perf_counter()
    set_at = AS_OF - SET_BEFORE
    with make_session_factory(engine).begin() as session:
        pipelines = session.scalars(sa.select(Pipeline).order_by(Pipeline.id)).all()
        for pipeline in pipelines:
            cron, zone, grace, deadline = schedule_of(pipeline.id)
            pipeline.schedule, pipeline.schedule_timezone = cron, zone
            pipeline.grace_minutes, pipeline.deadline_minutes = grace, deadline
            pipeline.schedule_source = "user"
            pipeline.schedule_set_at = set_at
            pipeline.created_at = min(pipeline.created_at, set_at)
        session.flush()
        for pipeline in pipelines:
            rewrite_ticks(session, pipeline, at)
        count = len(pipelines)
    with engine.begin() as conn:
        for table in ("pipelines", "schedule_ticks"):
            conn.exec_driver_sql(f"ANALYZE {table}")
        ticks = conn.execute(sa.text("SELECT count(*) FROM schedule_ticks")).scalar_one()
    return {"pipelines": count, "ticks": ticks, "seconds": round(time.perf_counter() - started, 1)}


def add_rules(engine: Engine) -> int:
    """One missed_schedule rule per client."""
    now = AS_OF - timedelta(days=1)
    with engine.begin() as conn:
        clients = conn.execute(sa.select(Client.id)).scalars().all()
        base = {"is_enabled": True, "created_at": now, "updated_at": now}
        rows = [
            {
                **base,
                "rule_type": "missed_schedule",
                "client_id": client,
                "pipeline_id": None,
                "threshold": None,
                "window_minutes": None,
                "destination": "webhook:ops",
            }
            for client in clients
        ]
        conn.execute(sa.insert(AlertRule), rows)
        conn.exec_driver_sql("ANALYZE alert_rules")
    return len(rows)


def timed(call: Callable[[], Any], repeat: int) -> dict[str, Any]:
    """One warm-up, then ``repeat`` timed calls: median and worst in ms, and the
    size of the last answer."""
    size = call()
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        size = call()
        seconds.append(time.perf_counter() - started)
    return {
        "median_ms": round(statistics.median(seconds) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
        "rows": size,
    }


def _one_client(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                sa.text(
                    "SELECT min(id) FROM clients WHERE is_active"
                    " AND id >= (SELECT max(id) / 2 FROM clients)"
                )
            ).scalar_one()
        )


def measure(url: str, repeat: int) -> dict[str, Any]:
    engine = create_db_engine(url)
    upgrade(engine)
    figures: dict[str, Any] = {"backend": engine.dialect.name}
    figures["schedules"] = add_schedules(engine, AS_OF)
    print(f"scheduled: {figures['schedules']}", flush=True)
    figures["rules"] = add_rules(engine)
    settings = Settings(database_url=url, _env_file=None)  # type: ignore[call-arg]
    as_of = AS_OF.isoformat().replace("+00:00", "Z")
    client_id = _one_client(engine)
    with TestClient(create_app(settings, engine)) as api:

        def report(**params: Any) -> Callable[[], int]:
            def call() -> int:
                response = api.get(
                    "/api/v1/reports/overdue-pipelines", params={"as_of": as_of, **params}
                )
                response.raise_for_status()
                if params.get("format") == "csv":
                    return response.text.count("\n") - 1
                return len(response.json()["items"])

            return call

        figures["api_all"] = timed(report(), repeat)
        print(f"API, all clients: {figures['api_all']}", flush=True)
        figures["api_one_client"] = timed(report(client_id=str(client_id)), repeat)
        print(f"API, one client: {figures['api_one_client']}", flush=True)
        figures["api_csv_all"] = timed(report(format="csv"), repeat)
        print(f"API CSV, all clients: {figures['api_csv_all']}", flush=True)
    figures["evaluation"] = time_evaluation(engine, repeat)
    print(f"missed_schedule evaluation: {figures['evaluation']}", flush=True)
    # The view reads the database's clock: store the ticks as at now.
    add_schedules(engine, datetime.now(UTC))

    def view() -> int:
        with engine.connect() as conn:
            return len(conn.execute(sa.text("SELECT * FROM chm_overdue_pipelines")).all())

    figures["view"] = timed(view, repeat)
    print(f"view: {figures['view']}", flush=True)
    engine.dispose()
    return figures


def time_evaluation(engine: Engine, repeat: int) -> dict[str, Any]:
    """The missed_schedule condition's statement alone, at ``AS_OF``."""
    from chm.alerts.evaluate import CONDITIONS, evaluation_dialect
    from chm.models import RuleType

    statement = next(c.statement for c in CONDITIONS if c.rule_type is RuleType.missed_schedule)

    def call() -> int:
        with make_session_factory(engine).begin() as session:
            evaluation_dialect(engine).prepare(session)
            return len(session.execute(statement(AS_OF)).all())

    return timed(call, repeat)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(dataset.SIZES), default="large")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--admin-url", default=dataset.ADMIN_URL)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--wait-quiet", type=float, default=60.0)
    parser.add_argument("--json", dest="json_path", default=None)
    args = parser.parse_args(argv)
    spec = dataset.SIZES[args.size]
    quiet = wait_quiet(args.wait_quiet)
    with dataset.scratch_copy(spec, args.backend, args.admin_url, "overdue") as url:
        figures = measure(url, args.repeat)
    figures.update(
        size=args.size,
        data=dataset.describe(spec),
        load_before=quiet,
        load_after=load_average(),
        target_s=TARGET_S,
    )
    emit(figures, args.json_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
