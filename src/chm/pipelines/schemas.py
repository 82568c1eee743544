from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import StringConstraints
from pydantic.json_schema import SkipJsonSchema

from chm.core.schemas import EntityId, Name, NotNull, RequestModel, ResponseModel, Slug

ExternalId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class PipelineCreate(RequestModel):
    client_id: EntityId
    name: Name
    platform: Slug
    pipeline_type: Slug
    environment: Slug
    external_id: ExternalId | None = None
    is_active: bool = True


class PipelineUpdate(RequestModel):
    name: Annotated[Name | SkipJsonSchema[None], NotNull] = None
    platform: Annotated[Slug | SkipJsonSchema[None], NotNull] = None
    pipeline_type: Annotated[Slug | SkipJsonSchema[None], NotNull] = None
    environment: Annotated[Slug | SkipJsonSchema[None], NotNull] = None
    external_id: ExternalId | None = None
    is_active: Annotated[bool | SkipJsonSchema[None], NotNull] = None


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
