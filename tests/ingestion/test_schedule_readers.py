"""Each platform's schedule reader on the answers its API documents: what is
learned (a five-field cron and an IANA zone) and what means no expectation,
with the note that says why. Pure: no server, no database (the engine's side
is tests/ingestion/test_platform_schedules.py)."""

from __future__ import annotations

from typing import Any

import pytest
from platform_fakes import (
    airflow_dag_details,
    dagster_repository,
    dagster_schedule,
    databricks_settings,
    dbt_job,
    prefect_deployment,
    prefect_schedule,
)

from chm.ingestion.connectors import (
    BadExternalId,
    Fetched,
    PageShapeError,
    PlatformSchedule,
    SourceRejected,
    schedule_reader_for,
)
from chm.ingestion.connectors.airflow import AirflowSchedules, AirflowSource
from chm.ingestion.connectors.dagster import DagsterSchedules, DagsterSource
from chm.ingestion.connectors.databricks import DatabricksSchedules, DatabricksSource
from chm.ingestion.connectors.dbt_cloud import DbtCloudSchedules, DbtCloudSource
from chm.ingestion.connectors.generic import GenericSource
from chm.ingestion.connectors.prefect import PrefectSchedules, PrefectSource

PREFECT_ID = "5d0b4f2e-7a6c-4e3b-9d1f-2a8c6e4b0f11"


def airflow(body: dict[str, Any], version: str = "2") -> PlatformSchedule:
    entry = AirflowSource(name="af", platform="airflow", environment="prod",
                          base_url="https://airflow.acme.example", api_version=version)  # fmt: skip
    return AirflowSchedules(entry, "orders_daily").read_schedule(Fetched(body))


def databricks(settings: dict[str, Any]) -> PlatformSchedule:
    entry = DatabricksSource(name="dbx", platform="databricks", environment="prod",
                             base_url="https://adb-1.azuredatabricks.net")  # fmt: skip
    body = {"job_id": 42, "created_time": 1767603600000, "settings": settings}
    return DatabricksSchedules(entry, "42").read_schedule(Fetched(body))


def dbt(job: dict[str, Any]) -> PlatformSchedule:
    entry = DbtCloudSource(name="dbt", platform="dbt_cloud", environment="prod",
                           base_url="https://cloud.getdbt.com", account_id=1)  # fmt: skip
    body = {"status": {"code": 200, "is_success": True}, "data": job}
    return DbtCloudSchedules(entry, "77").read_schedule(Fetched(body))


def prefect(deployment: dict[str, Any]) -> PlatformSchedule:
    entry = PrefectSource(name="pf", platform="prefect", environment="prod",
                          base_url="http://prefect:4200/api")  # fmt: skip
    return PrefectSchedules(entry, PREFECT_ID).read_schedule(Fetched(deployment))


def dagster(
    *repositories: dict[str, Any], answer: dict[str, Any] | None = None
) -> PlatformSchedule:
    entry = DagsterSource(name="dg", platform="dagster", environment="prod",
                          base_url="https://acme.dagster.cloud/prod")  # fmt: skip
    connection = {"__typename": "RepositoryConnection", "nodes": list(repositories)}
    body = {"data": {"repositoriesOrError": answer or connection}}
    return DagsterSchedules(entry, "orders_job").read_schedule(Fetched(body))


def learned(cron: str, zone: str = "UTC") -> PlatformSchedule:
    return PlatformSchedule(cron, zone, None)


# --- the requests ----------------------------------------------------------------------------


