"""Databricks and Azure Data Factory, each against a local server speaking its documented shapes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from ingestion_fakes import ADF_FACTORY, FakeServer, serve_adf, serve_databricks, source, sources
from platform_fakes import AdfFake, DatabricksFake

from chm.ingestion.connectors import Fetched, Window
from chm.ingestion.connectors.adf import AdfConnector, AdfSource
from chm.ingestion.connectors.databricks import DatabricksConnector, DatabricksSource
from chm.ingestion.engine import ingest
from factories import API, make_client, make_pipeline, ok

T0 = 1_772_359_200_000  # 2026-03-01T10:00:00Z in epoch milliseconds


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def runs_of(api, pipeline) -> dict[str, dict[str, Any]]:
    page = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs", params={"limit": 500}))
    return {run["external_run_id"]: run for run in page["items"]}


# --- Databricks ---------------------------------------------------------------------------


def dbx_run(
    run_id: int, state: str = "TERMINATED", code: str | None = "SUCCESS", **fields: Any
) -> dict[str, Any]:
    """A runs/list entry in the current shape (``status``), with the older ``state`` too."""
    status: dict[str, Any] = {"state": state}
    if code is not None:
        status["termination_details"] = {"code": code, "type": "SUCCESS", "message": ""}
    run = {
        "job_id": 11,
        "run_id": run_id,
        "number_in_job": run_id,
        "run_name": "nightly",
        "creator_user_name": "etl@acme.example",
        "run_page_url": f"https://adb-1.azuredatabricks.net/?o=1#job/11/run/{run_id}",
        "run_type": "JOB_RUN",
        "trigger": "PERIODIC",
        "start_time": T0,
        "setup_duration": 0,
        "execution_duration": 0,
        "cleanup_duration": 0,
        "end_time": T0 + 90_000,
        "run_duration": 90_000,
        "status": status,
        "state": {"life_cycle_state": "TERMINATED", "result_state": "SUCCESS",
                  "state_message": "", "user_cancelled_or_timedout": False},
    }  # fmt: skip
    return run | fields


def test_databricks_runs_are_paged_by_page_token_and_mapped(api, engine, fake) -> None:
    client = make_client(api)
    pipeline = make_pipeline(api, client, platform="databricks", external_id="11")
    older = make_pipeline(
        api, make_client(api), platform="databricks", external_id="11", environment="dev"
    )
    failed = dbx_run(2, code="RUN_EXECUTION_ERROR", end_time=T0 + 30_000, run_duration=30_000)
    failed["status"]["termination_details"] |= {"type": "CLIENT_ERROR",
                                                "message": "Task notebook failed: ZeroDivisionError"}  # fmt: skip
    running = dbx_run(3, state="RUNNING", code=None, end_time=0, run_duration=4_000)
    queued = dbx_run(4, state="QUEUED", code=None, start_time=0, end_time=0)
    pages = [[dbx_run(1), failed], [running, queued], []]
    serve_databricks(fake, "11", pages, "2.2")
    serve_databricks(fake, "11", [[dbx_run(1)]], "2.1")
    report = ingest(
        engine,
        sources(
            source(fake, "databricks"),
            source(fake, "databricks", name="dbx-dev", environment="dev", api_version="2.1"),
        ),
    )
    assert (report.errors, report.pages, report.runs_created) == ([], 4, 5)
    requests = fake.hits("/api/2.2/jobs/runs/list")
    assert [r.query.get("page_token") for r in requests] == [None, "d11-1", "d11-2"]
    assert all(r.query["job_id"] == "11" and r.query["limit"] == "25" for r in requests)
    assert len(fake.hits("/api/2.1/jobs/runs/list")) == 1
    assert list(runs_of(api, older)) == ["1"]

    runs = runs_of(api, pipeline)
    ok_run = runs["1"]
    assert (ok_run["status"], ok_run["source_status"]) == ("success", "TERMINATED/SUCCESS")
    assert ok_run["started_at"] == "2026-03-01T10:00:00Z"
    assert ok_run["finished_at"] == "2026-03-01T10:01:30Z"
    assert ok_run["duration_seconds"] == 90.0 and ok_run["error_message"] is None
    assert ok_run["source_payload"]["run_page_url"].endswith("/run/1")
    assert runs["2"]["status"] == "failed"
    assert runs["2"]["error_message"] == "Task notebook failed: ZeroDivisionError"
    assert (runs["3"]["status"], runs["3"]["finished_at"], runs["3"]["duration_seconds"]) == (
        "running", None, None,
    )  # fmt: skip
    assert (runs["4"]["status"], runs["4"]["started_at"]) == ("queued", None)


def test_databricks_run_moving_from_running_to_success_updates_the_same_run(
    api, engine, fake
) -> None:
    client = make_client(api)
    pipeline = make_pipeline(api, client, platform="databricks", external_id="11")
    pages = [[dbx_run(7, state="RUNNING", code=None, end_time=0)]]
    serve_databricks(fake, "11", pages)
    feeds = sources(source(fake, "databricks"))
    ingest(engine, feeds)
    pages[0] = [dbx_run(7)]
    report = ingest(engine, feeds)
    assert (report.runs_created, report.runs_updated) == (0, 1)
    assert runs_of(api, pipeline)["7"]["status"] == "success"


def test_databricks_replay_is_a_no_op_though_active_runs_count_their_durations(
    api, engine, fake
) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="databricks", external_id="11")
    dbx = DatabricksFake(fake, "11")
    dbx.runs = [dbx_run(1), dbx_run(2, state="RUNNING", code=None, end_time=0),
                dbx_run(3, state="QUEUED", code=None, start_time=0, end_time=0, _queued_ms=T0)]  # fmt: skip
    feeds = sources(source(fake, "databricks"))
    assert ingest(engine, feeds).runs_created == 3
    stored = runs_of(api, pipeline)

    replay = ingest(engine, feeds)
    assert (replay.errors, replay.runs_updated, replay.runs_unchanged) == ([], 0, 3)
    assert runs_of(api, pipeline) == stored
    assert dbx.reads == 2  # run 2's run_duration and run 3's queue_duration differed
    assert stored["1"]["duration_seconds"] == 90.0
    for run in stored.values():
        assert {"run_duration", "queue_duration"}.isdisjoint(run["source_payload"])


def test_databricks_repairs_in_the_history_are_the_attempt_marker() -> None:
    original = {"type": "ORIGINAL", "id": 0, "start_time": T0, "end_time": T0 + 90_000}
    repair = {"type": "REPAIR", "id": 734650698524280, "start_time": T0 + 600_000}
    assert databricks().map_run(dbx_run(1)).attempt is None
    assert databricks().map_run(dbx_run(1, repair_history=[original])).attempt == 0
    repaired = dbx_run(1, repair_history=[original, repair, repair], state="RUNNING")
    assert databricks().map_run(repaired).attempt == 2
    with pytest.raises(ValueError, match="repair_history is not a list"):
        databricks().map_run(dbx_run(1, repair_history={"type": "REPAIR"}))


def databricks() -> DatabricksConnector:
    return DatabricksConnector(
        DatabricksSource(name="d", platform="databricks", environment="prod",
                         base_url="https://adb-1.azuredatabricks.net"),
        "11",
        Window(datetime(2026, 3, 1, tzinfo=UTC)),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("state", "code", "status"),
    [
        ("QUEUED", None, "queued"), ("PENDING", None, "queued"), ("BLOCKED", None, "queued"),
        ("WAITING", None, "queued"), ("RUNNING", None, "running"), ("TERMINATING", None, "running"),
        ("TERMINATED", "SUCCESS", "success"), ("TERMINATED", "SUCCESS_WITH_FAILURES", "success"),
        ("TERMINATED", "USER_CANCELED", "cancelled"), ("TERMINATED", "CANCELED", "cancelled"),
        ("TERMINATED", "SKIPPED", "skipped"), ("TERMINATED", "DISABLED", "skipped"),
        ("TERMINATED", "MAX_CONCURRENT_RUNS_EXCEEDED", "skipped"),
        ("TERMINATED", "MAX_JOB_QUEUE_SIZE_EXCEEDED", "skipped"),
        ("TERMINATED", "INTERNAL_ERROR", "failed"), ("TERMINATED", "DRIVER_ERROR", "failed"),
        ("TERMINATED", "CLUSTER_ERROR", "failed"), ("TERMINATED", "RUN_EXECUTION_ERROR", "failed"),
        ("TERMINATED", "LIBRARY_INSTALLATION_ERROR", "failed"),
        ("TERMINATED", "CLOUD_FAILURE", "failed"), ("TERMINATED", "UNAUTHORIZED_ERROR", "failed"),
        ("TERMINATED", "SOMETHING_NEW", "unknown"), ("TERMINATED", None, "unknown"),
        ("HIBERNATING", None, "unknown"),
    ],
)  # fmt: skip
def test_databricks_status_and_termination_codes(state, code, status) -> None:
    raw = dbx_run(1, state=state, code=code)
    raw.pop("state")
    mapped = databricks().map_run(raw)
    assert mapped.status.value == status
    assert mapped.source_status == (f"{state}/{code}" if code else state)


@pytest.mark.parametrize(
    ("life_cycle", "result", "status"),
    [
        ("PENDING", None, "queued"), ("QUEUED", None, "queued"), ("BLOCKED", None, "queued"),
        ("WAITING_FOR_RETRY", None, "queued"), ("RUNNING", None, "running"),
        ("TERMINATING", None, "running"), ("SKIPPED", None, "skipped"),
        ("INTERNAL_ERROR", None, "failed"), ("INTERNAL_ERROR", "FAILED", "failed"),
        ("TERMINATED", "SUCCESS", "success"), ("TERMINATED", "SUCCESS_WITH_FAILURES", "success"),
        ("TERMINATED", "FAILED", "failed"), ("TERMINATED", "TIMEDOUT", "failed"),
        ("TERMINATED", "CANCELED", "cancelled"),
        ("TERMINATED", "MAXIMUM_CONCURRENT_RUNS_REACHED", "skipped"),
        ("TERMINATED", "EXCLUDED", "skipped"), ("TERMINATED", "UPSTREAM_FAILED", "skipped"),
        ("TERMINATED", "UPSTREAM_CANCELED", "skipped"), ("TERMINATED", "DISABLED", "skipped"),
        ("TERMINATED", None, "unknown"), ("TERMINATED", "NEW_RESULT", "unknown"),
    ],
)  # fmt: skip
def test_databricks_older_life_cycle_and_result_states(life_cycle, result, status) -> None:
    state: dict[str, Any] = {"life_cycle_state": life_cycle, "state_message": "Driver lost"}
    if result:
        state["result_state"] = result
    raw = dbx_run(1)
    raw["state"] = state
    raw.pop("status")
    mapped = databricks().map_run(raw)
    assert mapped.status.value == status
    assert mapped.source_status == (f"{life_cycle}/{result}" if result else life_cycle)
    failure = status in ("failed", "cancelled", "skipped", "unknown")
    assert mapped.error_message == ("Driver lost" if failure else None)


def test_databricks_page_without_runs_or_token_is_the_last() -> None:
    page = databricks().read_page(Fetched({"has_more": False}))
    assert (page.runs, page.next_cursor) == ([], None)
    assert databricks().read_page(Fetched({"runs": [], "next_page_token": ""})).next_cursor is None
    last = databricks().read_page(Fetched({"has_more": False, "next_page_token": "x"}))
    assert last.next_cursor is None
    more = databricks().read_page(Fetched({"has_more": True, "next_page_token": "x"}))
    assert more.next_cursor == "x"


# --- Azure Data Factory ---------------------------------------------------------------------


def adf_run(run_id: str, status: str = "Succeeded", **fields: Any) -> dict[str, Any]:
    run = {
        "runId": run_id,
        "runGroupId": run_id,
        "isLatest": True,
        "pipelineName": "CopyOrders",
        "parameters": {"OutputBlobNameList": "[\"exampleoutput.csv\"]"},
        "invokedBy": {"id": "80a01654a9d34ad18b3fcac5d5d76b67", "name": "Manual",
                      "invokedByType": "Manual"},
        "runStart": "2026-03-01T10:00:00.6257014Z",
        "runEnd": "2026-03-01T10:00:28.7314495Z",
        "durationInMs": 28105,
        "status": status,
        "message": "",
        "lastUpdated": "2026-03-01T10:00:28.7314495Z",
        "annotations": [],
        "runDimensions": {},
    }  # fmt: skip
    return run | fields


def test_adf_runs_are_paged_by_continuation_token_and_mapped(api, engine, fake) -> None:
    client = make_client(api)
    pipeline = make_pipeline(api, client, platform="adf", external_id="CopyOrders")
    in_progress = adf_run(
        "b",
        "InProgress",
        runEnd=None,
        durationInMs=None,
        lastUpdated="2026-03-01T10:00:05.1234567Z",
    )
    failed = adf_run("c", "Failed", message="Operation on target Copy failed: timeout")
    path = serve_adf(fake, "CopyOrders", [[adf_run("a"), in_progress], [failed]])
    report = ingest(engine, sources(source(fake, "adf", lookback_hours=24)))

    assert (report.errors, report.pages, report.runs_created) == ([], 2, 3)
    first, second = fake.hits(path)
    assert "continuationToken" not in first.body
    assert second.body == first.body | {"continuationToken": "a-1"}
    after = datetime.fromisoformat(first.body["lastUpdatedAfter"])
    before = datetime.fromisoformat(first.body["lastUpdatedBefore"])
    assert (before - after).total_seconds() == 24 * 3600
    assert abs((datetime.now(UTC) - before).total_seconds()) < 60

    runs = runs_of(api, pipeline)
    assert runs["a"]["status"] == "success" and runs["a"]["source_status"] == "Succeeded"
    assert runs["a"]["started_at"] == "2026-03-01T10:00:00.625701Z"
    assert runs["a"]["finished_at"] == "2026-03-01T10:00:28.731449Z"
    assert runs["a"]["duration_seconds"] == 28.105 and runs["a"]["error_message"] is None
    assert (runs["b"]["status"], runs["b"]["finished_at"]) == ("running", None)
    assert runs["c"]["error_message"] == "Operation on target Copy failed: timeout"


def test_adf_runs_reappearing_across_windows_are_upserted(api, engine, fake) -> None:
    client = make_client(api)
    pipeline = make_pipeline(api, client, platform="adf", external_id="CopyOrders")
    early = adf_run(
        "r", "InProgress", runEnd=None, durationInMs=None, lastUpdated="2026-03-01T10:00:05Z"
    )
    pages = [[early, adf_run("s")]]
    serve_adf(fake, "CopyOrders", pages)
    feeds = sources(source(fake, "adf"))
    ingest(engine, feeds)

    pages[0] = [adf_run("r", "Succeeded")]  # the next window: only r changed
    report = ingest(engine, feeds)
    assert (report.runs_created, report.runs_updated, report.runs_unchanged) == (0, 1, 0)
    # A late copy of the old window cannot move it back: its lastUpdated is older.
    pages[0] = [early, adf_run("s")]
    report = ingest(engine, feeds)
    assert (report.runs_updated, report.runs_unchanged) == (0, 2)
    runs = runs_of(api, pipeline)
    assert len(runs) == 2 and runs["r"]["status"] == "success"


def test_adf_replay_is_a_no_op_though_a_run_in_progress_counts_its_duration(
    api, engine, fake
) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="adf", external_id="CopyOrders")
    factory = AdfFake(fake)
    in_progress = adf_run("b", "InProgress", runEnd=None, lastUpdated="2026-03-01T10:00:05Z")
    factory.runs = [adf_run("a"), in_progress]
    feeds = sources(source(fake, "adf"))
    assert ingest(engine, feeds).runs_created == 2
    stored = runs_of(api, pipeline)

    replay = ingest(engine, feeds)
    assert (replay.errors, replay.runs_updated, replay.runs_unchanged) == ([], 0, 2)
    assert runs_of(api, pipeline) == stored
    assert factory.reads == 2  # run b's durationInMs differed
    assert stored["a"]["duration_seconds"] == 28.105
    assert "durationInMs" not in stored["a"]["source_payload"]
    assert "durationInMs" not in stored["b"]["source_payload"]


def adf() -> AdfConnector:
    source = AdfSource(
        name="a", platform="adf", environment="prod", base_url="https://management.azure.com",
        subscription_id="sub-1", resource_group="rg-data", factory_name="acme-adf",
    )  # fmt: skip
    return AdfConnector(source, "CopyOrders", Window(datetime(2026, 3, 1, tzinfo=UTC)))


@pytest.mark.parametrize(
    ("word", "status"),
    [
        ("Queued", "queued"), ("InProgress", "running"), ("Canceling", "running"),
        ("Succeeded", "success"), ("Failed", "failed"), ("Cancelled", "cancelled"),
        ("Canceled", "cancelled"), ("Paused", "unknown"),
    ],
)  # fmt: skip
def test_adf_status_words(word, status) -> None:
    mapped = adf().map_run(adf_run("r", word))
    assert (mapped.status.value, mapped.source_status) == (status, word)


def test_adf_request_targets_the_factory_with_the_documented_api_version() -> None:
    request = adf().page_request(None)
    assert request.method == "POST"
    assert request.url == f"https://management.azure.com{ADF_FACTORY}/queryPipelineRuns"
    assert request.params == {"api-version": "2018-06-01"}
    assert request.json is not None
    assert request.json["lastUpdatedBefore"] == "2026-03-01T00:00:00Z"
    assert request.json["lastUpdatedAfter"] == "2026-02-26T00:00:00Z"
