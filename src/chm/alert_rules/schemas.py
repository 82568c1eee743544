from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, StrictBool, StrictInt

from chm.core.ids import ClientRef, PipelineRef
from chm.core.schemas import EntityId, NotNull, RequestModel, ResponseModel, text
from chm.models.alert_rule import MAX_WINDOW_MINUTES, RuleType

Destination = Annotated[str, text(500)]


def _integral_number(value: object) -> object:
    """JSON Schema's integer: 5 and 5.0 (a number with a zero fraction) are both
    integers; "5" and true are not (StrictInt refuses them after this)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# The bounds go on the integer itself (before the validator wraps it), so the
# schema shows them as minimum and maximum.
Threshold = Annotated[StrictInt, Field(ge=1, le=1_000_000), BeforeValidator(_integral_number)]
WindowMinutes = Annotated[
    StrictInt, Field(ge=1, le=MAX_WINDOW_MINUTES), BeforeValidator(_integral_number)
]


class AlertRuleCreate(RequestModel):
    rule_type: RuleType
    client_id: ClientRef | None = None
    pipeline_id: PipelineRef | None = None
    destination: Destination
    threshold: Threshold | None = None
    window_minutes: WindowMinutes | None = None
    is_enabled: StrictBool = True


class AlertRuleUpdate(RequestModel):
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
