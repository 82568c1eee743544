from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import StrictBool

from chm.core.ids import ClientRef
from chm.core.schemas import EntityId, Name, NotNull, RequestModel, ResponseModel, Slug, text

ExternalId = Annotated[str, text(500)]


class PipelineCreate(RequestModel):
    client_id: ClientRef
    name: Name
    platform: Slug
    pipeline_type: Slug
    environment: Slug
    external_id: ExternalId | None = None
    is_active: StrictBool = True


class PipelineUpdate(RequestModel):
    name: Annotated[Name | None, NotNull] = None
    platform: Annotated[Slug | None, NotNull] = None
    pipeline_type: Annotated[Slug | None, NotNull] = None
    environment: Annotated[Slug | None, NotNull] = None
    external_id: ExternalId | None = None
    is_active: Annotated[StrictBool | None, NotNull] = None


class PipelineOut(ResponseModel):
    id: EntityId
    client_id: EntityId
    name: str
    platform: str
    pipeline_type: str
    environment: str
    external_id: str | None
    is_active: bool
    last_ingested_at: datetime | None
    last_ingestion_error: str | None
    created_at: datetime
    updated_at: datetime
