"""`POST /api/v1/runs:batch` (issue 17; monitoring contract, "Batch recording"):
each item parsed, checked and answered on its own, the valid ones stored in
one transaction with ingestion's upsert and no-regression rule."""

from __future__ import annotations

import json
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from threading import Barrier
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.exc import OperationalError

from chm.app import create_app
from chm.core.db import make_session_factory
from chm.core.redaction import REDACTED
from chm.core.settings import Environment, Settings
from chm.ingestion.batch import BATCH_SOURCE
from chm.ingestion.batch.service import record_batch
from chm.ingestion.batch.store import batch_store
from chm.ingestion.store import run_store
from chm.models import IngestionSource, Run
from factories import API, make_client, make_pipeline, make_run, ok
from live import serve_in_thread

BATCH = f"{API}/runs:batch"
T0 = "2026-03-01T10:00:00Z"
T1 = "2026-03-01T10:05:00Z"
T2 = "2026-03-01T10:09:00Z"
NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
LATER = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TOKEN = "batch-prod-token-7d2e"


def item(pipeline: dict[str, Any], external_run_id: str, status: str = "success", **fields: Any):
    finished = {"finished_at": T1} if status in ("success", "failed", "cancelled") else {}
    return {
        "pipeline_id": pipeline["id"],
        "external_run_id": external_run_id,
        "status": status,
        "started_at": T0,
        **finished,
        **fields,
    }


def post_batch(api: TestClient, *runs: Any) -> dict[str, Any]:
    return ok(api.post(BATCH, json={"runs": list(runs)}))


def results(answer: dict[str, Any]) -> list[str]:
    return [entry["result"] for entry in answer["items"]]


def stored(api: TestClient, pipeline: dict[str, Any]) -> dict[str, dict[str, Any]]:
    page = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs", params={"limit": 500}))
    return {run["external_run_id"]: run for run in page["items"]}


def test_mixed_items_are_answered_in_order_and_only_the_good_are_stored(api) -> None:
    client = make_client(api)
    pipeline = make_pipeline(api, client)
    inactive = make_pipeline(api, client)
    ok(api.delete(f"{API}/pipelines/{inactive['id']}"))
    answer = post_batch(
        api,
        item(pipeline, "good-1"),
        item({"id": "987654"}, "r"),  # no such pipeline
        item(pipeline, "bad-fields", status="exploded", metrics={"rows": [1]}),
        item(inactive, "r"),
        item(pipeline, "backwards", started_at=T1, finished_at=T0),
        "not an object",
        item({"id": "12x"}, "r"),  # can be no pipeline id
        item(pipeline, "good-2", status="running"),
    )
    assert results(answer) == [
        "created", "error", "error", "error", "error", "error", "error", "created",
    ]  # fmt: skip
    assert (answer["created"], answer["updated"], answer["unchanged"], answer["errors"]) == (
        2, 0, 0, 6,
    )  # fmt: skip
    assert [entry["index"] for entry in answer["items"]] == list(range(8))
    errors = [entry["error"] for entry in answer["items"]]
    assert errors[0] is None and errors[7] is None
    assert (errors[1]["status"], errors[1]["detail"]) == (404, "pipeline '987654' not found")
    assert errors[1]["type"] == "https://chm.dev/problems/not-found"
    assert errors[2]["status"] == 422
    # Field paths are relative to the item.
    assert {(e["field"], e["code"]) for e in errors[2]["errors"]} == {
        ("status", "invalid_choice"), ("metrics.rows", "invalid_metric"),
    }  # fmt: skip
    assert errors[3]["status"] == 409
    assert errors[3]["type"] == "https://chm.dev/problems/inactive-pipeline"
    assert errors[4]["errors"] == [{
        "field": "finished_at", "code": "before_started_at",
        "message": "finished_at must not be before started_at",
    }]  # fmt: skip
    assert (errors[5]["status"], errors[5]["errors"][0]["code"]) == (422, "invalid_type")
    assert (errors[6]["status"], errors[6]["detail"]) == (404, "pipeline '12x' not found")
    assert all(entry["run_id"] is None for entry in answer["items"][1:7])
    runs = stored(api, pipeline)
    assert set(runs) == {"good-1", "good-2"}
    assert answer["items"][0]["run_id"] == runs["good-1"]["id"]
    assert answer["items"][7]["run_id"] == runs["good-2"]["id"]
    assert stored(api, inactive) == {}


