"""Schedules learned from the platforms by ingestion, against fake platforms over
real sockets answering as each documents: the learned cron and zone (source
``platform``), a user's schedule never touched, a paused one clearing what was
learned, the refresh interval, and a schedule request that fails leaving the
ingestion of runs whole with the failure noted on the pipeline."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from ingestion_fakes import FakeServer, Reply, SleepRecorder, source, sources
from platform_fakes import (
    PREFECT_DEPLOYMENT_ID,
    AirflowFake,
    DagsterFake,
    DatabricksFake,
    DbtCloudFake,
    PrefectFake,
    airflow_dag_details,
    airflow_run,
    dagster_repository,
    dagster_run,
    dagster_schedule,
    databricks_settings,
    dbt_job,
    dbt_run,
    prefect_deployment,
    prefect_run,
    prefect_schedule,
)

from chm.ingestion.engine import ingest
from factories import API, make_client, make_pipeline, ok

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
DBT_TOKEN = "dbtc_S3cr3tServiceToken77"
PREFECT_TOKEN = "pnu_S3cr3tPrefectKey"
DAGSTER_TOKEN = "user:S3cr3tDagsterCloudToken"
DATABRICKS_TOKEN = "dapiS3cr3tDatabricksPat"
ENV = {
    "AIRFLOW_PASSWORD": AirflowFake.password,
    "DBT_TOKEN": DBT_TOKEN,
    "PREFECT_TOKEN": PREFECT_TOKEN,
    "DAGSTER_TOKEN": DAGSTER_TOKEN,
    "DATABRICKS_TOKEN": DATABRICKS_TOKEN,
}


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def at(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def stamp(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def schedule_of(api, pipeline: dict[str, Any]) -> dict[str, Any]:
    body = ok(api.get(f"{API}/pipelines/{pipeline['id']}"))
    keys = ("schedule", "schedule_timezone", "schedule_source", "schedule_note",
            "schedule_checked_at", "schedule_set_at")  # fmt: skip
    return {key: body[key] for key in keys}


def learned(cron: str, zone: str, checked: datetime, set_at: datetime | None = None) -> dict:
    return {"schedule": cron, "schedule_timezone": zone, "schedule_source": "platform",
            "schedule_note": None, "schedule_checked_at": stamp(checked),
            "schedule_set_at": stamp(set_at or checked)}  # fmt: skip


def dbt_source(fake: FakeServer) -> dict[str, Any]:
    return source(fake, "dbt_cloud", account_id=1, token_env="DBT_TOKEN")


def dbt_setup(api, fake: FakeServer, **fields: Any) -> tuple[dict[str, Any], DbtCloudFake]:
    pipeline = make_pipeline(api, make_client(api), platform="dbt_cloud", external_id="77",
                             **fields)  # fmt: skip
    dbt = DbtCloudFake(fake, account_id=1, job_id=77, token=DBT_TOKEN)
    dbt.runs = [dbt_run(1001)]
    return pipeline, dbt


# --- each platform, learned over the wire ----------------------------------------------------


@pytest.mark.parametrize("version", ["1", "2"])
def test_airflow_dag_schedule_is_learned_with_the_dags_zone(api, engine, fake, version) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="airflow", external_id="orders_daily")
    airflow = AirflowFake(fake, "orders_daily", version=version)
    airflow.runs = [airflow_run(1, version=version)]
    airflow.details = airflow_dag_details(version, "30 5 * * 1-5", "Europe/Berlin")
    entry = source(fake, "airflow", api_version=version, username="chm",
                   password_env="AIRFLOW_PASSWORD")  # fmt: skip
    report = ingest(engine, sources(entry), environ=ENV, clock=at(T0))

    assert (report.errors, report.runs_created) == ([], 1)
    assert schedule_of(api, pipeline) == learned("30 5 * * 1-5", "Europe/Berlin", T0)
    (details,) = fake.hits(airflow.details_path)
    # The same authentication as the pages: basic on v1, the walk's JWT on v2.
    assert details.headers["authorization"] == fake.hits(airflow.path)[0].headers["authorization"]


def test_databricks_job_quartz_schedule_is_learned_as_five_fields(api, engine, fake) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="databricks", external_id="42")
    databricks = DatabricksFake(fake, "42")
    databricks.settings = databricks_settings("0 15 6 ? * 2-6", "America/New_York")
    report = ingest(engine, sources(source(fake, "databricks", token_env="DATABRICKS_TOKEN")),
                    environ=ENV, clock=at(T0))  # fmt: skip

    assert report.errors == []
    assert schedule_of(api, pipeline) == learned("15 6 * * 1-5", "America/New_York", T0)
    (request,) = fake.hits(databricks.job_path)
    assert request.query == {"job_id": "42"}
    assert request.headers["authorization"] == f"Bearer {DATABRICKS_TOKEN}"


def test_databricks_quartz_on_seconds_is_noted_not_learned(api, engine, fake) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="databricks", external_id="42")
    databricks = DatabricksFake(fake, "42")
    databricks.settings = databricks_settings("0/30 * * * * ?", "UTC")
    ingest(engine, sources(source(fake, "databricks", token_env="DATABRICKS_TOKEN")),
           environ=ENV, clock=at(T0))  # fmt: skip
    state = schedule_of(api, pipeline)
    assert (state["schedule"], state["schedule_source"]) == (None, None)
    assert state["schedule_note"] == (
        "Databricks Quartz cron '0/30 * * * * ?' fires on seconds ('0/30'); "
        "a five-field cron cannot express it"
    )
    assert state["schedule_checked_at"] == stamp(T0)


def test_dbt_cloud_job_cron_is_learned_in_utc(api, engine, fake) -> None:
    pipeline, dbt = dbt_setup(api, fake)
    dbt.job = dbt_job(cron="0 */6 * * 1-5")
    report = ingest(engine, sources(dbt_source(fake)), environ=ENV, clock=at(T0))
    assert (report.errors, report.runs_created) == ([], 1)
    assert schedule_of(api, pipeline) == learned("0 */6 * * 1-5", "UTC", T0)
    assert [r.headers["authorization"] for r in fake.hits(dbt.job_path)] == [f"Token {DBT_TOKEN}"]


def test_prefect_deployment_cron_is_learned_in_its_zone(api, engine, fake) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="prefect",
                             external_id=PREFECT_DEPLOYMENT_ID)  # fmt: skip
    prefect = PrefectFake(fake, PREFECT_TOKEN)
    prefect.runs = [prefect_run(1)]
    chicago = prefect_schedule(cron="15 7 * * *", timezone="America/Chicago")
    stopped = prefect_schedule(active=False, cron="0 1 * * *", timezone="UTC")
    path = prefect.deploy(prefect_deployment([chicago, stopped]))
    entry = source(fake, "prefect", base_url=f"{fake.url}/api", token_env="PREFECT_TOKEN")
    report = ingest(engine, sources(entry), environ=ENV, clock=at(T0))

    assert (report.errors, report.runs_created) == ([], 1)
    assert schedule_of(api, pipeline) == learned("15 7 * * *", "America/Chicago", T0)
    assert [r.headers["authorization"] for r in fake.hits(path)] == [f"Bearer {PREFECT_TOKEN}"]


def test_dagster_jobs_running_schedule_is_learned(api, engine, fake) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="dagster", external_id="orders_job")
    dagster = DagsterFake(fake, DAGSTER_TOKEN)
    dagster.runs = [dagster_run(1)]
    dagster.repositories = [
        dagster_repository(dagster_schedule("billing", job="billing_job", cron="0 1 * * *")),
        dagster_repository(dagster_schedule(cron="0 6 * * *", timezone="Europe/Berlin"),
                           dagster_schedule("sundays", cron="0 2 * * 0", status="STOPPED"),
                           name="orders_repo"),
    ]  # fmt: skip
    report = ingest(engine, sources(source(fake, "dagster", token_env="DAGSTER_TOKEN")),
                    environ=ENV, clock=at(T0))  # fmt: skip

    assert (report.errors, report.runs_created) == ([], 1)
    assert schedule_of(api, pipeline) == learned("0 6 * * *", "Europe/Berlin", T0)
    (asked,) = dagster.schedule_requests()
    assert asked.headers["dagster-cloud-api-token"] == DAGSTER_TOKEN


# --- whose schedule, and when it is read ------------------------------------------------------


def test_a_users_schedule_is_never_overwritten_nor_asked_for(api, engine, fake) -> None:
    pipeline, dbt = dbt_setup(api, fake, schedule="0 1 * * *", schedule_timezone="Europe/Berlin")
    pinned_none, _ = dbt_setup(api, fake, schedule=None, schedule_source="user")
    dbt.job = dbt_job(cron="0 6 * * *")
    before = schedule_of(api, pipeline)
    assert before["schedule_source"] == "user"
    report = ingest(engine, sources(dbt_source(fake)), environ=ENV, clock=at(T0),
                    schedule_refresh_s=0)  # fmt: skip

    assert report.errors == []
    assert schedule_of(api, pipeline) == before
    assert schedule_of(api, pinned_none)["schedule"] is None
    assert schedule_of(api, pinned_none)["schedule_source"] == "user"
    assert fake.hits(dbt.job_path) == []


def test_a_paused_schedule_clears_the_one_learned(api, engine, fake) -> None:
    pipeline, dbt = dbt_setup(api, fake)
    dbt.job = dbt_job(cron="0 6 * * *")
    feed = sources(dbt_source(fake))
    ingest(engine, feed, environ=ENV, clock=at(T0))
    assert schedule_of(api, pipeline)["schedule"] == "0 6 * * *"

    dbt.job = dbt_job(cron="0 6 * * *", on_schedule=False)
    later = T0 + timedelta(hours=2)
    ingest(engine, feed, environ=ENV, clock=at(later))
    assert schedule_of(api, pipeline) == {
        "schedule": None, "schedule_timezone": "UTC", "schedule_source": None,
        "schedule_note": "the job does not run on a schedule in dbt Cloud (triggers.schedule is off)",
        "schedule_checked_at": stamp(later), "schedule_set_at": stamp(later),
    }  # fmt: skip

    dbt.job = dbt_job(cron="0 7 * * *")
    again = later + timedelta(hours=2)
    ingest(engine, feed, environ=ENV, clock=at(again))
    assert schedule_of(api, pipeline) == learned("0 7 * * *", "UTC", again)


def test_the_schedule_is_read_again_only_after_the_refresh_interval(api, engine, fake) -> None:
    pipeline, dbt = dbt_setup(api, fake)
    dbt.job = dbt_job(cron="0 6 * * *")
    feed = sources(dbt_source(fake))
    for minutes in (0, 30, 59):
        ingest(engine, feed, environ=ENV, clock=at(T0 + timedelta(minutes=minutes)),
               schedule_refresh_s=3600)  # fmt: skip
    assert len(fake.hits(dbt.job_path)) == 1
    assert len(fake.hits(dbt.path)) == 3, "the runs are read at every ingestion"
    dbt.job = dbt_job(cron="0 8 * * *")
    hour = T0 + timedelta(minutes=60)
    ingest(engine, feed, environ=ENV, clock=at(hour), schedule_refresh_s=3600)
    assert len(fake.hits(dbt.job_path)) == 2
    assert schedule_of(api, pipeline) == learned("0 8 * * *", "UTC", hour)


def test_a_refresh_of_zero_reads_the_schedule_at_every_ingestion(api, engine, fake) -> None:
    pipeline, dbt = dbt_setup(api, fake)
    dbt.job = dbt_job(cron="0 6 * * *")
    feed = sources(dbt_source(fake))
    for _ in range(3):
        ingest(engine, feed, environ=ENV, clock=at(T0), schedule_refresh_s=0)
    assert len(fake.hits(dbt.job_path)) == 3
    assert schedule_of(api, pipeline) == learned("0 6 * * *", "UTC", T0)


def test_an_unchanged_schedule_keeps_when_it_was_set(api, engine, fake) -> None:
    pipeline, dbt = dbt_setup(api, fake)
    dbt.job = dbt_job(cron="0 6 * * *")
    feed = sources(dbt_source(fake))
    ingest(engine, feed, environ=ENV, clock=at(T0))
    later = T0 + timedelta(days=1)
    ingest(engine, feed, environ=ENV, clock=at(later))
    assert schedule_of(api, pipeline) == learned("0 6 * * *", "UTC", later, set_at=T0)


# --- a schedule request that fails -----------------------------------------------------------


@pytest.mark.parametrize(
    ("replies", "note"),
    [
        ([Reply(404, {"status": {"code": 404, "is_success": False,
                                 "user_message": "The requested resource was not found."}})],
         "could not read the platform's schedule: HTTP 404: {\"status\": {\"code\": 404, "
         "\"is_success\": false, \"user_message\": \"The requested resource was not found.\"}}"),
        ([Reply(500, {"detail": "upstream timeout"})] * 4,
         "could not read the platform's schedule: gave up after 4 attempts: HTTP 500"),
        ([Reply(200, {"status": {"code": 200}, "data": None})],
         "could not read the platform's schedule: the answer is not the expected shape: "
         "the answer has no data object (the job)"),
    ],
)  # fmt: skip
def test_a_failing_schedule_request_leaves_the_ingestion_succeeded(
    api, engine, fake, replies, note
) -> None:
    pipeline, dbt = dbt_setup(api, fake)
    dbt.job = dbt_job(cron="0 6 * * *")
    feed = sources(dbt_source(fake))
    ingest(engine, feed, environ=ENV, clock=at(T0))
    dbt.runs.append(dbt_run(1002))
    fake.script(dbt.job_path, None, *replies)
    later = T0 + timedelta(hours=2)
    report = ingest(engine, feed, environ=ENV, clock=at(later), sleep=SleepRecorder())

    assert (report.errors, report.runs_created) == ([], 1)
    body = ok(api.get(f"{API}/pipelines/{pipeline['id']}"))
    assert (body["last_ingestion_error"], body["last_ingested_at"]) == (None, stamp(later))
    state = schedule_of(api, pipeline)
    # What was learned stays; the failure is noted, and the read counts as done.
    assert (state["schedule"], state["schedule_source"]) == ("0 6 * * *", "platform")
    assert (state["schedule_note"], state["schedule_checked_at"]) == (note, stamp(later))


def test_a_failing_schedule_request_shows_no_secret(api, engine, fake) -> None:
    pipeline, dbt = dbt_setup(api, fake)
    fake.script(dbt.job_path, None, Reply(403, {"detail": f"token {DBT_TOKEN} lacks jobs:read"}))
    report = ingest(engine, sources(dbt_source(fake)), environ=ENV, clock=at(T0))
    assert report.errors == []
    note = schedule_of(api, pipeline)["schedule_note"]
    assert note is not None and note.startswith("could not read the platform's schedule: HTTP 403")
    assert DBT_TOKEN not in note


def test_a_source_that_is_down_is_not_asked_for_the_schedule(api, engine, fake) -> None:
    pipeline, dbt = dbt_setup(api, fake)
    dbt.job = dbt_job(cron="0 6 * * *")
    fake.script(dbt.path, "0", *[Reply(503, {"detail": "maintenance"})] * 4)
    report = ingest(engine, sources(dbt_source(fake)), environ=ENV, clock=at(T0),
                    sleep=SleepRecorder())  # fmt: skip
    assert [e.pipeline_id for e in report.errors] == [pipeline["id"]]
    assert fake.hits(dbt.job_path) == []
    assert schedule_of(api, pipeline)["schedule_checked_at"] is None


def test_a_platform_that_cannot_say_records_no_schedule_read(api, engine, fake) -> None:
    from ingestion_fakes import generic_run, serve_generic

    pipeline = make_pipeline(api, make_client(api), platform="generic", external_id="orders")
    serve_generic(fake, "orders", [[generic_run("r1")]])
    report = ingest(engine, sources(source(fake, "generic")), clock=at(T0), schedule_refresh_s=0)
    assert (report.errors, report.runs_created) == ([], 1)
    state = schedule_of(api, pipeline)
    assert (state["schedule"], state["schedule_note"], state["schedule_checked_at"]) == (
        None, None, None,
    )  # fmt: skip
    assert [r.path for r in fake.requests] == ["/pipelines/orders/runs"]
