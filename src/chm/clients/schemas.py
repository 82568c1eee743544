from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import StrictBool

from chm.core.schemas import EntityId, Name, NotNull, RequestModel, ResponseModel
from chm.core.status import RunStatus
from chm.runs.schemas import RunOut


class ClientCreate(RequestModel):
    name: Name
    is_active: StrictBool = True


class ClientUpdate(RequestModel):
    name: Annotated[Name | None, NotNull] = None
    is_active: Annotated[StrictBool | None, NotNull] = None


class ClientOut(ResponseModel):
    id: EntityId
    name: str
    is_active: bool
    created_at: datetime
    updated_at: datetime


class ClientRef(ResponseModel):
    id: EntityId
    name: str


class PipelineHealth(ResponseModel):
    pipeline_id: EntityId
    pipeline_name: str
    platform: str
    environment: str
    latest_status: RunStatus | None
    latest_run: RunOut | None
    runs_in_window: int
    failed_in_window: int


class ClientSummary(ResponseModel):
    client: ClientRef
    since: datetime
    until: datetime
    total_runs: int
    status_counts: dict[RunStatus, int]
    pipelines: list[PipelineHealth]
