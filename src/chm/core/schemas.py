"""Field types shared by the API schemas."""

from __future__ import annotations

import re
from datetime import datetime
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


def _not_null(value: object) -> object:
    if value is None:
        raise PydanticCustomError("null_not_allowed", "this field cannot be null")
    return value


# PATCH fields that may be omitted but not set to null (validators do not run
# on omitted fields, only on values actually sent).
NotNull = AfterValidator(_not_null)


_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?([Zz]|[+-]\d{2}:?\d{2})?"
)


def _rfc3339_only(value: object) -> object:
    """Timestamps come as RFC 3339 text; pydantic would also read numbers as
    Unix seconds ("1.0"), which the API does not promise and rejects."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _RFC3339.fullmatch(value.strip()):
        return value.strip()
    raise PydanticCustomError(
        "invalid_datetime", "expected an RFC 3339 timestamp such as 2026-01-31T08:00:00Z"
    )


# A request timestamp without an offset is read as UTC (contract: Conventions).
UTCTimestamp = Annotated[datetime, BeforeValidator(_rfc3339_only), AfterValidator(as_utc)]


class RequestModel(BaseModel):
    """Request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)
