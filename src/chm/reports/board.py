"""The status board's data (SC-001, SC-004): what ``chm status`` shows.

The alerts firing (written by chm.alerts), what is failing now (with
client, platform, environment, when the failing run started and its
error), which scheduled pipelines are overdue (missed or late, as the
overdue report), which runs are stuck, what changed since
yesterday, how many pipelines stand in each status, and which OpenLineage
jobs send events that match no pipeline. It reads the
database through the statements of the API's reports (the latest statuses
and the changes through ``pipeline_states_query``, equal to the
latest-status and status-changes reports), so the board and
``/api/v1/reports`` never disagree. The terminal rendering lives with the
command (``chm.cli.status``); the model's JSON is ``chm status --json``;
the now page keeps the head of each list (``BoardLimits``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import BaseModel, Field, PlainSerializer
from sqlalchemy.orm import Session

from chm.core.status import RunStatus
from chm.core.timeutil import isoformat_z
from chm.models import Alert, Client, LineageUnmatchedJob, Pipeline, Run
from chm.models.base import name_key
from chm.models.lineage_unmatched_job import still_unmatched
from chm.reports.overdue import overdue_head
from chm.reports.schemas import OverdueRow, StatusChangeRow, StuckRunRow
from chm.reports.sql import FixedClock, Scope, at_time, head_as
from chm.reports.status import DEFAULT_CHANGES_WINDOW, pipeline_states_query, stuck_runs_query

NO_RUNS = "no_runs"
ERROR_PREVIEW = 200  # characters of a failing run's error kept on the board
# The unmatched OpenLineage jobs the board shows, last seen first; the rest
# are listed by GET /api/v1/lineage/unmatched.
UNMATCHED_JOBS_SHOWN = 20
# The firing alerts the board shows, newest first; all: chm alerts --state firing.
FIRING_ALERTS_SHOWN = 50


@dataclass(frozen=True)
class BoardLimits:
    """How much of each long list a board keeps; its totals count them all.

    The now page shows the head of each list: 10,000 pipelines can fail at
    once, and a page of thousands of rows, sent again at every refresh, helps
    nobody. Rows not kept are counted, never built.
    """

    rows: int  # overdue pipelines, stuck runs, and each kind of change
    failing_per_client: int  # failing pipelines kept for each client
    failing_clients: int  # clients whose failing pipelines are kept (the first, by name)


class ClientNotOnBoard(Exception):
    """The board was asked for a client it cannot show (unknown or inactive)."""


# The board's own timestamps, as every response carries them (RFC 3339, Z).
BoardTime = Annotated[datetime, PlainSerializer(isoformat_z, when_used="json")]


class BoardClient(BaseModel):
    id: str
    name: str


class FailingPipeline(BaseModel):
    """A pipeline whose latest run failed, with that run's error (first line)."""

    client_id: str
    client_name: str
    pipeline_id: str
    pipeline_name: str
    platform: str
    environment: str
    run_id: str
    started_at: BoardTime | None
    finished_at: BoardTime | None
    error_message: str | None


class FailingClient(BaseModel):
    """A client with failing pipelines, and how many."""

    client_id: str
    client_name: str
    failing: int


class FiringAlert(BaseModel):
    """An alert open at the board's time (chm.alerts): fired, not yet resolved."""

    alert_id: str
    rule_id: str
    rule_type: str
    client_id: str
    client_name: str
    pipeline_id: str
    pipeline_name: str
    summary: str
    fired_at: BoardTime
    acknowledged_by: str | None


class StuckRuns(BaseModel):
    older_than_minutes: int
    items: list[StuckRunRow]
    total: int = 0  # all stuck runs, however many items the board keeps


class BoardChanges(BaseModel):
    """Latest-status changes since ``since`` (24 hours before the board's time)."""

    since: BoardTime
    newly_failing: list[StatusChangeRow]
    recovered: list[StatusChangeRow]
    other: list[StatusChangeRow]
    # How many of each there are, however many rows the board keeps.
    newly_failing_total: int = 0
    recovered_total: int = 0
    other_total: int = 0


class UnmatchedLineageJob(BaseModel):
    """An OpenLineage job whose events match no active pipeline (chm.ingestion.lineage)."""

    namespace: str
    job_name: str
    source: str
    reason: str
    first_seen_at: BoardTime
    last_seen_at: BoardTime
    event_count: int


class StatusBoard(BaseModel):
    """Everything the board shows; its JSON is ``chm status --json``."""

    as_of: BoardTime
    client: BoardClient | None  # set when the board covers one client
    # First: what people are being told about. At most FIRING_ALERTS_SHOWN,
    # newest first; firing_alerts_total counts them all.
    firing_alerts: list[FiringAlert] = Field(default_factory=list)
    firing_alerts_total: int = 0
    failing_now: list[FailingPipeline]
    # Every failing pipeline, and every client with failing pipelines (by
    # name, with how many), however many of them failing_now keeps.
    failing_total: int = 0
    failing_clients: list[FailingClient] = Field(default_factory=list)
    # Scheduled pipelines missed or late at as_of (GET /reports/overdue-pipelines), by due_by.
    overdue: list[OverdueRow] = Field(default_factory=list)
    overdue_total: int = 0
    stuck_runs: StuckRuns
    changes: BoardChanges
    status_counts: dict[str, int]  # every status and no_runs, in that order
    # At most UNMATCHED_JOBS_SHOWN, as they stand now (whatever ``as_of``).
    unmatched_lineage_jobs: list[UnmatchedLineageJob] = Field(default_factory=list)

    @property
    def stuck_after(self) -> timedelta:
        return timedelta(minutes=self.stuck_runs.older_than_minutes)


