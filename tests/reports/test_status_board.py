"""`chm status`: the terminal board, on the reference dataset."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import oracle
import pytest
from reference import AS_OF, HOUR
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from chm.cli import app
from chm.core.settings import get_settings
from chm.reports.board import BoardLimits, build_board

AS_OF_TEXT = "2026-03-15T12:00:00Z"


@pytest.fixture
def chm(ref: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Run `chm ...` in-process against the reference database."""
    monkeypatch.setenv("CHM_DATABASE_URL", ref.url)
    monkeypatch.delenv("COLUMNS", raising=False)
    get_settings.cache_clear()

    def run(*args: str) -> Any:
        return CliRunner().invoke(app, list(args))

    yield run
    get_settings.cache_clear()


def test_json_board_is_the_reports(ref: Any, chm: Any) -> None:
    result = chm("status", "--as-of", AS_OF_TEXT, "--json")
    assert result.exit_code == 0, result.output
    board = json.loads(result.stdout)
    data = ref.data
    assert board["as_of"] == AS_OF_TEXT and board["client"] is None

    failing = oracle.latest_status(data, AS_OF, status="failed")
    fields = ("client_id", "client_name", "pipeline_id", "pipeline_name", "platform")
    fields += ("environment", "started_at", "finished_at")
    assert [{k: f[k] for k in (*fields, "run_id")} for f in board["failing_now"]] == [
        {k: row[k] for k in fields} | {"run_id": row["latest_run_id"]} for row in failing
    ]
    errors = {f["pipeline_name"]: f["error_message"] for f in board["failing_now"]}
    assert errors["orders_daily"] == "Task extract failed: timeout after 300 s"
    assert board["failing_now"][0]["environment"] == "prod"

    assert board["failing_total"] == len(failing)
    by_client: dict[tuple[str, str], int] = {}
    for row in failing:
        key = (row["client_id"], row["client_name"])
        by_client[key] = by_client.get(key, 0) + 1
    assert board["failing_clients"] == [
        {"client_id": client_id, "client_name": name, "failing": n}
        for (client_id, name), n in by_client.items()
    ]
    stuck = oracle.stuck_runs(data, AS_OF, timedelta(minutes=360))
    assert board["stuck_runs"] == {"older_than_minutes": 360, "items": stuck, "total": len(stuck)}
    assert board["overdue_total"] == len(board["overdue"])
    changes = oracle.status_changes(data, AS_OF - 24 * HOUR, AS_OF)
    newly_failing = [c for c in changes if c["current_status"] == "failed"]
    recovered = [
        c for c in changes if c["previous_status"] == "failed" and c["current_status"] == "success"
    ]
    assert board["changes"]["since"] == "2026-03-14T12:00:00Z"
    assert board["changes"]["newly_failing"] == newly_failing
    assert board["changes"]["recovered"] == recovered
    assert board["changes"]["other"] == [
        c for c in changes if c not in newly_failing and c not in recovered
    ]
    assert [board["changes"][f"{kind}_total"] for kind in ("newly_failing", "recovered")] == [
        len(newly_failing),
        len(recovered),
    ]
    assert board["changes"]["other_total"] == len(board["changes"]["other"])
    assert [c["pipeline_name"] for c in recovered] == ["Billing_sync"]

    latest = oracle.latest_status(data, AS_OF)
    expected_counts = dict.fromkeys([*oracle.STATUSES, "no_runs"], 0)
    for row in latest:
        expected_counts[row["latest_status"] or "no_runs"] += 1
    assert board["status_counts"] == expected_counts


def test_one_client_by_name_case_insensitively(ref: Any, chm: Any) -> None:
    result = chm("status", "--client", "ACME", "--as-of", AS_OF_TEXT, "--json")
    assert result.exit_code == 0, result.output
    board = json.loads(result.stdout)
    assert board["client"] == {"id": "1", "name": "Acme"}
    assert [f["pipeline_name"] for f in board["failing_now"]] == ["orders_daily"]
    assert [r["run_id"] for r in board["stuck_runs"]["items"]] == ["9011"]
    assert sum(board["status_counts"].values()) == 4


