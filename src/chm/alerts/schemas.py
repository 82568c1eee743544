"""The API's models of alerts, their deliveries and silences (monitoring
contract, "Alerts"), apart from the tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field

from chm.core.ids import AlertRuleRef, ClientRef, PipelineRef
from chm.core.schemas import EntityId, RequestModel, ResponseModel, UTCTimestamp, text
from chm.models import Alert, AlertDelivery, Silence
from chm.models.alert import DELIVERY_EVENTS, DELIVERY_STATUSES
from chm.models.alert_rule import RuleType


class AlertState(StrEnum):
    firing = "firing"
    resolved = "resolved"


def _one_of(values: Sequence[str]) -> Any:
    # Plain text checked by the database; the schema lists the words. (A
    # Literal would turn a word added by a later migration into a 500 here.)
    return Field(json_schema_extra={"enum": list(values)})


class DeliveryOut(ResponseModel):
    """One message owed to one destination for one event of the alert; every
    attempt shows here (``attempts``, the redacted ``last_error``)."""

    id: EntityId
    destination: str
    event: Annotated[str, _one_of(DELIVERY_EVENTS)]
    status: Annotated[str, _one_of(DELIVERY_STATUSES)]
    attempts: int
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime
    sent_at: datetime | None


class AlertOut(ResponseModel):
    id: EntityId
    rule_id: EntityId
    rule_type: Annotated[str, _one_of([t.value for t in RuleType])]
    client_id: EntityId
    pipeline_id: EntityId
    state: AlertState
    fingerprint: str = Field(description="Stable per occurrence: PagerDuty's dedup_key")
    fired_at: datetime
    resolved_at: datetime | None
    summary: str
    run_id: EntityId | None = Field(description="The run that fired it, if any")
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    acknowledgement_note: str | None
    deliveries: list[DeliveryOut] = Field(description="Oldest first")

    @classmethod
    def of(cls, alert: Alert, deliveries: Sequence[AlertDelivery]) -> AlertOut:
        fields = {name: getattr(alert, name) for name in cls.model_fields if name != "deliveries"}
        return cls.model_validate(
            fields | {"deliveries": [DeliveryOut.model_validate(d) for d in deliveries]}
        )


class AcknowledgeBody(RequestModel):
    """Who takes the alert, and optionally why: repeat notifications stop."""

    by: Annotated[str, text(200)]
    note: Annotated[str, text(2000, min_length=0)] | None = None


# At least one scope, and not null (the service names the three fields when none is set).
_NEEDS_A_SCOPE: dict[str, Any] = {
    "anyOf": [
        {"required": [field], "properties": {field: {"type": "string"}}}
        for field in ("client_id", "pipeline_id", "rule_id")
    ]
}


class SilenceCreate(RequestModel):
    """While active, alerts in its scope (every field set must match) still
    fire and resolve, but their deliveries are ``silenced``."""

    model_config = ConfigDict(json_schema_extra=_NEEDS_A_SCOPE)

    client_id: ClientRef | None = None
    pipeline_id: PipelineRef | None = None
    rule_id: AlertRuleRef | None = None
    starts_at: UTCTimestamp | None = Field(default=None, description="Default: now")
    ends_at: UTCTimestamp = Field(description="In the future, after starts_at")
    reason: Annotated[str, text(2000)]
    created_by: Annotated[str, text(200)]


class SilenceOut(ResponseModel):
    id: EntityId
    client_id: EntityId | None
    pipeline_id: EntityId | None
    rule_id: EntityId | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime
    active: bool = Field(description="starts_at <= now < ends_at, at the time of the request")

    @classmethod
    def of(cls, silence: Silence, now: datetime) -> SilenceOut:
        fields = {name: getattr(silence, name) for name in cls.model_fields if name != "active"}
        return cls.model_validate(fields | {"active": silence.starts_at <= now < silence.ends_at})
