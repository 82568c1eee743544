"""``chm status``: the operators' terminal board (SC-001, SC-004).

What is failing now (with client, platform, environment, when the failing
run started and its error), which runs are stuck, what changed since
yesterday, and how many pipelines stand in each status. It reads the
database directly through the same report functions as the API, so the
board and ``/api/v1/reports`` never disagree.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from chm.core.db import create_db_engine, make_session_factory
from chm.core.settings import Settings
from chm.core.timeutil import as_utc, isoformat_z, utcnow
from chm.models import Client, Run
from chm.models.base import name_key
from chm.models.run import RunStatus
from chm.reports.params import EARLIEST_REPORT_TIME, LATEST_REPORT_TIME
from chm.reports.schemas import LatestStatusRow, StatusChangeRow, StuckRunRow
from chm.reports.sql import FixedClock, Scope, Window, at_time
from chm.reports.status import DEFAULT_CHANGES_WINDOW, latest_status, status_changes, stuck_runs

NO_RUNS = "no_runs"
ERROR_PREVIEW = 200  # characters of a failing run's error kept on the board


class BoardError(Exception):
    """Bad input or an unreadable database: a plain message and an exit code."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class FailingPipeline:
    client_id: str
    client_name: str
    pipeline_id: str
    pipeline_name: str
    platform: str
    environment: str
    run_id: str
    started_at: datetime | None
    finished_at: datetime | None
    error_message: str | None


@dataclass(frozen=True)
class Board:
    as_of: datetime
    client: tuple[str, str] | None  # (id, name) when the board covers one client
    stuck_after: timedelta
    failing_now: list[FailingPipeline]
    stuck_runs: list[StuckRunRow]
    changes_since: datetime
    newly_failing: list[StatusChangeRow]
    recovered: list[StatusChangeRow]
    other_changes: list[StatusChangeRow]
    status_counts: dict[str, int]


def _error_previews(session: Session, run_ids: list[str]) -> dict[str, str | None]:
    """The error message of each failing latest run: its first line, shortened."""
    if not run_ids:
        return {}
    rows = session.execute(
        sa.select(Run.id, Run.error_message).where(Run.id.in_([int(i) for i in run_ids]))
    )
    previews: dict[str, str | None] = {}
    for run_id, message in rows:
        first_line = message.strip().splitlines()[0] if message and message.strip() else None
        previews[str(run_id)] = first_line[:ERROR_PREVIEW] if first_line else None
    return previews


def _failing(session: Session, latest: list[LatestStatusRow]) -> list[FailingPipeline]:
    rows = [row for row in latest if row.latest_status is RunStatus.failed]
    errors = _error_previews(session, [row.latest_run_id for row in rows if row.latest_run_id])
    return [
        FailingPipeline(
            client_id=row.client_id,
            client_name=row.client_name,
            pipeline_id=row.pipeline_id,
            pipeline_name=row.pipeline_name,
            platform=row.platform,
            environment=row.environment,
            run_id=str(row.latest_run_id),
            started_at=row.started_at,
            finished_at=row.finished_at,
            error_message=errors.get(str(row.latest_run_id)),
        )
        for row in rows
    ]


def build_board(
    session: Session,
    as_of: datetime,
    stuck_after: timedelta,
    client: tuple[str, str] | None = None,
) -> Board:
    """Everything the board shows, from the report functions."""
    clock = FixedClock(as_of)
    scope = Scope(client_id=int(client[0]) if client else None)
    latest = latest_status(session, clock, scope)
    since = as_of - DEFAULT_CHANGES_WINDOW
    changes = status_changes(session, Window(at_time(since), at_time(as_of)), scope)
    counts = {status.value: 0 for status in RunStatus} | {NO_RUNS: 0}
    for row in latest:
        counts[row.latest_status.value if row.latest_status else NO_RUNS] += 1
    failed, success = RunStatus.failed, RunStatus.success
    return Board(
        as_of=as_of,
        client=client,
        stuck_after=stuck_after,
        failing_now=_failing(session, latest),
        stuck_runs=stuck_runs(session, clock, stuck_after, scope),
        changes_since=since,
        newly_failing=[c for c in changes if c.current_status is failed],
        recovered=[
            c for c in changes if c.previous_status is failed and c.current_status is success
        ],
        other_changes=[
            c
            for c in changes
            if c.current_status is not failed
            and not (c.previous_status is failed and c.current_status is success)
        ],
        status_counts=counts,
    )