def test_text_board_fits_80_columns_without_colour(chm: Any) -> None:
    result = chm("status", "--as-of", AS_OF_TEXT)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert "\x1b[" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    lines = text.splitlines()
    sections = [
        "Failing now (3)",
        "Stuck runs",
        "Newly failing since",
        "Recovered since",
        "Pipelines by latest status",
    ]
    positions = [next(i for i, line in enumerate(lines) if line.startswith(s)) for s in sections]
    assert positions == sorted(positions), "failing first, then stuck, changes, counts"
    failing_block = "\n".join(lines[positions[0] : positions[1]])
    for expected in ("orders_daily", "Acme", "airflow", "prod", "2026-03-15 09:00", "Task extract"):
        assert expected in failing_block
    assert "inventory_snap" in "\n".join(lines[positions[1] : positions[2]])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--as-of", "yesterday"], "--as-of"),
        (["--as-of", "1900-01-01"], "--as-of"),
        (["--client", "Nobody"], "no client named 'Nobody'"),
        (["--client", "umbrella"], "inactive"),
    ],
)
def test_bad_input_is_a_plain_message_and_exit_2(chm: Any, args: list[str], message: str) -> None:
    result = chm("status", *args)
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.output
    assert result.stdout == ""


def test_as_a_process_unreachable_database_exits_1_plainly(tmp_path: Any) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHM_")}
    env["CHM_DATABASE_URL"] = "postgresql://postgres:s3cret-pw@127.0.0.1:1/none"
    result = subprocess.run(
        [sys.executable, "-m", "chm.cli", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("chm: cannot re") and "database" in result.stderr
    assert "Traceback" not in result.stderr and "s3cret-pw" not in result.stderr


@pytest.mark.parametrize(("rows", "per_client", "clients"), [(1, 1, 1), (2, 2, 5)])
def test_a_board_with_limits_keeps_the_heads_and_counts_everything(
    ref: Any, rows: int, per_client: int, clients: int
) -> None:
    # The now page's board: the head of each list, every total as the full board's.
    stuck_after = timedelta(minutes=60)
    limits = BoardLimits(rows, per_client, clients)
    with Session(ref.engine) as session:
        full = build_board(session, AS_OF, stuck_after)
        cut = build_board(session, AS_OF, stuck_after, limits=limits)
    assert cut.status_counts == full.status_counts
    assert cut.failing_total == full.failing_total == len(full.failing_now)
    assert cut.failing_clients == full.failing_clients
    assert sum(c.failing for c in full.failing_clients) == full.failing_total
    first = [c.client_id for c in full.failing_clients][:clients]
    seen: Counter[str] = Counter()
    head = []
    for failing in full.failing_now:
        seen[failing.client_id] += 1
        if failing.client_id in first and seen[failing.client_id] <= per_client:
            head.append(failing)
    assert cut.failing_now == head
    assert cut.stuck_runs.items == full.stuck_runs.items[:rows]
    assert cut.stuck_runs.total == full.stuck_runs.total == len(full.stuck_runs.items)
    assert cut.overdue == full.overdue[:rows]
    assert cut.overdue_total == full.overdue_total == len(full.overdue)
    for kind in ("newly_failing", "recovered", "other"):
        assert getattr(cut.changes, kind) == getattr(full.changes, kind)[:rows]
        total = getattr(full.changes, f"{kind}_total")
        assert getattr(cut.changes, f"{kind}_total") == total == len(getattr(full.changes, kind))
    if rows > 1:
        return
    # The reference data is big enough for the smallest limits to cut.
    assert len(cut.failing_now) < len(full.failing_now)
    assert len(full.failing_clients) > 1 and {f.client_id for f in cut.failing_now} == {
        full.failing_clients[0].client_id
    }
    assert len(cut.stuck_runs.items) < len(full.stuck_runs.items)
    assert len(cut.changes.other) < len(full.changes.other)
