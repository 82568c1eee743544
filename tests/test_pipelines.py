"""Pipelines (FR-003, DI-002, DI-003, DI-006, FR-018)."""

from __future__ import annotations

import pytest

from factories import API, make_client, make_pipeline, make_run, ok, walk


def test_create_and_read_back(api):
    client = make_client(api)
    pipeline = make_pipeline(
        api,
        client,
        "orders_daily",
        platform="dbt_cloud",
        pipeline_type="elt",
        environment="staging",
        external_id=" job-42 ",
    )
    assert pipeline["client_id"] == client["id"]
    assert pipeline["external_id"] == "job-42"
    assert pipeline["last_ingested_at"] is None and pipeline["last_ingestion_error"] is None
    assert ok(api.get(f"{API}/pipelines/{pipeline['id']}")) == pipeline


@pytest.mark.parametrize("field", ["platform", "pipeline_type", "environment"])
@pytest.mark.parametrize("value", ["Airflow", "air flow", "-x", "", "a" * 51, "é"])
def test_slugs_are_validated_never_rewritten(api, field, value):
    client = make_client(api)
    body = {
        "client_id": client["id"],
        "name": "p",
        "platform": "airflow",
        "pipeline_type": "batch",
        "environment": "prod",
        field: value,
    }
    response = api.post(f"{API}/pipelines", json=body)
    assert response.status_code == 422
    assert [e["field"] for e in response.json()["errors"]] == [field]


def test_client_must_exist_and_be_active(api):
    body = {"name": "p", "platform": "airflow", "pipeline_type": "batch", "environment": "prod"}
    for client_id in ("424242", "not-an-id"):
        response = api.post(f"{API}/pipelines", json={**body, "client_id": client_id})
        assert response.status_code == 422
        assert response.json()["errors"][0]["field"] == "client_id"
    inactive = make_client(api, is_active=False)
    response = api.post(f"{API}/pipelines", json={**body, "client_id": inactive["id"]})
    assert response.status_code == 422
    assert response.json()["errors"][0]["code"] == "inactive"


def test_name_unique_within_client_only(api):
    acme, globex = make_client(api), make_client(api)
    make_pipeline(api, acme, "orders")
    response = api.post(
        f"{API}/pipelines",
        json={
            "client_id": acme["id"],
            "name": "ORDERS",
            "platform": "adf",
            "pipeline_type": "batch",
            "environment": "dev",
        },
    )
    assert response.status_code == 409
    make_pipeline(api, globex, "orders")


def test_external_id_unique_per_client_and_platform(api):
    acme, globex = make_client(api), make_client(api)
    make_pipeline(api, acme, "a", platform="airflow", external_id="dag_1")
    response = api.post(
        f"{API}/pipelines",
        json={
            "client_id": acme["id"],
            "name": "b",
            "platform": "airflow",
            "pipeline_type": "batch",
            "environment": "prod",
            "external_id": "dag_1",
        },
    )
    assert response.status_code == 409
    make_pipeline(api, acme, "c", platform="databricks", external_id="dag_1")
    make_pipeline(api, globex, "d", platform="airflow", external_id="dag_1")
    # pipelines without an external id never collide
    make_pipeline(api, acme, "e", platform="airflow")
    make_pipeline(api, acme, "f", platform="airflow")


def test_patch_changes_fields_but_not_client_or_ingestion_state(api):
    client = make_client(api)
    pipeline = make_pipeline(api, client, external_id="x")
    changed = ok(
        api.patch(
            f"{API}/pipelines/{pipeline['id']}",
            json={"name": "renamed", "platform": "adf", "environment": "dev", "external_id": None},
        )
    )
    assert (
        changed["name"],
        changed["platform"],
        changed["environment"],
        changed["external_id"],
    ) == ("renamed", "adf", "dev", None)
    assert changed["updated_at"] > pipeline["updated_at"]
    for forbidden in (
        {"client_id": client["id"]},
        {"id": "5"},
        {"last_ingested_at": None},
        {"created_at": "2026-01-01T00:00:00Z"},
    ):
        assert api.patch(f"{API}/pipelines/{pipeline['id']}", json=forbidden).status_code == 422
    unchanged = ok(api.patch(f"{API}/pipelines/{pipeline['id']}", json={"name": "renamed"}))
    assert unchanged["updated_at"] == changed["updated_at"]


def test_patch_into_a_duplicate_conflicts(api):
    client = make_client(api)
    make_pipeline(api, client, "a", external_id="e1")
    b = make_pipeline(api, client, "b")
    assert api.patch(f"{API}/pipelines/{b['id']}", json={"name": "A"}).status_code == 409
    assert api.patch(f"{API}/pipelines/{b['id']}", json={"external_id": "e1"}).status_code == 409
    assert ok(api.get(f"{API}/pipelines/{b['id']}"))["name"] == "b"


def test_list_filters_and_order(api):
    acme, globex = make_client(api), make_client(api)
    make_pipeline(api, acme, "zeta", platform="adf", environment="prod")
    make_pipeline(api, acme, "Alpha", platform="airflow", environment="dev")
    make_pipeline(api, globex, "beta", platform="airflow", environment="prod")
    assert [p["name"] for p in walk(api, "/pipelines")] == ["Alpha", "beta", "zeta"]
    assert [p["name"] for p in walk(api, "/pipelines", client_id=acme["id"])] == ["Alpha", "zeta"]
    assert [p["name"] for p in walk(api, "/pipelines", platform="airflow")] == ["Alpha", "beta"]
    assert [p["name"] for p in walk(api, "/pipelines", environment="prod")] == ["beta", "zeta"]
    assert walk(api, "/pipelines", client_id="999999") == []
    assert api.get(f"{API}/pipelines", params={"client_id": "x"}).status_code == 422
    assert api.get(f"{API}/pipelines", params={"platform": "Bad Slug"}).status_code == 422


def test_disabled_pipelines_and_clients_are_not_active_inventory(api):
    acme, globex = make_client(api), make_client(api)
    kept = make_pipeline(api, acme, "kept")
    dropped = make_pipeline(api, acme, "dropped")
    orphaned = make_pipeline(api, globex, "of-inactive-client")
    run = make_run(api, dropped, "failed")
    disabled = ok(api.delete(f"{API}/pipelines/{dropped['id']}"))
    assert disabled["is_active"] is False
    ok(api.delete(f"{API}/clients/{globex['id']}"))
    assert [p["id"] for p in walk(api, "/pipelines")] == [kept["id"]]
    everything = walk(api, "/pipelines", include_inactive=True)
    assert {p["id"] for p in everything} == {kept["id"], dropped["id"], orphaned["id"]}
    # the pipeline's own flag is unchanged by its client's state
    assert ok(api.get(f"{API}/pipelines/{orphaned['id']}"))["is_active"] is True
    # history stays (FR-018)
    assert [r["id"] for r in walk(api, f"/pipelines/{dropped['id']}/runs")] == [run["id"]]
    assert ok(api.get(f"{API}/pipelines/{dropped['id']}/runs/latest"))["id"] == run["id"]


def test_unknown_pipeline_is_404(api):
    for path in (
        "/pipelines/123456",
        "/pipelines/abc",
        "/pipelines/123456/runs",
        "/pipelines/123456/runs/latest",
    ):
        assert api.get(f"{API}{path}").status_code == 404
    assert api.post(f"{API}/pipelines/123456/runs", json={"status": "success"}).status_code == 404
