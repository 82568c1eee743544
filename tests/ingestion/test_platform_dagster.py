"""Dagster's GraphQL runsOrError against a local server speaking its documented shapes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ingestion_fakes import FakeServer, Reply, SleepRecorder, source, sources
from platform_fakes import DagsterFake, dagster_run

from chm.ingestion.connectors import Window
from chm.ingestion.connectors.dagster import DagsterConnector, DagsterSource
from chm.ingestion.engine import ingest
from factories import API, make_client, make_pipeline, ok

TOKEN = "user:S3cr3tDagsterCloudToken"
ENV = {"DAGSTER_CLOUD_API_TOKEN": TOKEN}


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def dagster_source(fake: FakeServer) -> dict[str, object]:
    return source(fake, "dagster", token_env="DAGSTER_CLOUD_API_TOKEN")


def test_runs_are_paged_by_the_last_run_id_until_a_short_page(api, engine, fake) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="dagster", external_id="orders_job")
    dagster = DagsterFake(fake, TOKEN)
    dagster.runs = [dagster_run(n) for n in range(1, 101)]
    dagster.runs += [dagster_run(101, "FAILURE"), dagster_run(102, "STARTED"),
                     dagster_run(103, "QUEUED"), dagster_run(104, pipelineName="other_job")]  # fmt: skip
    fake.script(dagster.path, None, Reply(429, {"errors": [{"message": "rate limited"}]},
                                          {"Retry-After": "1"}))  # fmt: skip
    waits = SleepRecorder()
    report = ingest(engine, sources(dagster_source(fake)), environ=ENV, sleep=waits)

    assert (report.errors, report.pages, report.runs_created, waits.waits) == ([], 2, 103, [1.0])
    requests = dagster.run_requests()
    cursors = [r.body["variables"]["cursor"] for r in requests]
    # Newest first: page 1 is runs 103 down to 4, so page 2 continues after run 4.
    assert cursors == [None, None, dagster.runs[3]["runId"]]
    assert requests[1].body["variables"]["filter"] == {"pipelineName": "orders_job"}
    assert requests[1].body["variables"]["limit"] == 100
    assert {r.headers["dagster-cloud-api-token"] for r in requests} == {TOKEN}
    page = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs", params={"limit": 500}))
    runs = {run["external_run_id"]: run for run in page["items"]}
    failed = runs[dagster.runs[100]["runId"]]
    assert (failed["status"], failed["source_status"]) == ("failed", "FAILURE")
    assert (failed["started_at"], failed["finished_at"]) == ("2026-03-01T11:41:02Z",
                                                             "2026-03-01T11:42:32Z")  # fmt: skip
    assert failed["duration_seconds"] == 90.0
    assert runs[dagster.runs[102]["runId"]]["status"] == "queued"


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        ({"data": {"runsOrError": {"__typename": "PythonError",
                                   "message": "dagster._core.errors.DagsterUserCodeUnreachableError"}}},
         "runsOrError answered PythonError: dagster._core.errors.DagsterUserCodeUnreachableError"),
        ({"data": {"runsOrError": {"__typename": "InvalidPipelineRunsFilterError",
                                   "message": "Invalid filter"}}},
         "runsOrError answered InvalidPipelineRunsFilterError: Invalid filter"),
        ({"data": None, "errors": [{"message": "Cannot query field \"runsOrError\" on type \"Query\"."}]},
         "GraphQL errors: Cannot query field \"runsOrError\" on type \"Query\"."),
    ],
)  # fmt: skip
def test_error_answers_with_http_200_fail_the_pipeline(api, engine, fake, answer, message) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="dagster", external_id="orders_job")
    dagster = DagsterFake(fake, TOKEN)
    fake.script(dagster.path, None, Reply(200, answer))
    report = ingest(engine, sources(dagster_source(fake)), environ=ENV)
    assert [e.pipeline_id for e in report.errors] == [pipeline["id"]]
    assert report.errors[0].message == (
        f"source 'dagster-prod': the source answered page 1 with an error: {message}"
    )
    assert ok(api.get(f"{API}/pipelines/{pipeline['id']}"))["last_ingestion_error"] is not None


def connector() -> DagsterConnector:
    entry = DagsterSource(name="d", platform="dagster", environment="prod",
                          base_url="https://acme.dagster.cloud/prod")  # fmt: skip
    return DagsterConnector(entry, "orders_job", Window(None))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "expected"),
    [("QUEUED", "queued"), ("NOT_STARTED", "queued"), ("MANAGED", "running"),
     ("STARTING", "running"), ("STARTED", "running"), ("CANCELING", "running"),
     ("SUCCESS", "success"), ("FAILURE", "failed"), ("CANCELED", "cancelled"),
     ("PAUSED", "unknown")],
)  # fmt: skip
def test_run_statuses(status, expected) -> None:
    mapped = connector().map_run(dagster_run(1, status))
    assert (mapped.status.value, mapped.source_status) == (expected, status)


def test_the_query_goes_to_the_graphql_endpoint() -> None:
    request = connector().page_request("abc")
    assert (request.method, request.url) == ("POST", "https://acme.dagster.cloud/prod/graphql")
    assert request.json is not None
    assert request.json["variables"] == {"filter": {"pipelineName": "orders_job"}, "cursor": "abc",
                                         "limit": 100}  # fmt: skip
