"""One Airflow source that both pulls DAG runs and receives the OpenLineage
provider's events (issue 12 §1, §3): one row per DAG run whichever comes
first, and the failed task's error on the DAG run.

The events are the ones a real Airflow 3.3.2 with
apache-airflow-providers-openlineage 2.20.3 sent (tests/ingestion/data/
openlineage/airflow/README.md tells how they were recorded)."""

from __future__ import annotations

import json
import re
import tomllib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from ingestion_fakes import FakeServer, source, sources, toml_text
from openlineage.client import OpenLineageClient
from platform_fakes import AirflowFake

from chm.app import create_app
from chm.core.redaction import Redactor
from chm.core.settings import Settings
from chm.ingestion.engine import ingest
from chm.ingestion.lineage.mapping import RunEvent, external_run_id, parent_failure
from factories import API, make_client, make_pipeline, ok
from live import serve_in_thread

DATA = Path(__file__).parent / "data" / "openlineage" / "airflow"
NAMESPACE = "chm-airflow-demo"  # AIRFLOW__OPENLINEAGE__NAMESPACE of the recording
KEY = "demo-lineage-key"  # the api_key of the recording's HTTP transport
ENVIRON = {"AIRFLOW_PASSWORD": AirflowFake.password, "AIRFLOW_OL_KEY": KEY}
TASK_ERROR = "task extract failed: ValueError: source file orders.csv has 3 bad rows"


def recorded() -> list[dict[str, Any]]:
    """The provider's events, in the order the capture server received them."""
    return [json.loads(path.read_bytes()) for path in sorted(DATA.glob("*.json"))]


def of_dag(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event for event in events if event["job"]["name"] == "chm_demo"]


