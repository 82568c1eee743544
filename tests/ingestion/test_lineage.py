"""POST /api/v1/lineage: OpenLineage run events pushed by the platforms (issue 7 §3)."""

from __future__ import annotations

import gzip
import itertools
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from ingestion_fakes import toml_text
from openlineage.client import OpenLineageClient
from openlineage.client.event_v2 import Job, Run, RunEvent, RunState
from openlineage.client.facet_v2 import error_message_run
from openlineage.client.transport.http import (
    ApiKeyTokenProvider,
    HttpCompression,
    HttpConfig,
    HttpTransport,
)
from sqlalchemy import Engine

from chm.app import create_app
from chm.core.settings import Environment, Settings
from factories import API, make_client, make_pipeline, ok
from live import serve_in_thread

KEY = "ol-key-Acme-7f3a9c2e51"
OTHER_KEY = "ol-key-Beta-0b8d4e6f13"
NAMESPACE = "spark://acme-prod"
PRODUCER = "https://github.com/OpenLineage/OpenLineage/tree/1.54.0/integration/spark"
SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"


def lineage_sources(tmp_path: Path, chm_env: str = "development") -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(toml_text(
        {"name": "acme-spark", "platform": "spark", "environment": "prod", "client": "Acme",
         "openlineage_namespace": NAMESPACE, "token_env": "ACME_OL_KEY", "chm_env": chm_env},
        {"name": "beta-spark", "platform": "spark", "environment": "prod", "client": "Beta",
         "openlineage_namespace": "spark://beta-prod", "token_env": "BETA_OL_KEY",
         "chm_env": chm_env},
    ))  # fmt: skip
    return path


