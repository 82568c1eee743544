"""Client summary (FR-007, AC-005)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from factories import API, make_client, make_pipeline, make_run, ok

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def test_summary_counts_and_latest_per_pipeline(api):
    acme = make_client(api, "Acme")
    other = make_client(api, "Globex")
    orders = make_pipeline(api, acme, "orders", platform="airflow", environment="prod")
    billing = make_pipeline(api, acme, "Billing", platform="adf", environment="dev")
    idle = make_pipeline(api, acme, "idle")
    retired = make_pipeline(api, acme, "retired")
    foreign = make_pipeline(api, other, "foreign")
    make_run(api, orders, "success", started_at=iso(T0 + timedelta(hours=1)))
    latest_orders = make_run(api, orders, "failed", started_at=iso(T0 + timedelta(hours=5)))
    make_run(api, orders, "success", started_at=iso(T0 - timedelta(hours=1)))  # before window
    make_run(api, orders, "success", started_at=iso(T0 + timedelta(days=1)))  # at until: excluded
    latest_billing = make_run(api, billing, "running", finished_at=iso(T0 + timedelta(hours=2)))
    make_run(api, billing, "unknown", started_at=iso(T0 + timedelta(hours=1)))
    make_run(api, retired, "failed", started_at=iso(T0 + timedelta(hours=3)))
    make_run(api, foreign, "failed", started_at=iso(T0 + timedelta(hours=3)))
    ok(api.delete(f"{API}/pipelines/{retired['id']}"))

    summary = ok(
        api.get(
            f"{API}/clients/{acme['id']}/summary",
            params={"since": iso(T0), "until": iso(T0 + timedelta(days=1))},
        )
    )
    assert summary["client"] == {"id": acme["id"], "name": "Acme"}
    assert (summary["since"], summary["until"]) == (iso(T0), iso(T0 + timedelta(days=1)))
    assert summary["total_runs"] == 4
    assert summary["status_counts"] == {
        "queued": 0,
        "running": 1,
        "success": 1,
        "failed": 1,
        "cancelled": 0,
        "skipped": 0,
        "unknown": 1,
    }
    rows = {p["pipeline_name"]: p for p in summary["pipelines"]}
    assert [p["pipeline_name"] for p in summary["pipelines"]] == ["Billing", "idle", "orders"]
    assert rows["orders"]["latest_status"] == "failed"
    assert rows["orders"]["latest_run"]["id"] == latest_orders["id"]
    assert (rows["orders"]["runs_in_window"], rows["orders"]["failed_in_window"]) == (2, 1)
    assert (rows["orders"]["platform"], rows["orders"]["environment"]) == ("airflow", "prod")
    # started beats finished-only in the ordering rule even when the latter's event is later
    assert rows["Billing"]["latest_run"]["id"] != latest_billing["id"]
    assert rows["Billing"]["latest_status"] == "unknown"
    assert rows["idle"] == {
        "pipeline_id": idle["id"],
        "pipeline_name": "idle",
        "platform": "airflow",
        "environment": "prod",
        "latest_status": None,
        "latest_run": None,
        "runs_in_window": 0,
        "failed_in_window": 0,
    }


def test_default_window_is_last_24_hours(api):
    acme = make_client(api)
    p = make_pipeline(api, acme)
    now = datetime.now(UTC)
    make_run(api, p, "failed", started_at=iso(now - timedelta(hours=2)))
    make_run(api, p, "failed", started_at=iso(now - timedelta(hours=30)))
    summary = ok(api.get(f"{API}/clients/{acme['id']}/summary"))
    until = datetime.fromisoformat(summary["until"])
    since = datetime.fromisoformat(summary["since"])
    assert until - since == timedelta(hours=24)
    assert abs(until - now) < timedelta(minutes=1)
    assert summary["total_runs"] == 1


def test_window_must_be_ordered(api):
    acme = make_client(api)
    response = api.get(
        f"{API}/clients/{acme['id']}/summary", params={"since": iso(T0), "until": iso(T0)}
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "until"
    future = api.get(
        f"{API}/clients/{acme['id']}/summary",
        params={"since": iso(datetime.now(UTC) + timedelta(days=1))},
    )
    assert future.status_code == 422


def test_summary_of_inactive_client_still_answers(api):
    acme = make_client(api)
    p = make_pipeline(api, acme)
    make_run(api, p, "failed", started_at=iso(T0 + timedelta(hours=1)))
    ok(api.delete(f"{API}/clients/{acme['id']}"))
    summary = ok(
        api.get(
            f"{API}/clients/{acme['id']}/summary",
            params={"since": iso(T0), "until": iso(T0 + timedelta(days=1))},
        )
    )
    assert summary["total_runs"] == 1
