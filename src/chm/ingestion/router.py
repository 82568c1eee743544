"""``POST /api/v1/ingestions``: run the ingestion engine now and answer its report,
or, with ``Prefer: respond-async``, queue an ingestion job for a worker
(``chm.ingestion.jobs``); ``GET /api/v1/ingestions[/{id}]``: the jobs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import Field, StrictBool
from sqlalchemy.orm import Session

from chm.core.deps import ReadSession, WriteSession
from chm.core.errors import ChmError
from chm.core.ids import ClientRef, IngestionJobID, PipelineRef
from chm.core.pagination import DEFAULT_LIMIT, CursorParam, LimitParam, Page
from chm.core.schemas import RequestModel
from chm.core.settings import Settings
from chm.core.timeutil import utcnow
from chm.ingestion import jobs
from chm.ingestion.config import ConfigError
from chm.ingestion.engine import ingest, resolve_scope
from chm.ingestion.jobs import IngestionJobOut, JobStatus
from chm.ingestion.report import IngestionReport
from chm.ingestion.sources_cache import SourcesCache

router = APIRouter(prefix="/ingestions", tags=["ingestion"])


class IngestionNotConfigured(ChmError):
    # A state of this server, not a passing outage: retrying will not help
    # until CHM_CONFIG names a valid sources file.
    status = 409
    type_slug = "ingestion-not-configured"
    title = "Ingestion is not configured"


class IngestionRequest(RequestModel):
    client_id: ClientRef | None = None
    pipeline_id: PipelineRef | None = None
    # Strict: a JSON boolean, not 1 or "yes" (the schema says boolean).
    full: StrictBool = Field(
        False, description="Re-read every run, not only what changed since the last ingestion"
    )


RESPOND_ASYNC = "respond-async"

PreferHeader = Annotated[
    str | None,
    Header(
        alias="Prefer",
        description="RFC 7240 preferences: `respond-async` queues an ingestion job and "
        "answers 202 at once; other preferences are ignored",
    ),
]


def _elements(value: str) -> Iterator[str]:
    """The comma-separated elements of a header value; a comma inside a quoted
    string (``foo="a,b"``) separates nothing."""
    element: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            yield "".join(element)
            element = []
            continue
        element.append(char)
    yield "".join(element)


def preferences(values: Iterable[str]) -> set[str]:
    """The preference names (lower case) of every ``Prefer`` header value: each
    element's token before its ``=value`` and ``;parameters`` (RFC 7240 §2)."""
    names = set()
    for value in values:
        for element in _elements(value):
            name = element.split(";", 1)[0].split("=", 1)[0].strip().lower()
            if name:
                names.add(name)
    return names


_JOB_HEADERS = {
    "Location": {"description": "The job: `/api/v1/ingestions/{id}`", "schema": {"type": "string"}},
    "Preference-Applied": {
        "description": "`respond-async` (RFC 7240)",
        "schema": {"type": "string", "enum": [RESPOND_ASYNC]},
    },
}


@router.post(
    "",
    response_model=IngestionReport,
    responses={
        202: {
            "model": IngestionJobOut,
            "description": "With `Prefer: respond-async`: the job, queued for a worker",
            "headers": _JOB_HEADERS,
        }
    },
)
def run_ingestion(
    request: Request,
    session: WriteSession,
    body: IngestionRequest | None = None,
    prefer: PreferHeader = None,
) -> IngestionReport | JSONResponse:
    """Ingest every matching active pipeline now (optionally one client's or one
    pipeline's) and answer the report; failures of single pipelines are in `errors`,
    a missing or invalid sources file (CHM_CONFIG) is a 409. With `Prefer:
    respond-async`, queue the same ingestion as a job a `chm worker` runs and answer
    202 with the job and its `Location`."""
    # A plain `def`: FastAPI runs it in a worker thread. No request transaction
    # is held while the engine talks HTTP: it commits each page on its own (the
    # write session stays unused, without a connection, unless a job is queued).
    settings: Settings = request.app.state.settings
    body = body or IngestionRequest()
    cache: SourcesCache = request.app.state.sources
    try:
        sources = cache.load(settings.config, settings.env)
    except ConfigError as error:
        raise IngestionNotConfigured(str(error)) from None
    # `prefer` documents the header; every Prefer header of the request counts.
    if RESPOND_ASYNC in preferences(request.headers.getlist("prefer")):
        return _queue_job(request, session, body)
    with request.app.state.read_sessions() as read:
        client_id, pipeline_id = resolve_scope(read, body.client_id, body.pipeline_id)
    return ingest(
        request.app.state.engine,
        sources,
        client_id=client_id,
        pipeline_id=pipeline_id,
        full=body.full,
        schedule_refresh_s=settings.schedule_refresh_s,
    )


def _queue_job(request: Request, session: Session, body: IngestionRequest) -> JSONResponse:
    """The scope checked and the job stored in the request's one transaction."""
    client_id, pipeline_id = resolve_scope(session, body.client_id, body.pipeline_id)
    requested = {"client_id": client_id, "pipeline_id": pipeline_id, "full": body.full}
    job = jobs.create_job(session, requested, utcnow())
    location = request.app.url_path_for("get_ingestion_job", job_id=str(job.id))
    return JSONResponse(
        IngestionJobOut.of(job).model_dump(mode="json"),
        status_code=202,
        headers={"Location": str(location), "Preference-Applied": RESPOND_ASYNC},
    )


@router.get("", response_model=Page[IngestionJobOut])
def list_ingestion_jobs(
    session: ReadSession,
    status: JobStatus | None = None,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> Page[IngestionJobOut]:
    """Ingestion jobs (`Prefer: respond-async`), newest first, optionally of one status."""
    rows, next_cursor = jobs.list_jobs(session, status=status, limit=limit, cursor=cursor)
    return Page[IngestionJobOut](
        items=[IngestionJobOut.of(row) for row in rows], next_cursor=next_cursor
    )


@router.get("/{job_id}", response_model=IngestionJobOut)
def get_ingestion_job(job_id: IngestionJobID, session: ReadSession) -> IngestionJobOut:
    """One ingestion job: its status, times, and once finished its report or error."""
    return IngestionJobOut.of(jobs.get_job(session, job_id))
