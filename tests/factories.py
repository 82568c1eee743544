"""Small helpers that create entities through the API, as a user would."""

from __future__ import annotations

import itertools
from typing import Any

from fastapi.testclient import TestClient

API = "/api/v1"
_seq = itertools.count(1)


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def make_client(api: TestClient, name: str | None = None, **fields: Any) -> dict[str, Any]:
    body = {"name": name or f"client-{next(_seq)}", **fields}
    return ok(api.post(f"{API}/clients", json=body), 201)


def make_pipeline(
    api: TestClient, client: dict[str, Any], name: str | None = None, **fields: Any
) -> dict[str, Any]:
    body = {
        "client_id": client["id"],
        "name": name or f"pipeline-{next(_seq)}",
        "platform": "airflow",
        "pipeline_type": "batch",
        "environment": "prod",
        **fields,
    }
    return ok(api.post(f"{API}/pipelines", json=body), 201)


def make_run(
    api: TestClient, pipeline: dict[str, Any], status: str = "success", **fields: Any
) -> dict[str, Any]:
    body = {"status": status, **fields}
    return ok(api.post(f"{API}/pipelines/{pipeline['id']}/runs", json=body), 201)


def make_rule(api: TestClient, **fields: Any) -> dict[str, Any]:
    body = {"rule_type": "on_failure", "destination": "slack:#data-alerts", **fields}
    return ok(api.post(f"{API}/alert-rules", json=body), 201)


def walk(api: TestClient, path: str, **params: Any) -> list[dict[str, Any]]:
    """Every item of a listing, following next_cursor to the end."""
    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = dict(params, **({"cursor": cursor} if cursor else {}))
        page = ok(api.get(f"{API}{path}", params=query))
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
