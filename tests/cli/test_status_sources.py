"""`chm status`: the sources' ingestion health and the workers alive."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from chm.models import IngestionSource, WorkerProcess
from factories import make_client

AS_OF = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
AS_OF_TEXT = "2026-03-15T12:00:00Z"
LONG_ERROR = "HTTP 503 from https://feed.example/api: " + "upstream unavailable " * 20

SOURCES = """
[[sources]]
name = "orders-feed"
platform = "generic"
environment = "prod"
base_url = "http://127.0.0.1:9"
interval_s = 600
token_env = "ORDERS_TOKEN"

[[sources]]
name = "billing-feed-with-a-rather-long-name"
platform = "generic"
environment = "staging"
client = "Acme"
base_url = "http://127.0.0.1:9"
interval_s = 300

[[sources]]
name = "globex-feed"
platform = "generic"
environment = "dev"
client = "Globex"
base_url = "http://127.0.0.1:9"

[[sources]]
name = "spark"
platform = "spark"
environment = "prod"
openlineage_namespace = "spark-prod"
token_env = "SPARK_KEY"
"""

Run = Callable[..., Any]


@pytest.fixture
def configured(chm: Run, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """A sources file, each source's record and two workers (one alive)."""
    path = tmp_path / "sources.toml"
    path.write_text(SOURCES)
    monkeypatch.setenv("CHM_CONFIG", str(path))
    monkeypatch.setenv("ORDERS_TOKEN", "orders-secret-81c2f0")
    with engine.begin() as connection:
        connection.execute(
            sa.insert(IngestionSource),
            [
                {"name": "orders-feed", "last_attempt_at": AS_OF - timedelta(minutes=5),
                 "last_success_at": AS_OF - timedelta(hours=3),
                 "last_error": LONG_ERROR + "\nsecond line", "consecutive_failures": 4,
                 "last_error_at": AS_OF - timedelta(minutes=5)},
                {"name": "billing-feed-with-a-rather-long-name",
                 "last_attempt_at": AS_OF - timedelta(minutes=2),
                 "last_success_at": AS_OF - timedelta(minutes=2), "consecutive_failures": 0,
                 "last_error": None, "last_error_at": None},
            ],
        )  # fmt: skip
        connection.execute(
            sa.insert(WorkerProcess),
            [
                {"id": "w1", "hostname": "box-1", "pid": 101,
                 "started_at": AS_OF - timedelta(days=1), "heartbeat_at": AS_OF},
                {"id": "w2", "hostname": "box-2", "pid": 102,
                 "started_at": AS_OF - timedelta(days=1),
                 "heartbeat_at": AS_OF - timedelta(hours=1)},
            ],
        )  # fmt: skip
    return chm


def test_json_has_each_sources_health_at_the_as_of_time(configured: Run) -> None:
    result = configured("status", "--as-of", AS_OF_TEXT, "--json")
    assert result.exit_code == 0, result.output
    board = json.loads(result.stdout)
    sources = {s["name"]: s for s in board["sources"]}
    assert [s["name"] for s in board["sources"]] == [
        "orders-feed",
        "billing-feed-with-a-rather-long-name",
        "globex-feed",
        "spark",
    ]
    orders = sources["orders-feed"]
    assert (orders["state"], orders["overdue_s"]) == ("stale", 3 * 3600 - 600)
    assert orders["last_success_at"] == "2026-03-15T09:00:00Z"
    assert orders["consecutive_failures"] == 4
    assert sources["billing-feed-with-a-rather-long-name"]["state"] == "ok"
    assert (sources["globex-feed"]["state"], sources["globex-feed"]["overdue_s"]) == ("never", None)
    assert sources["spark"]["state"] == "unscheduled"
    assert (board["stale_sources"], board["sources_error"]) == (1, None)
    assert [w["id"] for w in board["workers"]] == ["w1"]
    assert board["workers_lost"] == 1
    # The board's keys are still there.
    assert board["as_of"] == AS_OF_TEXT and "failing_now" in board
    assert "orders-secret-81c2f0" not in result.stdout


def test_text_flags_stale_sources_in_words_within_80_columns(configured: Run) -> None:
    result = configured("status", "--as-of", AS_OF_TEXT)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "\x1b[" not in text
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80
    start = next(i for i, line in enumerate(lines) if line.startswith("Sources (4): 1 STALE"))
    assert start > next(i for i, line in enumerate(lines) if line.startswith("Pipelines by"))
    section = "\n".join(lines[start:])
    at = next(i for i in range(start, len(lines)) if lines[i].startswith("orders-feed"))
    orders = lines[at]
    assert "STALE" in orders and "3h 00m ago" in orders and "2h 50m" in orders
    # The error's first line, on two lines at most, cut short.
    assert "HTTP 503 from" in orders and lines[at + 1].rstrip().endswith("…")
    assert "second line" not in section and LONG_ERROR not in section
    # A long name folds over lines, whole.
    assert lines[at + 2].startswith("billing-feed-with-a-")
    assert lines[at + 3].startswith("rather-long-name ")
    assert "0h 02m ago" in section
    globex = next(line for line in lines[start:] if line.startswith("globex-feed"))
    assert globex.split()[1:] == ["never", "never", "-", "-"]
    spark = next(line for line in lines[start:] if line.startswith("spark"))
    assert spark.split()[1:] == ["unscheduled", "-", "-", "-"]
    assert "STALE: no success for 3 intervals or more" in section
    assert "Workers alive: box-1 pid 101; 1 lost in the last day" in section


def test_one_clients_board_shows_its_own_sources_and_the_shared_ones(
    configured: Run, api: TestClient
) -> None:
    make_client(api, "Acme")
    result = configured("status", "--client", "acme", "--as-of", AS_OF_TEXT, "--json")
    assert result.exit_code == 0, result.output
    names = [s["name"] for s in json.loads(result.stdout)["sources"]]
    assert names == ["orders-feed", "billing-feed-with-a-rather-long-name", "spark"]


def test_without_a_sources_file_one_line_says_so(chm: Run) -> None:
    result = chm("status", "--as-of", AS_OF_TEXT)
    assert result.exit_code == 0, result.output
    notes = [line for line in result.stdout.splitlines() if line.startswith("Sources")]
    assert len(notes) == 1
    assert notes[0].startswith("Sources: not shown (CHM_CONFIG is not set")
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert "Workers alive: none" in result.stdout
    board = json.loads(chm("status", "--as-of", AS_OF_TEXT, "--json").stdout)
    assert board["sources"] == [] and board["stale_sources"] == 0
    assert board["sources_error"].startswith("CHM_CONFIG is not set")
    assert (board["workers"], board["workers_lost"]) == ([], 0)


def test_an_invalid_sources_file_is_named_not_fatal(
    chm: Run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[[sources]]\nname = "x"\nplatform = "generic"\nenvironment = "prod"\n')
    monkeypatch.setenv("CHM_CONFIG", str(path))
    result = chm("status", "--as-of", AS_OF_TEXT, "--json")
    assert result.exit_code == 0, result.output
    error = json.loads(result.stdout)["sources_error"]
    assert str(path) in error and "base_url" in error
