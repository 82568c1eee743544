"""``chm status``: the operators' terminal board (SC-001, SC-004).

The data is ``chm.reports.board``'s, and ``chm.ingestion.health``'s for the
sources and workers; this module parses the options and draws it (a rich
table per section, fitted to the terminal) or prints its JSON.
"""

from __future__ import annotations

import json
import textwrap
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from chm.cli.runtime import fail, load_settings, open_database
from chm.core.timeutil import as_utc, utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from chm.core.settings import Settings
    from chm.ingestion.health import HealthDetail
    from chm.reports.board import StatusBoard
    from chm.reports.schemas import StatusChangeRow

COLUMN_GAP = 3  # padding on both sides of a column and the (blank) divider


def parse_as_of(raw: str | None) -> datetime:
    """``--as-of``: an RFC 3339 time in the reports' range; now when absent."""
    from chm.reports.params import EARLIEST_REPORT_TIME, LATEST_REPORT_TIME

    if raw is None:
        return utcnow()
    try:
        value = as_utc(datetime.fromisoformat(raw))
    except ValueError:
        raise fail(
            f"--as-of: {raw!r} is not a timestamp (RFC 3339, e.g. 2026-03-15T12:00:00Z)"
        ) from None
    if not EARLIEST_REPORT_TIME <= value < LATEST_REPORT_TIME:
        raise fail("--as-of: must be between 1970-01-01 and 9000-01-01 (UTC)")
    return value


def _time(value: datetime | None) -> str:
    return as_utc(value).strftime("%Y-%m-%d %H:%M") if value is not None else "-"


def _age(as_of: datetime, value: datetime) -> str:
    return _span((as_of - value).total_seconds())


