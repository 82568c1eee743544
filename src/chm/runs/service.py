"""Runs: one execution attempt of a pipeline, recorded manually or ingested (FR-004..FR-006)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn, cast

import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import Session

from chm.core.changes import apply_changes
from chm.core.db import statement_write
from chm.core.dialects import dialect_for, dialect_named
from chm.core.errors import Conflict, NotFound, ValidationFailed
from chm.core.keyset import keyset_page_async
from chm.core.lookup import first_or_404, get_or_404
from chm.core.redaction import stored_payload, stored_text
from chm.core.status import RunStatus
from chm.core.timeutil import derived_duration, utcnow
from chm.core.window import check_window
from chm.models import Pipeline, Run
from chm.runs.ordering import KEYSET, ORDER_BY
from chm.runs.schemas import RunCreate, RunUpdate
from chm.runs.serialize import RUN_COLUMNS, RUNS, RunRow

PIPELINES = cast(sa.Table, Pipeline.__table__)
# What a recorded run's INSERT hands back: a run answer's columns. SQLite's
# RETURNING gives a value before the column's type affinity is applied (a
# duration of 300.0 comes back as the integer 300), so the float is cast.
_RECORDED = tuple(
    sa.cast(column, sa.Float).label(column.key) if column is RUNS.c.duration_seconds else column
    for column in RUN_COLUMNS
)


class DuplicateExternalRunId(Conflict):
    title = "Duplicate external run id"
    type_slug = "duplicate-external-run-id"


class InactivePipeline(Conflict):
    title = "Pipeline is inactive"
    type_slug = "inactive-pipeline"

    @classmethod
    def of(cls, pipeline_id: int) -> InactivePipeline:
        return cls(f"pipeline '{pipeline_id}' is inactive; enable it to record runs")


def _times_out_of_order(started_at: datetime | None, finished_at: datetime | None) -> bool:
    return started_at is not None and finished_at is not None and finished_at < started_at


def check_times(started_at: datetime | None, finished_at: datetime | None) -> None:
    """A 422 on ``finished_at`` when it is before ``started_at`` (contract: Runs)."""
    if _times_out_of_order(started_at, finished_at):
        raise ValidationFailed.one(
            "finished_at", "before_started_at", "finished_at must not be before started_at"
        )


def get_run(session: Session, run_id: int) -> Run:
    return get_or_404(session, Run, run_id, "run")


def _manual_run_values(pipeline_id: int, data: RunCreate) -> dict[str, Any]:
    """The stored columns of a manual run but its timestamps, computed before
    any statement.

    Failure text and payload are stored like ingested ones: credentials
    removed (SE-002), then capped.
    """
    from_source = data.duration_seconds is not None
    return {
        "pipeline_id": pipeline_id,
        # FR-019: a manual run without an identity still gets a unique one.
        "external_run_id": data.external_run_id or f"manual-{uuid.uuid4().hex}",
        "status": data.status.value,
        "started_at": data.started_at,
        "finished_at": data.finished_at,
        "duration_seconds": (
            data.duration_seconds
            if from_source
            else derived_duration(data.started_at, data.finished_at)
        ),
        "duration_from_source": from_source,
        "metrics": data.metrics,
        "error_message": None if data.error_message is None else stored_text(data.error_message),
        "source_payload": stored_payload(data.source_payload),
    }


_RECORD_COLUMNS = (
    "pipeline_id",
    "external_run_id",
    "status",
    "started_at",
    "finished_at",
    "duration_seconds",
    "duration_from_source",
    "metrics",
    "error_message",
    "source_payload",
    "created_at",
    "updated_at",
)


@functools.cache
def _record_statement(dialect_name: str) -> sa.Insert:
    """``INSERT INTO runs ... SELECT ... FROM pipelines``, built once per database
    (its parameters are ``_manual_run_values``' keys)."""
    source = sa.select(
        PIPELINES.c.id,
        *(sa.bindparam(name, type_=RUNS.c[name].type) for name in _RECORD_COLUMNS[1:]),
    ).where(PIPELINES.c.id == sa.bindparam("pipeline_id"), PIPELINES.c.is_active)
    return (
        dialect_named(dialect_name)
        .insert(cast(sa.Table, RUNS))
        .from_select(_RECORD_COLUMNS, source)
        .on_conflict_do_nothing(index_elements=[RUNS.c.pipeline_id, RUNS.c.external_run_id])
        .returning(*_RECORDED)
    )


async def record_manual_run(
    engine: AsyncEngine, pipeline_id: int, data: RunCreate, *, large: bool = False
) -> RunRow:
    """Record a manual run in one statement; its row as a run answer carries it.

    The insert is made from the pipeline's row, so one statement checks that
    the pipeline exists and is active, refuses an external run id it already
    has (``ON CONFLICT DO NOTHING``) and hands the stored run back
    (``RETURNING``): one round trip in all, on PostgreSQL in autocommit. Only
    when it stores nothing is the reason looked up, in the order the errors
    are checked: an unknown pipeline (404), an inactive one (409), times in
    the wrong order (422), a taken external run id (409).

    The redaction is done before the connection is taken (on SQLite it holds
    the write lock), in a worker thread for a ``large`` request, so that it
    does not hold up the event loop's other requests.
    """
    if large:
        values = await anyio.to_thread.run_sync(_manual_run_values, pipeline_id, data)
    else:
        values = _manual_run_values(pipeline_id, data)
    async with statement_write(engine) as conn:
        if _times_out_of_order(data.started_at, data.finished_at):
            await _refuse_manual_run(conn, pipeline_id, data, values["external_run_id"])
        # Stamped once the write can go ahead (on SQLite, under its write
        # lock), as the ORM's flush did: the worker's "did runs change since"
        # reads the latest updated_at.
        values["created_at"] = values["updated_at"] = utcnow()
        statement = _record_statement(dialect_for(conn).name)
        try:
            row = (await conn.execute(statement, values)).first()
        except IntegrityError:
            # The pipeline was deleted between the statement's read and its
            # foreign-key check: the lookup below says so.
            row = None
        if row is None:
            await _refuse_manual_run(conn, pipeline_id, data, values["external_run_id"])
        return row


async def _refuse_manual_run(
    conn: AsyncConnection, pipeline_id: int, data: RunCreate, external_run_id: str
) -> NoReturn:
    """Why a manual run cannot be stored, as the error the API answers."""
    query = sa.select(PIPELINES.c.is_active).where(PIPELINES.c.id == pipeline_id)
    (is_active,) = await first_or_404(conn, query, "pipeline", pipeline_id)
    if not is_active:
        raise InactivePipeline.of(pipeline_id)
    check_times(data.started_at, data.finished_at)
    raise DuplicateExternalRunId(f"pipeline '{pipeline_id}' already has a run {external_run_id!r}")


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
