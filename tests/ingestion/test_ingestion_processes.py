"""`chm ingest` as separate processes: killed midway, and two at once (US-2, issue 3 §5, §6)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from ingestion_fakes import FakeServer, generic_run, serve_generic, source, toml_text
from sqlalchemy import Engine

from chm.models import Run
from factories import API, make_client, make_pipeline, ok

CHM = [sys.executable, "-m", "chm.cli", "ingest", "--json"]


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    yield server
    server.close()


def chm_env(db_url: str, config: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHM_")}
    return (
        env
        | {"CHM_DATABASE_URL": db_url, "CHM_CONFIG": str(config), "CHM_LOG_LEVEL": "INFO"}
        | extra
    )


def write_config(tmp_path: Path, *entries: dict[str, Any]) -> Path:
    path = tmp_path / "sources.toml"
    path.write_text(toml_text(*entries))
    return path


def counts(engine: Engine) -> tuple[int, int]:
    with engine.connect() as connection:
        total = connection.scalar(sa.select(sa.func.count()).select_from(Run))
        distinct = connection.scalar(
            sa.select(sa.func.count()).select_from(
                sa.select(Run.pipeline_id, Run.external_run_id).distinct().subquery()
            )
        )
    return total, distinct


def paged_runs(prefix: str, pages: int, per_page: int) -> list[list[dict[str, Any]]]:
    return [
        [generic_run(f"{prefix}-{page:03d}-{i:03d}") for i in range(per_page)]
        for page in range(pages)
    ]


def test_an_ingestion_killed_midway_keeps_its_pages_and_a_rerun_completes_it(
    api, engine, db_url, fake, tmp_path
) -> None:
    pipeline = make_pipeline(api, make_client(api), platform="generic", external_id="big")
    serve_generic(fake, "big", paged_runs("r", pages=10, per_page=50))
    fake.page_delay = 0.2
    env = chm_env(db_url, write_config(tmp_path, source(fake)))

    process = subprocess.Popen(CHM, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while counts(engine)[0] < 150:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the ingestion did not commit 3 pages in time"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    assert process.returncode == -signal.SIGKILL

    kept, distinct = counts(engine)
    assert kept == distinct
    assert 150 <= kept < 500
    assert kept % 50 == 0, "a page is committed whole or not at all"
    assert ok(api.get(f"{API}/pipelines/{pipeline['id']}"))["last_ingested_at"] is None

    fake.page_delay = 0
    rerun = subprocess.run(CHM, env=env, capture_output=True, timeout=60)
    assert rerun.returncode == 0, rerun.stderr.decode()
    report = orjson.loads(rerun.stdout)
    assert report["errors"] == []
    assert report["runs_created"] == 500 - kept
    assert report["runs_unchanged"] == kept
    assert counts(engine) == (500, 500)
    assert ok(api.get(f"{API}/pipelines/{pipeline['id']}"))["last_ingested_at"] is not None


def test_two_concurrent_ingesters_store_each_run_once_without_errors(
    api, engine, db_url, fake, tmp_path
) -> None:
    client = make_client(api)
    for name in ("p1", "p2", "p3"):
        make_pipeline(api, client, platform="generic", external_id=name)
        serve_generic(fake, name, paged_runs(name, pages=4, per_page=50))
    fake.page_delay = 0.05
    fake.gate_clients = 2  # both ingesters are in flight before any page is answered
    env = chm_env(db_url, write_config(tmp_path, source(fake)))

    processes = [
        subprocess.Popen(CHM, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    outputs = [process.communicate(timeout=90) for process in processes]
    reports = []
    for process, (stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr.decode()
        reports.append(orjson.loads(stdout))
    for report in reports:
        assert report["errors"] == []
        assert (report["pipelines"], report["pages"]) == (3, 12)
        assert report["runs_updated"] == report["runs_skipped"] == 0
        assert report["runs_created"] + report["runs_unchanged"] == 600
    assert sum(report["runs_created"] for report in reports) == 600
    assert counts(engine) == (600, 600)
    # They really ran at the same time: each one's requests (one connection
    # each) span a period that overlaps the other's.
    spans: dict[int, list[float]] = {}
    for seen in fake.requests:
        spans.setdefault(seen.port, []).append(seen.at)
    assert len(spans) == 2
    first, second = ((min(times), max(times)) for times in spans.values())
    assert first[0] < second[1] and second[0] < first[1]
