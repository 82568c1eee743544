from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, Field, FiniteFloat, PlainValidator, Strict, WithJsonSchema
from pydantic_core import PydanticCustomError

from chm.core.schemas import (
    NO_NUL_PATTERN,
    EntityId,
    NotNull,
    RequestModel,
    ResponseModel,
    UTCTimestamp,
    text,
)
from chm.core.status import RunStatus

ExternalRunId = Annotated[str, text(500)]


def _encodable(text: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError:
        raise PydanticCustomError(
            "string_unicode", "strings must be valid Unicode (no lone surrogates)"
        ) from None


def without_nul(value: Any) -> Any:
    """A payload with the NUL characters of its keys and strings dropped, at any
    depth: PostgreSQL cannot store them, and the schema, an object of anything,
    accepts them (ingestion drops them from source payloads the same way).
    Non-finite numbers (NaN, Infinity: accepted by Python's JSON parser, not
    JSON) are refused: neither database could give them back as JSON; so are
    lone surrogates (``"\\ud800"``), which no UTF-8 text can hold."""
    if isinstance(value, str):
        if not value.isascii():
            _encodable(value)
        return value.replace("\x00", "") if "\x00" in value else value
    if isinstance(value, float) and not math.isfinite(value):
        raise PydanticCustomError(
            "non_finite_number", "numbers must be finite (no NaN or Infinity)"
        )
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value


MetricName = Annotated[str, text(200, strip=False)]
MAX_METRIC_TEXT = 2000


def _metric_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return value
    if isinstance(value, str) and len(value) <= MAX_METRIC_TEXT and "\x00" not in value:
        return value
    raise PydanticCustomError(
        "invalid_metric",
        "a metric is a finite number, a string of at most {max} characters (no NUL),"
        " a boolean or null",
        {"max": MAX_METRIC_TEXT},
    )


_METRIC_VALUE_SCHEMA = {
    "anyOf": [
        {"type": "number"},
        {"type": "string", "maxLength": MAX_METRIC_TEXT, "pattern": NO_NUL_PATTERN},
        {"type": "boolean"},
        {"type": "null"},
    ]
}
MAX_METRICS = 200
# Metrics are flat: a name to a JSON scalar (rows, bytes, cost, a label...).
MetricValue = Annotated[Any, PlainValidator(_metric_value), WithJsonSchema(_METRIC_VALUE_SCHEMA)]
Metrics = Annotated[
    dict[MetricName, MetricValue],
    Field(max_length=MAX_METRICS),
    # pydantic would put the name's pattern in patternProperties, which leaves
    # names that do not match it (a NUL) unconstrained: the names' rule goes to
    # propertyNames and every value follows the metric value schema.
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": MAX_METRICS,
            "propertyNames": {"minLength": 1, "maxLength": 200, "pattern": NO_NUL_PATTERN},
            "additionalProperties": _METRIC_VALUE_SCHEMA,
        }
    ),
]
ErrorMessage = Annotated[str, text(20_000, min_length=0, strip=False)]
# Strict: a JSON number, not "1.5" or true (an integer is a number too).
Duration = Annotated[FiniteFloat, Strict(), Field(ge=0, le=10 * 365 * 86400)]


class RunCreate(RequestModel):
    status: RunStatus
    external_run_id: ExternalRunId | None = None
    started_at: UTCTimestamp | None = None
    finished_at: UTCTimestamp | None = None
    duration_seconds: Duration | None = None
    metrics: Metrics = Field(default_factory=dict)
    error_message: ErrorMessage | None = None
    source_payload: Annotated[dict[str, Any], AfterValidator(without_nul)] | None = None


class RunUpdate(RequestModel):
    status: Annotated[RunStatus | None, NotNull] = None
    started_at: UTCTimestamp | None = None
    finished_at: UTCTimestamp | None = None
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
