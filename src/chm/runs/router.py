from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from chm.core.deps import ReadConnection, WriteSession, write_engine
from chm.core.ids import IdFilter, PipelineID, RunID
from chm.core.pagination import DEFAULT_LIMIT, CursorParam, LimitParam, Page
from chm.core.responses import json_bytes_response
from chm.core.schemas import UTCTimestamp
from chm.core.status import RunStatus
from chm.runs import service
from chm.runs.schemas import RunCreate, RunOut, RunUpdate
from chm.runs.serialize import run_document, runs_page

router = APIRouter(tags=["runs"])

StatusFilter = Annotated[
    list[RunStatus] | None,
    Query(description="Repeatable: `?status=failed&status=running`"),
]
Since = Annotated[UTCTimestamp | None, Query(description="Event time >= since (RFC 3339)")]
Until = Annotated[UTCTimestamp | None, Query(description="Event time < until (RFC 3339)")]


# A body above this is redacted in a worker thread, off the event loop.
LARGE_BODY_BYTES = 64 * 1024


@router.post("/pipelines/{pipeline_id}/runs", status_code=201, response_model=RunOut)
async def record_run(request: Request, pipeline_id: PipelineID, body: RunCreate) -> Response:
    """Record a manual run; an omitted `external_run_id` is generated."""
    length = request.headers.get("content-length", "")
    large = not length.isdigit() or int(length) > LARGE_BODY_BYTES
    engine = write_engine(request)
    row = await service.record_manual_run(engine, pipeline_id, body, large=large)
    return json_bytes_response(run_document(row), status_code=201)


@router.get("/pipelines/{pipeline_id}/runs", response_model=Page[RunOut])
async def list_pipeline_runs(
    pipeline_id: PipelineID,
    conn: ReadConnection,
    status: StatusFilter = None,
    since: Since = None,
    until: Until = None,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> Response:
    """A pipeline's run history by the ordering rule, filtered by status and time window."""
    rows, next_cursor = await service.list_runs(
        conn,
        pipeline_id=pipeline_id,
        statuses=status or (),
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
    )
    if not rows:
        # An empty page must still tell an unknown pipeline (404) from a quiet one.
        await service.require_pipeline(conn, pipeline_id)
    return runs_page(rows, next_cursor)


@router.get("/pipelines/{pipeline_id}/runs/latest", response_model=RunOut)
async def latest_run(pipeline_id: PipelineID, conn: ReadConnection) -> Response:
    """The pipeline's latest run by the ordering rule; 404 when it has none."""
    return json_bytes_response(run_document(await service.latest_run(conn, pipeline_id)))


@router.get("/runs", response_model=Page[RunOut])
async def list_runs(
    conn: ReadConnection,
    client_id: IdFilter | None = None,
    pipeline_id: IdFilter | None = None,
    status: StatusFilter = None,
    since: Since = None,
    until: Until = None,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> Response:
    """Runs across pipelines, by the ordering rule, with the same filters."""
    rows, next_cursor = await service.list_runs(
        conn,
        pipeline_id=pipeline_id,
        client_id=client_id,
        statuses=status or (),
        since=since,
        until=until,
        limit=limit,
        cursor=cursor,
    )
    return runs_page(rows, next_cursor)


@router.get("/runs/{run_id}", response_model=RunOut)
async def get_run(run_id: RunID, conn: ReadConnection) -> Response:
    """One run."""
    return json_bytes_response(run_document(await service.read_run(conn, run_id)))


@router.patch("/runs/{run_id}", response_model=RunOut)
def update_run(run_id: RunID, body: RunUpdate, session: WriteSession) -> RunOut:
    """Correct a run's status, times, metrics or error message."""
    return RunOut.model_validate(service.update_run(session, run_id, body))