def test_each_platform_asks_its_documented_endpoint() -> None:
    af = AirflowSource(name="af", platform="airflow", environment="prod",
                       base_url="https://af.example/", api_version="1")  # fmt: skip
    dbx = DatabricksSource(name="dbx", platform="databricks", environment="prod",
                           base_url="https://adb-1.azuredatabricks.net", api_version="2.1")  # fmt: skip
    dbt_entry = DbtCloudSource(name="dbt", platform="dbt_cloud", environment="prod",
                               base_url="https://cloud.getdbt.com", account_id=9)  # fmt: skip
    pf = PrefectSource(name="pf", platform="prefect", environment="prod",
                       base_url="http://prefect:4200/api")  # fmt: skip
    dg = DagsterSource(name="dg", platform="dagster", environment="prod",
                       base_url="https://acme.dagster.cloud/prod")  # fmt: skip
    requests = {
        name: reader.schedule_request()
        for name, reader in {
            "airflow": schedule_reader_for(af, "orders/daily"),
            "databricks": schedule_reader_for(dbx, "42"),
            "dbt_cloud": schedule_reader_for(dbt_entry, "77"),
            "prefect": schedule_reader_for(pf, PREFECT_ID.upper()),
            "dagster": schedule_reader_for(dg, "orders_job"),
        }.items()
        if reader is not None
    }
    assert {name: (r.method, r.url, r.params) for name, r in requests.items()} == {
        "airflow": ("GET", "https://af.example/api/v1/dags/orders%2Fdaily/details", {}),
        "databricks": ("GET", "https://adb-1.azuredatabricks.net/api/2.1/jobs/get",
                       {"job_id": "42"}),
        "dbt_cloud": ("GET", "https://cloud.getdbt.com/api/v2/accounts/9/jobs/77/", {}),
        "prefect": ("GET", f"http://prefect:4200/api/deployments/{PREFECT_ID}", {}),
        "dagster": ("POST", "https://acme.dagster.cloud/prod/graphql", {}),
    }  # fmt: skip
    assert requests["dagster"].json is not None
    assert "repositoriesOrError" in requests["dagster"].json["query"]


def test_a_platform_that_cannot_say_has_no_reader_and_bad_ids_are_refused() -> None:
    generic = GenericSource(name="g", platform="generic", environment="prod",
                            base_url="https://feed.example")  # fmt: skip
    assert schedule_reader_for(generic, "orders") is None
    dbt_entry = DbtCloudSource(name="dbt", platform="dbt_cloud", environment="prod",
                               base_url="https://cloud.getdbt.com", account_id=9)  # fmt: skip
    with pytest.raises(BadExternalId):
        schedule_reader_for(dbt_entry, "daily-build")
    pf = PrefectSource(name="pf", platform="prefect", environment="prod",
                       base_url="http://prefect:4200/api")  # fmt: skip
    with pytest.raises(BadExternalId):
        schedule_reader_for(pf, "orders-daily")


# --- Airflow ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "schedule", "timezone", "expected"),
    [
        ("2", "0 6 * * 1-5", "Europe/Berlin", learned("0 6 * * 1-5", "Europe/Berlin")),
        ("1", "0 6 * * 1-5", "Europe/Berlin", learned("0 6 * * 1-5", "Europe/Berlin")),
        ("1", "@daily", "America/New_York", learned("0 0 * * *", "America/New_York")),
        ("1", "@hourly", "UTC", learned("0 * * * *")),
        ("2", "30  2 * * *", "UTC", learned("30 2 * * *")),
    ],
)  # fmt: skip
def test_airflow_crons_and_presets_are_learned_in_the_dags_zone(
    version, schedule, timezone, expected
) -> None:
    assert airflow(airflow_dag_details(version, schedule, timezone), version) == expected


def test_airflow_2s_pendulum_zone_and_a_plain_one_are_both_read() -> None:
    pendulum = airflow_dag_details("1", "0 6 * * *", "Asia/Tokyo")
    assert pendulum["timezone"] == "Timezone('Asia/Tokyo')"
    assert airflow(pendulum, "1") == learned("0 6 * * *", "Asia/Tokyo")
    plain = pendulum | {"timezone": "Asia/Tokyo"}  # Airflow 2 with pendulum 3
    assert airflow(plain, "1") == learned("0 6 * * *", "Asia/Tokyo")


