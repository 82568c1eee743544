"""A server killed with SIGKILL in the middle of API writes loses nothing it
acknowledged and leaves no partial state; after a restart the rest completes."""

from __future__ import annotations

import signal
import subprocess
import threading
import time

import httpx
import sqlalchemy as sa

from live import free_port, start_chm_server


def start_server(db_url: str, port: int) -> subprocess.Popen[str]:
    return start_chm_server(db_url, port)


def test_sigkill_during_writes_keeps_every_acknowledged_run(db_url, engine, backend):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(db_url, port)
    client = httpx.post(f"{base}/api/v1/clients", json={"name": "Acme"}).json()
    pipeline = httpx.post(
        f"{base}/api/v1/pipelines",
        json={
            "client_id": client["id"],
            "name": "orders",
            "platform": "generic",
            "pipeline_type": "batch",
            "environment": "prod",
        },
    ).json()

    acknowledged: list[str] = []
    attempted: list[str] = []
    stop = threading.Event()

    def write(worker: int) -> None:
        with httpx.Client(base_url=base, timeout=5) as http:
            i = 0
            while not stop.is_set():
                run_id = f"w{worker}-{i}"
                attempted.append(run_id)
                try:
                    response = http.post(
                        f"/api/v1/pipelines/{pipeline['id']}/runs",
                        json={
                            "status": "success",
                            "external_run_id": run_id,
                            "started_at": "2026-11-28T00:00:00Z",
                            "metrics": {"rows": i},
                        },
                    )
                except httpx.TransportError:
                    return  # the server died under us
                if response.status_code == 201:
                    acknowledged.append(run_id)
                i += 1

    writers = [threading.Thread(target=write, args=(n,)) for n in range(6)]
    for thread in writers:
        thread.start()
    deadline = time.monotonic() + 20
    while len(acknowledged) < 150 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.send_signal(signal.SIGKILL)
    server.wait(timeout=10)
    stop.set()
    for thread in writers:
        thread.join(timeout=10)
    assert len(acknowledged) >= 150

    if backend == "sqlite":
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA integrity_check").scalar_one() == "ok"

    server = start_server(db_url, port)
    try:
        with httpx.Client(base_url=base, timeout=10) as http:
            stored = set()
            cursor = None
            while True:
                page = http.get(
                    f"/api/v1/pipelines/{pipeline['id']}/runs",
                    params={"limit": 500, **({"cursor": cursor} if cursor else {})},
                ).json()
                for run in page["items"]:
                    # no half-written run: every stored field came in whole
                    assert (
                        run["metrics"].keys() == {"rows"}
                        and run["started_at"] == "2026-11-28T00:00:00Z"
                    )
                    stored.add(run["external_run_id"])
                cursor = page["next_cursor"]
                if cursor is None:
                    break
            assert set(acknowledged) <= stored
            assert stored <= set(attempted)
            # re-sending everything attempted completes the rest: created or already there
            for run_id in attempted:
                response = http.post(
                    f"/api/v1/pipelines/{pipeline['id']}/runs",
                    json={
                        "status": "success",
                        "external_run_id": run_id,
                        "started_at": "2026-11-28T00:00:00Z",
                        "metrics": {"rows": 0},
                    },
                )
                assert response.status_code in (201, 409), response.text
            count = http.get(
                f"/api/v1/clients/{client['id']}/summary",
                params={"since": "2026-11-27T00:00:00Z", "until": "2026-11-29T00:00:00Z"},
            ).json()["total_runs"]
            assert count == len(set(attempted))
    finally:
        server.terminate()
        server.wait(timeout=10)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM runs")).scalar_one() == len(
            set(attempted)
        )
