"""From an OpenLineage RunEvent to a run snapshot: no HTTP, no database."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chm.core.errors import BadRequest, FieldIssue, ValidationFailed, issues_from_pydantic
from chm.core.redaction import Redactor
from chm.core.status import TERMINAL_STATUSES, RunStatus
from chm.ingestion.normalize import (
    InvalidRun,
    SourceRun,
    canonical_json,
    error_text,
    parse_timestamp,
    run_identity,
)
from chm.ingestion.rule import Fold, Row, attempt_order, fold_event, snapshot_row

EVENT_STATUS = {
    "START": RunStatus.running,
    "RUNNING": RunStatus.running,
    "COMPLETE": RunStatus.success,
    "FAIL": RunStatus.failed,
    "ABORT": RunStatus.cancelled,
}
TERMINAL_EVENTS = ("COMPLETE", "FAIL", "ABORT")

# Where an emitter's facets name its own id of the run (docs/ingestion.md,
# "The run's id"): the first that an event carries is its external run id, so
# that a run pulled from the platform and pushed by it meet in one row. Each
# entry: the emitter, the run facet path, and the job type (the ``jobType``
# job facet) the id belongs to, when the facet also rides on other events.
PLATFORM_RUN_IDS: tuple[tuple[str, tuple[str, ...], str | None], ...] = (
    # apache-airflow-providers-openlineage: the DAG run's events only (task
    # events carry the DAG run in the ``airflow`` facet: that id is the parent's).
    ("airflow", ("airflowDagRun", "dagRun", "run_id"), None),
    # openlineage-dbt (dbt-ol) and the dbt Cloud integration: the invocation.
    ("dbt", ("dbt_run", "invocation_id"), None),
    # openlineage-spark: the application's own events, not its SQL executions.
    ("spark", ("spark_applicationDetails", "applicationId"), "APPLICATION"),
)

# A DAG-run FAIL of the Airflow provider says only this: the reason is in the
# failed task's own FAIL event (``parent_failure``).
PROVIDER_FIXED_FAILURES = frozenset({"task_failure"})


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


def _facet_value(facets: Any, path: tuple[str, ...]) -> str | None:
    for name in path:
        if not isinstance(facets, dict):
            return None
        facets = facets.get(name)
    if isinstance(facets, (str, int)) and not isinstance(facets, bool) and str(facets).strip():
        return str(facets).strip()
    return None


def platform_run_id(event: RunEvent) -> str | None:
    """The emitter's own id of the run the event tells of, when its facets name one."""
    job_type = _facet_value(event.job.facets, ("jobType", "jobType"))
    for _emitter, path, only_job_type in PLATFORM_RUN_IDS:
        if only_job_type is not None and job_type != only_job_type:
            continue
        found = _facet_value(event.run.facets, path)
        if found is not None:
            return found
    return None


def external_run_id(event: RunEvent) -> str:
    """The run's id as CHM stores it: the platform's own when the event names it,
    else ``run.runId``."""
    return platform_run_id(event) or event.run.runId


def is_specific_failure(message: str | None) -> bool:
    """A failure text that says more than the provider's fixed one."""
    return message is not None and message.strip() not in PROVIDER_FIXED_FAILURES


def fold_lineage_event(stored: Row | None, snapshot: Row) -> Row | None:
    """``fold_event``, plus: within one attempt, the provider's fixed failure text
    never replaces a more specific one already stored (a failed task's, put
    there by ``parent_failure``, whichever event came first)."""
    folded = fold_event(stored, snapshot)
    if (
        folded is not None
        and stored is not None
        and folded["error_message"] in PROVIDER_FIXED_FAILURES
        and is_specific_failure(stored["error_message"])
        and attempt_order(stored, snapshot) == 0
    ):
        folded = dict(folded, error_message=stored["error_message"])
    return folded


@dataclass(frozen=True)
class ParentFailure:
    """A failed task's error, for the run its ``parent`` facet names."""

    namespace: str
    job_name: str
    # The parent's ids as CHM may store it: the platform's own first, then the runId.
    run_ids: tuple[str, ...]
    message: str


def parent_failure(event: RunEvent, redactor: Redactor) -> ParentFailure | None:
    """The failure a task's FAIL event tells of its parent run (the ``parent``
    run facet), as ``task <name> failed: <error>``, redacted and capped; None
    when the event is no FAIL, names no parent or carries no error."""
    if event.eventType != "FAIL":
        return None
    facets = event.run.facets
    namespace = _facet_value(facets, ("parent", "job", "namespace"))
    job_name = _facet_value(facets, ("parent", "job", "name"))
    parent_run = _facet_value(facets, ("parent", "run", "runId"))
    message = error_text(_facet_value(facets, ("errorMessage", "message")))
    if namespace is None or job_name is None or parent_run is None or message is None:
        return None
    # The exception's type, when the stack trace's last line is "Type: message".
    trace = _facet_value(facets, ("errorMessage", "stackTrace"))
    last_line = trace.rstrip().rsplit("\n", 1)[-1].strip() if trace else ""
    if last_line.endswith(": " + message) and " " not in last_line.split(":", 1)[0]:
        message = last_line
    task = event.job.name
    if task.startswith(job_name + "."):
        task = task[len(job_name) + 1 :]
    # The Airflow provider names the DAG run's own id in the task's ``airflow`` facet.
    dag_run = _facet_value(facets, ("airflow", "dagRun", "run_id"))
    run_ids = tuple(dict.fromkeys(i for i in (dag_run, parent_run) if i is not None))
    text = redactor.stored_text(f"task {task} failed: {message}")
    return ParentFailure(namespace, job_name, run_ids, text)


def parent_failure_fold(failure: ParentFailure) -> Fold:
    """The fold that puts ``failure`` on a stored parent run: not on one that is
    not stored, has ended well, or already says something more specific."""

    def fold(stored: Row | None, _snapshot: Row) -> Row | None:
        if stored is None or is_specific_failure(stored["error_message"]):
            return None
        if stored["status"] in TERMINAL_STATUSES and stored["status"] != RunStatus.failed.value:
            return None
        return dict(stored, error_message=failure.message)

    return fold


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
            external_run_id=run_identity(external_run_id(event), "run.runId"),
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