DAY = {"__type": "TimeDelta", "days": 1, "seconds": 0, "microseconds": 0}
MONTH = {"__type": "RelativeDelta", "years": 0, "months": 1, "days": 0, "leapdays": 0, "hours": 0,
         "minutes": 0, "seconds": 0, "microseconds": 0, "year": None, "month": None, "day": None,
         "hour": None, "minute": None, "second": None, "microsecond": None}  # fmt: skip


@pytest.mark.parametrize(
    ("version", "fields", "note"),
    [
        ("2", {"is_paused": True}, "the DAG is paused in Airflow"),
        ("1", {"is_paused": True}, "the DAG is paused in Airflow"),
        ("1", {"is_active": False},
         "the Airflow scheduler no longer sees the DAG (inactive or stale)"),
        ("2", {"is_stale": True},
         "the Airflow scheduler no longer sees the DAG (inactive or stale)"),
        ("2", {"timetable_summary": None},
         "the DAG has no schedule in Airflow (schedule=None): it runs only when triggered"),
        ("1", {"schedule_interval": None},
         "the DAG has no schedule in Airflow (schedule=None): it runs only when triggered"),
        ("2", {"timetable_summary": "@once"}, "the DAG runs once only (@once)"),
        ("1", {"schedule_interval": {"__type": "CronExpression", "value": "@once"}},
         "the DAG runs once only (@once)"),
        ("2", {"timetable_summary": "@continuous"},
         "the DAG runs continuously, one run after another (@continuous)"),
        ("2", {"timetable_summary": "Asset"}, "the DAG is triggered by assets, not by time"),
        ("1", {"schedule_interval": {"__type": "CronExpression", "value": "Dataset"}},
         "the DAG is triggered by datasets, not by time"),
        ("2", {"timetable_summary": "1 day, 0:00:00"},
         "the DAG runs at an interval (1 day, 0:00:00), not at times a cron names"),
        ("2", {"timetable_summary": "relativedelta(months=+1)"},
         "the DAG runs at an interval (relativedelta(months=+1)), not at times a cron names"),
        ("1", {"schedule_interval": DAY},
         "the DAG runs at an interval (every 1 day), not at times a cron names"),
        ("1", {"schedule_interval": MONTH},
         "the DAG runs at an interval (every 1 month), not at times a cron names"),
    ],
)  # fmt: skip
def test_airflow_schedules_that_expect_nothing_say_why(version, fields, note) -> None:
    assert airflow(airflow_dag_details(version) | fields, version) == PlatformSchedule(
        None, "UTC", note
    )


def test_airflow_a_custom_timetable_or_a_six_field_cron_is_not_taken() -> None:
    custom = airflow(airflow_dag_details("2", "Every weekday after the markets close"))
    assert custom.cron is None and custom.note is not None
    assert custom.note.startswith(
        "the DAG's schedule 'Every weekday after the markets close' is not a five-field cron"
    )
    seconds = airflow(airflow_dag_details("2", "*/10 * * * * *"))
    assert seconds.cron is None and "has 6" in (seconds.note or "")


def test_airflow_a_zone_that_is_not_iana_expects_nothing() -> None:
    fixed = airflow(airflow_dag_details("1", "0 6 * * *", "+01:00"), "1")
    assert fixed == PlatformSchedule(
        None, "UTC", "the DAG's schedule '0 6 * * *' is read in '+01:00', which is not an IANA "
        "time zone",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("version", "body"),
    [("1", {"schedule_interval": "0 6 * * *"}), ("1", {"schedule_interval": {"__type": "Cron"}}),
     ("2", {"timetable_summary": 6}), ("2", {"timezone": 1}), ("2", [])],
)  # fmt: skip
def test_airflow_an_answer_not_of_the_documented_shape_is_an_error(version, body) -> None:
    with pytest.raises(PageShapeError):
        airflow(airflow_dag_details(version) | body if isinstance(body, dict) else body, version)


# --- Databricks: Quartz to five fields --------------------------------------------------------