def test_item_errors_are_the_single_run_posts_answers(api) -> None:
    client = make_client(api)
    pipeline = make_pipeline(api, client)
    inactive = make_pipeline(api, client)
    ok(api.delete(f"{API}/pipelines/{inactive['id']}"))
    cases = [
        (pipeline, {"status": "exploded", "external_run_id": "a"}),
        (pipeline, {"status": "success", "external_run_id": "b", "started_at": T1,
                    "finished_at": T0}),
        (inactive, {"status": "success", "external_run_id": "c"}),
        ({"id": "987654"}, {"status": "success", "external_run_id": "d"}),
    ]  # fmt: skip
    for target, body in cases:
        single = api.post(f"{API}/pipelines/{target['id']}/runs", json=body)
        answer = post_batch(api, {"pipeline_id": target["id"], **body})
        assert answer["items"][0]["error"] == single.json()


def test_an_inactive_clients_active_pipeline_takes_runs_as_with_the_single_post(api) -> None:
    client = make_client(api)
    pipeline = make_pipeline(api, client)
    ok(api.delete(f"{API}/clients/{client['id']}"))
    make_run(api, pipeline, external_run_id="single")
    assert results(post_batch(api, item(pipeline, "batch"))) == ["created"]


def test_a_replay_is_unchanged_and_writes_nothing(api) -> None:
    pipeline = make_pipeline(api, make_client(api))
    runs = [
        item(pipeline, "r1", source_payload={"host": "w1", "nested": {"b": 1, "a": [1, 2]}}),
        item(pipeline, "r2", status="failed", error_message="boom", metrics={"rows": 3}),
        item(pipeline, "r3", status="running"),
    ]
    first = post_batch(api, *runs)
    before = stored(api, pipeline)
    replay = post_batch(api, *runs)
    assert results(replay) == ["unchanged"] * 3
    assert (replay["created"], replay["updated"], replay["unchanged"]) == (0, 0, 3)
    assert [e["run_id"] for e in replay["items"]] == [e["run_id"] for e in first["items"]]
    # Not written again: the stored rows keep their times.
    assert stored(api, pipeline) == before
    # The same documents with their keys in another order are the same run.
    reordered = dict(runs[0], source_payload={"nested": {"a": [1, 2], "b": 1}, "host": "w1"})
    assert results(post_batch(api, reordered)) == ["unchanged"]


def test_a_changed_run_is_updated_with_the_single_posts_stored_shape(api) -> None:
    pipeline = make_pipeline(api, make_client(api))
    created = post_batch(api, item(pipeline, "r1", status="running"))
    secret_text = "connect failed: password=hunter2-secret"
    done = item(
        pipeline, "r1", status="failed", finished_at=T2, error_message=secret_text,
        metrics={"rows": 7, "label": "eu"}, source_payload={"api_token": "abc123", "try": 2},
    )  # fmt: skip
    answer = post_batch(api, done)
    assert results(answer) == ["updated"]
    assert answer["items"][0]["run_id"] == created["items"][0]["run_id"]
    run = stored(api, pipeline)["r1"]
    # The single-run POST's stored shape, from the same fields.
    single = make_run(api, pipeline, **{k: v for k, v in done.items() if k != "pipeline_id"}
                      | {"external_run_id": "single"})  # fmt: skip
    same = ("status", "started_at", "finished_at", "duration_seconds", "metrics",
            "error_message", "source_payload", "source_status")  # fmt: skip
    assert {k: run[k] for k in same} == {k: single[k] for k in same}
    assert run["duration_seconds"] == 540.0
    assert run["error_message"] == f"connect failed: password={REDACTED}"
    assert run["source_payload"] == {"api_token": REDACTED, "try": 2}
    assert run["ingested_at"] is not None and single["ingested_at"] is None


