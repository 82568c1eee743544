from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StrictBool,
    StrictInt,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from chm.core.ids import ClientRef, PipelineRef
from chm.core.schemas import EntityId, NotNull, RequestModel, ResponseModel, integral_number
from chm.models.alert_rule import MAX_WINDOW_MINUTES, RuleType

# A destination is free text by the HTTP contract ("a non-empty string", e.g.
# slack:#data-alerts), and the monitoring contract makes an unknown kind or
# name an `undeliverable` delivery, not a refused rule: its form is checked by
# chm.alerts at delivery. Refused here is only what would put a secret, or a
# trap for whoever reads it, in the database and every answer: a URL (its
# path or query holds a token; the URLs of named destinations live in
# environment variables), whitespace, control and invisible characters. No
# value holds ":/", so no "scheme://"; no part of it is trimmed.
# Python's re and ECMA regexes read this pattern alike (the schema states it).
_NOT_IN_DESTINATION = r"\x00-\x20\x7f-\xa0\u1680\u2000-\u200f\u2028-\u202f\u205f-\u2064\u3000\ufeff"
DESTINATION_PATTERN = rf"^(?:[^:{_NOT_IN_DESTINATION}]|:+[^:/{_NOT_IN_DESTINATION}])+:*$"
_DESTINATION = re.compile(DESTINATION_PATTERN)
DESTINATION_MAX_LENGTH = 500


@dataclass(frozen=True)
class _DestinationForm:
    """``DESTINATION_PATTERN``, with a message that never repeats the value (a
    refused value may be a secret)."""

    def _check(self, value: str) -> str:
        if not _DESTINATION.match(value):
            raise PydanticCustomError(
                "invalid_format",
                "a destination is kind:target (slack:#data-alerts, email:oncall@example.com, "
                "webhook:<a destination of the CHM_CONFIG file>), without whitespace or control "
                "characters, and never a URL: a URL or key goes in an environment variable "
                "named by a [[destinations]] entry of the CHM_CONFIG file",
            )
        return value

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            self._check,
            core_schema.str_schema(min_length=1, max_length=DESTINATION_MAX_LENGTH),
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = DESTINATION_PATTERN
        return json_schema


Destination = Annotated[str, _DestinationForm()]


# The bounds go on the integer itself (before the validator wraps it), so the
# schema shows them as minimum and maximum.
Threshold = Annotated[StrictInt, Field(ge=1, le=1_000_000), BeforeValidator(integral_number)]
WindowMinutes = Annotated[
    StrictInt, Field(ge=1, le=MAX_WINDOW_MINUTES), BeforeValidator(integral_number)
]


# At least one scope, and not null (the service names both fields when neither is set).
_NEEDS_A_SCOPE: dict[str, Any] = {
    "anyOf": [
        {"required": [field], "properties": {field: {"type": "string"}}}
        for field in ("client_id", "pipeline_id")
    ]
}


class _RuleCreate(RequestModel):
    """What every new rule takes; its ``rule_type`` decides which parameters it needs."""

    model_config = ConfigDict(json_schema_extra=_NEEDS_A_SCOPE)

    rule_type: str  # each variant's own RuleType value
    client_id: ClientRef | None = None
    pipeline_id: PipelineRef | None = None
    destination: Destination
    is_enabled: StrictBool = True


class OnFailureRuleCreate(_RuleCreate):
    """Fires on every failed run: `threshold` and `window_minutes` may be null."""

    rule_type: Literal["on_failure"]
    threshold: Threshold | None = None
    window_minutes: WindowMinutes | None = None


class FailuresInWindowRuleCreate(_RuleCreate):
    """Fires when `threshold` runs failed within `window_minutes`: both required."""

    rule_type: Literal["failures_in_window"]
    threshold: Threshold
    window_minutes: WindowMinutes


@dataclass(frozen=True)
class _NotUsed:
    """A parameter ``rule_type`` does not use: absent or null, nothing else (the
    schema says null), so a value the rule would silently ignore is refused."""

    field: str
    rule_type: RuleType

    def _check(self, value: object) -> None:
        if value is not None:
            raise PydanticCustomError(
                "not_used", f"{self.field} is not used by {self.rule_type.value} rules"
            )

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            self._check, json_schema_input_schema=core_schema.none_schema()
        )


class ConsecutiveFailuresRuleCreate(_RuleCreate):
    """Fires when the latest `threshold` runs all failed: `threshold` required."""

    rule_type: Literal["consecutive_failures"]
    threshold: Threshold
    window_minutes: Annotated[None, _NotUsed("window_minutes", RuleType.consecutive_failures)] = (
        None
    )


class LongRunningRuleCreate(_RuleCreate):
    """Fires when a queued or running run's event time is over `threshold`
    minutes ago: `threshold` (minutes) required."""

    rule_type: Literal["long_running"]
    threshold: Threshold
    window_minutes: Annotated[None, _NotUsed("window_minutes", RuleType.long_running)] = None


class DurationAnomalyRuleCreate(_RuleCreate):
    """Fires when the latest finished run took far longer than its usual
    successful runs: no parameters."""

    rule_type: Literal["duration_anomaly"]
    threshold: Annotated[None, _NotUsed("threshold", RuleType.duration_anomaly)] = None
    window_minutes: Annotated[None, _NotUsed("window_minutes", RuleType.duration_anomaly)] = None


class MissedScheduleRuleCreate(_RuleCreate):
    """Fires when a pipeline's scheduled run is missed (none by the tick plus
    its grace) or late (still queued or running at the tick plus its deadline);
    the pipeline's schedule says when: no parameters."""

    rule_type: Literal["missed_schedule"]
    threshold: Annotated[None, _NotUsed("threshold", RuleType.missed_schedule)] = None
    window_minutes: Annotated[None, _NotUsed("window_minutes", RuleType.missed_schedule)] = None


# The schema shows one body per rule_type (oneOf with a discriminator), so a
# client generated from it sends the parameters each type needs.
AlertRuleCreate = Annotated[
    OnFailureRuleCreate
    | FailuresInWindowRuleCreate
    | ConsecutiveFailuresRuleCreate
    | LongRunningRuleCreate
    | DurationAnomalyRuleCreate
    | MissedScheduleRuleCreate,
    Discriminator("rule_type"),
]


class AlertRuleUpdate(RequestModel):
    """Any writable field; the rule is validated as a whole after the change."""

    rule_type: Annotated[RuleType | None, NotNull] = None
    client_id: ClientRef | None = None
    pipeline_id: PipelineRef | None = None
    destination: Annotated[Destination | None, NotNull] = None
    threshold: Threshold | None = None
    window_minutes: WindowMinutes | None = None
    is_enabled: Annotated[StrictBool | None, NotNull] = None


class AlertRuleOut(ResponseModel):
    id: EntityId
    rule_type: RuleType
    client_id: EntityId | None
    pipeline_id: EntityId | None
    destination: str
    threshold: int | None
    window_minutes: int | None
    is_enabled: bool
    effective_scope: Literal["pipeline", "client"]
    created_at: datetime
    updated_at: datetime