def _run_details(session: Session, run_ids: set[int]) -> dict[int, Any]:
    """The names and times of the latest runs the board shows, by run id."""
    if not run_ids:
        return {}
    rows = session.execute(
        sa.select(
            Run.id,
            Run.started_at,
            Run.finished_at,
            Run.event_at,
            Run.error_message,
            Pipeline.name.label("pipeline_name"),
            Pipeline.platform,
            Pipeline.environment,
        )
        .join(Pipeline, Pipeline.id == Run.pipeline_id)
        .where(Run.id.in_(sorted(run_ids)))
    )
    return {row.id: row for row in rows}


def _error_preview(message: str | None) -> str | None:
    """A failing run's error on the board: its first line, shortened."""
    first_line = message.strip().splitlines()[0] if message and message.strip() else None
    return first_line[:ERROR_PREVIEW] if first_line else None


def _failing_clients(rows: list[Any]) -> list[FailingClient]:
    """Each client of the failing ``rows`` (by client), with how many it has."""
    counts = Counter(row.client_id for row in rows)
    names = {row.client_id: row.client_name for row in rows}
    return [
        FailingClient(client_id=str(client_id), client_name=names[client_id], failing=count)
        for client_id, count in counts.items()
    ]


def _head_per_client(rows: list[Any], limits: BoardLimits | None) -> list[Any]:
    """The rows of the first ``failing_clients`` clients, at most
    ``failing_per_client`` of each (all when no limits), in order."""
    if limits is None:
        return rows
    seen: Counter[int] = Counter()
    kept = []
    for row in rows:
        if row.client_id not in seen and len(seen) == limits.failing_clients:
            break
        seen[row.client_id] += 1
        if seen[row.client_id] <= limits.failing_per_client:
            kept.append(row)
    return kept


def _failing(rows: list[Any], details: dict[int, Any]) -> list[FailingPipeline]:
    failing = []
    for row in rows:
        run = details.get(row.latest_run_id)
        if run is None:  # deleted since the states were read (not in one snapshot)
            continue
        failing.append(
            FailingPipeline(
                client_id=str(row.client_id),
                client_name=row.client_name,
                pipeline_id=str(row.pipeline_id),
                pipeline_name=run.pipeline_name,
                platform=run.platform,
                environment=run.environment,
                run_id=str(row.latest_run_id),
                started_at=run.started_at,
                finished_at=run.finished_at,
                error_message=_error_preview(run.error_message),
            )
        )
    return failing


def _change_kinds(rows: list[Any]) -> dict[str, list[Any]]:
    """The pipelines whose latest status changed, by kind of change."""
    failed, success = RunStatus.failed.value, RunStatus.success.value
    kinds: dict[str, list[Any]] = {"newly_failing": [], "recovered": [], "other": []}
    for row in rows:
        if row.latest_status == failed:
            kinds["newly_failing"].append(row)
        elif row.previous_status == failed and row.latest_status == success:
            kinds["recovered"].append(row)
        else:
            kinds["other"].append(row)
    return kinds


def _changes(
    since: datetime, kinds: dict[str, list[Any]], kept: int | None, details: dict[int, Any]
) -> BoardChanges:
    def changed(row: Any) -> StatusChangeRow | None:
        run = details.get(row.latest_run_id)
        if run is None:  # deleted since the states were read (not in one snapshot)
            return None
        return StatusChangeRow.model_validate(
            {
                "pipeline_id": row.pipeline_id,
                "pipeline_name": run.pipeline_name,
                "client_id": row.client_id,
                "client_name": row.client_name,
                "previous_status": row.previous_status,
                "current_status": row.latest_status,
                "changed_at": run.event_at,
            }
        )

    return BoardChanges(
        since=since,
        **{
            kind: [change for row in found[:kept] if (change := changed(row)) is not None]
            for kind, found in kinds.items()
        },
        **{f"{kind}_total": len(found) for kind, found in kinds.items()},
    )


