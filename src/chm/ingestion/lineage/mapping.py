"""From an OpenLineage RunEvent to a run snapshot: no HTTP, no database."""

from __future__ import annotations

from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chm.core.errors import BadRequest, FieldIssue, ValidationFailed, issues_from_pydantic
from chm.core.redaction import Redactor
from chm.core.status import RunStatus
from chm.ingestion.normalize import (
    InvalidRun,
    SourceRun,
    canonical_json,
    error_text,
    parse_timestamp,
    run_identity,
)
from chm.ingestion.rule import Row, snapshot_row

EVENT_STATUS = {
    "START": RunStatus.running,
    "RUNNING": RunStatus.running,
    "COMPLETE": RunStatus.success,
    "FAIL": RunStatus.failed,
    "ABORT": RunStatus.cancelled,
}
TERMINAL_EVENTS = ("COMPLETE", "FAIL", "ABORT")


class _OpenModel(BaseModel):
    # OpenLineage objects carry facets and fields of their own: keep them.
    model_config = ConfigDict(extra="allow")


class LineageRun(_OpenModel):
    runId: str = Field(min_length=1, max_length=500)  # noqa: N815 (the spec's name)
    facets: dict[str, Any] = Field(default_factory=dict)


class LineageJob(_OpenModel):
    namespace: str = Field(min_length=1, max_length=500)
    name: str = Field(min_length=1, max_length=500)
    facets: dict[str, Any] = Field(default_factory=dict)


class RunEvent(_OpenModel):
    """An OpenLineage RunEvent: what CHM reads of it is validated, the rest is kept."""

    eventType: Literal["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"] | None = None  # noqa: N815
    eventTime: str = Field(min_length=1, max_length=64)  # noqa: N815
    run: LineageRun
    job: LineageJob
    producer: str = Field(min_length=1)
    schemaURL: str = Field(min_length=1)  # noqa: N815
    inputs: list[Any] = Field(default_factory=list)
    outputs: list[Any] = Field(default_factory=list)


def parse_event(body: bytes) -> tuple[RunEvent, dict[str, Any]]:
    """The event and the JSON document it came from; 400 or 422 when it is none."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("The request body is not valid JSON") from None
    if not isinstance(document, dict):
        raise ValidationFailed.one("body", "invalid_type", "a RunEvent is a JSON object")
    try:
        event = RunEvent.model_validate(document)
    except ValidationError as error:
        raise ValidationFailed(issues_from_pydantic(error.errors())) from None
    return event, document


def changes_a_run(event: RunEvent) -> bool:
    """OTHER (or no eventType) tells nothing of the run's state."""
    return event.eventType not in (None, "OTHER")


def event_snapshot(event: RunEvent, document: dict[str, Any], redactor: Redactor) -> Row:
    """The run snapshot the event tells of, redacted then capped; 422 when unreadable."""
    try:
        moment = parse_timestamp(event.eventTime, "eventTime")
        if moment is None:
            raise InvalidRun("eventTime is empty")
        kind = event.eventType or "OTHER"
        status = EVENT_STATUS[kind]
        error = event.run.facets.get("errorMessage")
        message = error.get("message") if isinstance(error, dict) else None
        run = SourceRun(
            external_run_id=run_identity(event.run.runId, "run.runId"),
            status=status,
            source_status=kind,
            started_at=moment if kind == "START" else None,
            finished_at=moment if kind in TERMINAL_EVENTS else None,
            error_message=error_text(message) if kind in ("FAIL", "ABORT") else None,
            source_updated_at=moment,
        )
        # Redacted, then capped, as every path that stores runs does.
        if run.error_message is not None:
            run.error_message = redactor.stored_text(run.error_message)
        payload = canonical_json(redactor.stored_payload(document))
        return snapshot_row(run, payload)
    except InvalidRun as invalid:
        field = "eventTime" if "eventTime" in str(invalid) else "run.runId"
        raise ValidationFailed([FieldIssue(field, "invalid", str(invalid))]) from None
