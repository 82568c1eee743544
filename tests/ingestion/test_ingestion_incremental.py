"""Incremental ingestion: a per-pipeline watermark, an overlap margin, and --full (issue 7 §2)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from ingestion_fakes import (
    FakeServer,
    Reply,
    SleepRecorder,
    serve_adf,
    serve_databricks,
    source,
    sources,
    toml_text,
)
from platform_fakes import (
    AirflowFake,
    DagsterFake,
    GithubFake,
    airflow_run,
    dagster_run,
    github_run,
)
from sqlalchemy import Engine

from chm.app import create_app
from chm.core.settings import Settings
from chm.ingestion.engine import ingest
from factories import API, make_client, make_pipeline, ok

T1 = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ENV = {"AIRFLOW_PASSWORD": AirflowFake.password, "GITHUB_TOKEN": "ghp_incremental_0001"}


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def airflow_source(fake: FakeServer, **fields: object) -> dict[str, object]:
    return source(fake, "airflow", username="chm", password_env="AIRFLOW_PASSWORD", **fields)


def at(moment: datetime):  # type: ignore[no-untyped-def]
    return lambda: moment


def watermark(engine: Engine, pipeline: dict) -> datetime | None:
    with engine.connect() as connection:
        value = connection.scalar(
            sa.text("SELECT ingest_watermark FROM pipelines WHERE id = :id"),
            {"id": int(pipeline["id"])},
        )
    if isinstance(value, str):  # SQLite through a raw text query
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def updated_at_gte(fake: FakeServer, airflow: AirflowFake) -> list[str | None]:
    return [r.query.get("updated_at_gte") for r in fake.hits(airflow.path)]


def test_the_second_run_asks_only_for_what_changed_since_the_watermark(api, engine, fake) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="airflow", external_id="orders_daily")
    airflow = AirflowFake(fake, "orders_daily", clamp=2)
    airflow.runs = [
        airflow_run(n, "running") | {"_updated": T1 - timedelta(days=3)} for n in (1, 2, 3)
    ]
    feeds = sources(airflow_source(fake))
    first = ingest(engine, feeds, environ=ENV, clock=at(T1))
    assert (first.errors, first.runs_created) == ([], 3)
    assert watermark(engine, pipeline) == T1

    airflow.runs[1] |= {"state": "success", "end_date": "2026-03-03T02:14:00Z",
                        "_updated": T1 + timedelta(minutes=5)}  # fmt: skip
    second = ingest(engine, feeds, environ=ENV, clock=at(T1 + timedelta(hours=1)))
    assert (second.errors, second.pages, second.runs_updated, second.runs_unchanged) == (
        [],
        1,
        1,
        0,
    )
    assert updated_at_gte(fake, airflow) == [None, None, "2026-03-10T11:45:00Z"]
    assert watermark(engine, pipeline) == T1 + timedelta(hours=1)
    runs = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs"))["items"]
    assert sorted(run["status"] for run in runs) == ["running", "running", "success"]


@pytest.mark.parametrize(("overlap_s", "caught"), [(900, True), (0, False)])
def test_the_overlap_catches_an_update_that_became_visible_late(
    api, engine, fake, overlap_s, caught
) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="airflow", external_id="orders_daily")
    airflow = AirflowFake(fake, "orders_daily")
    airflow.runs = [airflow_run(1) | {"_updated": T1 - timedelta(hours=2)}]
    feeds = sources(airflow_source(fake, incremental_overlap_s=overlap_s))
    ingest(engine, feeds, environ=ENV, clock=at(T1))
    # Updated two minutes before the first ingestion, committed by Airflow only after it.
    airflow.runs.append(airflow_run(2, "failed") | {"_updated": T1 - timedelta(minutes=2)})
    report = ingest(engine, feeds, environ=ENV, clock=at(T1 + timedelta(minutes=30)))
    assert report.runs_created == (1 if caught else 0)
    stored = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs"))["items"]
    assert len(stored) == (2 if caught else 1)


def test_a_failure_mid_walk_does_not_move_the_watermark(api, engine, fake) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="airflow", external_id="orders_daily")
    airflow = AirflowFake(fake, "orders_daily", clamp=1)
    airflow.runs = [airflow_run(n) | {"_updated": T1 - timedelta(days=1)} for n in (1, 2, 3)]
    feeds = sources(airflow_source(fake, max_retries=1))
    ingest(engine, feeds, environ=ENV, clock=at(T1))
    assert watermark(engine, pipeline) == T1

    t2, t3 = T1 + timedelta(hours=1), T1 + timedelta(hours=2)
    for run in airflow.runs:
        run |= {"state": "failed", "_updated": t2 - timedelta(minutes=1)}
    fake.script(airflow.path, "1", Reply(503), Reply(503))
    failed = ingest(engine, feeds, environ=ENV, clock=at(t2), sleep=SleepRecorder())
    assert [e.pipeline_id for e in failed.errors] == [pipeline["id"]]
    assert (failed.pages, failed.runs_updated) == (1, 1)  # page 1 is committed...
    assert watermark(engine, pipeline) == T1  # ...but the watermark waits for the last page

    recovered = ingest(engine, feeds, environ=ENV, clock=at(t3))
    assert recovered.errors == [] and recovered.runs_updated == 2
    assert updated_at_gte(fake, airflow)[-3:] == ["2026-03-10T11:45:00Z"] * 3
    assert watermark(engine, pipeline) == t3


def test_full_re_reads_everything_from_the_cli_and_the_api(
    db_url, api, engine, fake, tmp_path, monkeypatch
) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="airflow", external_id="orders_daily")
    airflow = AirflowFake(fake, "orders_daily")
    airflow.runs = [airflow_run(n) | {"_updated": T1 - timedelta(days=30)} for n in (1, 2)]
    config = tmp_path / "sources.toml"
    config.write_text(toml_text(airflow_source(fake)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHM_")}
    env |= {"CHM_DATABASE_URL": db_url, "CHM_CONFIG": str(config), **ENV}

    def chm_ingest(*args: str) -> dict:
        result = subprocess.run([sys.executable, "-m", "chm.cli", "ingest", "--json", *args],
                                env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
        assert result.returncode == 0, result.stderr
        return orjson.loads(result.stdout)

    feeds = sources(airflow_source(fake))
    assert ingest(engine, feeds, environ=ENV).runs_created == 2
    assert ingest(engine, feeds, environ=ENV).runs_unchanged == 0  # nothing changed since
    assert chm_ingest("--full")["runs_unchanged"] == 2
    gte = updated_at_gte(fake, airflow)
    assert gte[0] is None and gte[1] is not None and gte[2] is None

    settings = Settings(database_url=db_url, config=config, _env_file=None)  # type: ignore[call-arg]
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    with TestClient(create_app(settings, engine)) as client:
        full = client.post(f"{API}/ingestions", json={"full": True}).json()
        assert (full["runs_unchanged"], full["errors"]) == (2, [])
        incremental = client.post(f"{API}/ingestions", json={}).json()
        assert (incremental["runs_unchanged"], incremental["errors"]) == (0, [])
    assert updated_at_gte(fake, airflow)[3] is None
    assert watermark(engine, pipeline) is not None


def test_a_filter_on_start_holds_the_watermark_at_the_oldest_active_run(api, engine, fake) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="databricks", external_id="11")
    started = T1 - timedelta(hours=3)
    running = {"run_id": 1, "start_time": int(started.timestamp() * 1000), "end_time": 0,
               "status": {"state": "RUNNING"}}  # fmt: skip
    done = {"run_id": 2, "start_time": int((T1 - timedelta(hours=1)).timestamp() * 1000),
            "end_time": int(T1.timestamp() * 1000),
            "status": {"state": "TERMINATED", "termination_details": {"code": "SUCCESS"}}}  # fmt: skip
    path = serve_databricks(fake, "11", [[running, done]])
    feeds = sources(source(fake, "databricks"))
    ingest(engine, feeds, clock=at(T1))
    assert watermark(engine, pipeline) == started
    ingest(engine, feeds, clock=at(T1 + timedelta(hours=1)))
    first, second = fake.hits(path)
    assert "start_time_from" not in first.query
    assert second.query["start_time_from"] == str(
        int((started - timedelta(minutes=15)).timestamp() * 1000)
    )


def test_adf_dagster_and_github_filter_by_their_own_time_parameters(api, engine, fake) -> None:
    client = make_client(api)
    make_pipeline(api, client, platform="adf", external_id="CopyOrders")
    make_pipeline(api, client, platform="dagster", external_id="orders_job")
    make_pipeline(api, client, platform="github_actions", external_id="acme/etl/nightly.yml")
    adf_path = serve_adf(fake, "CopyOrders", [[]])
    dagster = DagsterFake(fake)
    dagster.runs = [dagster_run(1)]
    gh = GithubFake(fake, "acme/etl", "nightly.yml", ENV["GITHUB_TOKEN"])
    gh.runs = [github_run(1)]
    feeds = sources(source(fake, "adf"), source(fake, "dagster"),
                    source(fake, "github_actions", token_env="GITHUB_TOKEN"))  # fmt: skip
    ingest(engine, feeds, environ=ENV, clock=at(T1))
    ingest(engine, feeds, environ=ENV, clock=at(T1 + timedelta(hours=1)))
    since = T1 - timedelta(minutes=15)
    adf_first, adf_second = fake.hits(adf_path)
    assert adf_first.body["lastUpdatedAfter"] == "2026-03-07T12:00:00Z"  # lookback_hours=72
    assert adf_second.body["lastUpdatedAfter"] == "2026-03-10T11:45:00Z"
    filters = [r.body["variables"]["filter"] for r in dagster.run_requests()]
    assert filters == [{"pipelineName": "orders_job"},
                       {"pipelineName": "orders_job", "updatedAfter": since.timestamp()}]  # fmt: skip
    assert [r.query.get("created") for r in fake.hits(gh.path)] == [None, ">=2026-03-10T11:45:00Z"]