def firing_alerts(
    session: Session, as_of: datetime, client_id: int | None = None
) -> tuple[list[FiringAlert], int]:
    """The alerts open at ``as_of`` (fired at or before it, resolved after it or
    not at all), newest first, at most FIRING_ALERTS_SHOWN, and how many there are."""
    open_at = sa.and_(
        Alert.fired_at <= as_of, sa.or_(Alert.resolved_at.is_(None), Alert.resolved_at > as_of)
    )
    if client_id is not None:
        open_at = sa.and_(open_at, Alert.client_id == client_id)
    total = session.scalar(sa.select(sa.func.count()).select_from(Alert).where(open_at)) or 0
    rows = session.execute(
        sa.select(Alert, Client.name, Pipeline.name)
        .join(Client, Client.id == Alert.client_id)
        .join(Pipeline, Pipeline.id == Alert.pipeline_id)
        .where(open_at)
        .order_by(Alert.fired_at.desc(), Alert.id.desc())
        .limit(FIRING_ALERTS_SHOWN)
    )
    alerts = [
        FiringAlert(
            alert_id=str(alert.id),
            rule_id=str(alert.rule_id),
            rule_type=alert.rule_type,
            client_id=str(alert.client_id),
            client_name=client_name,
            pipeline_id=str(alert.pipeline_id),
            pipeline_name=pipeline_name,
            summary=alert.summary,
            fired_at=alert.fired_at,
            acknowledged_by=alert.acknowledged_by,
        )
        for alert, client_name, pipeline_name in rows
    ]
    return alerts, total


def unmatched_lineage_jobs(
    session: Session, client_name: str | None = None
) -> list[UnmatchedLineageJob]:
    """The OpenLineage jobs still matching no pipeline, last seen first (for one
    client: those its own sources sent)."""
    job = LineageUnmatchedJob
    query = sa.select(job).where(still_unmatched())
    if client_name is not None:
        query = query.where(job.client_key == name_key(client_name))
    rows = session.scalars(
        query.order_by(job.last_seen_at.desc(), job.id.desc()).limit(UNMATCHED_JOBS_SHOWN)
    )
    return [
        UnmatchedLineageJob(
            namespace=row.namespace,
            job_name=row.job_name,
            source=row.source_name,
            reason=row.reason,
            first_seen_at=row.first_seen_at,
            last_seen_at=row.last_seen_at,
            event_count=row.event_count,
        )
        for row in rows
    ]


def build_board(
    session: Session,
    as_of: datetime,
    stuck_after: timedelta,
    client: tuple[str, str] | None = None,
    limits: BoardLimits | None = None,
) -> StatusBoard:
    """Everything the board shows, from the report statements; ``client`` is
    the (id, name) of the one client it covers, if any; ``limits``, how much
    of each long list to keep (all when None).

    Every pipeline's latest status and its status a day ago come from one
    statement (``pipeline_states_query``); the counts, the failing pipelines
    and the changes are read off its rows, and only the rows kept become models.
    """
    clock = FixedClock(as_of)
    scope = Scope(client_id=int(client[0]) if client else None)
    since = as_of - DEFAULT_CHANGES_WINDOW
    states = session.execute(pipeline_states_query(clock, at_time(since), scope)).all()
    counts = {status.value: 0 for status in RunStatus} | {NO_RUNS: 0}
    failing_rows: list[Any] = []
    changed_rows: list[Any] = []
    failed = RunStatus.failed.value
    for row in states:
        counts[row.latest_status or NO_RUNS] += 1
        if row.latest_status == failed:
            failing_rows.append(row)
        # A pipeline with no run now had none a day ago: it cannot have changed.
        if row.latest_run_id is not None and row.previous_status != row.latest_status:
            changed_rows.append(row)
    rows = limits.rows if limits else None
    failing_kept = _head_per_client(failing_rows, limits)
    kinds = _change_kinds(changed_rows)
    shown = failing_kept + [row for found in kinds.values() for row in found[:rows]]
    details = _run_details(session, {row.latest_run_id for row in shown})
    overdue, overdue_total = overdue_head(session, as_of, scope, rows)
    stuck_query = stuck_runs_query(clock, stuck_after, scope)
    stuck, stuck_total = head_as(StuckRunRow, session.execute(stuck_query), rows)
    alerts, alerts_total = firing_alerts(session, as_of, scope.client_id)
    return StatusBoard(
        as_of=as_of,
        client=BoardClient(id=client[0], name=client[1]) if client else None,
        firing_alerts=alerts,
        firing_alerts_total=alerts_total,
        failing_now=_failing(failing_kept, details),
        failing_total=len(failing_rows),
        failing_clients=_failing_clients(failing_rows),
        overdue=overdue,
        overdue_total=overdue_total,
        stuck_runs=StuckRuns(
            older_than_minutes=int(stuck_after.total_seconds() // 60),
            items=stuck,
            total=stuck_total,
        ),
        changes=_changes(since, kinds, rows, details),
        status_counts=counts,
        unmatched_lineage_jobs=unmatched_lineage_jobs(session, client[1] if client else None),
    )


def find_client(session: Session, name: str) -> tuple[str, str]:
    """The (id, name) of the active client of that name, in any case."""
    client = session.scalar(sa.select(Client).where(Client.name_key == name_key(name)))
    if client is None:
        raise ClientNotOnBoard(f"no client named {name!r}")
    if not client.is_active:
        raise ClientNotOnBoard(
            f"client {client.name!r} is inactive; the board covers active inventory"
        )
    return str(client.id), client.name
