"""`chm worker` in process: scheduled ingestion on each source's interval, a
failing source backed off while the others go on, the sources file reloaded,
one worker per SQLite database (issue 13). Time comes from an injected clock."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from ingestion_fakes import (
    FakeServer,
    Reply,
    generic_path,
    generic_run,
    serve_generic,
    source,
    toml_text,
)
from sqlalchemy import Engine

from chm.core.settings import Settings
from chm.ingestion.config import ConfigError
from chm.models import IngestionSource, Pipeline, Run, WorkerProcess
from chm.worker.context import LiveSources, WorkerContext
from chm.worker.loop import Worker
from chm.worker.registry import WorkerRefused
from chm.worker.scheduled import backoff_s
from factories import make_client, make_pipeline

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def write_config(path: Path, *entries: dict[str, Any]) -> Path:
    path.write_text(toml_text(*entries))
    return path


def make_worker(
    engine: Engine,
    db_url: str,
    config: Path | None,
    clock: Clock,
    name: str = "w1",
    **settings: Any,
) -> Worker:
    values: dict[str, Any] = {"database_url": db_url, "config": config, "worker_poll_s": 0.01}
    options = Settings(**(values | settings), _env_file=None)  # type: ignore[call-arg]
    live = LiveSources(config, options.env)
    live.load_initial()
    return Worker(WorkerContext(engine, options, f"test:{os.getpid()}:{name}", clock, live))


def run_count(engine: Engine, pipeline_id: str | None = None) -> int:
    query = sa.select(sa.func.count()).select_from(Run)
    if pipeline_id is not None:
        query = query.where(Run.pipeline_id == int(pipeline_id))
    with engine.connect() as connection:
        return int(connection.scalar(query) or 0)


def test_runs_arrive_without_any_manual_call_and_each_interval_once(
    api, engine, db_url, fake, tmp_path
) -> None:
    client = make_client(api)
    first = make_pipeline(api, client, platform="generic", external_id="a")
    second = make_pipeline(api, client, platform="generic", external_id="b")
    serve_generic(fake, "a", [[generic_run("a1"), generic_run("a2")]])
    serve_generic(fake, "b", [[generic_run("b1")]])
    config = write_config(tmp_path / "s.toml", source(fake, interval_s=300))
    clock = Clock()
    worker = make_worker(engine, db_url, config, clock)

    worker.run_until_idle()
    assert run_count(engine, first["id"]) == 2 and run_count(engine, second["id"]) == 1
    assert len(fake.hits(generic_path("a"))) == 1

    # Within the interval nothing is due; at its end each pipeline once more.
    clock.advance(299)
    worker.run_until_idle()
    assert len(fake.hits(generic_path("a"))) == 1
    clock.advance(1)
    worker.run_until_idle()
    assert len(fake.hits(generic_path("a"))) == 2
    assert len(fake.hits(generic_path("b"))) == 2
    with engine.connect() as connection:
        attempts = connection.execute(
            sa.select(Pipeline.last_ingest_attempt_at, Pipeline.ingest_lease_owner)
        ).all()
    assert {row[0] for row in attempts} == {T0 + timedelta(seconds=300)}
    assert {row[1] for row in attempts} == {None}  # every lease released


def test_interval_zero_is_never_scheduled(api, engine, db_url, fake, tmp_path) -> None:
    make_pipeline(api, make_client(api), platform="generic", external_id="a")
    serve_generic(fake, "a", [[generic_run("a1")]])
    config = write_config(tmp_path / "s.toml", source(fake, interval_s=0))
    clock = Clock()
    worker = make_worker(engine, db_url, config, clock)
    for _ in range(3):
        worker.run_until_idle()
        clock.advance(86_400)
    assert fake.requests == [] and run_count(engine) == 0


def test_a_failing_source_backs_off_and_the_others_go_on(
    api, engine, db_url, fake, tmp_path
) -> None:
    down = FakeServer()
    try:
        client = make_client(api)
        for n in range(3):
            make_pipeline(api, client, platform="generic", environment="dev", external_id=f"d{n}")
        healthy = make_pipeline(api, client, platform="generic", external_id="ok")
        serve_generic(fake, "ok", [[generic_run("ok1")]])
        for n in range(3):
            down.routes[("GET", generic_path(f"d{n}"))] = lambda seen: Reply(503, {"e": "down"})
        config = write_config(
            tmp_path / "s.toml",
            source(fake, interval_s=60),
            source(down, name="down", environment="dev", interval_s=60, max_retries=0),
        )
        clock = Clock()
        worker = make_worker(engine, db_url, config, clock)
        worker.run_until_idle()

        # One request to the failing source, not one per pipeline.
        assert len(down.requests) == 1
        assert run_count(engine, healthy["id"]) == 1
        with engine.connect() as connection:
            state = connection.execute(
                sa.select(IngestionSource).where(IngestionSource.name == "down")
            ).one()
        assert state.consecutive_failures == 1 and "HTTP 503" in state.last_error
        first_wait = backoff_s("down", 1, 60)
        assert 22.5 <= first_wait <= 30

        # The healthy source keeps its interval; the failing one waits its backoff.
        clock.advance(first_wait - 1)
        worker.run_until_idle()
        assert len(down.requests) == 1
        clock.advance(1)
        worker.run_until_idle()
        assert len(down.requests) == 2
        with engine.connect() as connection:
            failures = connection.scalar(
                sa.select(IngestionSource.consecutive_failures).where(
                    IngestionSource.name == "down"
                )
            )
        assert failures == 2
        assert backoff_s("down", 2, 60) > first_wait
        clock.advance(60)
        worker.run_until_idle()
        assert len(fake.hits(generic_path("ok"))) >= 2
    finally:
        down.close()


def test_backoff_doubles_to_a_cap_with_a_fixed_jitter() -> None:
    waits = [backoff_s("s", n, 300) for n in range(1, 12)]
    assert all(0.75 * min(30 * 2 ** (n - 1), 1800) <= w for n, w in enumerate(waits, 1))
    assert max(waits) <= 1800
    assert backoff_s("s", 3, 300) == backoff_s("s", 3, 300)
    assert backoff_s("s", 0, 300) == 0
    assert backoff_s("s", 20, 7200) > 1800  # a long interval is its own cap


def test_the_sources_file_is_reloaded_and_an_invalid_change_refused(
    api, engine, db_url, fake, tmp_path, caplog
) -> None:
    client = make_client(api)
    make_pipeline(api, client, platform="generic", external_id="a")
    make_pipeline(api, client, platform="generic", environment="dev", external_id="b")
    serve_generic(fake, "a", [[generic_run("a1")]])
    serve_generic(fake, "b", [[generic_run("b1")]])
    config = write_config(tmp_path / "s.toml", source(fake, interval_s=60))
    clock = Clock()
    worker = make_worker(engine, db_url, config, clock)
    worker.run_until_idle()
    assert run_count(engine) == 1

    # An invalid change: refused with its reason, the previous file in force.
    config.write_text(toml_text(source(fake, interval_s=-5)))
    os.utime(config, (1, 1))
    clock.advance(60)
    with caplog.at_level(logging.ERROR, logger="chm.worker"):
        worker.run_until_idle()
    assert "refused" in caplog.text and "interval_s" in caplog.text
    assert len(fake.hits(generic_path("a"))) == 2

    # A valid change is taken: the new source's pipeline is ingested.
    write_config(config, source(fake, interval_s=60), source(fake, name="dev", environment="dev"))
    os.utime(config, (2, 2))
    worker.run_until_idle()
    assert run_count(engine) == 2


def test_an_invalid_sources_file_at_start_names_file_source_and_field(tmp_path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        toml_text({"name": "x", "platform": "generic", "environment": "prod",
                   "base_url": "http://127.0.0.1:9", "interval_s": "often"})
    )  # fmt: skip
    with pytest.raises(ConfigError) as raised:
        LiveSources(config, Settings(_env_file=None).env).load_initial()  # type: ignore[call-arg]
    message = str(raised.value)
    assert str(config) in message and "'x'" in message and "interval_s" in message


@pytest.mark.sqlite_only
def test_a_second_worker_on_sqlite_is_refused_with_a_clear_message(engine, db_url) -> None:
    clock = Clock()
    first = make_worker(engine, db_url, None, clock, name="one")
    first.registration.register()
    second = make_worker(engine, db_url, None, clock, name="two")
    with pytest.raises(WorkerRefused, match="SQLite takes one worker"):
        second.registration.register()
    # Once the first stopped cleanly, another may start.
    first.registration.stopped()
    second.registration.register()


@pytest.mark.sqlite_only
def test_a_dead_workers_row_does_not_block_sqlite(engine, db_url) -> None:
    clock = Clock()
    with engine.begin() as connection:
        connection.execute(
            sa.insert(WorkerProcess).values(
                id="gone", hostname=__import__("socket").gethostname(), pid=2**22 + 7,
                started_at=T0, heartbeat_at=T0,
            )
        )  # fmt: skip
    make_worker(engine, db_url, None, clock).registration.register()


@pytest.mark.postgres_only
def test_many_workers_may_register_on_postgresql(engine, db_url) -> None:
    clock = Clock()
    for name in ("a", "b", "c"):
        make_worker(engine, db_url, None, clock, name=name).registration.register()
