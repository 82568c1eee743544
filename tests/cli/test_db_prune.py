"""`chm db prune --older-than-days N [--dry-run] [--json]` as a user runs it, on both
databases. The old runs are from 2001, so "older than 1 day" holds them whatever
day the test runs on; the one recent run is written by the test itself."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from chm.models import Run
from factories import make_client, make_pipeline, make_run

CHM = [sys.executable, "-m", "chm.cli"]


def chm(*args: str, db_url: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("CHM_")}
    clean.update(CHM_DATABASE_URL=db_url, CHM_LOG_LEVEL="INFO", **env)
    return subprocess.run([*CHM, *args], env=clean, capture_output=True, text=True, timeout=120)


def old(day: int) -> dict[str, str]:
    start = datetime(2001, 1, day, tzinfo=UTC)
    return {
        "started_at": start.isoformat(),
        "finished_at": (start + timedelta(minutes=5)).isoformat(),
    }


def history(api: TestClient) -> dict[str, set[str]]:
    """Three pipelines; what a prune of everything older than a day leaves of each."""
    client = make_client(api)
    three, two, one = (make_pipeline(api, client) for _ in range(3))
    runs = {
        "three": [make_run(api, three, **old(day))["id"] for day in (1, 2, 3)],
        "two": [make_run(api, two, "failed", **old(day))["id"] for day in (4, 5)],
        "one": [make_run(api, one, **old(6))["id"], make_run(api, one, "running")["id"]],
    }
    return {
        "deleted": {*runs["three"][:2], runs["two"][0]},
        "all": {run for ids in runs.values() for run in ids},
    }


def stored(engine: Engine) -> set[str]:
    with engine.connect() as connection:
        return {str(run_id) for run_id in connection.scalars(sa.select(Run.id))}


def test_prune_prints_what_it_would_remove_then_removes_it(
    api: TestClient, engine: Engine, db_url: str
) -> None:
    runs = history(api)
    before = datetime.now(UTC)

    dry = chm("db", "prune", "--older-than-days", "1", "--dry-run", db_url=db_url)

    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("would delete 3 runs of 2 pipelines with event time before ")
    assert "dry run: nothing was deleted" in dry.stdout
    assert stored(engine) == runs["all"]

    done = chm("db", "prune", "--older-than-days", "1", db_url=db_url)

    assert done.returncode == 0, done.stderr
    first = done.stdout.splitlines()[0]
    assert first.startswith("deleted 3 runs of 2 pipelines with event time before ")
    cutoff = datetime.fromisoformat(first.split(" before ")[1].split(" ")[0])
    assert before.replace(microsecond=0) - timedelta(days=1) <= cutoff
    assert cutoff <= datetime.now(UTC) - timedelta(days=1)
    assert "1 batches of at most 5000 runs" in done.stdout
    assert stored(engine) == runs["all"] - runs["deleted"]
    assert "prune: 3 runs of 2 pipelines" in done.stderr  # the log line
    assert "Traceback" not in done.stderr


def test_prune_json_is_the_report_alone_on_stdout(
    api: TestClient, engine: Engine, db_url: str
) -> None:
    runs = history(api)

    def prune_json(*extra: str) -> dict[str, Any]:
        result = chm(
            "db", "prune", "--older-than-days", "30", "--json", *extra,
            db_url=db_url, CHM_RETENTION_BATCH="2",
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        report: dict[str, Any] = orjson.loads(result.stdout)
        return report

    dry = prune_json("--dry-run")
    assert stored(engine) == runs["all"]
    done = prune_json()

    assert {k: dry[k] for k in ("dry_run", "runs_deleted", "pipelines_touched", "batches")} == {
        "dry_run": True,
        "runs_deleted": 3,
        "pipelines_touched": 2,
        "batches": 0,
    }
    assert {k: done[k] for k in ("dry_run", "runs_deleted", "pipelines_touched", "batches")} == {
        "dry_run": False,
        "runs_deleted": 3,
        "pipelines_touched": 2,
        "batches": 2,  # CHM_RETENTION_BATCH=2: a full batch, then the last one
    }
    assert done["batch_size"] == 2 and done["stopped"] is False
    assert set(done) == {
        "cutoff", "dry_run", "runs_deleted", "pipelines_touched", "batches", "batch_size",
        "elapsed_s", "stopped",
    }  # fmt: skip
    assert datetime.fromisoformat(done["cutoff"]) < datetime.now(UTC) - timedelta(days=30)
    assert stored(engine) == runs["all"] - runs["deleted"]


@pytest.mark.sqlite_only
@pytest.mark.parametrize(
    ("days", "message"),
    [
        ("0", "must be at least 1 (got 0)"),
        ("-5", "must be at least 1 (got -5)"),
        ("abc", "'abc' is not a whole number of days"),
        ("1.5", "'1.5' is not a whole number of days"),
        ("99999999", "99999999 days ago is before year 1"),
    ],
)
def test_a_bad_number_of_days_is_a_plain_message_and_exit_2(
    db_url: str, days: str, message: str
) -> None:
    result = chm("db", "prune", f"--older-than-days={days}", db_url=db_url)

    assert result.returncode == 2
    assert result.stderr.strip() == f"chm: --older-than-days: {message}"
    assert result.stdout == ""


def test_a_database_that_cannot_be_read_is_exit_1(tmp_path: Any) -> None:
    never_migrated = f"sqlite:///{tmp_path / 'empty.db'}"
    result = chm("db", "prune", "--older-than-days", "7", db_url=never_migrated)

    assert result.returncode == 1
    assert result.stderr.startswith("chm: ") and "Traceback" not in result.stderr
