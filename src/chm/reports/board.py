"""The status board's data (SC-001, SC-004): what ``chm status`` shows.

The alerts firing (written by chm.alerts), what is failing now (with
client, platform, environment, when the failing run started and its
error), which scheduled pipelines are overdue (missed or late, as the
overdue report), which runs are stuck, what changed since
yesterday, how many pipelines stand in each status, and which OpenLineage
jobs send events that match no pipeline. It reads the
database through the same report functions as the API, so the board and
``/api/v1/reports`` never disagree. The terminal rendering lives with the
command (``chm.cli.status``); the model's JSON is ``chm status --json``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

import sqlalchemy as sa
from pydantic import BaseModel, Field, PlainSerializer
from sqlalchemy.orm import Session

from chm.core.status import RunStatus
from chm.core.timeutil import isoformat_z
from chm.models import Alert, Client, LineageUnmatchedJob, Pipeline, Run
from chm.models.base import name_key
from chm.models.lineage_unmatched_job import still_unmatched
from chm.reports.overdue import overdue_pipelines
from chm.reports.schemas import LatestStatusRow, OverdueRow, StatusChangeRow, StuckRunRow
from chm.reports.sql import FixedClock, Scope, Window, at_time
from chm.reports.status import DEFAULT_CHANGES_WINDOW, latest_status, status_changes, stuck_runs

NO_RUNS = "no_runs"
ERROR_PREVIEW = 200  # characters of a failing run's error kept on the board
# The unmatched OpenLineage jobs the board shows, last seen first; the rest
# are listed by GET /api/v1/lineage/unmatched.
UNMATCHED_JOBS_SHOWN = 20
# The firing alerts the board shows, newest first; all: chm alerts --state firing.
FIRING_ALERTS_SHOWN = 50


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


class BoardChanges(BaseModel):
    """Latest-status changes since ``since`` (24 hours before the board's time)."""

    since: BoardTime
    newly_failing: list[StatusChangeRow]
    recovered: list[StatusChangeRow]
    other: list[StatusChangeRow]


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
    # Scheduled pipelines missed or late at as_of (GET /reports/overdue-pipelines), by due_by.
    overdue: list[OverdueRow] = Field(default_factory=list)
    stuck_runs: StuckRuns
    changes: BoardChanges
    status_counts: dict[str, int]  # every status and no_runs, in that order
    # At most UNMATCHED_JOBS_SHOWN, as they stand now (whatever ``as_of``).
    unmatched_lineage_jobs: list[UnmatchedLineageJob] = Field(default_factory=list)

    @property
    def stuck_after(self) -> timedelta:
        return timedelta(minutes=self.stuck_runs.older_than_minutes)


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
) -> StatusBoard:
    """Everything the board shows, from the report functions; ``client`` is
    the (id, name) of the one client it covers, if any."""
    clock = FixedClock(as_of)
    scope = Scope(client_id=int(client[0]) if client else None)
    latest = latest_status(session, clock, scope)
    since = as_of - DEFAULT_CHANGES_WINDOW
    changes = status_changes(session, Window(at_time(since), at_time(as_of)), scope)
    counts = {status.value: 0 for status in RunStatus} | {NO_RUNS: 0}
    for row in latest:
        counts[row.latest_status.value if row.latest_status else NO_RUNS] += 1
    failed, success = RunStatus.failed, RunStatus.success
    alerts, alerts_total = firing_alerts(session, as_of, scope.client_id)
    return StatusBoard(
        as_of=as_of,
        client=BoardClient(id=client[0], name=client[1]) if client else None,
        firing_alerts=alerts,
        firing_alerts_total=alerts_total,
        failing_now=_failing(session, latest),
        overdue=overdue_pipelines(session, as_of, scope),
        stuck_runs=StuckRuns(
            older_than_minutes=int(stuck_after.total_seconds() // 60),
            items=stuck_runs(session, clock, stuck_after, scope),
        ),
        changes=BoardChanges(
            since=since,
            newly_failing=[c for c in changes if c.current_status is failed],
            recovered=[
                c for c in changes if c.previous_status is failed and c.current_status is success
            ],
            other=[
                c
                for c in changes
                if c.current_status is not failed
                and not (c.previous_status is failed and c.current_status is success)
            ],
        ),
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
