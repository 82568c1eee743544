from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, Field, StrictBool, StrictInt
from pydantic_core import PydanticCustomError

from chm.core.cron import CronError, TimezoneError, check_timezone, normalize_cron
from chm.core.ids import ClientRef
from chm.core.schemas import (
    EntityId,
    Name,
    NotNull,
    RequestModel,
    ResponseModel,
    Slug,
    integral_number,
    text,
)
from chm.models.pipeline import MAX_SCHEDULE_MINUTES

ExternalId = Annotated[str, text(500)]


def _cron(value: str) -> str:
    try:
        return normalize_cron(value)
    except CronError as error:
        raise PydanticCustomError("cron", "{reason}", {"reason": str(error)}) from None


def _zone(value: str) -> str:
    try:
        return check_timezone(value)
    except TimezoneError as error:
        raise PydanticCustomError("timezone", "{reason}", {"reason": str(error)}) from None


Cron = Annotated[
    str,
    text(200),
    AfterValidator(_cron),
    Field(
        description="A five-field cron expression (minute hour day-of-month month "
        "day-of-week), or a preset such as @daily; stored as five fields",
        examples=["30 2 * * *"],
    ),
]
TimeZone = Annotated[
    str,
    text(64),
    AfterValidator(_zone),
    Field(description="An IANA time zone name", examples=["Europe/Berlin"]),
]
# The bounds go on the integer itself (before the validator wraps it), so the
# schema shows them as minimum and maximum.
GraceMinutes = Annotated[
    StrictInt, Field(ge=0, le=MAX_SCHEDULE_MINUTES), BeforeValidator(integral_number)
]
DeadlineMinutes = Annotated[
    StrictInt, Field(ge=1, le=MAX_SCHEDULE_MINUTES), BeforeValidator(integral_number)
]
ScheduleSource = Literal["user", "platform"]


class ScheduleFields(RequestModel):
    """The schedule (monitoring contract, "Schedules"). Null timezone or grace
    means the default (UTC, 30 minutes)."""

    schedule: Cron | None = None
    schedule_timezone: TimeZone | None = None
    grace_minutes: GraceMinutes | None = None
    deadline_minutes: DeadlineMinutes | None = None
    schedule_source: Annotated[
        ScheduleSource | None,
        Field(
            description="Who owns the schedule: 'user' (set by default when schedule "
            "is written; with a null schedule it pins 'no schedule'), 'platform' "
            "(ingestion may fill and replace it), or null"
        ),
    ] = None


class PipelineCreate(ScheduleFields):
    client_id: ClientRef
    name: Name
    platform: Slug
    pipeline_type: Slug
    environment: Slug
    external_id: ExternalId | None = None
    is_active: StrictBool = True


class PipelineUpdate(ScheduleFields):
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
    schedule: str | None
    schedule_timezone: str
    grace_minutes: int
    deadline_minutes: int | None
    schedule_source: ScheduleSource | None
    schedule_set_at: datetime | None
    schedule_note: str | None
    schedule_checked_at: datetime | None
    created_at: datetime
    updated_at: datetime
