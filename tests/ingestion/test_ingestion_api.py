"""`POST /api/v1/ingestions`: the same engine and report over HTTP (issue 3 §7)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from ingestion_fakes import FakeServer, generic_run, serve_generic, source, toml_text
from sqlalchemy import Engine

from chm.app import create_app
from chm.core.settings import Settings
from factories import API, make_client, make_pipeline, ok
from live import serve_in_thread

REPORT_KEYS = {
    "pipelines", "pages", "runs_created", "runs_updated", "runs_unchanged", "runs_skipped",
    "errors",
}  # fmt: skip


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def app_with(db_url: str, engine: Engine, config: Path | None) -> TestClient:
    settings = Settings(database_url=db_url, config=config, _env_file=None)  # type: ignore[call-arg]
    return TestClient(create_app(settings, engine), raise_server_exceptions=False)


def config_file(tmp_path: Path, *entries: dict[str, Any]) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(toml_text(*entries))
    return path


def test_post_ingestions_runs_the_engine_and_answers_the_report(
    db_url, engine, fake, tmp_path
) -> None:
    with app_with(db_url, engine, config_file(tmp_path, source(fake))) as api:
        client = make_client(api)
        pipeline = make_pipeline(api, client, platform="generic", external_id="p")
        serve_generic(fake, "p", [[generic_run("r1"), generic_run("r2")], [generic_run("r3")]])

        report = ok(api.post(f"{API}/ingestions"))
        assert set(report) == REPORT_KEYS
        assert report == {"pipelines": 1, "pages": 2, "runs_created": 3, "runs_updated": 0,
                          "runs_unchanged": 0, "runs_skipped": 0, "errors": []}  # fmt: skip
        replay = ok(api.post(f"{API}/ingestions", json={}))
        assert (replay["runs_created"], replay["runs_unchanged"]) == (0, 3)
        after = ok(api.get(f"{API}/pipelines/{pipeline['id']}"))
        assert after["last_ingested_at"] is not None and after["last_ingestion_error"] is None


def test_post_ingestions_scopes_to_a_client_or_a_pipeline(db_url, engine, fake, tmp_path) -> None:
    with app_with(db_url, engine, config_file(tmp_path, source(fake))) as api:
        acme, beta = make_client(api, "Acme"), make_client(api, "Beta")
        first = make_pipeline(api, acme, platform="generic", external_id="a1")
        make_pipeline(api, acme, platform="generic", external_id="a2")
        beta_pipeline = make_pipeline(api, beta, platform="generic", external_id="b1")
        for external_id in ("a1", "a2", "b1"):
            serve_generic(fake, external_id, [[generic_run(external_id)]])

        assert (
            ok(api.post(f"{API}/ingestions", json={"pipeline_id": first["id"]}))["pipelines"] == 1
        )
        assert ok(api.post(f"{API}/ingestions", json={"client_id": acme["id"]}))["pipelines"] == 2
        both = {"client_id": beta["id"], "pipeline_id": beta_pipeline["id"]}
        assert ok(api.post(f"{API}/ingestions", json=both))["runs_created"] == 1


def test_a_failing_pipeline_is_in_the_report_not_an_http_error(
    db_url, engine, fake, tmp_path
) -> None:
    with app_with(db_url, engine, config_file(tmp_path, source(fake))) as api:
        client = make_client(api)
        pipeline = make_pipeline(api, client, platform="generic", external_id="missing")
        report = ok(api.post(f"{API}/ingestions"))
        assert report["errors"] == [
            {
                "pipeline_id": pipeline["id"],
                "message": 'source \'generic-prod\': HTTP 404: {"error": "no such path"}',
            }
        ]
        stored = ok(api.get(f"{API}/pipelines/{pipeline['id']}"))
        assert stored["last_ingestion_error"] == report["errors"][0]["message"]


def test_bad_scopes_are_422_on_the_field(db_url, engine, fake, tmp_path) -> None:
    with app_with(db_url, engine, config_file(tmp_path, source(fake))) as api:
        acme, beta = make_client(api), make_client(api)
        pipeline = make_pipeline(api, beta, platform="generic", external_id="p")
        for body, field, code in (
            ({"client_id": "999999"}, "client_id", "not_found"),
            ({"client_id": "not-an-id"}, "client_id", "not_found"),
            ({"pipeline_id": "999999"}, "pipeline_id", "not_found"),
            (
                {"client_id": acme["id"], "pipeline_id": pipeline["id"]},
                "pipeline_id",
                "not_of_client",
            ),
            ({"pipeline": "1"}, "pipeline", "unknown_field"),
        ):
            response = api.post(f"{API}/ingestions", json=body)
            assert response.status_code == 422, body
            assert response.headers["content-type"] == "application/problem+json"
            assert [(e["field"], e["code"]) for e in response.json()["errors"]] == [(field, code)]
        malformed = api.post(
            f"{API}/ingestions", content=b"{oops", headers={"content-type": "application/json"}
        )
        assert malformed.status_code == 400
    assert fake.requests == []


def test_without_a_sources_file_the_answer_is_409_problem(db_url, engine, tmp_path) -> None:
    with app_with(db_url, engine, None) as api:
        response = api.post(f"{API}/ingestions")
        assert response.status_code == 409
        assert response.json()["type"].endswith("/ingestion-not-configured")
        assert "CHM_CONFIG is not set" in response.json()["detail"]
    broken = tmp_path / "broken.toml"
    broken.write_text("[[sources]]\nname = 'x'\nplatform = 'generic'\n")
    with app_with(db_url, engine, broken) as api:
        detail = api.post(f"{API}/ingestions").json()["detail"]
        assert str(broken) in detail and "field 'environment'" in detail


def test_an_api_ingestion_holds_no_transaction_while_it_waits_on_the_source(
    db_url, engine, fake, tmp_path
) -> None:
    settings = Settings(
        database_url=db_url, config=config_file(tmp_path, source(fake)), _env_file=None
    )  # type: ignore[call-arg]
    with serve_in_thread(create_app(settings, engine)) as base, httpx.Client(base_url=base) as http:
        client = http.post(f"{API}/clients", json={"name": "Acme"}).json()
        body = {"client_id": client["id"], "name": "slow", "platform": "generic",
                "pipeline_type": "batch", "environment": "prod", "external_id": "slow"}  # fmt: skip
        assert http.post(f"{API}/pipelines", json=body).status_code == 201
        serve_generic(fake, "slow", [[generic_run("r1")], [generic_run("r2")], [generic_run("r3")]])
        fake.page_delay = 0.5
        result: dict[str, Any] = {}
        worker = threading.Thread(
            target=lambda: result.update(http.post(f"{API}/ingestions", timeout=30).json())
        )
        worker.start()
        time.sleep(0.7)  # the first page is committed, the second is on its way
        started = time.monotonic()
        created = http.post(f"{API}/clients", json={"name": "Beta"}, timeout=30)
        elapsed = time.monotonic() - started
        worker.join(timeout=30)
    assert created.status_code == 201
    assert elapsed < 0.4, f"a write waited {elapsed:.2f}s behind the ingestion"
    assert result["runs_created"] == 3 and result["errors"] == []