def _span(seconds: float) -> str:
    minutes = max(0, int(seconds // 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    return f"{days}d {hours}h" if days else f"{hours}h {minutes:02d}m"


def _table(*columns: str) -> Table:
    """A borderless table whose text columns wrap rather than push past the width."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _section(title: str, body: RenderableType | None = None) -> list[RenderableType]:
    return [Text(""), Text(title, style="bold"), *([body] if body is not None else [])]


def _firing_section(board: StatusBoard, width: int) -> list[RenderableType]:
    from chm.reports.board import FIRING_ALERTS_SHOWN

    alerts = board.firing_alerts
    if not alerts:
        return _section("Firing alerts: none")
    total = board.firing_alerts_total
    more = (
        f", newest {FIRING_ALERTS_SHOWN} shown; all: chm alerts --state firing"
        if total > len(alerts)
        else ""
    )
    rows = [(a.client_name, a.pipeline_name, _time(a.fired_at)) for a in alerts]
    headers = ("Client", "Pipeline", "Since (UTC)")
    table = _table(*headers[:2])
    table.add_column(headers[2], no_wrap=True)
    # The summary gets the width the names leave, folded over lines: it is
    # what a person reads to act.
    used = sum(max(len(h), *(len(r[i]) for r in rows)) + COLUMN_GAP for i, h in enumerate(headers))
    table.add_column("Summary", overflow="fold", min_width=max(20, width - used - 1))
    for alert, (client, pipeline, since) in zip(alerts, rows, strict=True):
        # Text, not markup: a summary's brackets are the user's names.
        summary = Text(alert.summary)
        if alert.acknowledged_by:
            summary.append(f"\nacknowledged by {alert.acknowledged_by}", style="dim")
        table.add_row(Text(client), Text(pipeline, style="bold red"), since, summary)
    return _section(f"Firing alerts ({total}{more})", table)


def _failing_section(board: StatusBoard, width: int) -> list[RenderableType]:
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


def _overdue_pipelines_section(board: StatusBoard) -> list[RenderableType]:
    from chm.reports.schemas import OverdueState

    title = "Overdue scheduled pipelines (missed or late)"
    rows = board.overdue
    if not rows:
        return _section(f"{title}: none")
    # Ordered by due_by; the tick expected is what a person checks against the
    # platform (due_by and the rest: --json or GET /api/v1/reports/overdue-pipelines).
    table = _table("Client", "Pipeline")
    table.add_column("State", no_wrap=True)
    table.add_column("Expected (UTC)", no_wrap=True)
    table.add_column("Last run", overflow="fold")
    for row in rows:
        last = (
            f"{row.last_status.value}, {_age(board.as_of, row.last_run_at)} ago"
            if row.last_status is not None and row.last_run_at is not None
            else "none"
        )
        style = "bold red" if row.state is OverdueState.missed else "yellow"
        table.add_row(
            row.client_name,
            Text(row.pipeline_name, style=style),
            row.state.value,
            _time(row.expected_at),
            last,
        )
    return _section(f"{title}: {len(rows)}", table)


def _stuck_section(board: StatusBoard) -> list[RenderableType]:
    limit = _age(board.as_of, board.as_of - board.stuck_after)
    title = f"Stuck runs (queued or running for over {limit})"
    stuck = board.stuck_runs.items
    if not stuck:
        return _section(f"{title}: none")
    table = _table("Client", "Pipeline")
    table.add_column("Status", no_wrap=True)
    table.add_column("Since (UTC)", no_wrap=True)
    table.add_column("For", no_wrap=True)
    table.add_column("Run", overflow="fold")
    for row in stuck:
        table.add_row(
            row.client_name,
            Text(row.pipeline_name, style="yellow"),
            row.status.value,
            _time(row.event_at),
            _age(board.as_of, row.event_at),
            row.run_id,
        )
    return _section(f"{title}: {len(stuck)}", table)


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


def _counts_section(board: StatusBoard) -> list[RenderableType]:
    table = _table("Status", "Pipelines")
    for status, count in board.status_counts.items():
        if count:
            table.add_row(status.replace("_", " "), str(count))
    return _section("Pipelines by latest status", table)


def _unmatched_section(board: StatusBoard) -> list[RenderableType]:
    from chm.reports.board import UNMATCHED_JOBS_SHOWN

    title = "OpenLineage jobs matching no pipeline"
    jobs = board.unmatched_lineage_jobs
    if not jobs:
        return _section(f"{title}: none")
    more = (
        " or more; all: GET /api/v1/lineage/unmatched" if len(jobs) >= UNMATCHED_JOBS_SHOWN else ""
    )
    # The source names the namespace (one source per namespace): shorter.
    table = _table("Source", "Job")
    table.add_column("Events", no_wrap=True, justify="right")
    table.add_column("Last seen (UTC)", no_wrap=True)
    table.add_column("Reason", overflow="fold")
    for job in jobs:
        table.add_row(
            job.source,
            Text(job.job_name, style="yellow"),
            str(job.event_count),
            _time(job.last_seen_at),
            job.reason,
        )
    return _section(f"{title} ({len(jobs)}{more})", table)


SOURCE_NAME_WIDTH = 20  # a longer source name folds over lines
ERROR_LINES = 2  # a source's last error shows its first line, on at most this many
_STATE_STYLES = {"stale": "bold red", "failing": "red", "ok": "green"}


def _overdue(seconds: float | None) -> str:
    if seconds is None:
        return "-"  # not scheduled, or never succeeded
    if seconds <= 0:
        return "no"
    return _span(seconds)


def _sources_section(health: HealthDetail, width: int) -> list[RenderableType]:
    from chm.ingestion.health import STALE_INTERVALS, SourceState

    if health.sources_error is not None:
        return [Text(""), Text(f"Sources: not shown ({health.sources_error})")]
    sources = health.sources
    if not sources:
        return _section("Sources: none in the sources file")
    stale = f": {health.stale_sources} STALE" if health.stale_sources else ""
    # The state is a word (STALE in capitals), the colour only repeats it.
    rows = [
        (
            source.name,
            source.state.value.upper() if source.state is SourceState.stale else source.state.value,
            f"{_age(health.checked_at, source.last_success_at)} ago"
            if source.last_success_at is not None
            else "never"
            if source.pulls
            else "-",  # push-only: nothing to pull
            _overdue(source.overdue_s),
        )
        for source in sources
    ]
    headers = ("Source", "State", "Succeeded", "Overdue")
    table = _table()
    table.add_column(headers[0], overflow="fold", max_width=SOURCE_NAME_WIDTH)
    for header in headers[1:]:
        table.add_column(header, no_wrap=True)
    # The error gets the width the other columns leave, over at most
    # ERROR_LINES lines, and is cut short past that; a long source name folds
    # over lines rather than leave the error no room.
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    used = COLUMN_GAP * len(headers) + min(widths[0], SOURCE_NAME_WIDTH) + sum(widths[1:])
    error_width = max(12, width - used - 1)
    table.add_column("Last error", no_wrap=True, width=error_width)
    for source, (name, state, success, overdue) in zip(sources, rows, strict=True):
        error = source.last_error.strip().splitlines()[0] if source.last_error else "-"
        lines = textwrap.wrap(error, error_width) or ["-"]
        if len(lines) > ERROR_LINES:
            lines = [*lines[: ERROR_LINES - 1], lines[ERROR_LINES - 1][: error_width - 1] + "…"]
        style = _STATE_STYLES.get(source.state.value, "")
        table.add_row(name, Text(state, style=style), success, overdue, "\n".join(lines))
    note = (
        [Text(f"STALE: no success for {STALE_INTERVALS} intervals or more", style="bold red")]
        if health.stale_sources
        else []
    )
    return [*_section(f"Sources ({len(sources)}){stale}", table), *note]


def _workers_line(health: HealthDetail) -> list[RenderableType]:
    alive = ", ".join(f"{w.hostname} pid {w.pid}" for w in health.workers) or "none"
    lost = f"; {health.workers_lost} lost in the last day" if health.workers_lost else ""
    return [Text(f"Workers alive: {alive}{lost}")]


def render_board(board: StatusBoard, console: Console, health: HealthDetail | None = None) -> None:
    scope = f"client {board.client.name}" if board.client else "all clients"
    changes = board.changes
    since = _time(changes.since)
    other = len(changes.other)
    parts: list[RenderableType] = [
        Text(f"CHM status: {scope}, as of {_time(board.as_of)} UTC", style="bold"),
        *_firing_section(board, console.width),
        *_failing_section(board, console.width),
        *_overdue_pipelines_section(board),
        *_stuck_section(board),
        *_changes_section(f"Newly failing since {since}", changes.newly_failing, "red"),
        *_changes_section(f"Recovered since {since}", changes.recovered, "green"),
        *([Text(f"Other status changes since {since}: {other}")] if other else []),
        *_counts_section(board),
        *_unmatched_section(board),
        *(_sources_section(health, console.width) if health is not None else []),
        *(_workers_line(health) if health is not None else []),
    ]
    console.print(Group(*parts))


def ingestion_health(
    session: Session, settings: Settings, as_of: datetime, client: tuple[str, str] | None
) -> HealthDetail:
    """The sources' health at ``as_of`` (with ``client``: its own sources and those
    serving every client) and the workers alive. A sources file that is not set
    or cannot be loaded leaves the sources out and says why: not an error here."""
    from chm.ingestion.config import ConfigError, Sources, load_sources
    from chm.ingestion.health import source_health
    from chm.models.base import name_key

    try:
        sources, problem = load_sources(settings.config, settings.env), None
    except ConfigError as exc:
        sources, problem = Sources([]), str(exc)
    if client is not None:
        key = name_key(client[1])
        sources = Sources([s for s in sources.all if s.client is None or name_key(s.client) == key])
    health = source_health(session, sources, as_of, lease_s=settings.worker_lease_s)
    health.sources_error = problem
    return health


def status(
    client: Annotated[str | None, typer.Option(help="Only this client (by name)")] = None,
    as_of: Annotated[
        str | None, typer.Option("--as-of", help="As of this time (RFC 3339; default: now)")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The board as JSON on stdout")] = False,
) -> None:
    """The status board: firing alerts, failing now, overdue scheduled pipelines, stuck runs,
    changes since yesterday, counts by status, OpenLineage jobs matching no pipeline, each
    source's ingestion health and the workers alive."""
    from chm.core.db import make_report_session_factory
    from chm.reports.board import ClientNotOnBoard, build_board, find_client

    settings = load_settings()
    with open_database(settings, read=True) as engine:
        when = parse_as_of(as_of)
        # One snapshot for the whole board (chm.core.db).
        with make_report_session_factory(engine)() as session:
            try:
                scope = find_client(session, client) if client is not None else None
            except ClientNotOnBoard as exc:
                raise fail(str(exc)) from None
            stuck_after = timedelta(minutes=settings.stuck_after_minutes)
            board = build_board(session, when, stuck_after, scope)
            health = ingestion_health(session, settings, when, scope)
    if as_json:
        ingestion = health.model_dump(mode="json", exclude={"checked_at"})
        print(json.dumps(board.model_dump(mode="json") | ingestion, indent=2))
    else:
        # Colour only on a terminal (rich decides; NO_COLOR is honoured).
        render_board(board, Console(highlight=False), health)