def board_json(board: Board) -> dict[str, Any]:
    def when(value: datetime | None) -> str | None:
        return isoformat_z(value) if value is not None else None

    def change(row: StatusChangeRow) -> dict[str, Any]:
        return row.model_dump(mode="json")

    return {
        "as_of": when(board.as_of),
        "client": {"id": board.client[0], "name": board.client[1]} if board.client else None,
        "failing_now": [
            {
                "client_id": f.client_id,
                "client_name": f.client_name,
                "pipeline_id": f.pipeline_id,
                "pipeline_name": f.pipeline_name,
                "platform": f.platform,
                "environment": f.environment,
                "run_id": f.run_id,
                "started_at": when(f.started_at),
                "finished_at": when(f.finished_at),
                "error_message": f.error_message,
            }
            for f in board.failing_now
        ],
        "stuck_runs": {
            "older_than_minutes": int(board.stuck_after.total_seconds() // 60),
            "items": [row.model_dump(mode="json") for row in board.stuck_runs],
        },
        "changes": {
            "since": when(board.changes_since),
            "newly_failing": [change(c) for c in board.newly_failing],
            "recovered": [change(c) for c in board.recovered],
            "other": [change(c) for c in board.other_changes],
        },
        "status_counts": board.status_counts,
    }


def _time(value: datetime | None) -> str:
    return as_utc(value).strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def _age(as_of: datetime, value: datetime) -> str:
    minutes = max(0, int((as_of - value).total_seconds() // 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return f"{days}d {hours}h" if days else f"{hours}h {minutes:02d}m"


COLUMN_GAP = 3  # padding on both sides of a column and the (blank) divider


def _table(*columns: str) -> Table:
    """A borderless table whose text columns wrap rather than push past the width."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _section(title: str, body: RenderableType | None = None) -> list[RenderableType]:
    return [Text(""), Text(title, style="bold"), *([body] if body is not None else [])]


def _failing_section(board: Board, width: int) -> list[RenderableType]:
    if not board.failing_now:
        return _section("Failing now: none")
    rows = [
        (f.client_name, f.pipeline_name, f.platform, f.environment, _time(f.started_at))
        for f in board.failing_now
    ]
    headers = ("Client", "Pipeline", "Platform", "Env", "Started (UTC)")
    table = _table(*headers[:4])
    table.add_column(headers[4], no_wrap=True)
    # The error gets the width the other columns leave (each followed by a
    # gap of COLUMN_GAP) and is cut short rather than wrapped: names stay whole.
    used = sum(max(len(h), *(len(r[i]) for r in rows)) + COLUMN_GAP for i, h in enumerate(headers))
    table.add_column("Error", overflow="ellipsis", no_wrap=True, width=max(12, width - used - 1))
    for f, row in zip(board.failing_now, rows, strict=True):
        table.add_row(*row[:1], Text(row[1], style="bold red"), *row[2:], f.error_message or "-")
    return _section(f"Failing now ({len(board.failing_now)})", table)


def _stuck_section(board: Board) -> list[RenderableType]:
    limit = _age(board.as_of, board.as_of - board.stuck_after)
    title = f"Stuck runs (queued or running for over {limit})"
    if not board.stuck_runs:
        return _section(f"{title}: none")
    table = _table("Client", "Pipeline")
    table.add_column("Status", no_wrap=True)
    table.add_column("Since (UTC)", no_wrap=True)
    table.add_column("For", no_wrap=True)
    table.add_column("Run", overflow="fold")
    for row in board.stuck_runs:
        table.add_row(
            row.client_name,
            Text(row.pipeline_name, style="yellow"),
            row.status.value,
            _time(row.event_at),
            _age(board.as_of, row.event_at),
            row.run_id,
        )
    return _section(f"{title}: {len(board.stuck_runs)}", table)


def _changes_section(title: str, rows: list[StatusChangeRow], style: str) -> list[RenderableType]:
    if not rows:
        return _section(f"{title}: none")
    table = _table("Client", "Pipeline", "Was", "Now")
    table.add_column("At (UTC)", no_wrap=True)
    for row in rows:
        table.add_row(
            row.client_name,
            Text(row.pipeline_name, style=style),
            row.previous_status.value if row.previous_status else "-",
            row.current_status.value,
            _time(row.changed_at),
        )
    return _section(f"{title} ({len(rows)})", table)


def _counts_section(board: Board) -> list[RenderableType]:
    table = _table("Status", "Pipelines")
    for status, count in board.status_counts.items():
        if count:
            table.add_row(status.replace("_", " "), str(count))
    return _section("Pipelines by latest status", table)


def render_board(board: Board, console: Console) -> None:
    scope = f"client {board.client[1]}" if board.client else "all clients"
    since = _time(board.changes_since)
    other = len(board.other_changes)
    parts: list[RenderableType] = [
        Text(f"CHM status: {scope}, as of {_time(board.as_of)} UTC", style="bold"),
        *_failing_section(board, console.width),
        *_stuck_section(board),
        *_changes_section(f"Newly failing since {since}", board.newly_failing, "red"),
        *_changes_section(f"Recovered since {since}", board.recovered, "green"),
        *([Text(f"Other status changes since {since}: {other}")] if other else []),
        *_counts_section(board),
    ]
    console.print(Group(*parts))


def parse_as_of(raw: str | None) -> datetime:
    if raw is None:
        return utcnow()
    try:
        value = as_utc(datetime.fromisoformat(raw))
    except ValueError:
        raise BoardError(
            f"--as-of: {raw!r} is not a timestamp (RFC 3339, e.g. 2026-03-15T12:00:00Z)"
        ) from None
    if not EARLIEST_REPORT_TIME <= value < LATEST_REPORT_TIME:
        raise BoardError("--as-of: must be between 1970-01-01 and 9000-01-01 (UTC)")
    return value


def find_client(session: Session, name: str) -> tuple[str, str]:
    client = session.scalar(sa.select(Client).where(Client.name_key == name_key(name)))
    if client is None:
        raise BoardError(f"no client named {name!r}")
    if not client.is_active:
        raise BoardError(f"client {client.name!r} is inactive; the board covers active inventory")
    return str(client.id), client.name


def load_board(settings: Settings, client_name: str | None, as_of: datetime) -> Board:
    try:
        engine = create_db_engine(settings.effective_database_url)
    except Exception as exc:  # a malformed URL: say so plainly
        raise BoardError(f"invalid CHM_DATABASE_URL: {exc}") from None
    try:
        with make_session_factory(engine)() as session:
            client = find_client(session, client_name) if client_name is not None else None
            stuck_after = timedelta(minutes=settings.stuck_after_minutes)
            return build_board(session, as_of, stuck_after, client)
    except SQLAlchemyError as exc:
        cause = type(getattr(exc, "orig", None) or exc).__name__
        raise BoardError(
            f"cannot read the database ({cause}); is it reachable and migrated (chm db upgrade)?",
            exit_code=1,
        ) from None
    finally:
        engine.dispose()


def run_status_board(
    settings: Settings,
    client_name: str | None,
    as_of_text: str | None,
    as_json: bool,
    console: Console | None = None,
) -> int:
    """The ``chm status`` command: 0 when the board was shown, else a message and 1 or 2."""
    try:
        board = load_board(settings, client_name, parse_as_of(as_of_text))
    except BoardError as exc:
        print(f"chm: {exc}", file=sys.stderr)
        return exc.exit_code
    if as_json:
        print(json.dumps(board_json(board), indent=2))
    else:
        # Colour only on a terminal (rich decides; NO_COLOR is honoured).
        render_board(board, console or Console(highlight=False))
    return 0
