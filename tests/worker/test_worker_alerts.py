"""The worker's alert tasks end to end, in process (issue 14): a failed run
stored by scheduled ingestion fires an alert that reaches a real webhook
receiver once, its resolution once; evaluation follows any write within a
poll; grouping; replays, restarts and two workers send nothing twice."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from channel_fakes import WebhookReceiver
from ingestion_fakes import FakeServer, generic_run, serve_generic, source, toml_text
from sqlalchemy import Engine

from chm.core.settings import Settings
from chm.models import Alert, AlertDelivery
from chm.worker.alerts import LiveDestinations
from chm.worker.context import LiveSources, WorkerContext
from chm.worker.loop import Worker
from factories import make_client, make_pipeline, make_rule, make_run

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
SECRET = "webhook-signing-secret-5f2e"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret=SECRET) as server:
        yield server


def config(tmp_path: Path, *sources: dict[str, Any]) -> Path:
    path = tmp_path / "chm.toml"
    text = toml_text(*sources) + (
        '\n[[destinations]]\nname = "ops"\nkind = "webhook"\n'
        'url_env = "OPS_HOOK_URL"\nsecret_env = "OPS_HOOK_SECRET"\n'
    )
    path.write_text(text)
    return path


def worker_on(
    engine: Engine,
    db_url: str,
    path: Path,
    clock: Clock,
    receiver: WebhookReceiver,
    name: str = "w1",
    **settings: Any,
) -> Worker:
    values: dict[str, Any] = {
        "database_url": db_url,
        "config": path,
        "worker_poll_s": 0.01,
        "alert_group_wait_s": 0,
    }
    options = Settings(**(values | settings), _env_file=None)  # type: ignore[call-arg]
    live = LiveSources(path, options.env)
    live.load_initial()
    environ = {"OPS_HOOK_URL": receiver.endpoint, "OPS_HOOK_SECRET": SECRET}
    ctx = WorkerContext(engine, options, f"test:{os.getpid()}:{name}", clock, live, environ=environ)
    destinations = LiveDestinations(path)
    destinations.load_initial()
    return Worker(ctx, destinations=destinations)


def statuses(engine: Engine) -> list[tuple[str, str]]:
    with engine.connect() as connection:
        rows = connection.execute(
            sa.select(AlertDelivery.event, AlertDelivery.status).order_by(AlertDelivery.id)
        ).all()
    return [(row.event, row.status) for row in rows]


def test_a_failed_run_reaches_the_webhook_once_and_its_resolution_once(
    api, engine, db_url, fake, receiver, tmp_path
) -> None:
    client = make_client(api, "Acme")
    pipeline = make_pipeline(api, client, name="orders_daily", platform="generic",
                             external_id="orders")  # fmt: skip
    make_rule(api, pipeline_id=pipeline["id"], rule_type="on_failure", destination="webhook:ops")
    serve_generic(fake, "orders", [[generic_run("r1", "failed", error="disk full")]])
    path = config(tmp_path, source(fake, interval_s=60))
    clock = Clock()
    worker = worker_on(engine, db_url, path, clock, receiver)

    worker.run_until_idle()
    assert receiver.problems == []
    assert len(receiver.delivered) == 1
    (body,) = receiver.delivered.values()
    assert body["status"] == "firing"
    (alert,) = body["alerts"]
    assert alert["labels"]["pipeline"] == "orders_daily" and alert["labels"]["client"] == "Acme"
    assert alert["annotations"]["pipeline_id"] == pipeline["id"]

    # Replays, a restarted worker and a second worker send nothing more.
    for _ in range(3):
        worker.run_until_idle()
    worker_on(engine, db_url, path, clock, receiver, name="w2").run_until_idle()
    assert len(receiver.requests) == 1

    # The next run succeeds: one resolved message, then nothing.
    clock.advance(60)
    serve_generic(fake, "orders", [[generic_run("r1", "failed"),
                                    generic_run("r2", started_at="2026-03-01T11:00:00Z",
                                                finished_at="2026-03-01T11:05:00Z")]])  # fmt: skip
    worker.run_until_idle()
    worker.run_until_idle()
    assert [b["status"] for b in receiver.delivered.values()] == ["firing", "resolved"]
    assert receiver.duplicates == 0
    assert statuses(engine) == [("firing", "sent"), ("resolved", "sent")]


def test_evaluation_follows_a_write_within_a_poll(api, engine, db_url, receiver, tmp_path) -> None:
    pipeline = make_pipeline(api, make_client(api))
    make_rule(api, pipeline_id=pipeline["id"], rule_type="on_failure", destination="webhook:ops")
    clock = Clock()
    worker = worker_on(engine, db_url, config(tmp_path), clock, receiver, evaluate_every_s=3600)
    worker.run_until_idle()
    assert receiver.requests == []
    # A run recorded through the API, no time passing: evaluated at the next pass.
    make_run(api, pipeline, "failed", started_at="2026-05-31T10:00:00Z")
    worker.run_until_idle()
    assert len(receiver.delivered) == 1


def test_twenty_pipelines_failing_together_are_one_message(
    api, engine, db_url, receiver, tmp_path
) -> None:
    client = make_client(api, "Acme")
    make_rule(api, client_id=client["id"], rule_type="on_failure", destination="webhook:ops")
    for n in range(20):
        pipeline = make_pipeline(api, client, name=f"p{n:02d}")
        make_run(api, pipeline, "failed", started_at="2026-05-31T10:00:00Z")
    clock = Clock()
    worker = worker_on(engine, db_url, config(tmp_path), clock, receiver, alert_group_wait_s=30)
    worker.run_until_idle()
    assert receiver.requests == []  # within the group wait
    clock.advance(30)
    worker.run_until_idle()
    assert len(receiver.requests) == 1
    (body,) = receiver.delivered.values()
    assert len(body["alerts"]) == 20
    with engine.connect() as connection:
        assert connection.scalar(sa.select(sa.func.count()).select_from(Alert)) == 20