def pulled_runs(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What Airflow's REST API shows of the recorded DAG runs: the DAG-run facet of
    each run's terminal event is Airflow's own DagRun (same ids, same times)."""
    runs = []
    for number, event in enumerate(e for e in of_dag(events) if e["eventType"] != "START"):
        dag_run = event["run"]["facets"]["airflowDagRun"]["dagRun"]
        runs.append({
            "dag_run_id": dag_run["run_id"], "dag_id": "chm_demo", "state":
            event["run"]["facets"]["airflowState"]["dagRunState"], "run_type": "manual",
            "logical_date": None, "queued_at": dag_run["run_after"],
            "run_after": dag_run["run_after"], "start_date": dag_run["start_date"],
            "end_date": dag_run["end_date"], "duration": dag_run["duration"],
            "last_scheduling_decision": dag_run["end_date"], "conf": dag_run["conf"],
            "triggered_by": "cli", "_id": number + 1,
            "_updated": datetime.fromisoformat(dag_run["end_date"]),
        })  # fmt: skip
    return runs


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


@pytest.fixture
def airflow(db_url, engine, tmp_path, monkeypatch, fake) -> Iterator[dict[str, Any]]:
    """An app whose one Airflow source pulls (``base_url``) and takes the namespace's events."""
    for name, value in ENVIRON.items():
        monkeypatch.setenv(name, value)
    entry = source(fake, "airflow", api_version="2", username="chm",
                   password_env="AIRFLOW_PASSWORD", openlineage_namespace=NAMESPACE,
                   token_env="AIRFLOW_OL_KEY")  # fmt: skip
    path = tmp_path / "sources.toml"
    path.write_text(toml_text(entry))
    settings = Settings(database_url=db_url, config=path, _env_file=None)  # type: ignore[call-arg]
    dag = AirflowFake(fake, "chm_demo")
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as api:
        pipeline = make_pipeline(api, make_client(api), platform="airflow", external_id="chm_demo")
        yield {"api": api, "pipeline": pipeline, "fake": dag, "sources": sources(entry),
               "engine": engine}  # fmt: skip


def push(api: TestClient, events: list[dict[str, Any]]) -> list[int]:
    headers = {"content-type": "application/json", "authorization": f"Bearer {KEY}"}
    return [
        api.post(f"{API}/lineage", content=orjson.dumps(e), headers=headers).status_code
        for e in events
    ]


# The pulls' clock: a few minutes after the recorded runs ended (Airflow's
# incremental filter then still asks for them), whatever the day the tests run.
PULLED_AT = datetime(2026, 11, 30, 23, 50, tzinfo=UTC)


def pull(env: dict[str, Any]) -> Any:
    return ingest(env["engine"], env["sources"], environ=ENVIRON, clock=lambda: PULLED_AT)


def runs_of(env: dict[str, Any]) -> dict[str, dict[str, Any]]:
    page = ok(env["api"].get(f"{API}/pipelines/{env['pipeline']['id']}/runs"))
    return {run["external_run_id"]: run for run in page["items"]}


def assert_one_row_per_dag_run(env: dict[str, Any]) -> None:
    runs = runs_of(env)
    assert sorted(runs) == ["manual__fail_1", "manual__ok_1"]
    ok_run, failed = runs["manual__ok_1"], runs["manual__fail_1"]
    assert (ok_run["status"], ok_run["error_message"]) == ("success", None)
    assert (failed["status"], failed["error_message"]) == ("failed", TASK_ERROR)
    # Airflow's own times, to the microsecond, whichever path told them.
    assert (failed["started_at"], failed["finished_at"]) == (
        "2026-11-30T23:42:37.752996Z",
        "2026-11-30T23:42:43.124052Z",
    )


@pytest.mark.parametrize("first", ["pull", "push"])
def test_a_dag_run_pulled_and_pushed_is_one_row_and_replays_change_nothing(airflow, first) -> None:
    events = recorded()
    airflow["fake"].runs = pulled_runs(events)
    if first == "pull":
        assert pull(airflow).runs_created == 2
        statuses = push(airflow["api"], events)
    else:
        statuses = push(airflow["api"], events)
        assert pull(airflow).runs_created == 0
    # The DAG's events are stored (201/200); its tasks' map to no pipeline (202).
    assert [s for s, e in zip(statuses, events, strict=True) if "." in e["job"]["name"]] == [
        202
    ] * 8
    assert_one_row_per_dag_run(airflow)
    before = runs_of(airflow)
    again = pull(airflow)
    assert (again.runs_created, again.runs_updated, again.runs_unchanged, again.errors) == (
        0,
        0,
        2,
        [],
    )
    assert set(push(airflow["api"], events)) <= {200, 202}
    assert runs_of(airflow) == before


def test_the_failed_tasks_error_reaches_the_dag_run_whatever_the_order(airflow) -> None:
    events = recorded()
    task_fail = next(e for e in events if e["eventType"] == "FAIL" and "." in e["job"]["name"])
    dag_start, dag_fail = (e for e in of_dag(events) if "fail_1" in json.dumps(e["run"]))
    push(airflow["api"], [dag_start, dag_fail])
    assert runs_of(airflow)["manual__fail_1"]["error_message"] == "task_failure"
    assert push(airflow["api"], [task_fail]) == [202]
    assert runs_of(airflow)["manual__fail_1"]["error_message"] == TASK_ERROR
    # The DAG's FAIL again (a replay, or a late copy) keeps the task's error.
    assert push(airflow["api"], [dag_fail]) == [200]
    assert runs_of(airflow)["manual__fail_1"]["error_message"] == TASK_ERROR


def test_a_more_specific_dag_run_error_is_kept(airflow) -> None:
    events = recorded()
    task_fail = next(e for e in events if e["eventType"] == "FAIL" and "." in e["job"]["name"])
    dag_fail = next(e for e in of_dag(events) if e["eventType"] == "FAIL")
    dag_fail["run"]["facets"]["errorMessage"]["message"] = "Dagrun timed out after 2:00:00"
    push(airflow["api"], [dag_fail, task_fail])
    assert runs_of(airflow)["manual__fail_1"]["error_message"] == "Dagrun timed out after 2:00:00"


def test_a_task_failure_of_a_dag_run_not_stored_creates_nothing(airflow) -> None:
    task_fail = next(e for e in recorded() if e["eventType"] == "FAIL" and "." in e["job"]["name"])
    assert push(airflow["api"], [task_fail]) == [202]
    assert runs_of(airflow) == {}


def test_a_task_failure_of_a_successful_dag_run_leaves_it_alone(airflow) -> None:
    events = recorded()
    ok_complete = next(e for e in of_dag(events) if e["eventType"] == "COMPLETE")
    task_fail = next(e for e in events if e["eventType"] == "FAIL" and "." in e["job"]["name"])
    task_fail["run"]["facets"]["parent"] = {
        "job": {"namespace": NAMESPACE, "name": "chm_demo"},
        "run": {"runId": ok_complete["run"]["runId"]},
    }
    task_fail["run"]["facets"]["airflow"]["dagRun"]["run_id"] = "manual__ok_1"
    push(airflow["api"], [ok_complete, task_fail])
    assert runs_of(airflow)["manual__ok_1"]["error_message"] is None


def test_the_task_error_on_the_dag_run_is_redacted(airflow) -> None:
    events = recorded()
    task_fail = next(e for e in events if e["eventType"] == "FAIL" and "." in e["job"]["name"])
    task_fail["run"]["facets"]["errorMessage"] = {"message": f"login with {KEY} refused"}
    push(airflow["api"], [*of_dag(events)[:1], task_fail])  # START of ok_1: not this run
    dag_start = next(e for e in of_dag(events) if "fail_1" in json.dumps(e["run"]))
    push(airflow["api"], [dag_start, task_fail])
    message = runs_of(airflow)["manual__fail_1"]["error_message"]
    assert KEY not in message and message.startswith("task extract failed: login with ")


# --- the documented configuration (docs/ingestion.md, "Airflow's OpenLineage provider") ----

DOCS = Path(__file__).parents[2] / "docs" / "ingestion.md"


def documented_provider_config() -> tuple[dict[str, Any], str, dict[str, Any]]:
    """The source, the namespace and the transport that the docs give for Airflow."""
    text = DOCS.read_text().split("### Airflow's OpenLineage provider", 1)[1].split("\n### ")[0]
    entry = tomllib.loads(re.search(r"```toml\n(.*?)```", text, re.S)[1])["sources"][0]  # type: ignore[index]
    exported = dict(re.findall(r"^export (\w+)='?(.*?)'?$", text, re.M))
    ini = dict(re.findall(r"^(namespace|transport) = (.*)$", text, re.M))
    assert exported["AIRFLOW__OPENLINEAGE__NAMESPACE"] == ini["namespace"]
    transport = json.loads(exported["AIRFLOW__OPENLINEAGE__TRANSPORT"])
    assert json.loads(ini["transport"]) == transport
    return entry, ini["namespace"], transport


def test_the_documented_airflow_configuration_delivers_the_providers_events(
    db_url, engine, tmp_path, monkeypatch
) -> None:
    entry, namespace, transport = documented_provider_config()
    assert entry["openlineage_namespace"] == namespace
    monkeypatch.setenv(entry["token_env"], KEY)
    path = tmp_path / "sources.toml"
    path.write_text(toml_text(entry))
    settings = Settings(database_url=db_url, config=path, _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(settings, engine)) as api:
        pipeline = make_pipeline(api, make_client(api, entry["client"]), platform="airflow",
                                 external_id="chm_demo")  # fmt: skip
    with serve_in_thread(create_app(settings, engine)) as base:
        assert transport["url"] == "http://chm-host:8000"
        transport |= {"url": base, "auth": transport["auth"] | {"apiKey": KEY}}
        # openlineage-python's own factory, as the provider builds its client.
        client = OpenLineageClient(config={"transport": transport})
        for event in recorded():
            text = json.dumps(event).replace('"chm-airflow-demo"', json.dumps(namespace))
            client.transport.emit(json.loads(text))
    with TestClient(create_app(settings, engine)) as api:
        page = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs"))
    runs = {run["external_run_id"]: run for run in page["items"]}
    assert sorted(runs) == ["manual__fail_1", "manual__ok_1"]
    assert runs["manual__fail_1"]["error_message"] == TASK_ERROR
    assert runs["manual__ok_1"]["status"] == "success"


# --- the platform's own run id, per emitter (no database) ------------------------------------


def run_event(run_facets: dict[str, Any], job_facets: dict[str, Any] | None = None) -> RunEvent:
    return RunEvent.model_validate({
        "eventType": "START", "eventTime": "2026-03-01T10:00:00Z", "producer": "p",
        "schemaURL": "s", "run": {"runId": str(uuid.uuid4()), "facets": run_facets},
        "job": {"namespace": "ns", "name": "job", "facets": job_facets or {}},
    })  # fmt: skip


def test_the_recorded_dag_run_events_name_airflows_run_id_and_task_events_keep_theirs() -> None:
    for event in recorded():
        parsed = RunEvent.model_validate(event)
        if event["job"]["name"] == "chm_demo":
            assert external_run_id(parsed).startswith("manual__")
        else:  # a task's own run (per try): the DAG run is its parent, not its id
            assert external_run_id(parsed) == event["run"]["runId"]


def test_dbt_and_spark_name_their_own_run_and_others_keep_the_run_id() -> None:
    dbt = run_event({"dbt_run": {"invocation_id": "6f7c1e2a-0d7b-4b3e-9a52-1f0c2b7d9e11"}})
    assert external_run_id(dbt) == "6f7c1e2a-0d7b-4b3e-9a52-1f0c2b7d9e11"
    details = {"spark_applicationDetails": {"applicationId": "application_1700000000000_0042"}}
    application = run_event(details, {"jobType": {"jobType": "APPLICATION"}})
    assert external_run_id(application) == "application_1700000000000_0042"
    sql_job = run_event(details, {"jobType": {"jobType": "SQL_JOB"}})
    assert external_run_id(sql_job) == sql_job.run.runId
    plain = run_event({"parent": {"run": {"runId": "x"}, "job": {"namespace": "n", "name": "d"}}})
    assert external_run_id(plain) == plain.run.runId


def test_a_task_failure_names_the_dag_runs_own_id_first() -> None:
    task_fail = next(e for e in recorded() if e["eventType"] == "FAIL" and "." in e["job"]["name"])
    failure = parent_failure(RunEvent.model_validate(task_fail), Redactor())
    assert failure is not None
    assert (failure.namespace, failure.job_name, failure.message) == (
        NAMESPACE, "chm_demo", TASK_ERROR,
    )  # fmt: skip
    assert failure.run_ids == (
        "manual__fail_1",
        task_fail["run"]["facets"]["parent"]["run"]["runId"],
    )
