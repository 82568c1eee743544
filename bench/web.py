"""How fast the operator pages render for 10,000 pipelines and 5,000,000 runs (issue 16).

    .venv/bin/python -m bench.web                          # large, PostgreSQL
    .venv/bin/python -m bench.web --backend sqlite --repeat 7 --json out.json

takes the data set of ``--size`` from ``bench/dataset.py`` (generated once and
cached) and works on a copy of it, dropped afterwards. Into the copy goes what
makes the now page realistic, at the data set's reference time ``AS_OF``:

- schedules on 1 pipeline in 5 (``bench.overdue.schedule_of``'s mix, set 60
  days before, ticks stored as at ``AS_OF``), so the overdue section has rows;
- an ``on_failure`` rule on 1 client in 4 and a ``consecutive_failures`` rule
  (3) on 1 client in 10, evaluated at ``AS_OF`` (their alerts fire), and a
  silence on one client.

Then each page, through the app in this process (the HTTP path minus the
socket: routing, the session cookie check, the statements, the template),
at the clock ``AS_OF``: one warm-up, then ``--repeat`` timed GETs (median and
worst), and the SQL statements one GET sends (SQLAlchemy's
``before_cursor_execute`` and ``after_cursor_execute`` events on the app's
engines): their number, their time in the database, the slowest three:

1. ``/`` the now page (target: under 300 ms on PostgreSQL);
2. ``/pipelines/{id}`` of the pipeline with the most runs among the first 20
   with a firing alert (its history's first page, the strip and the chart);
3. ``/clients/{id}`` of that pipeline's client, and ``/alerts``.

Then the now page's data alone (``build_board`` with the page's limits: the
head of each list, every total) and the whole board (what ``chm status``
shows), timed the same way, with the rows and totals of each list;
``--profile N`` prints the N functions the now page's ``build_board`` spends
most time in (cProfile).

Prints the figures (and with ``--json FILE`` writes them), with the load
average before and after. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event

from bench import dataset
from bench.dataset import AS_OF
from bench.overdue import SET_BEFORE, schedule_of
from bench.run import emit, load_average, wait_quiet
from chm.alerts.evaluate import evaluate
from chm.app import create_app
from chm.core.db import create_db_engine, make_session_factory
from chm.core.migrate import upgrade
from chm.core.settings import Settings
from chm.models import Alert, AlertRule, Client, Pipeline, Run, Silence
from chm.reports.board import BoardLimits, StatusBoard, build_board
from chm.schedules.ticks import rewrite_ticks
from chm.web.data import NOW_LIMITS

TARGET_MS = 300.0
SCHEDULED_ONE_IN = 5
ON_FAILURE_ONE_IN = 4
CONSECUTIVE_ONE_IN = 10


def add_schedules(engine: Engine) -> dict[str, Any]:
    """1 pipeline in 5 scheduled, set 60 days before ``AS_OF``; ticks as at ``AS_OF``."""
    started = time.perf_counter()
    set_at = AS_OF - SET_BEFORE
    with make_session_factory(engine).begin() as session:
        pipelines = session.scalars(
            sa.select(Pipeline).where(Pipeline.id % SCHEDULED_ONE_IN == 0).order_by(Pipeline.id)
        ).all()
        for pipeline in pipelines:
            cron, zone, grace, deadline = schedule_of(pipeline.id)
            pipeline.schedule, pipeline.schedule_timezone = cron, zone
            pipeline.grace_minutes, pipeline.deadline_minutes = grace, deadline
            pipeline.schedule_source = "user"
            pipeline.schedule_set_at = set_at
            pipeline.created_at = min(pipeline.created_at, set_at)
        session.flush()
        for pipeline in pipelines:
            rewrite_ticks(session, pipeline, AS_OF)
    with engine.begin() as conn:
        for table in ("pipelines", "schedule_ticks"):
            conn.exec_driver_sql(f"ANALYZE {table}")
    return {"pipelines": len(pipelines), "seconds": round(time.perf_counter() - started, 1)}


def add_alerts(engine: Engine, settings: Settings) -> dict[str, Any]:
    """The rules, evaluated at ``AS_OF``, and one silence."""
    created = AS_OF - timedelta(days=30)
    base = {
        "is_enabled": True,
        "created_at": created,
        "updated_at": created,
        "pipeline_id": None,
        "window_minutes": None,
        "destination": "webhook:ops",
    }
    with engine.begin() as conn:
        clients = conn.execute(sa.select(Client.id).order_by(Client.id)).scalars().all()
        rules = [
            {**base, "rule_type": "on_failure", "client_id": c, "threshold": None}
            # The first client too: a small data set has fewer clients than ONE_IN.
            for c in clients
            if c % ON_FAILURE_ONE_IN == 0 or c == clients[0]
        ] + [
            {**base, "rule_type": "consecutive_failures", "client_id": c, "threshold": 3}
            for c in clients
            if c % CONSECUTIVE_ONE_IN == 1
        ]
        conn.execute(sa.insert(AlertRule), rules)
        conn.execute(
            sa.insert(Silence).values(
                client_id=clients[1],
                pipeline_id=None,
                rule_id=None,
                starts_at=AS_OF - timedelta(hours=2),
                ends_at=AS_OF + timedelta(days=2),
                reason="Planned migration of the warehouse",
                created_by="ops@example.com",
                created_at=AS_OF - timedelta(hours=2),
            )
        )
        conn.exec_driver_sql("ANALYZE alert_rules")
    report = evaluate(engine, AS_OF, settings, None)
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE alerts")
    return {"rules": len(rules), "fired": report.fired, "seconds": round(report.elapsed_s, 1)}


def busiest_alerting_pipeline(engine: Engine) -> tuple[int, int]:
    """(pipeline id, client id) of the firing alert whose pipeline has the most
    runs (of any pipeline when none fires)."""
    with engine.connect() as conn:
        pipelines = (
            conn.execute(sa.select(Alert.pipeline_id).where(Alert.state == "firing").limit(20))
            .scalars()
            .all()
        )
        runs = sa.select(Run.pipeline_id)
        if pipelines:
            runs = runs.where(Run.pipeline_id.in_(pipelines))
        busiest = conn.execute(
            runs.group_by(Run.pipeline_id)
            .order_by(sa.func.count().desc(), Run.pipeline_id)
            .limit(1)
        ).scalar_one()
        client = conn.execute(
            sa.select(Pipeline.client_id).where(Pipeline.id == busiest)
        ).scalar_one()
    return int(busiest), int(client)


@dataclass
class Sent:
    """A statement an engine sent, and how long the database took to answer it."""

    statement: str
    seconds: float = 0.0


@contextmanager
def counting_statements(engines: list[Engine]) -> Iterator[list[Sent]]:
    """Every statement ``engines`` send while inside, in order, timed."""
    sent: list[Sent] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(Sent(statement))
        conn.info["bench_started"] = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent[-1].seconds = time.perf_counter() - conn.info.pop("bench_started")

    for engine in engines:
        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)
    try:
        yield sent
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", before)
            event.remove(engine, "after_cursor_execute", after)


def slowest(sent: list[Sent], count: int = 3) -> list[dict[str, Any]]:
    """The slowest statements: ms and the first 160 characters, on one line."""
    return [
        {"ms": round(one.seconds * 1000, 1), "sql": " ".join(one.statement.split())[:160]}
        for one in sorted(sent, key=lambda one: one.seconds, reverse=True)[:count]
    ]


def app_engines(api: TestClient) -> list[Engine]:
    """The app's engines: the sync one (ORM sessions), the async one's, and the
    report reads' (the pages read there; they are the same two unless
    CHM_READ_DATABASE_URL is set)."""
    state = api.app.state  # type: ignore[attr-defined]
    engines = [state.engine, state.async_engine.sync_engine]
    engines += [state.report_engine, state.report_async_engine.sync_engine]
    return list({id(engine): engine for engine in engines}.values())


def timed_page(api: TestClient, path: str, repeat: int) -> dict[str, Any]:
    """One warm-up GET of ``path``, one counting its statements, then ``repeat``
    timed ones: median and worst in ms, the statements of one GET, the size of
    the page."""

    def get() -> int:
        response = api.get(path)
        response.raise_for_status()
        return len(response.content)

    get()
    with counting_statements(app_engines(api)) as sent:
        size = get()
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        size = get()
        seconds.append(time.perf_counter() - started)
    return {
        "path": path,
        "median_ms": round(statistics.median(seconds) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
        "statements": len(sent),
        "statements_ms": round(sum(one.seconds for one in sent) * 1000, 1),
        "slowest": slowest(sent),
        "bytes": size,
    }


def timed_board(
    engine: Engine, settings: Settings, repeat: int, limits: BoardLimits | None
) -> dict[str, Any]:
    """The board alone (its statements and models, no template, no HTTP), timed
    as the pages are: with the now page's ``limits`` (the head of each list),
    or whole (None: ``chm status``); and how many rows each list holds."""
    stuck_after = timedelta(minutes=settings.stuck_after_minutes)
    factory = make_session_factory(engine)

    def build() -> StatusBoard:
        with factory() as session:
            return build_board(session, AS_OF, stuck_after, limits=limits)

    board = build()
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        board = build()
        seconds.append(time.perf_counter() - started)
    changes = board.changes
    kept = (len(changes.newly_failing), len(changes.recovered), len(changes.other))
    return {
        "median_ms": round(statistics.median(seconds) * 1000, 1),
        "max_ms": round(max(seconds) * 1000, 1),
        "rows": {
            "firing_alerts": len(board.firing_alerts),
            "failing_now": len(board.failing_now),
            "overdue": len(board.overdue),
            "stuck_runs": len(board.stuck_runs.items),
            "changes": sum(kept),
        },
        "totals": {
            "firing_alerts": board.firing_alerts_total,
            "failing_now": board.failing_total,
            "overdue": board.overdue_total,
            "stuck_runs": board.stuck_runs.total,
            "changes": changes.newly_failing_total + changes.recovered_total + changes.other_total,
            "pipelines": sum(board.status_counts.values()),
        },
    }


def profile_board(engine: Engine, settings: Settings, top: int) -> None:
    """One now-page ``build_board`` under cProfile: the ``top`` functions by cumulative time."""
    import cProfile
    import pstats

    stuck_after = timedelta(minutes=settings.stuck_after_minutes)
    with make_session_factory(engine)() as session, cProfile.Profile() as profiler:
        build_board(session, AS_OF, stuck_after, limits=NOW_LIMITS)
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(top)


def page_app(settings: Settings, engine: Engine, clock: Callable[[], datetime]) -> Any:
    """The app, its pages at ``clock``."""
    app = create_app(settings, engine)
    app.state.web_clock = clock
    return app


def measure(url: str, repeat: int, profile: int = 0) -> dict[str, Any]:
    engine = create_db_engine(url)
    upgrade(engine)
    figures: dict[str, Any] = {"backend": engine.dialect.name}
    figures["schedules"] = add_schedules(engine)
    print(f"scheduled: {figures['schedules']}", flush=True)
    settings = Settings(database_url=url, _env_file=None)  # type: ignore[call-arg]
    figures["rules"] = add_alerts(engine, settings)
    print(f"rules: {figures['rules']}", flush=True)
    pipeline_id, client_id = busiest_alerting_pipeline(engine)
    pages = {
        "now": "/",
        "pipeline": f"/pipelines/{pipeline_id}",
        "client": f"/clients/{client_id}",
        "alerts": "/alerts",
    }
    with TestClient(page_app(settings, engine, lambda: AS_OF)) as api:
        for name, path in pages.items():
            figures[name] = timed_page(api, path, repeat)
            print(f"{name}: {json.dumps(figures[name], indent=1)}", flush=True)
    figures["board"] = timed_board(engine, settings, repeat, NOW_LIMITS)
    print(f"the now page's board alone: {figures['board']}", flush=True)
    figures["status_board"] = timed_board(engine, settings, repeat, None)
    print(f"the whole board (chm status): {figures['status_board']}", flush=True)
    if profile:
        profile_board(engine, settings, profile)
    engine.dispose()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(dataset.SIZES), default="large")
    parser.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql")
    parser.add_argument("--admin-url", default=dataset.ADMIN_URL)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--wait-quiet", type=float, default=60.0)
    parser.add_argument("--json", dest="json_path", default=None)
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="print the N functions the now page's data spends most time in (cProfile)",
    )
    args = parser.parse_args(argv)
    spec = dataset.SIZES[args.size]
    quiet = wait_quiet(args.wait_quiet)
    with dataset.scratch_copy(spec, args.backend, args.admin_url, "web") as url:
        figures = measure(url, args.repeat, args.profile)
    figures.update(
        size=args.size,
        data=dataset.describe(spec),
        load_before=quiet,
        load_after=load_average(),
        target_ms=TARGET_MS,
    )
    emit(figures, args.json_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