@pytest.mark.parametrize(
    ("quartz", "cron"),
    [
        ("0 0 6 * * ?", "0 6 * * *"),  # seconds 0 dropped, "?" is "any"
        ("0 30 6 ? * *", "30 6 * * *"),
        ("0 0 12 1 * ?", "0 12 1 * *"),
        ("0 0 6 ? * 1", "0 6 * * 0"),  # Quartz counts Sunday as 1, cron as 0
        ("0 0 6 ? * 7", "0 6 * * 6"),  # Saturday
        ("0 0 6 ? * 2-6", "0 6 * * 1-5"),  # Monday to Friday
        ("0 0 6 ? * 1,7", "0 6 * * 0,6"),
        ("0 30 6 ? * MON-FRI", "30 6 * * MON-FRI"),
        ("0 0/15 * * * ?", "0/15 * * * *"),
        ("0 0 6 * * ? *", "0 6 * * *"),  # a year field of "*" names no year
    ],
)  # fmt: skip
def test_databricks_quartz_becomes_five_fields(quartz, cron) -> None:
    assert databricks(databricks_settings(quartz, "Europe/Berlin")) == learned(
        cron, "Europe/Berlin"
    )


@pytest.mark.parametrize(
    ("quartz", "note"),
    [
        ("0/30 * * * * ?", "Databricks Quartz cron '0/30 * * * * ?' fires on seconds ('0/30'); "
                           "a five-field cron cannot express it"),
        ("30 0 6 * * ?", "Databricks Quartz cron '30 0 6 * * ?' fires on seconds ('30'); "
                         "a five-field cron cannot express it"),
        ("0 0 6 * * ? 2027", "Databricks Quartz cron '0 0 6 * * ? 2027' names years ('2027'); "
                             "a five-field cron cannot express it"),
        ("0 6 * * *", "Databricks Quartz cron '0 6 * * *' has 5 fields; Quartz has six or seven"),
    ],
)  # fmt: skip
def test_databricks_quartz_that_five_fields_cannot_express_says_why(quartz, note) -> None:
    assert databricks(databricks_settings(quartz)) == PlatformSchedule(None, "UTC", note)


def test_databricks_quartz_with_a_day_form_cron_lacks_says_why() -> None:
    weekday = databricks(databricks_settings("0 0 6 15W * ?"))
    assert weekday.cron is None
    assert (weekday.note or "").startswith(
        "Databricks Quartz cron '0 0 6 15W * ?' has no five-field form: "
    )


@pytest.mark.parametrize(
    ("settings", "note"),
    [
        (databricks_settings(pause_status="PAUSED"), "the job's schedule is paused in Databricks"),
        (databricks_settings(None, continuous={"pause_status": "UNPAUSED"}),
         "the job runs continuously in Databricks (no cron schedule)"),
        (databricks_settings(None, trigger={"pause_status": "UNPAUSED", "file_arrival": {
            "url": "abfss://landing@acme.dfs.core.windows.net/orders/"}}),
         "the job runs on a trigger in Databricks (file arrival), not on a cron schedule"),
        (databricks_settings(None, trigger={"periodic": {"interval": 4, "unit": "HOURS"}}),
         "the job runs on a trigger in Databricks (periodic), not on a cron schedule"),
        (databricks_settings(None),
         "the job has no schedule in Databricks: it runs only when started"),
        (databricks_settings(timezone="PST"),
         "the job's schedule is read in 'PST', which is not an IANA time zone"),
    ],
)  # fmt: skip
def test_databricks_jobs_without_a_usable_schedule_say_why(settings, note) -> None:
    assert databricks(settings) == PlatformSchedule(None, "UTC", note)


def test_databricks_an_unpaused_schedule_without_pause_status_is_taken() -> None:
    settings = databricks_settings("0 0 2 * * ?", "UTC")
    del settings["schedule"]["pause_status"]
    assert databricks(settings) == learned("0 2 * * *")


# --- dbt Cloud -------------------------------------------------------------------------------


