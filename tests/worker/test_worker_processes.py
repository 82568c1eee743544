"""`chm worker` as real processes (issue 13): several workers sharing one
PostgreSQL database, a worker killed outright and another taking its work
over, a bounded stop on SIGTERM, one worker per SQLite database, a bad
sources file refused at start.

The fakes run over real sockets; the workers poll every ``POLL_S``. Waits are
on facts (a row written, a request seen, a process gone) under a deadline,
never a fixed sleep, except where a test shows that nothing more happens.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from ingestion_fakes import (
    FakeServer,
    Reply,
    Seen,
    generic_path,
    generic_run,
    serve_generic,
    source,
    toml_text,
)
from sqlalchemy import Engine
from worker_processes import CHM_WORKER, POLL_S, Clock, base_env, wait_until

from chm.app import create_app
from chm.core.settings import Settings
from chm.core.timeutil import utcnow
from chm.models import Pipeline, Run, WorkerProcess
from chm.worker.context import LiveSources, WorkerContext
from chm.worker.loop import Worker
from factories import API, make_client, make_pipeline, ok


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def chm_env(db_url: str, config: Path, **extra: str) -> dict[str, str]:
    return base_env(db_url, config, **extra)


def write_config(tmp_path: Path, *entries: dict[str, Any]) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(toml_text(*entries))
    return path


def counts(engine: Engine) -> tuple[int, int]:
    """(runs, distinct (pipeline, external run id))."""
    with engine.connect() as connection:
        total = connection.scalar(sa.select(sa.func.count()).select_from(Run))
        distinct = connection.scalar(
            sa.select(sa.func.count()).select_from(
                sa.select(Run.pipeline_id, Run.external_run_id).distinct().subquery()
            )
        )
    return int(total or 0), int(distinct or 0)


def pipeline_row(engine: Engine, pipeline_id: str | int) -> Any:
    with engine.connect() as connection:
        return connection.execute(sa.select(Pipeline).where(Pipeline.id == int(pipeline_id))).one()


def worker_rows(engine: Engine) -> dict[str, Any]:
    with engine.connect() as connection:
        return {row.id: row for row in connection.execute(sa.select(WorkerProcess))}


def attempted(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.scalar(
                sa.select(sa.func.count())
                .select_from(Pipeline)
                .where(Pipeline.last_ingest_attempt_at.is_not(None))
            )
            or 0
        )


def paged_runs(prefix: str, pages: int, per_page: int) -> list[list[dict[str, Any]]]:
    return [
        [generic_run(f"{prefix}-{page:03d}-{i:03d}") for i in range(per_page)]
        for page in range(pages)
    ]


def in_process_worker(engine: Engine, db_url: str, config: Path, clock: Clock, name: str) -> Worker:
    options = Settings(  # type: ignore[call-arg]
        database_url=db_url, config=config, worker_poll_s=POLL_S, _env_file=None
    )
    live = LiveSources(config, options.env)
    live.load_initial()
    return Worker(WorkerContext(engine, options, f"test:{os.getpid()}:{name}", clock, live))


# -- several workers on PostgreSQL ---------------------------------------------


@pytest.mark.postgres_only
@pytest.mark.parametrize("workers", [2, 4])
def test_workers_share_200_pipelines_each_ingested_once_per_due_period(
    api, engine, db_url, fake, tmp_path, spawn, workers
) -> None:
    client = make_client(api)
    pipelines = {}
    for n in range(200):
        external_id = f"p{n:03d}"
        created = make_pipeline(api, client, platform="generic", external_id=external_id)
        pipelines[int(created["id"])] = external_id
        serve_generic(fake, external_id, [[generic_run(f"{external_id}-a"),
                                           generic_run(f"{external_id}-b")]])  # fmt: skip
    fake.page_delay = 0.01
    # No page is answered before every worker has one request in flight (each
    # walks its batch on one connection): all of them provably take part.
    fake.gate_clients = workers
    # One due period: nothing becomes due again within the test.
    # A request held at the gate (up to 30 s, while slower workers start on a
    # loaded machine) must not time out and be retried: a retry is a second
    # request for the same pipeline by the same worker, not a second ingestion.
    config = write_config(tmp_path, source(fake, interval_s=3600, timeout_s=45))
    # Small batches: many claims, so the workers meet often at the claim.
    env = chm_env(db_url, config, CHM_WORKER_BATCH="5")
    running = [spawn(env, name=f"w{i}") for i in range(workers)]

    wait_until(lambda: attempted(engine) == 200, "every pipeline was attempted", *running)
    # The pipelines are not due again: let every worker look a few more times.
    time.sleep(10 * POLL_S)
    for worker in running:
        assert worker.stop() == 0, worker.stderr()[-3000:]

    # Exactly one request per pipeline, and no run stored twice.
    assert len(fake.requests) == 200
    assert sorted(seen.path for seen in fake.requests) == sorted(
        generic_path(external_id) for external_id in pipelines.values()
    )
    assert counts(engine) == (400, 400)
    with engine.connect() as connection:
        per_pipeline = dict(
            connection.execute(
                sa.select(Run.pipeline_id, sa.func.count()).group_by(Run.pipeline_id)
            ).all()
        )
        leases = connection.execute(
            sa.select(Pipeline.ingest_lease_owner, Pipeline.last_ingestion_error)
        ).all()
    assert per_pipeline == {pipeline_id: 2 for pipeline_id in pipelines}
    assert set(leases) == {(None, None)}

    # Each pipeline was ingested by one worker, and every worker did some.
    done = [worker.ingested() for worker in running]
    assert all(done), [len(ids) for ids in done]
    assert sorted(pipeline_id for ids in done for pipeline_id in ids) == sorted(pipelines)
    rows = worker_rows(engine)
    assert sorted(rows) == sorted(worker.worker_id() or "" for worker in running)
    assert all(row.stopped_at is not None for row in rows.values())


# -- a worker killed outright --------------------------------------------------


def test_a_killed_workers_pipeline_is_taken_over_after_its_lease_and_completed(
    api, engine, db_url, fake, tmp_path, spawn
) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="generic", external_id="big")
    serve_generic(fake, "big", paged_runs("r", pages=10, per_page=20))
    fake.page_delay = 0.2
    config = write_config(tmp_path, source(fake, interval_s=3600))
    killed = spawn(chm_env(db_url, config))
    wait_until(lambda: counts(engine)[0] >= 60, "three pages were committed", killed)
    killed.process.send_signal(signal.SIGKILL)
    assert killed.process.wait(timeout=10) == -signal.SIGKILL

    kept, distinct = counts(engine)
    assert kept == distinct and 60 <= kept < 200
    assert kept % 20 == 0, "a page is committed whole or not at all"
    # The dead worker still holds the pipeline, whose attempt was never recorded.
    held = pipeline_row(engine, pipeline["id"])
    assert held.ingest_lease_owner.startswith(f"{socket.gethostname()[:150]}:{killed.process.pid}:")
    assert held.last_ingest_attempt_at is None
    requests_before = len(fake.requests)

    # Another worker may start (on SQLite: the registry sees the process is gone).
    clock = Clock(utcnow())
    taker = in_process_worker(engine, db_url, config, clock, "taker")
    taker.registration.register()
    if engine.dialect.name == "sqlite":
        assert worker_rows(engine)[held.ingest_lease_owner].stopped_at is not None

    # While the lease runs, the pipeline stays the dead worker's.
    fake.page_delay = 0
    clock.now = held.ingest_lease_expires_at - timedelta(seconds=1)
    taker.run_until_idle()
    assert len(fake.requests) == requests_before
    assert pipeline_row(engine, pipeline["id"]).ingest_lease_owner == held.ingest_lease_owner

    # Once it expired, the other worker takes the pipeline over and completes it.
    clock.now = held.ingest_lease_expires_at + timedelta(seconds=1)
    taker.run_until_idle()
    assert counts(engine) == (200, 200)
    done = pipeline_row(engine, pipeline["id"])
    assert done.ingest_lease_owner is None and done.ingest_lease_expires_at is None
    assert done.last_ingest_attempt_at == clock.now
    assert done.last_ingested_at == clock.now and done.last_ingestion_error is None
    assert len(fake.requests) == requests_before + 10


# -- a bounded stop ------------------------------------------------------------


def test_sigterm_mid_walk_stops_after_the_page_in_flight_and_gives_back_its_lease(
    api, engine, db_url, fake, tmp_path, spawn
) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="generic", external_id="slow")
    serve_generic(fake, "slow", paged_runs("s", pages=5, per_page=20))
    fake.page_delay = 2.0
    config = write_config(tmp_path, source(fake, interval_s=3600, timeout_s=10))
    running = spawn(chm_env(db_url, config, CHM_SHUTDOWN_TIMEOUT_S="10"))
    # The first page is committed and the second asked for.
    wait_until(lambda: len(fake.requests) == 2, "the second page was asked for", running,
               timeout=30)  # fmt: skip
    assert counts(engine)[0] == 20

    asked = time.monotonic()
    running.process.send_signal(signal.SIGTERM)
    code = running.process.wait(timeout=20)
    took = time.monotonic() - asked
    log = running.stderr()
    assert code == 0, log[-3000:]
    assert took < 10 + 2, took
    assert "did not stop in time" not in log
    # The page in flight was stored whole and no later page asked for.
    assert len(fake.requests) == 2
    assert counts(engine) == (40, 40)
    row = pipeline_row(engine, pipeline["id"])
    assert row.ingest_lease_owner is None and row.ingest_lease_expires_at is None
    # The walk did not end: no outcome recorded, the pipeline is still due.
    assert row.last_ingest_attempt_at is None and row.last_ingested_at is None
    (worker,) = worker_rows(engine).values()
    assert worker.id == running.worker_id() and worker.stopped_at is not None


def test_a_worker_stuck_in_a_request_longer_than_the_shutdown_timeout_leaves_anyway(
    api, engine, db_url, fake, tmp_path, spawn
) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="generic", external_id="stuck")
    serve_generic(fake, "stuck", paged_runs("t", pages=1, per_page=20))
    fake.page_delay = 5.0
    config = write_config(tmp_path, source(fake, interval_s=3600, timeout_s=10))
    running = spawn(chm_env(db_url, config, CHM_SHUTDOWN_TIMEOUT_S="1"))
    wait_until(lambda: len(fake.requests) == 1, "the page was asked for", running, timeout=30)

    asked = time.monotonic()
    running.process.send_signal(signal.SIGTERM)
    code = running.process.wait(timeout=20)
    took = time.monotonic() - asked
    log = running.stderr()
    assert code == 0, log[-3000:]
    assert 1 <= took < 4, took  # the answer would have come after 5 s
    assert "did not stop in time" in log
    assert counts(engine) == (0, 0)
    row = pipeline_row(engine, pipeline["id"])
    assert row.ingest_lease_owner is None and row.last_ingest_attempt_at is None
    (worker,) = worker_rows(engine).values()
    assert worker.stopped_at is not None


# -- one worker per SQLite database --------------------------------------------


@pytest.mark.sqlite_only
def test_a_second_worker_on_sqlite_exits_1_and_the_first_keeps_working(
    api, engine, db_url, fake, tmp_path, spawn
) -> None:
    client = make_client(api)
    make_pipeline(api, client, platform="generic", external_id="a")
    serve_generic(fake, "a", [[generic_run("a1")]])
    serve_generic(fake, "b", [[generic_run("b1")]])
    config = write_config(tmp_path, source(fake, interval_s=3600))
    env = chm_env(db_url, config)
    first = spawn(env, name="first")
    wait_until(lambda: counts(engine)[0] == 1, "the first worker ingested", first)

    second = subprocess.run(CHM_WORKER, env=env, capture_output=True, timeout=60)
    assert second.returncode == 1
    message = second.stderr.decode()
    assert message.startswith("chm: another worker is running on this SQLite database")
    assert "SQLite takes one worker" in message and f"pid {first.process.pid}" in message
    assert "Traceback" not in message

    # The first goes on: a pipeline added now is ingested by it.
    added = make_pipeline(api, client, platform="generic", external_id="b")
    wait_until(lambda: counts(engine)[0] == 2, "the first worker ingested the new one", first)
    assert int(added["id"]) in first.ingested()
    assert first.stop() == 0
    assert len(worker_rows(engine)) == 1


# -- ingestion jobs ------------------------------------------------------------


def test_an_async_ingestion_job_is_run_by_a_worker_process(
    api, engine, db_url, fake, tmp_path, spawn
) -> None:
    client = make_client(api)
    pipeline = make_pipeline(api, client, platform="generic", external_id="a")
    make_pipeline(api, client, platform="generic", external_id="other")
    path = serve_generic(fake, "a", paged_runs("j", pages=2, per_page=10))
    # No scheduled ingestion: whatever the worker ingests, the job asked for.
    config = write_config(tmp_path, source(fake, interval_s=0))
    settings = Settings(database_url=db_url, config=config, _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as http:
        answer = http.post(
            f"{API}/ingestions",
            json={"pipeline_id": pipeline["id"]},
            headers={"Prefer": "respond-async"},
        )
        queued = ok(answer, 202)
        location = answer.headers["location"]
        assert location == f"{API}/ingestions/{queued['id']}"
        assert queued["status"] == "queued"

        # What the job says while the worker asks for its pages.
        during: list[str] = []
        serve_page = fake.routes[("GET", path)]

        def observed(seen: Seen) -> Reply:
            during.append(ok(http.get(location))["status"])
            return serve_page(seen)

        fake.routes[("GET", path)] = observed
        running = spawn(chm_env(db_url, config))
        finished = ("succeeded", "partial", "failed")
        wait_until(lambda: ok(http.get(location))["status"] in finished, "the job ended", running)
        job = ok(http.get(location))
    assert running.stop() == 0, running.stderr()[-3000:]

    assert during == ["running", "running"]
    assert job["status"] == "succeeded" and job["error"] is None, job
    assert job["attempts"] == 1
    assert job["started_at"] is not None and job["finished_at"] >= job["started_at"]
    report = job["report"]
    assert (report["pipelines"], report["pages"], report["runs_created"]) == (1, 2, 20)
    assert report["errors"] == []
    assert counts(engine) == (20, 20)
    assert [seen.path for seen in fake.requests] == [path, path]
    assert pipeline_row(engine, pipeline["id"]).ingest_lease_owner is None


# -- bad configuration ---------------------------------------------------------


def test_an_invalid_sources_file_exits_2_naming_the_file_the_source_and_the_field(
    tmp_path,
) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        toml_text({"name": "orders-feed", "platform": "generic", "environment": "prod",
                   "base_url": "http://127.0.0.1:9", "interval_s": "often"})
    )  # fmt: skip
    env = chm_env(f"sqlite:///{tmp_path / 'never.db'}", config)
    result = subprocess.run(CHM_WORKER, env=env, capture_output=True, timeout=60)
    assert result.returncode == 2
    message = result.stderr.decode()
    assert message.startswith("chm: ") and "Traceback" not in message
    assert str(config) in message and "orders-feed" in message and "interval_s" in message
    assert not (tmp_path / "never.db").exists()
