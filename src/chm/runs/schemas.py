from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, FiniteFloat, StrictBool, StrictInt, StrictStr, StringConstraints

from chm.core.schemas import EntityId, EventTimestamp, NotNull, RequestModel, ResponseModel
from chm.models.run import RunStatus

ExternalRunId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
MetricName = Annotated[str, StringConstraints(min_length=1, max_length=200)]
# Metrics are flat: a name to a JSON scalar (rows, bytes, cost, a label...).
MetricValue = StrictBool | StrictInt | FiniteFloat | Annotated[StrictStr, Field(max_length=2000)] | None
Metrics = Annotated[dict[MetricName, MetricValue], Field(max_length=200)]
ErrorMessage = Annotated[str, Field(max_length=20_000)]
Duration = Annotated[FiniteFloat, Field(ge=0, le=10 * 365 * 86400)]


class RunCreate(RequestModel):
    status: RunStatus
    external_run_id: ExternalRunId | None = None
    started_at: EventTimestamp | None = None
    finished_at: EventTimestamp | None = None
    duration_seconds: Duration | None = None
    metrics: Metrics = Field(default_factory=dict)
    error_message: ErrorMessage | None = None
    source_payload: dict[str, Any] | None = None


class RunUpdate(RequestModel):
    status: Annotated[RunStatus | None, NotNull] = None
    started_at: EventTimestamp | None = None
    finished_at: EventTimestamp | None = None
    metrics: Annotated[Metrics | None, NotNull] = None
    error_message: ErrorMessage | None = None


class RunOut(ResponseModel):
    id: EntityId
    pipeline_id: EntityId
    external_run_id: str
    status: RunStatus
    source_status: str | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    metrics: dict[str, Any]
    error_message: str | None
    source_payload: dict[str, Any] | None
    ingested_at: datetime | None
    event_at: datetime = Field(
        description="The time windows use: started_at, else finished_at, else created_at"
    )
    created_at: datetime
    updated_at: datetime
