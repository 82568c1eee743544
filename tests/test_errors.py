"""Errors are problem+json (FR-016, AC-002) and never leak internals (SE-002)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError

from chm.app import create_app
from chm.core.settings import Settings
from factories import API, make_client


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://chm.dev/problems/")
    assert body["title"] and body["detail"]
    assert isinstance(body["errors"], list)
    return body


def test_body_that_is_not_json_is_400(api):
    response = api.post(
        f"{API}/clients", content=b"{name: Acme", headers={"content-type": "application/json"}
    )
    assert_problem(response, 400)


def test_every_invalid_field_is_listed_once(api):
    client = make_client(api)
    body = assert_problem(
        api.post(
            f"{API}/pipelines",
            json={
                "client_id": client["id"],
                "name": "",
                "platform": "Bad",
                "pipeline_type": "ok",
                "environment": "",
                "surprise": True,
            },
        ),
        422,
    )
    assert sorted(e["field"] for e in body["errors"]) == [
        "environment",
        "name",
        "platform",
        "surprise",
    ]
    assert body["detail"] == "4 fields are invalid"
    assert all(e["code"] and e["message"] for e in body["errors"])


def test_query_parameter_errors_name_the_parameter(api):
    body = assert_problem(
        api.get(f"{API}/runs", params={"since": "soon", "limit": 0, "status": "bad"}), 422
    )
    assert sorted(e["field"] for e in body["errors"]) == ["limit", "since", "status.0"]


def test_unknown_path_and_wrong_method(api):
    assert_problem(api.get(f"{API}/nothing-here"), 404)
    assert_problem(api.get("/nothing-here"), 404)
    assert_problem(api.put(f"{API}/clients"), 405)
    assert_problem(api.delete(f"{API}/runs/1"), 405)


@pytest.fixture
def bare_api(tmp_path: Path) -> Iterator[TestClient]:
    """The app over a database it never opens: routing answers before any query."""
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'unused.db'}", _env_file=None)  # type: ignore[call-arg]
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def test_every_405_lists_every_method_of_the_path(bare_api):
    """RFC 9110 §15.5.6: a 405 carries an Allow header with the methods the target
    resource supports, all of them, not only those of the first route matched."""
    paths = bare_api.get("/openapi.json").json()["paths"]
    checked = 0
    for template, operations in paths.items():
        documented = {method.upper() for method in operations}
        path = re.sub(r"{\w+}", "1", template)
        for method in sorted(set(HTTP_METHODS) - documented):
            response = bare_api.request(method, path)
            assert response.status_code == 405, (method, template)
            if method != "HEAD":  # a HEAD answer has no body
                assert assert_problem(response, 405)["type"].endswith("/method-not-allowed")
            allow = [m.strip() for m in response.headers["allow"].split(",")]
            assert len(allow) == len(set(allow)), (method, template, allow)
            assert set(allow) == documented, (method, template, allow)
            checked += 1
    assert len(paths) >= 20 and checked >= 3 * len(paths)


def test_database_failure_is_a_problem_without_sql(api, monkeypatch):
    from sqlalchemy.orm import Session

    def broken(*args, **kwargs):
        raise OperationalError(
            "SELECT secret_column FROM clients WHERE password='x'", {}, Exception("boom")
        )

    monkeypatch.setattr(Session, "scalars", broken)
    body = assert_problem(api.get(f"{API}/clients"), 503)
    assert "SELECT" not in str(body) and "password" not in str(body)


def test_unexpected_error_is_500_problem_without_trace(api, monkeypatch):
    from chm.clients import service

    def broken(*args, **kwargs):
        raise RuntimeError("internal detail /srv/chm/secret.py line 3")

    monkeypatch.setattr(service, "list_clients", broken)
    body = assert_problem(api.get(f"{API}/clients"), 500)
    assert "internal detail" not in str(body) and "Traceback" not in str(body)


def test_failed_commit_is_never_acknowledged(api, monkeypatch):
    from sqlalchemy.orm import Session

    original = Session.commit

    def failing_commit(self):
        raise OperationalError("COMMIT", {}, Exception("disk full"))

    monkeypatch.setattr(Session, "commit", failing_commit)
    response = api.post(f"{API}/clients", json={"name": "Acme"})
    assert response.status_code == 503
    monkeypatch.setattr(Session, "commit", original)
    assert api.get(f"{API}/clients").json()["items"] == []


@pytest.mark.parametrize("path", ["/openapi.json"])
def test_openapi_documents_every_endpoint_and_problem_responses(api, path):
    spec = api.get(path).json()
    paths = spec["paths"]
    expected = {
        "/api/v1/clients": {"get", "post"},
        "/api/v1/clients/{client_id}": {"get", "patch", "delete"},
        "/api/v1/clients/{client_id}/summary": {"get"},
        "/api/v1/pipelines": {"get", "post"},
        "/api/v1/pipelines/{pipeline_id}": {"get", "patch", "delete"},
        "/api/v1/pipelines/{pipeline_id}/runs": {"get", "post"},
        "/api/v1/pipelines/{pipeline_id}/runs/latest": {"get"},
        "/api/v1/runs": {"get"},
        "/api/v1/runs/{run_id}": {"get", "patch"},
        "/api/v1/alert-rules": {"get", "post"},
        "/api/v1/alert-rules/{rule_id}": {"get", "patch", "delete"},
        "/api/v1/alert-rules/{rule_id}/enable": {"post"},
        "/api/v1/alert-rules/{rule_id}/disable": {"post"},
        "/healthz": {"get"},
    }
    for route, methods in expected.items():
        assert methods <= set(paths[route]), route
    create = paths["/api/v1/clients"]["post"]["responses"]
    assert "application/problem+json" in create["422"]["content"]
    assert create["422"]["content"]["application/problem+json"]["schema"]["$ref"].endswith(
        "/Problem"
    )
    assert "application/problem+json" in create["409"]["content"]
    limit = next(p for p in paths["/api/v1/runs"]["get"]["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"], limit["schema"]["default"]) == (
        1,
        500,
        50,
    )


def test_healthz_reports_database(api, backend):
    response = api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": backend}


def test_nul_characters_are_rejected_field_by_field(api):
    client = make_client(api)
    response = api.patch(f"{API}/clients/{client['id']}", json={"name": "a\u0000b"})
    assert_problem(response, 422)
    assert response.json()["errors"][0]["field"] == "name"
    pipeline = api.post(
        f"{API}/pipelines",
        json={
            "client_id": client["id"],
            "name": "p",
            "platform": "x",
            "pipeline_type": "y",
            "environment": "z",
        },
    ).json()
    response = api.post(
        f"{API}/pipelines/{pipeline['id']}/runs",
        json={
            "status": "failed",
            "error_message": "x\u0000",
            "metrics": {"k": "\u0000"},
            "source_payload": {"a": [{"b": "\u0000"}]},
        },
    )
    body = assert_problem(response, 422)
    # A payload is an object of anything (the schema says so): its NULs are
    # dropped, not refused (tests/test_fuzz_findings.py).
    assert sorted(e["field"] for e in body["errors"]) == ["error_message", "metrics.k"]
    assert assert_problem(api.get(f"{API}/clients", params={"name_contains": "\u0000"}), 422)


@pytest.mark.postgres_only
def test_a_pool_with_every_connection_busy_is_a_503_not_a_500(db_url, settings):
    # Small pools (CHM_DB_POOL_SIZE) can run out under load: the request that
    # waited out the pool's timeout is told to retry.
    from fastapi.testclient import TestClient

    from chm.app import create_app
    from chm.core.db import create_db_engine

    engine = create_db_engine(db_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        with TestClient(create_app(settings, engine), raise_server_exceptions=False) as api:
            with engine.connect():  # the pool's one connection, held
                body = assert_problem(api.post(f"{API}/clients", json={"name": "x"}), 503)
            assert "busy" in body["detail"]
            assert api.post(f"{API}/clients", json={"name": "x"}).status_code == 201
    finally:
        engine.dispose()