def test_dbt_cloud_crons_are_utc() -> None:
    assert dbt(dbt_job(cron="0 */6 * * 1-5")) == learned("0 */6 * * 1-5", "UTC")


@pytest.mark.parametrize(
    ("job", "note"),
    [
        (dbt_job(on_schedule=False),
         "the job does not run on a schedule in dbt Cloud (triggers.schedule is off)"),
        (dbt_job(state=2), "the job is not active in dbt Cloud (deleted)"),
    ],
)  # fmt: skip
def test_dbt_cloud_jobs_not_on_a_schedule_say_why(job, note) -> None:
    assert dbt(job) == PlatformSchedule(None, "UTC", note)


def test_dbt_cloud_a_cron_five_fields_cannot_read_says_why() -> None:
    odd = dbt(dbt_job(cron="0 6 * * * 2027"))
    assert odd.cron is None and (odd.note or "").startswith(
        "the job's cron '0 6 * * * 2027' is not a five-field cron"
    )
    with pytest.raises(PageShapeError):
        dbt(dbt_job(schedule=None))


# --- Prefect ---------------------------------------------------------------------------------


def test_prefect_an_active_cron_is_learned_in_its_zone_and_none_is_utc() -> None:
    chicago = prefect_schedule(cron="15 7 * * *", timezone="America/Chicago")
    assert prefect(prefect_deployment([chicago])) == learned("15 7 * * *", "America/Chicago")
    no_zone = prefect_schedule(cron="15 7 * * *")
    assert prefect(prefect_deployment([no_zone])) == learned("15 7 * * *", "UTC")


def test_prefect_inactive_schedules_are_ignored_and_agreeing_ones_are_one() -> None:
    daily = prefect_schedule(cron="0 5 * * *", timezone="Europe/Paris")
    off = prefect_schedule(active=False, cron="0 9 * * *", timezone="UTC")
    assert prefect(prefect_deployment([daily, off, daily])) == learned("0 5 * * *", "Europe/Paris")


def test_prefect_before_multiple_schedules_one_schedule_and_its_switch() -> None:
    old = prefect_deployment([])
    del old["schedules"], old["paused"]
    cron = {"cron": "0 4 * * *", "timezone": "UTC", "day_or": True}
    assert prefect(old | {"schedule": cron, "is_schedule_active": True}) == learned("0 4 * * *")
    stopped = prefect(old | {"schedule": cron, "is_schedule_active": False})
    assert stopped == PlatformSchedule(
        None, "UTC", "every schedule of the deployment is inactive in Prefect"
    )


@pytest.mark.parametrize(
    ("deployment", "note"),
    [
        (prefect_deployment([prefect_schedule(cron="0 5 * * *")], paused=True),
         "the deployment is paused in Prefect"),
        (prefect_deployment([]),
         "the deployment has no schedule in Prefect: it runs only when triggered"),
        (prefect_deployment([prefect_schedule(active=False, cron="0 5 * * *")]),
         "every schedule of the deployment is inactive in Prefect"),
        (prefect_deployment([prefect_schedule(interval=3600.0,
                                              anchor_date="2026-01-01T00:00:00Z",
                                              timezone="UTC")]),
         "the deployment runs every 3600 seconds (an interval schedule), "
         "not at times a cron names"),
        (prefect_deployment([prefect_schedule(rrule="FREQ=WEEKLY;BYDAY=MO,WE", timezone="UTC")]),
         "the deployment runs on an RRule ('FREQ=WEEKLY;BYDAY=MO,WE'), which a five-field cron "
         "cannot express"),
        (prefect_deployment([prefect_schedule(cron="0 5 1 * MON", day_or=False)]),
         "the deployment's cron '0 5 1 * MON' runs when both the day of month and the day of "
         "week match (day_or false); a five-field cron means either"),
        (prefect_deployment([prefect_schedule(cron="0 5 * * *", timezone="Europe/Berlin"),
                             prefect_schedule(cron="0 17 * * *", timezone="Europe/Berlin")]),
         "the deployment has 2 active schedules that differ ('0 17 * * *' Europe/Berlin, "
         "'0 5 * * *' Europe/Berlin); one five-field cron cannot express them"),
        (prefect_deployment([prefect_schedule(cron="0 5 * * *"),
                             prefect_schedule(interval=600.0, timezone="UTC")]),
         "the deployment has 2 active schedules and one of them cannot be used (the deployment "
         "runs every 600 seconds (an interval schedule), not at times a cron names)"),
    ],
)  # fmt: skip
def test_prefect_deployments_without_one_usable_cron_say_why(deployment, note) -> None:
    assert prefect(deployment) == PlatformSchedule(None, "UTC", note)


