"""Constraints hold under concurrency: racing creates end in one 201 and 409s,
never a 500 and never two rows."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import httpx
import pytest

from chm.app import create_app
from live import serve_in_thread

RACERS = 8


@pytest.fixture
def live(settings, engine):
    with serve_in_thread(create_app(settings, engine)) as url:
        yield url


def race(url: str, method: str, path: str, bodies: list[dict]) -> Counter[int]:
    barrier = Barrier(len(bodies))

    def one(body: dict) -> int:
        with httpx.Client(base_url=url, timeout=60) as http:
            barrier.wait()
            return http.request(method, path, json=body).status_code

    with ThreadPoolExecutor(len(bodies)) as pool:
        return Counter(pool.map(one, bodies))


def test_concurrent_client_creates_with_same_name(live):
    outcome = race(
        live,
        "POST",
        "/api/v1/clients",
        [{"name": n} for n in ["Acme", "ACME", "acme "] * 3][:RACERS],
    )
    assert outcome == Counter({201: 1, 409: RACERS - 1})
    clients = httpx.get(f"{live}/api/v1/clients").json()["items"]
    assert len(clients) == 1


def test_concurrent_pipeline_and_run_creates(live):
    client = httpx.post(f"{live}/api/v1/clients", json={"name": "Acme"}).json()
    body = {
        "client_id": client["id"],
        "name": "orders",
        "platform": "airflow",
        "pipeline_type": "batch",
        "environment": "prod",
    }
    assert race(live, "POST", "/api/v1/pipelines", [body] * RACERS) == Counter(
        {201: 1, 409: RACERS - 1}
    )
    pipeline = httpx.get(f"{live}/api/v1/pipelines").json()["items"][0]
    runs_path = f"/api/v1/pipelines/{pipeline['id']}/runs"
    outcome = race(
        live, "POST", runs_path, [{"status": "success", "external_run_id": "r-1"}] * RACERS
    )
    assert outcome == Counter({201: 1, 409: RACERS - 1})
    # distinct runs written concurrently all land
    outcome = race(live, "POST", runs_path, [{"status": "failed"} for _ in range(RACERS)])
    assert outcome == Counter({201: RACERS})
    assert len(httpx.get(f"{live}{runs_path}", params={"limit": 500}).json()["items"]) == RACERS + 1


def test_concurrent_enables_of_duplicate_rules(live):
    client = httpx.post(f"{live}/api/v1/clients", json={"name": "Acme"}).json()
    rules = [
        httpx.post(
            f"{live}/api/v1/alert-rules",
            json={
                "rule_type": "on_failure",
                "client_id": client["id"],
                "destination": "slack:#x",
                "is_enabled": False,
            },
        ).json()
        for _ in range(RACERS)
    ]
    barrier = Barrier(RACERS)

    def enable(rule: dict) -> int:
        with httpx.Client(base_url=live, timeout=60) as http:
            barrier.wait()
            return http.post(f"/api/v1/alert-rules/{rule['id']}/enable").status_code

    with ThreadPoolExecutor(RACERS) as pool:
        outcome = Counter(pool.map(enable, rules))
    assert outcome == Counter({200: 1, 409: RACERS - 1})
    enabled = httpx.get(f"{live}/api/v1/alert-rules", params={"is_enabled": "true"}).json()["items"]
    assert len(enabled) == 1
