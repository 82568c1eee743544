"""Prefect 3 flow runs against a local server speaking the REST API's documented shapes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ingestion_fakes import FakeServer, Reply, SleepRecorder, source, sources
from platform_fakes import PrefectFake, prefect_run

from chm.ingestion.connectors import Window
from chm.ingestion.connectors.prefect import PrefectConnector, PrefectSource
from chm.ingestion.engine import ingest
from factories import API, make_client, make_pipeline, ok

TOKEN = "pnu_S3cr3tPrefectKey0001"
ENV = {"PREFECT_API_KEY": TOKEN}
DEPLOYMENT = "5d0b4f2e-7a6c-4e3b-9d1f-2a8c6e4b0f11"


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def prefect_source(fake: FakeServer) -> dict[str, object]:
    return source(fake, "prefect", base_url=f"{fake.url}/api", token_env="PREFECT_API_KEY")


def test_runs_are_paged_by_offset_until_a_short_page_and_mapped(api, engine, fake) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="prefect", external_id=DEPLOYMENT)
    prefect = PrefectFake(fake, TOKEN)
    prefect.runs = [prefect_run(n) for n in range(200)]
    prefect.runs += [prefect_run(900, "FAILED", "TimedOut"), prefect_run(901, "SCHEDULED", "Late"),
                     prefect_run(902, "RUNNING"), prefect_run(903, "CRASHED"),
                     prefect_run(904, "COMPLETED", deployment_id="another-deployment")]  # fmt: skip
    fake.script(prefect.path, "200", Reply(429, {"detail": "Rate limit exceeded"},
                                           {"Retry-After": "2"}))  # fmt: skip
    waits = SleepRecorder()
    report = ingest(engine, sources(prefect_source(fake)), environ=ENV, sleep=waits)

    assert (report.errors, report.pages, report.runs_created, waits.waits) == ([], 2, 204, [2.0])
    bodies = [r.body for r in fake.hits(prefect.path)]
    assert [(b["offset"], b["limit"], b["sort"]) for b in bodies] == [
        (0, 200, "ID_DESC"), (200, 200, "ID_DESC"), (200, 200, "ID_DESC")]  # fmt: skip
    assert bodies[0]["flow_runs"] == {"deployment_id": {"any_": [DEPLOYMENT]}}
    runs = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs", params={"status": "failed"}))
    failed = {run["source_status"]: run for run in runs["items"]}
    assert set(failed) == {"FAILED/TimedOut", "CRASHED/Crashed"}
    assert failed["FAILED/TimedOut"]["error_message"] == (
        "Flow run encountered an exception: KeyError('orders')"
    )
    assert failed["FAILED/TimedOut"]["duration_seconds"] == 240.0
    late = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs", params={"status": "queued"}))
    assert [run["source_status"] for run in late["items"]] == ["SCHEDULED/Late"]


def test_a_full_last_page_ends_on_the_empty_one_after_it(api, engine, fake) -> None:
    make_pipeline(api, make_client(api), platform="prefect", external_id=DEPLOYMENT)
    prefect = PrefectFake(fake, TOKEN)
    prefect.runs = [prefect_run(n) for n in range(200)]
    report = ingest(engine, sources(prefect_source(fake)), environ=ENV)
    assert (report.errors, report.pages, report.runs_created) == ([], 2, 200)


def connector(external_id: str = DEPLOYMENT) -> PrefectConnector:
    entry = PrefectSource(name="p", platform="prefect", environment="prod",
                          base_url="https://api.prefect.cloud/api/accounts/a/workspaces/w")  # fmt: skip
    return PrefectConnector(entry, external_id, Window(None))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state_type", "expected"),
    [("SCHEDULED", "queued"), ("PENDING", "queued"), ("RUNNING", "running"),
     ("PAUSED", "running"), ("CANCELLING", "running"), ("COMPLETED", "success"),
     ("FAILED", "failed"), ("CRASHED", "failed"), ("CANCELLED", "cancelled"),
     ("SUSPENDED_SOMEHOW", "unknown")],
)  # fmt: skip
def test_state_types(state_type, expected) -> None:
    mapped = connector().map_run(prefect_run(1, state_type, "Named"))
    assert (mapped.status.value, mapped.source_status) == (expected, f"{state_type}/Named")


def test_the_deployment_id_must_be_a_uuid_and_the_url_is_the_api_url() -> None:
    with pytest.raises(ValueError, match="not a Prefect deployment id"):
        connector("orders-deployment")
    request = connector().page_request("400")
    assert request.url == "https://api.prefect.cloud/api/accounts/a/workspaces/w/flow_runs/filter"
    assert request.method == "POST" and request.json is not None
    assert (request.json["offset"], request.json["limit"]) == (400, 200)


def test_a_replay_is_a_no_op_though_prefect_recomputes_its_estimates_on_every_read(
    api, engine, fake
) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="prefect", external_id=DEPLOYMENT)
    prefect = PrefectFake(fake, TOKEN)
    prefect.runs = [prefect_run(1, "RUNNING"), prefect_run(2, "SCHEDULED", "Late"),
                    prefect_run(3), prefect_run(4, "FAILED")]  # fmt: skip
    first = ingest(engine, sources(prefect_source(fake)), environ=ENV)
    assert (first.errors, first.runs_created) == ([], 4)
    stored = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs"))["items"]

    replay = ingest(engine, sources(prefect_source(fake)), environ=ENV)
    assert (replay.runs_created, replay.runs_updated, replay.runs_unchanged) == (0, 0, 4)
    assert ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs"))["items"] == stored
    assert prefect.reads == 2  # each read answered other estimates for runs 1 and 2
    for run in stored:
        payload = run["source_payload"]
        assert "estimated_run_time" not in payload and "estimated_start_time_delta" not in payload
        assert payload["run_count"] == 1 and "total_run_time" in payload
