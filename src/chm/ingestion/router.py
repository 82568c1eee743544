"""``POST /api/v1/ingestions``: run the ingestion engine now and answer its report."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import Field, StrictBool

from chm.core.errors import ChmError
from chm.core.ids import ClientRef, PipelineRef
from chm.core.schemas import RequestModel
from chm.core.settings import Settings
from chm.ingestion.config import ConfigError
from chm.ingestion.engine import ingest, resolve_scope
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


@router.post("", response_model=IngestionReport)
def run_ingestion(request: Request, body: IngestionRequest | None = None) -> IngestionReport:
    """Ingest every matching active pipeline now (optionally one client's or one
    pipeline's) and answer the report; failures of single pipelines are in `errors`,
    a missing or invalid sources file (CHM_CONFIG) is a 409."""
    # A plain `def`: FastAPI runs it in a worker thread. No request transaction
    # is held while the engine talks HTTP: it commits each page on its own.
    settings: Settings = request.app.state.settings
    body = body or IngestionRequest()
    cache: SourcesCache = request.app.state.sources
    try:
        sources = cache.load(settings.config, settings.env)
    except ConfigError as error:
        raise IngestionNotConfigured(str(error)) from None
    with request.app.state.read_sessions() as session:
        client_id, pipeline_id = resolve_scope(session, body.client_id, body.pipeline_id)
    return ingest(
        request.app.state.engine,
        sources,
        client_id=client_id,
        pipeline_id=pipeline_id,
        full=body.full,
    )
