"""dbt Cloud Administrative API v2 against a local server speaking its documented shapes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ingestion_fakes import FakeServer, Reply, SleepRecorder, source, sources
from platform_fakes import DbtCloudFake, dbt_run

from chm.ingestion.connectors import Window
from chm.ingestion.connectors.dbt_cloud import DbtCloudConnector, DbtCloudSource
from chm.ingestion.engine import ingest
from factories import API, make_client, make_pipeline, ok

TOKEN = "dbtc_S3cr3tServiceToken"
ENV = {"DBT_CLOUD_TOKEN": TOKEN}


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def dbt_source(fake: FakeServer, **fields: object) -> dict[str, object]:
    return source(fake, "dbt_cloud", account_id=1, token_env="DBT_CLOUD_TOKEN", **fields)


def runs_of(api, pipeline) -> dict[str, dict]:
    page = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs", params={"limit": 500}))
    return {run["external_run_id"]: run for run in page["items"]}


def test_runs_are_paged_by_offset_to_the_total_count_and_mapped(api, engine, fake) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="dbt_cloud", external_id="77")
    dbt = DbtCloudFake(fake, account_id=1, job_id=77, token=TOKEN, clamp=2)
    dbt.runs = [dbt_run(101), dbt_run(102, 20), dbt_run(103, 3), dbt_run(104, 1),
                dbt_run(105, 30), dbt_run(106, job_id=99)]  # fmt: skip
    report = ingest(engine, sources(dbt_source(fake)), environ=ENV)

    assert (report.errors, report.pages, report.runs_created) == ([], 3, 5)
    requests = fake.hits(dbt.path)
    assert [r.query["offset"] for r in requests] == ["0", "2", "4"]
    assert all(r.query["limit"] == "100" and r.query["job_definition_id"] == "77" for r in requests)
    assert {r.headers["authorization"] for r in requests} == {f"Token {TOKEN}"}
    runs = runs_of(api, pipeline)
    assert set(runs) == {"101", "102", "103", "104", "105"}
    ok_run = runs["101"]
    assert (ok_run["status"], ok_run["source_status"]) == ("success", "10/Success")
    assert (ok_run["started_at"], ok_run["finished_at"]) == ("2026-03-01T10:00:30Z",
                                                             "2026-03-01T10:05:30Z")  # fmt: skip
    assert ok_run["duration_seconds"] == 300.0 and ok_run["error_message"] is None
    assert runs["102"]["status"] == "failed"
    assert runs["102"]["error_message"] == "Database Error in model orders"
    assert (runs["103"]["status"], runs["103"]["duration_seconds"]) == ("running", None)
    assert (runs["104"]["status"], runs["105"]["status"]) == ("queued", "cancelled")


def test_a_run_created_during_the_walk_is_read_and_none_is_missed(api, engine, fake) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="dbt_cloud", external_id="77")
    dbt = DbtCloudFake(fake, account_id=1, job_id=77, token=TOKEN, clamp=2)
    dbt.runs = [dbt_run(n) for n in range(101, 106)]

    def new_run_after_first_page(offset: int) -> None:
        if offset == 0 and len(dbt.runs) == 5:
            dbt.runs.append(dbt_run(106, 3))

    dbt.on_page = new_run_after_first_page
    report = ingest(engine, sources(dbt_source(fake)), environ=ENV)
    assert report.errors == []
    # Newest first: 106 went before the pages read; 103 shifted onto page 2 too.
    assert set(runs_of(api, pipeline)) == {str(n) for n in range(101, 106)}
    assert (report.pages, report.runs_created, report.runs_unchanged) == (3, 5, 1)
    again = ingest(engine, sources(dbt_source(fake)), environ=ENV)
    assert (again.runs_created, again.runs_unchanged) == (1, 5)
    assert runs_of(api, pipeline)["106"]["status"] == "running"


def test_429_retry_after_is_honoured_and_a_bad_token_fails_at_once(api, engine, fake) -> None:
    make_pipeline(api, make_client(api), platform="dbt_cloud", external_id="77")
    dbt = DbtCloudFake(fake, account_id=1, job_id=77, token=TOKEN)
    dbt.runs = [dbt_run(101)]
    fake.script(dbt.path, "0", Reply(429, {"status": {"user_message": "Too many requests"}},
                                     {"Retry-After": "4"}))  # fmt: skip
    waits = SleepRecorder()
    report = ingest(engine, sources(dbt_source(fake)), environ=ENV, sleep=waits)
    assert (report.errors, report.runs_created, waits.waits) == ([], 1, [4.0])

    denied = ingest(engine, sources(dbt_source(fake)), environ={"DBT_CLOUD_TOKEN": "wrong-token"})
    assert "HTTP 401" in denied.errors[0].message and "wrong-token" not in denied.errors[0].message


def connector(job: str = "77") -> DbtCloudConnector:
    entry = DbtCloudSource(name="d", platform="dbt_cloud", environment="prod",
                           base_url="https://cloud.getdbt.com", account_id=42)  # fmt: skip
    return DbtCloudConnector(entry, job, Window(None))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "expected"),
    [(1, "queued"), (2, "queued"), (3, "running"), (10, "success"), (20, "failed"),
     (30, "cancelled"), (25, "unknown")],
)  # fmt: skip
def test_integer_statuses(status, expected) -> None:
    mapped = connector().map_run(dbt_run(1, status))
    assert mapped.status.value == expected
    assert mapped.source_status.startswith(f"{status}/")


def test_durations_read_as_hh_mm_ss_and_bad_inputs_are_refused() -> None:
    assert connector().map_run(dbt_run(1, run_duration="26:01:05")).duration_seconds == 93665.0
    with pytest.raises(ValueError, match="not an HH:MM:SS duration"):
        connector().map_run(dbt_run(1, run_duration="five minutes"))
    with pytest.raises(ValueError, match="status is not an integer"):
        connector().map_run(dbt_run(1) | {"status": "10"})
    with pytest.raises(ValueError, match="not a dbt Cloud job id"):
        connector("orders-job")
    request = connector().page_request("300")
    assert request.url == "https://cloud.getdbt.com/api/v2/accounts/42/runs/"
    assert request.params == {"job_definition_id": "77", "order_by": "-id", "limit": "100",
                              "offset": "300"}  # fmt: skip


READ_TIME = {"duration", "queued_duration", "run_duration", "duration_humanized",
             "queued_duration_humanized", "run_duration_humanized", "created_at_humanized",
             "finished_at_humanized"}  # fmt: skip


def test_a_replay_is_a_no_op_though_dbt_cloud_recomputes_durations_and_ages(
    api, engine, fake
) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="dbt_cloud", external_id="77")
    dbt = DbtCloudFake(fake, account_id=1, job_id=77, token=TOKEN)
    dbt.runs = [dbt_run(101), dbt_run(102, 3), dbt_run(103, 1), dbt_run(104, 20)]
    feeds = sources(dbt_source(fake))
    first = ingest(engine, feeds, environ=ENV)
    assert (first.errors, first.runs_created) == ([], 4)
    stored = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs"))["items"]

    replay = ingest(engine, feeds, environ=ENV)
    assert (replay.runs_created, replay.runs_updated, replay.runs_unchanged) == (0, 0, 4)
    assert ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs"))["items"] == stored
    assert dbt.reads == 2  # each read answered other ages, and durations of runs 102 and 103
    by_id = {run["external_run_id"]: run for run in stored}
    assert by_id["101"]["duration_seconds"] == 300.0  # run_duration, read before it is left out
    for run in stored:
        assert not READ_TIME & set(run["source_payload"])
        assert run["source_payload"]["status_humanized"]
