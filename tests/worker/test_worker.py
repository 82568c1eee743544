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
from sqlalchemy.orm import Session

from chm.core.settings import Settings
from chm.ingestion.config import ConfigError
from chm.models import IngestionSource, Pipeline, Run, WorkerProcess
from chm.worker.context import LiveSources, WorkerContext
from chm.worker.leases import claim_pipeline, release
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


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_the_sources_file_is_reloaded_and_an_invalid_change_refused(
    api, engine, db_url, fake, tmp_path
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
    # A handler on the worker's own logger: another test's server thread may
    # replace the root logger's handlers (chm.cli.runtime.configure_logging).
    seen = Records()
    log = logging.getLogger("chm.worker")
    log.addHandler(seen)
    try:
        worker.run_until_idle()
    finally:
        log.removeHandler(seen)
    # The reason is kept (and logged once; a logger another test disabled
    # would hide the line, not the refusal).
    refused = worker.ctx.sources._refused
    assert refused is not None and "interval_s" in refused
    assert not seen.messages or any("refused" in m for m in seen.messages)
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
def test_a_second_worker_on_sqlite_is_refused_with_a_clear_message(
    engine, db_url, monkeypatch
) -> None:
    clock = Clock()
    first = make_worker(engine, db_url, None, clock, name="one")
    # The first worker is another live process of this machine (the test's
    # parent stands in for it): its own pid would count as a predecessor's.
    monkeypatch.setattr("chm.worker.registry.os.getpid", os.getppid)
    first.registration.register()
    monkeypatch.undo()
    second = make_worker(engine, db_url, None, clock, name="two")
    with pytest.raises(WorkerRefused, match="SQLite takes one worker"):
        second.registration.register()
    # Once the first stopped cleanly, another may start.
    first.registration.stopped()
    second.registration.register()


@pytest.mark.sqlite_only
def test_a_restart_that_got_its_predecessors_pid_is_not_refused(engine, db_url) -> None:
    """pid 1 in a container: the killed worker's row has this process's pid."""
    clock = Clock()
    make_worker(engine, db_url, None, clock, name="killed").registration.register()
    make_worker(engine, db_url, None, clock, name="restarted").registration.register()
    with engine.connect() as connection:
        rows = connection.execute(sa.select(WorkerProcess.id, WorkerProcess.stopped_at)).all()
    assert {row.id.rsplit(":", 1)[1]: row.stopped_at for row in rows} == {
        "killed": T0,
        "restarted": None,
    }


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


def job_api(engine: Engine, db_url: str, config: Path) -> Any:
    from fastapi.testclient import TestClient

    from chm.app import create_app

    options = Settings(database_url=db_url, config=config, _env_file=None)  # type: ignore[call-arg]
    return TestClient(create_app(options, engine), raise_server_exceptions=False)


ASYNC = {"Prefer": "respond-async"}


def test_an_async_job_walks_queued_running_succeeded_with_its_report(
    api, engine, db_url, fake, tmp_path
) -> None:
    client = make_client(api)
    pipeline = make_pipeline(api, client, platform="generic", external_id="a")
    serve_generic(fake, "a", [[generic_run("a1")], [generic_run("a2")]])
    config = write_config(tmp_path / "s.toml", source(fake, interval_s=0))
    http = job_api(engine, db_url, config)
    answer = http.post("/api/v1/ingestions", json={"pipeline_id": pipeline["id"]}, headers=ASYNC)
    assert answer.status_code == 202, answer.text
    location = answer.headers["location"]
    assert http.get(location).json()["status"] == "queued"

    seen: list[str] = []

    def page_hook(seen_request: Any) -> Reply | None:
        seen.append(http.get(location).json()["status"])
        return None

    fake.routes[("GET", generic_path("a"))] = (
        lambda request, inner=fake.routes[("GET", generic_path("a"))]: (
            page_hook(request) or inner(request)
        )
    )
    worker = make_worker(engine, db_url, config, Clock())
    worker.run_until_idle()
    assert seen and set(seen) == {"running"}
    job = http.get(location).json()
    assert job["status"] == "succeeded" and job["error"] is None
    assert job["report"]["runs_created"] == 2 and job["report"]["pages"] == 2
    assert job["started_at"] is not None and job["finished_at"] is not None
    assert job["attempts"] == 1
    with engine.connect() as connection:
        assert connection.scalar(sa.select(Pipeline.ingest_lease_owner)) is None


def test_async_jobs_end_partial_and_failed(api, engine, db_url, fake, tmp_path) -> None:
    client = make_client(api)
    make_pipeline(api, client, platform="generic", external_id="good")
    bad = make_pipeline(api, client, platform="generic", external_id="bad")
    serve_generic(fake, "good", [[generic_run("g1")]])
    fake.routes[("GET", generic_path("bad"))] = lambda seen: Reply(404, {"error": "no such job"})
    config = write_config(tmp_path / "s.toml", source(fake, interval_s=0))
    http = job_api(engine, db_url, config)
    everything = http.post("/api/v1/ingestions", json={}, headers=ASYNC).headers["location"]
    only_bad = http.post(
        "/api/v1/ingestions", json={"pipeline_id": bad["id"]}, headers=ASYNC
    ).headers["location"]
    make_worker(engine, db_url, config, Clock()).run_until_idle()
    partial = http.get(everything).json()
    assert partial["status"] == "partial"
    assert [e["pipeline_id"] for e in partial["report"]["errors"]] == [bad["id"]]
    failed = http.get(only_bad).json()
    assert failed["status"] == "failed" and "HTTP 404" in failed["report"]["errors"][0]["message"]
    listed = http.get("/api/v1/ingestions").json()["items"]
    assert [job["status"] for job in listed] == ["failed", "partial"]


def test_a_job_that_cannot_start_fails_with_one_line(api, engine, db_url, fake, tmp_path) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="generic", external_id="a")
    config = write_config(tmp_path / "s.toml", source(fake, interval_s=0))
    http = job_api(engine, db_url, config)
    location = http.post(
        "/api/v1/ingestions", json={"pipeline_id": pipeline["id"]}, headers=ASYNC
    ).headers["location"]
    # The sources file disappears before a worker takes the job.
    worker = make_worker(engine, db_url, None, Clock())
    worker.run_until_idle()
    job = http.get(location).json()
    assert job["status"] == "failed" and job["report"] is None
    assert "CHM_CONFIG" in job["error"] and "\n" not in job["error"]