def test_the_no_regression_rule_keeps_a_terminal_run(api) -> None:
    pipeline = make_pipeline(api, make_client(api))
    post_batch(api, item(pipeline, "r1", finished_at=T2))
    answer = post_batch(
        api,
        item(pipeline, "r1", status="running"),  # an older read: never back to running
        item(pipeline, "r1", status="failed", finished_at=T1),  # ended before the stored end
    )
    assert results(answer) == ["unchanged", "unchanged"]
    run = stored(api, pipeline)["r1"]
    assert (run["status"], run["finished_at"]) == ("success", T2)
    # A run stored without a start keeps the start a later item brings, and a
    # later item without one keeps the stored start.
    post_batch(api, item(pipeline, "r2", status="running", started_at=None))
    post_batch(api, item(pipeline, "r2", status="running"))
    answer = post_batch(api, item(pipeline, "r2", started_at=None, finished_at=T2))
    assert results(answer) == ["updated"]
    run = stored(api, pipeline)["r2"]
    assert (run["status"], run["started_at"], run["duration_seconds"]) == ("success", T0, 540.0)


def test_an_item_that_ended_before_the_stored_start_is_an_older_attempt(api) -> None:
    pipeline = make_pipeline(api, make_client(api))
    post_batch(api, item(pipeline, "r1", status="running", started_at=T1))
    answer = post_batch(
        api,
        item(pipeline, "r1", status="success", started_at=None, finished_at=T0),
        item(pipeline, "r2"),
    )
    assert results(answer) == ["unchanged", "created"]
    assert stored(api, pipeline)["r1"]["status"] == "running"


