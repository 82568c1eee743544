"""A 10-second version of bench/load.py: 50 writers and 50 readers against a
real `chm serve` on PostgreSQL; no 5xx, every acknowledged run stored exactly once.
And of bench/scale.py: the same load on two server processes while a `chm worker`
ingests a live feed; its feed's semantics on their own."""

from __future__ import annotations

import asyncio
import json

import pytest
from bench.load import chm_server, run_load
from bench.scale import LiveFeed, run_scale

from live import free_port


@pytest.mark.postgres_only
def test_ten_seconds_of_concurrent_writers_and_readers(db_url):
    with chm_server(db_url, free_port()) as base:
        result = asyncio.run(run_load(base, seconds=10, writers=50, readers=50))
    summary = result.summary()
    print(summary)
    assert result.server_errors == 0, summary
    assert result.transport_errors == 0, summary
    assert len(result.acknowledged) > 100, summary
    assert result.missing == 0 and result.stored_duplicates == 0, summary
    for kind in ("POST run", "GET latest", "GET summary"):
        assert result.percentiles(kind)["count"] > 0, kind


def test_live_feed_moves_on_with_its_clock_and_stops_when_frozen():
    now = [0.0]
    live = LiveFeed(backlog=3, per_tick=2, tick_s=1.0, page_size=2, clock=lambda: now[0])

    def served() -> list[dict[str, object]]:
        runs, index = [], 0
        while True:
            page = json.loads(live[index])
            runs += page["runs"]
            if page["next_cursor"] is None:
                return runs
            index = int(page["next_cursor"][1:])

    # before start: the backlog, finished (one in five failed)
    assert [run["status"] for run in served()] == ["failed", "succeeded", "succeeded"]
    live.start()
    now[0] = 1.5
    assert [run["status"] for run in served()][3:] == ["queued", "queued"]
    now[0] = 3.0
    statuses = [run["status"] for run in served()]
    assert statuses[3:] == ["succeeded", "succeeded", "running", "running", "queued", "queued"]
    assert live.freeze() == 3
    now[0] = 60.0
    after = served()
    assert len(after) == 9 and [run["status"] for run in after] == statuses
    assert live.expected(3) == {
        run["run_id"]: {"succeeded": "success"}.get(run["status"], run["status"]) for run in after
    }
    # each born run changed once (queued to running) or twice (to its end)
    assert live.changes(3) == 2 + 2 + 1 + 1


@pytest.mark.postgres_only
def test_ten_seconds_on_two_server_processes_and_a_worker_ingesting_a_live_feed(db_url):
    # 25 writers and 25 readers: the suite shares its PostgreSQL server (100
    # connections) with other tests running at the same time.
    result = run_scale(
        db_url,
        seconds=10,
        serve_workers=2,
        chm_workers=1,
        writers=25,
        readers=25,
        ingest_pipelines=5,
        interval_s=1,
    )
    summary = result.summary()
    print(summary)
    assert result.problems == [], summary
    assert len(result.load.acknowledged) > 100, summary
    for kind in ("POST run", "GET latest", "GET summary"):
        assert result.load.percentiles(kind)["count"] > 0, kind
    ingestion = result.ingestion
    # the backlog and the runs born while the load ran, every one stored once
    assert ingestion["feed_runs_per_pipeline"] > 200, summary
    assert ingestion["runs_stored"] == 5 * ingestion["feed_runs_per_pipeline"], summary
    # problems also holds the connections within the pools' capacity (2 x 50 + 20)
    assert result.connections.samples >= 5, summary