def test_a_job_waits_for_a_pipeline_another_worker_holds(
    api, engine, db_url, fake, tmp_path
) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="generic", external_id="a")
    serve_generic(fake, "a", [[generic_run("a1")]])
    config = write_config(tmp_path / "s.toml", source(fake, interval_s=0))
    http = job_api(engine, db_url, config)
    location = http.post(
        "/api/v1/ingestions", json={"pipeline_id": pipeline["id"]}, headers=ASYNC
    ).headers["location"]
    with engine.begin() as connection, Session(bind=connection) as session:
        assert claim_pipeline(session, "other", int(pipeline["id"]), T0, 60)
        session.flush()
    worker = make_worker(engine, db_url, config, Clock())
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the other worker finishes while this one waits
        waits.append(seconds)
        with engine.begin() as connection, Session(bind=connection) as session:
            release(session, "other")
            session.flush()

    worker.ctx.sleep = sleep  # type: ignore[method-assign]
    worker.run_until_idle()
    assert waits and fake.requests
    assert http.get(location).json()["status"] == "succeeded"


def test_the_worker_prunes_old_runs_and_finished_jobs_with_retention_days(
    api, engine, db_url, tmp_path
) -> None:
    from chm.ingestion.jobs import create_job, finish_job
    from chm.ingestion.report import IngestionReport
    from chm.models import IngestionJob
    from factories import make_run

    pipeline = make_pipeline(api, make_client(api))
    for day in (40, 35, 20, 1):
        started = (T0 - timedelta(days=day)).isoformat()
        make_run(api, pipeline, "success", started_at=started, finished_at=started)
    with engine.begin() as connection, Session(bind=connection) as session:
        old = create_job(session, {"client_id": None, "pipeline_id": None, "full": False}, T0)
        session.flush()
        old.status, old.lease_owner = "running", "w"
        old.lease_expires_at = T0 + timedelta(days=1)
        session.flush()
        finish_job(session, old.id, "w", T0 - timedelta(days=31), IngestionReport(), None)
        create_job(session, {"client_id": None, "pipeline_id": None, "full": False},
                   T0 - timedelta(days=60))  # fmt: skip
        session.flush()
    worker = make_worker(engine, db_url, None, Clock(), retention_days=30)
    worker.run_until_idle()
    with engine.connect() as connection:
        kept = connection.scalars(sa.select(Run.started_at).order_by(Run.started_at)).all()
        jobs = connection.scalars(sa.select(IngestionJob.status)).all()
    # The latest run before the cutoff stays too (docs/retention.md): reports
    # asked about any time in the kept range see what they saw before.
    assert kept == [T0 - timedelta(days=d) for d in (35, 20, 1)]
    # The old finished job is gone; the old queued one was run just now (and
    # failed: no sources file), so it finished within the kept range.
    assert jobs == ["failed"]
    # Once a prune ran, the next waits CHM_RETENTION_EVERY_S.
    make_run(api, pipeline, "success", started_at=(T0 - timedelta(days=50)).isoformat())
    worker.run_until_idle()
    assert run_count(engine) == 4