@pytest.fixture
def lineage_app(db_url, engine, tmp_path, monkeypatch) -> Iterator[tuple[TestClient, dict]]:
    monkeypatch.setenv("ACME_OL_KEY", KEY)
    monkeypatch.setenv("BETA_OL_KEY", OTHER_KEY)
    settings = Settings(database_url=db_url, config=lineage_sources(tmp_path), _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as api:
        acme = make_client(api, "Acme")
        pipeline = make_pipeline(api, acme, platform="spark", external_id="orders_etl.load")
        yield api, pipeline


def event(kind: str | None, at: str, run_id: str, job: str = "orders_etl.load",
          namespace: str = NAMESPACE, **run_facets: Any) -> dict[str, Any]:  # fmt: skip
    body: dict[str, Any] = {
        "eventTime": at, "producer": PRODUCER, "schemaURL": SCHEMA,
        "run": {"runId": run_id, "facets": run_facets},
        "job": {"namespace": namespace, "name": job, "facets": {}},
        "inputs": [{"namespace": "s3://acme-raw", "name": "orders"}], "outputs": [],
    }  # fmt: skip
    if kind is not None:
        body["eventType"] = kind
    return body


def post(api: TestClient, body: Any, key: str | None = KEY, gzipped: bool = False) -> Any:
    headers = {"content-type": "application/json"}
    if key is not None:
        headers["authorization"] = f"Bearer {key}"
    content = orjson.dumps(body) if not isinstance(body, bytes) else body
    if gzipped:
        content, headers["content-encoding"] = gzip.compress(content), "gzip"
    return api.post(f"{API}/lineage", content=content, headers=headers)


def the_run(api: TestClient, pipeline: dict) -> dict[str, Any] | None:
    items = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs"))["items"]
    assert len(items) <= 1
    return items[0] if items else None


FAIL_FACET = {"errorMessage": {"message": "Job aborted: stage 3 failed (OutOfMemoryError)",
                               "programmingLanguage": "JAVA", "_producer": PRODUCER,
                               "_schemaURL": "https://openlineage.io/spec/facets/1-0-0/ErrorMessageRunFacet.json"}}  # fmt: skip


def test_start_then_fail_records_a_failed_run_and_answers_201_then_200(lineage_app) -> None:
    api, pipeline = lineage_app
    run_id = str(uuid.uuid4())
    started = post(api, event("START", "2026-03-01T10:00:00.000Z", run_id))
    assert started.status_code == 201, started.text
    assert started.json() | {"pipeline_id": None} == {"result": "created", "pipeline_id": None,
                                                       "external_run_id": run_id}  # fmt: skip
    assert the_run(api, pipeline)["status"] == "running"  # type: ignore[index]
    failed = post(api, event("FAIL", "2026-03-01T10:07:30Z", run_id, **FAIL_FACET), gzipped=True)
    assert (failed.status_code, failed.json()["result"]) == (201, "updated")
    again = post(api, event("FAIL", "2026-03-01T10:07:30Z", run_id, **FAIL_FACET))
    assert (again.status_code, again.json()["result"]) == (200, "unchanged")
    run = the_run(api, pipeline)
    assert run is not None
    assert (run["status"], run["source_status"]) == ("failed", "FAIL")
    assert run["error_message"] == "Job aborted: stage 3 failed (OutOfMemoryError)"
    assert (run["started_at"], run["finished_at"]) == (
        "2026-03-01T10:00:00Z",
        "2026-03-01T10:07:30Z",
    )
    assert run["duration_seconds"] == 450.0
    assert run["source_payload"]["eventType"] == "FAIL"


def final_state(run: dict[str, Any]) -> tuple[Any, ...]:
    keys = ("status", "source_status", "started_at", "finished_at", "duration_seconds",
            "error_message", "source_payload")  # fmt: skip
    return tuple(run[k] for k in keys)


@pytest.mark.parametrize("terminal", ["COMPLETE", "FAIL", "ABORT"])
def test_any_order_and_repeats_end_as_the_events_in_order_once(lineage_app, terminal) -> None:
    api, pipeline = lineage_app
    facets = FAIL_FACET if terminal == "FAIL" else {}
    steps = [("START", "2026-03-01T10:00:00Z", {}), ("RUNNING", "2026-03-01T10:01:00Z", {}),
             (terminal, "2026-03-01T10:05:00Z", facets)]  # fmt: skip
    expected = None
    for order in itertools.permutations(steps):
        run_id = str(uuid.uuid4())
        for kind, at, extra in [*order, order[0]]:  # every order, the first event twice
            response = post(api, event(kind, at, run_id, **extra))
            assert response.status_code in (200, 201), response.text
        items = ok(api.get(f"{API}/pipelines/{pipeline['id']}/runs", params={"limit": 50}))["items"]
        run = next(r for r in items if r["external_run_id"] == run_id)
        state = (*final_state(run)[:-1], run["source_payload"]["eventType"])
        expected = expected or state
        assert state == expected, order
    assert expected is not None
    assert expected[0] == {"COMPLETE": "success", "FAIL": "failed", "ABORT": "cancelled"}[terminal]
    assert (expected[2], expected[3]) == ("2026-03-01T10:00:00Z", "2026-03-01T10:05:00Z")


def test_other_and_events_of_unmapped_jobs_change_nothing(lineage_app) -> None:
    api, pipeline = lineage_app
    other = post(api, event("OTHER", "2026-03-01T10:00:00Z", str(uuid.uuid4())))
    assert (other.status_code, other.json()["result"]) == (200, "unchanged")
    first = post(api, event("START", "2026-03-01T10:00:00Z", str(uuid.uuid4()), job="adhoc.query"))
    second = post(api, event("COMPLETE", "2026-03-01T10:00:09Z", str(uuid.uuid4()), job="x.y"))
    assert (first.status_code, first.json()["result"]) == (202, "ignored")
    assert second.json()["ignored_total"] == first.json()["ignored_total"] + 1
    assert the_run(api, pipeline) is None


def test_keys_are_checked_per_namespace(lineage_app) -> None:
    api, pipeline = lineage_app
    run_id = str(uuid.uuid4())
    for key in (None, "not-a-key", f"{KEY}x", OTHER_KEY):
        response = post(api, event("START", "2026-03-01T10:00:00Z", run_id), key=key)
        assert response.status_code == 401, key
        assert response.headers["content-type"] == "application/problem+json"
        assert KEY not in response.text and OTHER_KEY not in response.text
    basic = api.post(f"{API}/lineage", json=event("START", "2026-03-01T10:00:00Z", run_id),
                     headers={"authorization": f"Basic {KEY}"})  # fmt: skip
    assert basic.status_code == 401
    assert the_run(api, pipeline) is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"eventType": "START"}, "eventTime"),
        ({**event("START", "2026-03-01T10:00:00Z", "r1"), "eventType": "BEGIN"}, "eventType"),
        ({**event("START", "2026-03-01T10:00:00Z", "r1"), "run": {"facets": {}}}, "run.runId"),
        ({**event("START", "2026-03-01T10:00:00Z", "r1"), "job": {"namespace": NAMESPACE}}, "job.name"),
        (event("START", "yesterday at ten", "r1"), "eventTime"),
        ([1, 2], "body"),
    ],
)  # fmt: skip
def test_a_body_that_is_not_a_run_event_is_a_422_problem(lineage_app, body, field) -> None:
    api, pipeline = lineage_app
    response = post(api, body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [issue["field"] for issue in response.json()["errors"]]
    assert the_run(api, pipeline) is None


def test_bodies_that_are_not_json_or_not_gzip_are_400(lineage_app) -> None:
    api, _ = lineage_app
    assert post(api, b"{not json").status_code == 400
    broken = api.post(f"{API}/lineage", content=b"\x1f\x8b\x08garbage",
                      headers={"authorization": f"Bearer {KEY}", "content-encoding": "gzip"})  # fmt: skip
    assert broken.status_code == 400 and broken.json()["detail"].startswith(
        "the body is not valid gzip"
    )


def test_the_payload_is_redacted_and_the_key_is_stored_nowhere(lineage_app, engine: Engine) -> None:
    api, pipeline = lineage_app
    body = event("START", "2026-03-01T10:00:00Z", str(uuid.uuid4()),
                 spark_properties={"properties": {"spark.hadoop.fs.s3a.secret.key": "AKIA-very-secret",
                                                  "spark.app.name": "orders",
                                                  "note": f"called with {KEY}"}})  # fmt: skip
    assert post(api, body).status_code == 201
    payload = the_run(api, pipeline)["source_payload"]  # type: ignore[index]
    properties = payload["run"]["facets"]["spark_properties"]["properties"]
    assert properties["spark.hadoop.fs.s3a.secret.key"] == "[REDACTED]"
    assert properties["note"] == "called with [REDACTED]"
    assert properties["spark.app.name"] == "orders"
    with engine.connect() as connection:
        stored = repr(connection.execute(sa.text("SELECT * FROM runs")).all())
    assert KEY not in stored and "AKIA-very-secret" not in stored


def test_a_production_server_takes_the_namespace_key_on_lineage_only(
    db_url, engine, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("ACME_OL_KEY", KEY)
    monkeypatch.setenv("BETA_OL_KEY", OTHER_KEY)
    settings = Settings(
        env=Environment.production,
        database_url=db_url,
        api_token="prod-api-token-1",
        config=lineage_sources(tmp_path, chm_env="production"),
        _env_file=None,
    )  # type: ignore[call-arg]
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as api:
        api.headers["Authorization"] = "Bearer prod-api-token-1"
        make_pipeline(
            api, make_client(api, "Acme"), platform="spark", external_id="orders_etl.load"
        )
        assert post(api, event("START", "2026-03-01T10:00:00Z", "r-prod")).status_code == 201
        assert (
            post(
                api, event("START", "2026-03-01T10:00:00Z", "r-prod"), key="prod-api-token-1"
            ).status_code
            == 401
        )
        del api.headers["Authorization"]
        assert api.get(f"{API}/runs").status_code == 401
        assert api.get(f"{API}/runs", headers={"authorization": f"Bearer {KEY}"}).status_code == 401


@pytest.mark.parametrize("compression", [None, HttpCompression.GZIP])
def test_the_openlineage_python_client_reports_a_failed_run(
    db_url, engine, tmp_path, monkeypatch, compression
) -> None:
    monkeypatch.setenv("ACME_OL_KEY", KEY)
    monkeypatch.setenv("BETA_OL_KEY", OTHER_KEY)
    settings = Settings(database_url=db_url, config=lineage_sources(tmp_path), _env_file=None)  # type: ignore[call-arg]
    with serve_in_thread(create_app(settings, engine)) as base:
        with TestClient(create_app(settings, engine)) as api:
            pipeline = make_pipeline(api, make_client(api, "Acme"), platform="spark",
                                     external_id="orders_etl.load")  # fmt: skip
        config = HttpConfig(
            url=base, auth=ApiKeyTokenProvider({"apiKey": KEY}), compression=compression
        )
        client = OpenLineageClient(transport=HttpTransport(config))
        run_id = str(uuid.uuid4())
        job = Job(namespace=NAMESPACE, name="orders_etl.load")
        client.emit(RunEvent(eventType=RunState.START, eventTime="2026-03-01T10:00:00.000Z",
                             run=Run(runId=run_id), job=job, producer=PRODUCER))  # fmt: skip
        failure = error_message_run.ErrorMessageRunFacet(
            message="Job aborted: stage 3 failed (OutOfMemoryError)", programmingLanguage="JAVA"
        )
        client.emit(RunEvent(eventType=RunState.FAIL, eventTime="2026-03-01T10:07:30.000Z",
                             run=Run(runId=run_id, facets={"errorMessage": failure}), job=job,
                             producer=PRODUCER))  # fmt: skip
        with TestClient(create_app(settings, engine)) as api:
            run = the_run(api, pipeline)
    assert run is not None and run["external_run_id"] == run_id
    assert (run["status"], run["error_message"]) == (
        "failed",
        "Job aborted: stage 3 failed (OutOfMemoryError)",
    )
    assert (run["started_at"], run["finished_at"]) == (
        "2026-03-01T10:00:00Z",
        "2026-03-01T10:07:30Z",
    )
