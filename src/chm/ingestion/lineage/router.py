"""The route of ``POST /api/v1/lineage`` (see the package doc): authenticate the
key, read and map the event off the event loop, store it."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from chm.core.deps import ReadSession
from chm.core.errors import Unauthorized, problem_responses
from chm.core.pagination import DEFAULT_LIMIT, CursorParam, LimitParam, Page
from chm.core.redaction import Redactor
from chm.ingestion.config import ConfigError
from chm.ingestion.lineage.auth import bearer_key, keyed_sources
from chm.ingestion.lineage.body import read_body
from chm.ingestion.lineage.mapping import (
    changes_a_run,
    event_snapshot,
    parent_failure,
    parse_event,
)
from chm.ingestion.lineage.service import LineageAnswer, record_event
from chm.ingestion.lineage.unmatched import UnmatchedJobOut, list_unmatched
from chm.ingestion.router import IngestionNotConfigured
from chm.ingestion.sources_cache import SourcesCache

logger = logging.getLogger("chm.ingestion.lineage")

router = APIRouter(prefix="/lineage", tags=["lineage"])


@router.post(
    "",
    status_code=201,
    response_model=LineageAnswer,
    responses={
        200: {"model": LineageAnswer, "description": "The event changed nothing"},
        202: {"model": LineageAnswer, "description": "The job maps to no pipeline: ignored"},
        **problem_responses(400, 401, 409, 422),
    },
)
async def receive_lineage_event(request: Request) -> JSONResponse:
    """Take one OpenLineage RunEvent (as the openlineage-python HTTP transport sends it)
    and record the run it tells of; the bearer key is the namespace source's token."""
    settings = request.app.state.settings
    cache: SourcesCache = request.app.state.sources
    try:
        sources = cache.load(settings.config, settings.env)
    except ConfigError as error:
        # The caller is not authenticated yet: the details (file, fields) go
        # to the log, the answer only says that no source can be checked.
        logger.error("lineage event refused: %s", error)
        raise IngestionNotConfigured(
            "no OpenLineage source can be checked: the sources file is missing or invalid"
        ) from None
    key = bearer_key(request)
    keyed = keyed_sources(sources, key) if key is not None else []
    if not keyed:
        raise Unauthorized("A valid 'Authorization: Bearer <key>' of an OpenLineage source is "
                           "required")  # fmt: skip
    assert key is not None
    # Parsing, redaction and capping are CPU work on up to CHM_MAX_BODY_BYTES:
    # in a worker thread, not on the event loop every other request waits on.
    event, document = await run_in_threadpool(parse_event, await read_body(request))
    source = next((s for s in keyed if s.openlineage_namespace == event.job.namespace), None)
    if source is None:
        raise Unauthorized(f"this key may not write namespace {event.job.namespace[:200]!r}")
    redactor = Redactor((key,))
    row = None
    if changes_a_run(event):
        row = await run_in_threadpool(event_snapshot, event, document, redactor)
    failure = await run_in_threadpool(parent_failure, event, redactor)
    state = request.app.state
    status, answer = await run_in_threadpool(
        record_event, state, sources, source, event, row, failure
    )
    return JSONResponse(answer.model_dump(mode="json", exclude_none=True), status_code=status)


@router.get("/unmatched", response_model=Page[UnmatchedJobOut])
def list_unmatched_jobs(
    session: ReadSession, limit: LimitParam = DEFAULT_LIMIT, cursor: CursorParam = None
) -> Page[UnmatchedJobOut]:
    """OpenLineage jobs whose events match no active pipeline (yet), last seen first."""
    rows, next_cursor = list_unmatched(session, limit=limit, cursor=cursor)
    return Page[UnmatchedJobOut](
        items=[UnmatchedJobOut.of(row) for row in rows], next_cursor=next_cursor
    )