def test_only_the_leases_in_hand_are_renewed_a_left_one_expires(
    api, engine, db_url, fake, tmp_path
) -> None:
    """A lease whose release failed (a database blip) is not renewed forever:
    it expires and the pipeline is ingested again, by any worker."""
    pipeline = make_pipeline(api, make_client(api), platform="generic", external_id="a")
    serve_generic(fake, "a", [[generic_run("a1")]])
    config = write_config(tmp_path / "s.toml", source(fake, interval_s=60))
    clock = Clock()
    worker = make_worker(engine, db_url, config, clock)
    with engine.begin() as connection, Session(bind=connection) as session:
        assert claim_pipeline(session, worker.ctx.worker_id, int(pipeline["id"]), T0, 60)
        session.flush()
    worker.ctx.hold([999_999])  # something else in hand: the heartbeat renews that only
    for _ in range(5):
        clock.advance(20)
        worker.beat()
    with engine.connect() as connection:
        expires = connection.scalar(sa.select(Pipeline.ingest_lease_expires_at))
    assert expires == T0 + timedelta(seconds=60)
    worker.ctx.drop([999_999])
    worker.run_until_idle()  # 100 s later: the left lease has expired
    assert run_count(engine) == 1


def test_an_error_text_the_database_refuses_does_not_stop_the_batch(
    api, engine, db_url, fake, tmp_path
) -> None:
    client = make_client(api)
    ids = [
        make_pipeline(api, client, platform="generic", external_id=f"p{n}")["id"] for n in range(4)
    ]
    for n in (0, 2, 3):
        serve_generic(fake, f"p{n}", [[generic_run(f"r{n}")]])
    fake.routes[("GET", generic_path("p1"))] = lambda seen: Reply(404, {"e": "job not\x00found"})
    config = write_config(tmp_path / "s.toml", source(fake, interval_s=60))
    worker = make_worker(engine, db_url, config, Clock())
    worker.run_until_idle()
    assert run_count(engine) == 3
    with engine.connect() as connection:
        errors = dict(
            connection.execute(sa.select(Pipeline.id, Pipeline.last_ingestion_error)).all()
        )
    assert "\x00" not in errors[int(ids[1])] and "HTTP 404" in errors[int(ids[1])]
    worker.run_until_idle()  # not retried ahead of its interval
    assert len(fake.hits(generic_path("p1"))) == 1


def test_a_failing_task_waits_while_the_others_go_on(engine, db_url) -> None:
    calls = {"bad": 0, "good": 0}

    class Bad:
        name = "bad"

        def step(self) -> bool:
            calls["bad"] += 1
            raise RuntimeError("boom")

    class Good:
        name = "good"

        def step(self) -> bool:
            calls["good"] += 1
            return False

    worker = make_worker(engine, db_url, None, Clock(), worker_poll_s=10)
    worker.tasks = [Bad(), Good()]
    for _ in range(3):
        worker.run_once()
    assert calls == {"bad": 1, "good": 3}


def test_scheduled_ingestion_retries_a_failing_request_once(
    api, engine, db_url, fake, tmp_path
) -> None:
    make_pipeline(api, make_client(api), platform="generic", external_id="a")
    fake.routes[("GET", generic_path("a"))] = lambda seen: Reply(503, {"e": "down"})
    config = write_config(tmp_path / "s.toml", source(fake, interval_s=60, max_retries=5))
    make_worker(engine, db_url, config, Clock()).run_until_idle()
    assert len(fake.requests) == 2  # the next interval is its retry
