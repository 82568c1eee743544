"""Runs: one execution attempt of a pipeline, recorded manually or ingested (FR-004..FR-006)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import Session

from chm.core.changes import apply_changes
from chm.core.errors import Conflict, NotFound, ValidationFailed
from chm.core.keyset import keyset_page_async
from chm.core.lookup import first_or_404, flush_or_conflict, get_or_404
from chm.core.redaction import stored_payload, stored_text
from chm.core.status import RunStatus
from chm.core.timeutil import derived_duration
from chm.core.window import check_window
from chm.models import Pipeline, Run
from chm.runs.ordering import KEYSET, ORDER_BY
from chm.runs.schemas import RunCreate, RunUpdate
from chm.runs.serialize import RUN_COLUMNS, RUNS, RunRow


class DuplicateExternalRunId(Conflict):
    title = "Duplicate external run id"
    type_slug = "duplicate-external-run-id"


class InactivePipeline(Conflict):
    title = "Pipeline is inactive"
    type_slug = "inactive-pipeline"

    @classmethod
    def of(cls, pipeline_id: int) -> InactivePipeline:
        return cls(f"pipeline '{pipeline_id}' is inactive; enable it to record runs")


def check_times(started_at: datetime | None, finished_at: datetime | None) -> None:
    """A 422 on ``finished_at`` when it is before ``started_at`` (contract: Runs)."""
    if started_at is not None and finished_at is not None and finished_at < started_at:
        raise ValidationFailed.one(
            "finished_at", "before_started_at", "finished_at must not be before started_at"
        )


def get_run(session: Session, run_id: int) -> Run:
    return get_or_404(session, Run, run_id, "run")


def create_manual_run(session: Session, pipeline_id: int, data: RunCreate) -> Run:
    # Failure text and payload are stored like ingested ones: credentials
    # removed (SE-002), then capped. Done before the first statement: a write
    # session's first statement takes SQLite's write lock (BEGIN IMMEDIATE),
    # which no request holds while it works on its own body.
    error_message = None if data.error_message is None else stored_text(data.error_message)
    source_payload = stored_payload(data.source_payload)
    pipeline = get_or_404(session, Pipeline, pipeline_id, "pipeline")
    if not pipeline.is_active:
        raise InactivePipeline.of(pipeline_id)
    check_times(data.started_at, data.finished_at)
    # FR-019: a manual run without an identity still gets a unique one.
    external_run_id = data.external_run_id or f"manual-{uuid.uuid4().hex}"
    duplicate = DuplicateExternalRunId(
        f"pipeline '{pipeline_id}' already has a run {external_run_id!r}"
    )
    taken = sa.select(Run.id).where(
        Run.pipeline_id == pipeline.id, Run.external_run_id == external_run_id
    )
    if session.scalar(taken) is not None:
        raise duplicate
    from_source = data.duration_seconds is not None
    run = Run(
        pipeline_id=pipeline.id,
        external_run_id=external_run_id,
        status=data.status.value,
        started_at=data.started_at,
        finished_at=data.finished_at,
        duration_seconds=(
            data.duration_seconds
            if from_source
            else derived_duration(data.started_at, data.finished_at)
        ),
        duration_from_source=from_source,
        metrics=data.metrics,
        error_message=error_message,
        source_payload=source_payload,
    )
    session.add(run)
    flush_or_conflict(session, duplicate)
    return run


def update_run(session: Session, run_id: int, data: RunUpdate) -> Run:
    changes = data.model_dump(exclude_unset=True)
    if "status" in changes:
        changes["status"] = changes["status"].value
    if changes.get("error_message") is not None:
        # As on create: redacted and capped before the first statement.
        changes["error_message"] = stored_text(changes["error_message"])
    run = get_run(session, run_id)
    started = changes.get("started_at", run.started_at)
    finished = changes.get("finished_at", run.finished_at)
    check_times(started, finished)
    if not run.duration_from_source:
        changes["duration_seconds"] = derived_duration(started, finished)
    if apply_changes(run, changes):
        session.flush()
    return run


# --- reads: async Core on the hot paths (see chm.core.deps.ReadConnection) ---


async def require_pipeline(conn: AsyncConnection, pipeline_id: int) -> None:
    """A 404 when there is no such pipeline."""
    query = sa.select(Pipeline.id).where(Pipeline.id == pipeline_id)
    await first_or_404(conn, query, "pipeline", pipeline_id)


async def read_run(conn: AsyncConnection, run_id: int) -> RunRow:
    query = sa.select(*RUN_COLUMNS).where(RUNS.c.id == run_id)
    return await first_or_404(conn, query, "run", run_id)


async def latest_run(conn: AsyncConnection, pipeline_id: int) -> RunRow:
    """The first run by the ordering rule: one index probe (ix_runs_pipeline_order)."""
    query = (
        sa.select(*RUN_COLUMNS)
        .where(RUNS.c.pipeline_id == pipeline_id)
        .order_by(*ORDER_BY)
        .limit(1)
    )
    row = (await conn.execute(query)).first()
    if row is None:
        await require_pipeline(conn, pipeline_id)
        raise NotFound(f"pipeline '{pipeline_id}' has no runs")
    return row


async def list_runs(
    conn: AsyncConnection,
    *,
    pipeline_id: int | None = None,
    client_id: int | None = None,
    statuses: Sequence[RunStatus] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int,
    cursor: str | None,
) -> tuple[list[RunRow], str | None]:
    """A page of runs by the ordering rule; inactive inventory's history included (FR-018)."""
    check_window(since, until)
    query = sa.select(*RUN_COLUMNS)
    if pipeline_id is not None:
        query = query.where(RUNS.c.pipeline_id == pipeline_id)
    if client_id is not None:
        query = query.where(
            RUNS.c.pipeline_id.in_(sa.select(Pipeline.id).where(Pipeline.client_id == client_id))
        )
    if statuses:
        query = query.where(RUNS.c.status.in_(sorted({s.value for s in statuses})))
    if since is not None:
        query = query.where(RUNS.c.event_at >= since)
    if until is not None:
        query = query.where(RUNS.c.event_at < until)
    return await keyset_page_async(conn, KEYSET, query, cursor=cursor, limit=limit)