def test_prefect_day_or_false_with_one_day_field_is_still_a_cron() -> None:
    weekdays = prefect_schedule(cron="0 5 * * 1-5", day_or=False)
    assert prefect(prefect_deployment([weekdays])) == learned("0 5 * * 1-5")


# --- Dagster ---------------------------------------------------------------------------------


def test_dagster_the_jobs_running_schedule_is_learned_across_repositories() -> None:
    other = dagster_repository(dagster_schedule("other", job="billing_job", cron="0 1 * * *"))
    ours = dagster_repository(
        dagster_schedule(cron="0 6 * * *", timezone="Europe/Berlin"),
        dagster_schedule("weekly_stopped", cron="0 2 * * 0", status="STOPPED"),
        name="orders_repo",
    )
    assert dagster(other, ours) == learned("0 6 * * *", "Europe/Berlin")
    assert dagster(dagster_repository(dagster_schedule())) == learned("0 6 * * *", "UTC")


@pytest.mark.parametrize(
    ("repositories", "note"),
    [
        ([dagster_repository(dagster_schedule(job="billing_job"))],
         "the job has no schedule in Dagster: it runs only when launched (or by a sensor)"),
        ([], "the job has no schedule in Dagster: it runs only when launched (or by a sensor)"),
        ([dagster_repository(dagster_schedule(status="STOPPED"))],
         "every schedule of the job is stopped in Dagster"),
        ([dagster_repository(dagster_schedule("morning", cron="0 6 * * *"),
                             dagster_schedule("evening", cron="0 18 * * *"))],
         "the job has 2 active schedules that differ ('0 18 * * *' UTC, '0 6 * * *' UTC); "
         "one five-field cron cannot express them"),
        ([dagster_repository(dagster_schedule(cron="['0 9 * * *', '0 17 * * *']"))],
         "schedule 'orders_daily_schedule' has 2 crons that differ ('0 17 * * *' UTC, "
         "'0 9 * * *' UTC); one five-field cron cannot express them"),
    ],
)  # fmt: skip
def test_dagster_jobs_without_one_running_cron_say_why(repositories, note) -> None:
    assert dagster(*repositories) == PlatformSchedule(None, "UTC", note)


def test_dagster_a_list_of_one_cron_is_that_cron() -> None:
    listed = dagster_repository(dagster_schedule(cron="['0 9 * * *']", timezone="Asia/Tokyo"))
    assert dagster(listed) == learned("0 9 * * *", "Asia/Tokyo")


def test_dagster_errors_answered_with_http_200_are_the_sources() -> None:
    with pytest.raises(SourceRejected, match="repositoriesOrError answered PythonError: boom"):
        dagster(answer={"__typename": "PythonError", "message": "boom"})
    entry = DagsterSource(name="dg", platform="dagster", environment="prod",
                          base_url="https://acme.dagster.cloud/prod")  # fmt: skip
    reader = DagsterSchedules(entry, "orders_job")
    errors = {"data": None, "errors": [{"message": 'Cannot query field "repositoriesOrError"'}]}
    with pytest.raises(SourceRejected, match="GraphQL errors: Cannot query field"):
        reader.read_schedule(Fetched(errors))
    with pytest.raises(PageShapeError):
        reader.read_schedule(Fetched({"data": {}}))
