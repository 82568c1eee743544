"""Field types shared by the API schemas."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
)
from pydantic_core import PydanticCustomError

from chm.core.timeutil import as_utc

SLUG_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,49}$"

Slug = Annotated[str, StringConstraints(pattern=SLUG_PATTERN)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


def _id_to_str(value: object) -> object:
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


# Ids are integers in the database and opaque strings on the wire.
EntityId = Annotated[
    str,
    BeforeValidator(_id_to_str),
    Field(description="Opaque server-generated id", max_length=40),
]

EARLIEST_EVENT = datetime(1970, 1, 1, tzinfo=UTC)


def _event_time(value: datetime) -> datetime:
    value = as_utc(value)
    if value < EARLIEST_EVENT:
        raise PydanticCustomError(
            "out_of_range", "timestamp must not be before 1970-01-01T00:00:00Z"
        )
    return value


def _not_null(value: object) -> object:
    if value is None:
        raise PydanticCustomError("null_not_allowed", "this field cannot be null")
    return value


# PATCH fields that may be omitted but not set to null (validators do not run
# on omitted fields, only on values actually sent).
NotNull = AfterValidator(_not_null)


# A request timestamp without an offset is read as UTC (contract: Conventions).
UTCTimestamp = Annotated[datetime, AfterValidator(as_utc)]
# A run's own times: UTC, and not before the Unix epoch.
EventTimestamp = Annotated[datetime, AfterValidator(_event_time)]


class RequestModel(BaseModel):
    """Request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)