def test_items_of_one_run_are_recorded_in_order(api) -> None:
    client = make_client(api)
    first, second = make_pipeline(api, client), make_pipeline(api, client)
    answer = post_batch(
        api,
        item(first, "a", status="running"),
        item(first, "a", status="success"),  # then it ended: an update
        item(first, "a", status="success"),  # the same again: unchanged
        item(first, "b", status="success"),
        item(first, "b", status="running"),  # after its end: never back
        item(second, "a", status="failed"),  # the same id on another pipeline: its own run
    )
    assert results(answer) == ["created", "updated", "unchanged", "created", "unchanged",
                               "created"]  # fmt: skip
    ids = [entry["run_id"] for entry in answer["items"]]
    assert ids[0] == ids[1] == ids[2] and ids[3] == ids[4]
    assert len({ids[0], ids[3], ids[5]}) == 3
    assert (answer["created"], answer["updated"], answer["unchanged"]) == (3, 1, 2)
    assert {k: r["status"] for k, r in stored(api, first).items()} == {
        "a": "success",
        "b": "success",
    }
    assert stored(api, second)["a"]["status"] == "failed"


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"runs": []}, "runs", "too_short"),
        ({}, "runs", "required"),
        ({"runs": {"a": 1}}, "runs", "list_type"),
        ({"runs": [{}], "extra": 1}, "extra", "unknown_field"),
        ([{"status": "success"}], "body", "invalid_type"),
        ("runs", "body", "invalid_type"),
    ],
)
def test_a_body_that_is_not_an_object_of_runs_is_a_422(api, body, field, code) -> None:
    response = api.post(BATCH, json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert [(e["field"], e["code"]) for e in response.json()["errors"]] == [(field, code)]


def test_more_than_1000_runs_is_a_422_that_stores_nothing(api) -> None:
    pipeline = make_pipeline(api, make_client(api))
    response = api.post(BATCH, json={"runs": [item(pipeline, f"r{n}") for n in range(1001)]})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "runs"
    assert stored(api, pipeline) == {}
    assert post_batch(api, *[item(pipeline, f"r{n}") for n in range(1000)])["created"] == 1000


def test_a_body_that_is_not_json_is_a_400(api) -> None:
    response = api.post(BATCH, content=b'{"runs": [', headers={"content-type": "application/json"})
    assert response.status_code == 400


def test_a_body_past_the_limit_is_a_413(db_url, engine) -> None:
    settings = Settings(database_url=db_url, max_body_bytes=2_000, _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as api:
        pipeline = make_pipeline(api, make_client(api))
        runs = [item(pipeline, f"r{n}") for n in range(30)]
        response = api.post(BATCH, json={"runs": runs})
        assert response.status_code == 413
        assert stored(api, pipeline) == {}


def test_values_a_batch_cannot_store_are_the_items_422(api) -> None:
    pipeline = make_pipeline(api, make_client(api))
    runs = [
        item(pipeline, "big", metrics={"n": 2**70}),
        item(pipeline, "lone", source_payload={"k": "\udc00"}),  # sent escaped, as JSON allows
        item(pipeline, "ok"),
    ]
    body = json.dumps({"runs": runs})
    answer = ok(api.post(BATCH, content=body, headers={"content-type": "application/json"}))
    assert results(answer) == ["error", "error", "created"]
    big, lone = (entry["error"]["errors"][0] for entry in answer["items"][:2])
    assert (big["field"], big["code"]) == ("metrics", "unstorable_value")
    assert (lone["field"], lone["code"]) == ("source_payload", "string_unicode")


def test_a_lone_surrogate_in_a_payload_is_a_422_on_both_endpoints(api) -> None:
    pipeline = make_pipeline(api, make_client(api))
    run = {"status": "success", "external_run_id": "r", "source_payload": {"k": "\udc00"}}
    headers = {"content-type": "application/json"}
    single = api.post(f"{API}/pipelines/{pipeline['id']}/runs", content=json.dumps(run),
                      headers=headers)  # fmt: skip
    assert single.status_code == 422
    body = json.dumps({"runs": [{"pipeline_id": pipeline["id"], **run}]})
    answer = ok(api.post(BATCH, content=body, headers=headers))
    assert answer["items"][0]["error"] == single.json()


def test_the_openapi_document_shows_the_items_and_the_answer(api) -> None:
    document = ok(api.get("/openapi.json"))
    operation = document["paths"]["/api/v1/runs:batch"]["post"]
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/BatchAnswer"
    }
    schemas = document["components"]["schemas"]
    runs = schemas["BatchRequest"]["properties"]["runs"]
    assert (runs["minItems"], runs["maxItems"]) == (1, 1000)
    # Any item is taken (a bad one is its own error); a BatchRun is stored.
    assert runs["items"] == {"anyOf": [{"$ref": "#/components/schemas/BatchRun"}, {}]}
    assert {"pipeline_id", "external_run_id", "status"} <= set(schemas["BatchRun"]["required"])


def test_production_needs_the_token(db_url, engine) -> None:
    settings = Settings(env=Environment.production, database_url=db_url, api_token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as api:
        client = ok(api.post(f"{API}/clients", json={"name": "Acme"}, headers=auth), 201)
        body = {"client_id": client["id"], "name": "p", "platform": "airflow",
                "pipeline_type": "batch", "environment": "prod"}  # fmt: skip
        pipeline = ok(api.post(f"{API}/pipelines", json=body, headers=auth), 201)
        runs = {"runs": [item(pipeline, "r1")]}
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            refused = api.post(BATCH, json=runs, headers=headers)
            assert refused.status_code == 401
            assert refused.headers["content-type"] == "application/problem+json"
        path = f"{API}/pipelines/{pipeline['id']}/runs"
        assert ok(api.get(path, headers=auth))["items"] == []
        assert results(ok(api.post(BATCH, json=runs, headers=auth))) == ["created"]


def test_the_runs_count_in_the_ingestion_counters_and_metrics(api, engine) -> None:
    pipeline = make_pipeline(api, make_client(api))
    post_batch(api, item(pipeline, "r1", status="running"), item(pipeline, "r2"))
    post_batch(api, item(pipeline, "r1"), item(pipeline, "r2"), item({"id": "987654"}, "x"))
    with engine.connect() as connection:
        counters = connection.execute(
            sa.select(
                IngestionSource.runs_created, IngestionSource.runs_updated,
                IngestionSource.runs_unchanged, IngestionSource.runs_skipped,
            ).where(IngestionSource.name == BATCH_SOURCE)
        ).one()  # fmt: skip
    assert tuple(counters) == (2, 1, 1, 1)
    scraped = {
        (sample.labels["source"], sample.labels["outcome"]): sample.value
        for family in text_string_to_metric_families(api.get("/metrics").text)
        if family.name == "chm_ingested_runs"
        for sample in family.samples
        if sample.name == "chm_ingested_runs_total"
    }
    assert scraped == {
        (BATCH_SOURCE, "created"): 2, (BATCH_SOURCE, "updated"): 1,
        (BATCH_SOURCE, "unchanged"): 1, (BATCH_SOURCE, "skipped"): 1,
    }  # fmt: skip


def test_the_service_stamps_the_runs_it_writes_with_its_clock(api, engine) -> None:
    pipeline = make_pipeline(api, make_client(api))
    sessions = make_session_factory(engine, write=True)
    for now, status in ((NOW, "running"), (LATER, "running"), (LATER, "success")):
        with sessions.begin() as session:
            record_batch(session, [item(pipeline, "r1", status=status)], now)
    with engine.connect() as connection:
        times = connection.execute(sa.select(Run.created_at, Run.updated_at, Run.ingested_at)).one()
    assert tuple(times) == (NOW, LATER, LATER)


@pytest.fixture
def live(settings, engine):
    with serve_in_thread(create_app(settings, engine)) as url:
        yield url


def test_concurrent_batches_on_shared_pipelines_lose_nothing(live) -> None:
    with httpx.Client(base_url=live, timeout=60) as http:
        client = ok(http.post(f"{API}/clients", json={"name": "Acme"}), 201)
        pipelines = []
        for n in range(6):
            body = {"client_id": client["id"], "name": f"p{n}", "platform": "airflow",
                    "pipeline_type": "batch", "environment": "prod"}  # fmt: skip
            pipelines.append(ok(http.post(f"{API}/pipelines", json=body), 201))
    # Each batch names every pipeline, in its own order, with its own runs and
    # shared ones: overlapping locks and keys. Half the batches say the shared
    # runs are running, half that they succeeded: whoever comes first, they
    # end succeeded (never back to running).
    bodies = []
    for racer in range(6):
        order = pipelines[racer:] + pipelines[:racer]
        own = [item(p, f"own-{racer}-{n}") for n in range(20) for p in order]
        status = "running" if racer % 2 else "success"
        shared = [item(p, f"shared-{n}", status=status) for n in range(20) for p in pipelines]
        bodies.append({"runs": (own + shared)[::-1] if racer % 2 else own + shared})
    barrier = Barrier(len(bodies))

    def send(body: dict[str, Any]) -> httpx.Response:
        with httpx.Client(base_url=live, timeout=120) as http:
            barrier.wait()
            return http.post(BATCH, json=body)

    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(send, bodies))
    assert [answer.status_code for answer in answers] == [200] * len(bodies), answers[0].text
    outcomes: Counter[str] = Counter()
    shared_ids: dict[tuple[str, str], set[str]] = {}
    for answer, body in zip(answers, bodies, strict=True):
        for entry, sent in zip(answer.json()["items"], body["runs"], strict=True):
            outcomes[entry["result"]] += 1
            key = (sent["pipeline_id"], sent["external_run_id"])
            shared_ids.setdefault(key, set()).add(entry["run_id"])
    # Every run created exactly once, whoever came first.
    assert outcomes["created"] == 6 * 120 + 120
    assert sum(outcomes.values()) == 6 * 120 + 6 * 120 and outcomes["error"] == 0
    assert all(len(ids) == 1 for ids in shared_ids.values())
    with httpx.Client(base_url=live, timeout=60) as http:
        runs = [
            run
            for p in pipelines
            for run in ok(http.get(f"{API}/pipelines/{p['id']}/runs", params={"limit": 500}))[
                "items"
            ]
        ]
    assert len(runs) == 6 * 120 + 120
    shared_statuses = {r["status"] for r in runs if r["external_run_id"].startswith("shared-")}
    assert shared_statuses == {"success"}


@pytest.mark.postgres_only
def test_a_batch_takes_the_ingestion_stores_lock_of_each_pipeline(api, engine) -> None:
    client = make_client(api)
    pipelines = [int(make_pipeline(api, client)["id"]) for _ in range(3)]
    sessions = make_session_factory(engine, write=True)
    for locked in pipelines:
        with sessions.begin() as holder, sessions.begin() as batch:
            # The engine (or the OpenLineage intake) holds one pipeline...
            run_store(engine).lock_pipeline(holder, locked)
            batch.execute(sa.text("SET LOCAL lock_timeout = '200ms'"))
            # ... and a batch naming it waits for it.
            with pytest.raises(OperationalError, match="lock timeout"):
                batch_store(engine).lock_pipelines(batch, pipelines)
