from __future__ import annotations

from fastapi import APIRouter

from chm.core.deps import ReadSession, WriteSession
from chm.core.ids import IdFilter, PipelineID
from chm.core.pagination import DEFAULT_LIMIT, CursorParam, LimitParam, Page
from chm.core.schemas import Slug
from chm.pipelines import service
from chm.pipelines.schemas import PipelineCreate, PipelineOut, PipelineUpdate

router = APIRouter(prefix="/pipelines", tags=["pipelines"])


@router.post("", status_code=201, response_model=PipelineOut)
def create_pipeline(body: PipelineCreate, session: WriteSession) -> PipelineOut:
    """Create a pipeline under an existing, active client."""
    return PipelineOut.model_validate(service.create_pipeline(session, body))


@router.get("", response_model=Page[PipelineOut])
def list_pipelines(
    session: ReadSession,
    client_id: IdFilter | None = None,
    platform: Slug | None = None,
    environment: Slug | None = None,
    include_inactive: bool = False,
    limit: LimitParam = DEFAULT_LIMIT,
    cursor: CursorParam = None,
) -> Page[PipelineOut]:
    """List pipelines ordered by name, then id; active inventory only unless `include_inactive`."""
    rows, next_cursor = service.list_pipelines(
        session,
        client_id=client_id,
        platform=platform,
        environment=environment,
        include_inactive=include_inactive,
        limit=limit,
        cursor=cursor,
    )
    return Page[PipelineOut](
        items=[PipelineOut.model_validate(r) for r in rows], next_cursor=next_cursor
    )


@router.get("/{pipeline_id}", response_model=PipelineOut)
def get_pipeline(pipeline_id: PipelineID, session: ReadSession) -> PipelineOut:
    """One pipeline, active or not."""
    return PipelineOut.model_validate(service.get_pipeline(session, pipeline_id))


@router.patch("/{pipeline_id}", response_model=PipelineOut)
def update_pipeline(
    pipeline_id: PipelineID, body: PipelineUpdate, session: WriteSession
) -> PipelineOut:
    """Change any field but the id, the client and the timestamps."""
    return PipelineOut.model_validate(service.update_pipeline(session, pipeline_id, body))


@router.delete("/{pipeline_id}", response_model=PipelineOut)
def disable_pipeline(pipeline_id: PipelineID, session: WriteSession) -> PipelineOut:
    """Soft disable: the pipeline stays, inactive, and so do its runs."""
    return PipelineOut.model_validate(service.disable_pipeline(session, pipeline_id))
