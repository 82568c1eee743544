"""The worker's schedules task (chm.worker.schedules): stored ticks topped up
before they run out, in batches, pruned every hour, an idle pass one read; and
with it the evaluation finds each day's tick, days after the schedule was set.
On both databases, with an injected clock."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session

from chm.core.settings import Settings
from chm.models import Alert, Pipeline, Run, ScheduleTick
from chm.schedules.ticks import MAX_AHEAD, PRUNE_AFTER, TOP_UP_AHEAD, rewrite_ticks
from chm.worker.alerts import Evaluation, LiveDestinations
from chm.worker.context import LiveSources, WorkerContext
from chm.worker.loop import Worker, default_tasks
from chm.worker.schedules import PRUNE_EVERY, Schedules
from factories import make_client, make_pipeline, make_rule

SINCE = datetime(2030, 5, 31, 12, 0, tzinfo=UTC)
_external = itertools.count(1)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def context(engine: Engine, db_url: str, clock: Clock) -> WorkerContext:
    options = Settings(
        database_url=db_url, evaluate_every_s=3600, worker_poll_s=0.01, _env_file=None
    )  # type: ignore[call-arg]
    return WorkerContext(
        engine, options, f"test:{os.getpid()}", clock, LiveSources(None, options.env)
    )


def dated(engine: Engine, pipeline: dict[str, Any], since: datetime = SINCE) -> None:
    """The pipeline created and its schedule set at ``since``; its ticks stored then."""
    with Session(engine) as session, session.begin():
        row = session.get(Pipeline, int(pipeline["id"]))
        assert row is not None
        row.created_at = row.updated_at = row.schedule_set_at = since
        rewrite_ticks(session, row, since)


def ticks(engine: Engine, pipeline: dict[str, Any]) -> list[datetime]:
    with engine.connect() as conn:
        query = (
            sa.select(ScheduleTick.tick_at)
            .where(ScheduleTick.pipeline_id == int(pipeline["id"]))
            .order_by(ScheduleTick.tick_at)
        )
        return list(conn.scalars(query))


def ticks_until(engine: Engine, pipeline: dict[str, Any]) -> datetime | None:
    with engine.connect() as conn:
        query = sa.select(Pipeline.schedule_ticks_until).where(Pipeline.id == int(pipeline["id"]))
        return conn.scalar(query)


def statements(engine: Engine, action: Any) -> list[str]:
    """The queries ``action()`` sends (SQLite's explicit BEGIN aside)."""
    sent: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.startswith("BEGIN"):
            sent.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    return sent


def test_ticks_running_out_are_topped_up_and_an_idle_pass_is_one_read(
    api: TestClient, engine: Engine, db_url: str
) -> None:
    pipeline = make_pipeline(api, make_client(api), schedule="*/5 * * * *", grace_minutes=5)
    dated(engine, pipeline)
    until = ticks_until(engine, pipeline)
    assert until is not None and len(ticks(engine, pipeline)) == MAX_AHEAD
    clock = Clock(until - TOP_UP_AHEAD - timedelta(minutes=1))
    task = Schedules(context(engine, db_url, clock))
    assert task.step() is False  # the first pass prunes; nothing runs out yet
    assert ticks_until(engine, pipeline) == until

    idle = statements(engine, task.step)
    assert len(idle) == 1 and "schedule_ticks_until" in idle[0], idle

    clock.now = until - TOP_UP_AHEAD + timedelta(minutes=1)
    task.step()
    extended = ticks_until(engine, pipeline)
    assert extended is not None and extended >= clock.now + TOP_UP_AHEAD
    stored = ticks(engine, pipeline)
    assert {b - a for a, b in itertools.pairwise(stored)} == {timedelta(minutes=5)}
    assert len(statements(engine, task.step)) == 1, "topped up: idle again"


def test_a_schedule_without_stored_ticks_gets_them(
    api: TestClient, engine: Engine, db_url: str
) -> None:
    pipeline = make_pipeline(api, make_client(api), schedule="0 3 * * *")
    with engine.begin() as conn:  # as a schedule written by SQL would be
        conn.execute(sa.delete(ScheduleTick))
        conn.execute(sa.update(Pipeline).values(schedule_ticks_until=None))
    Schedules(context(engine, db_url, Clock(SINCE))).step()
    # The latest tick due (the pipeline is older) and those of the day ahead.
    assert ticks(engine, pipeline) == [
        datetime(2030, 5, 31, 3, 0, tzinfo=UTC),
        datetime(2030, 6, 1, 3, 0, tzinfo=UTC),
    ]


def test_many_pipelines_are_topped_up_in_batches_until_none_is_left(
    api: TestClient, engine: Engine, db_url: str
) -> None:
    client = make_client(api)
    pipelines = [make_pipeline(api, client, schedule="0 * * * *") for _ in range(5)]
    for pipeline in pipelines:
        dated(engine, pipeline)
    clock = Clock(SINCE + timedelta(hours=23, minutes=30))
    ctx = context(engine, db_url, clock)
    task = Schedules(ctx, batch=2)
    assert [task.step() for _ in range(3)] == [True, True, False]
    assert all(ticks_until(engine, p) == clock.now + timedelta(hours=24) for p in pipelines)
    assert Worker(ctx, tasks=[task]).run_until_idle() == 1


def test_ticks_no_longer_needed_are_pruned_every_hour(
    api: TestClient, engine: Engine, db_url: str
) -> None:
    pipeline = make_pipeline(api, make_client(api), schedule="0 * * * *", grace_minutes=0)
    dated(engine, pipeline)  # hourly ticks from SINCE
    first_pass = SINCE + timedelta(hours=23, minutes=30)
    clock = Clock(first_pass)
    task = Schedules(context(engine, db_url, clock))
    task.step()  # prunes (nothing is a day old yet) and tops up
    assert ticks(engine, pipeline)[0] == SINCE

    clock.now = first_pass + PRUNE_EVERY - timedelta(minutes=1)
    task.step()
    assert ticks(engine, pipeline)[0] == SINCE, "a day old now, but the prune is not due"
    clock.now = first_pass + PRUNE_EVERY
    task.step()
    assert ticks(engine, pipeline)[0] == SINCE + timedelta(hours=1)
    assert clock.now - PRUNE_AFTER == SINCE + timedelta(minutes=30)


def test_the_worker_keeps_finding_each_days_tick_days_after_the_schedule_was_set(
    api: TestClient, engine: Engine, db_url: str
) -> None:
    """Ticks are stored a day ahead: without the top-up, day 3's evaluation
    would find day 1's tick (answered) and miss day 3's missed run."""
    client = make_client(api, "Acme")
    pipeline = make_pipeline(api, client, "nightly", schedule="0 1 * * *", grace_minutes=30)
    dated(engine, pipeline)
    make_rule(api, pipeline_id=pipeline["id"], rule_type="missed_schedule", destination="x:y")
    clock = Clock(SINCE)
    ctx = context(engine, db_url, clock)
    worker = Worker(ctx, tasks=[Schedules(ctx), Evaluation(ctx, LiveDestinations(None))])
    for day in (1, 2):
        started = datetime(2030, 6, day, 1, 0, tzinfo=UTC)
        with engine.begin() as conn:
            conn.execute(
                sa.insert(Run).values(
                    pipeline_id=int(pipeline["id"]),
                    external_run_id=f"run-{next(_external)}",
                    status="success",
                    started_at=started,
                    metrics={},
                    created_at=started,
                    updated_at=started,
                )
            )
    for hour in range(61):  # the worker polling, hourly, to 2030-06-03 00:00
        clock.now = SINCE + timedelta(hours=hour)
        worker.run_until_idle()
    assert _alerts(engine) == []
    clock.now = datetime(2030, 6, 3, 1, 30, tzinfo=UTC)
    worker.run_until_idle()
    (alert,) = _alerts(engine)
    assert alert.summary == (
        "nightly (Acme, airflow/prod) missed its run scheduled for 2030-06-03 01:00 UTC:"
        " none by 2030-06-03 01:30 UTC"
    )


def test_the_default_tasks_keep_the_ticks_before_evaluating(engine: Engine, db_url: str) -> None:
    names = [task.name for task in default_tasks(context(engine, db_url, Clock(SINCE)))]
    assert names.index("schedules") < names.index("alert evaluation")


def _alerts(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(Alert).order_by(Alert.id)).all())
