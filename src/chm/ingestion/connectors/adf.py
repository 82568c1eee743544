"""Azure Data Factory: ``POST .../factories/{factory}/queryPipelineRuns?api-version=2018-06-01``.

The body filters on the pipeline name (the pipeline's ``external_id``) and a
required ``lastUpdatedAfter``/``lastUpdatedBefore`` window; a page is
``{"value": [...], "continuationToken": "..." | null}`` and the next page is
the same body re-posted with that ``continuationToken``. A run updated again
later reappears in a later window: the engine's upsert absorbs it.
Incremental: the window starts at the pipeline's watermark (less the
overlap) once there is one, else ``lookback_hours`` ago.

Per run: ``runId``; ``status`` (Queued, InProgress, Canceling, Succeeded,
Failed, Cancelled); ``runStart``/``runEnd`` in ISO 8601 with 7 fractional
digits; ``durationInMs``; ``message``; ``lastUpdated``, the source's own
update time used by the no-regression rule.

Read-time value: ``durationInMs`` counts the time so far while a run is in
progress: not stored (the duration of a finished run is kept as its
duration). A rerun, whole or from the failed activity, is a new run with
its own ``runId`` (``runGroupId`` ties them): ADF never starts a finished run
again under the same id.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import Field, StringConstraints

from chm.core.status import RunStatus
from chm.core.timeutil import isoformat_z
from chm.ingestion.connectors.base import (
    Fetched,
    Page,
    PageRequest,
    Window,
    cursor_value,
    run_list,
)
from chm.ingestion.connectors.registry import Platform, register
from chm.ingestion.normalize import (
    InvalidRun,
    SourceRun,
    duration_seconds,
    error_text,
    failure_text,
    map_status,
    parse_timestamp,
    run_identity,
    status_word,
)
from chm.ingestion.sources import SourceBase


class AdfSource(SourceBase):
    """Azure Data Factory ``queryPipelineRuns``; ``base_url`` is the management endpoint."""

    platform: Literal["adf"]
    subscription_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{1,64}$")]
    resource_group: Annotated[str, StringConstraints(pattern=r"^[-\w.()]{1,90}$")]
    factory_name: Annotated[
        str,
        StringConstraints(pattern=r"^[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*$", min_length=3, max_length=63),
    ]
    # queryPipelineRuns requires a lastUpdated window: each ingestion asks for
    # the runs updated in the last ``lookback_hours`` (ADF keeps 45 days).
    lookback_hours: Annotated[float, Field(gt=0, le=45 * 24)] = 72.0


API_VERSION = "2018-06-01"

ADF_STATUS = {
    "queued": RunStatus.queued,
    # Canceling: cancellation requested, the run has not stopped yet.
    **dict.fromkeys(("inprogress", "canceling"), RunStatus.running),
    "succeeded": RunStatus.success,
    "failed": RunStatus.failed,
    **dict.fromkeys(("cancelled", "canceled"), RunStatus.cancelled),
}


class AdfConnector:
    def __init__(self, source: AdfSource, external_id: str, window: Window) -> None:
        self.url = (
            f"{source.base}/subscriptions/{quote(source.subscription_id, safe='')}"
            f"/resourceGroups/{quote(source.resource_group, safe='')}"
            f"/providers/Microsoft.DataFactory/factories/{quote(source.factory_name, safe='')}"
            "/queryPipelineRuns"
        )
        # One window for the whole walk: every page answers the same query.
        # Incremental: from the watermark (less the overlap) instead of the
        # lookback, so that a pipeline not ingested for days misses nothing.
        after = window.since
        if after is None:
            after = window.now - timedelta(hours=source.lookback_hours)
        self.query: dict[str, Any] = {
            "lastUpdatedAfter": isoformat_z(after),
            "lastUpdatedBefore": isoformat_z(window.now),
            "filters": [{"operand": "PipelineName", "operator": "Equals", "values": [external_id]}],
        }
        # The pipeline's name in ADF.
        self.pipeline_name = external_id

    def page_request(self, cursor: str | None) -> PageRequest:
        body = dict(self.query)
        if cursor:
            body["continuationToken"] = cursor
        return PageRequest("POST", self.url, params={"api-version": API_VERSION}, json=body)

    def read_page(self, fetched: Fetched) -> Page:
        body = fetched.body
        runs = run_list(body, "value", required=True)
        return Page(runs, cursor_value(body.get("continuationToken"), "continuationToken"))

    def map_run(self, raw: dict[str, Any]) -> SourceRun:
        # The query filters on the pipeline name: a run of another pipeline (a
        # filter the service ignored) must not be stored as this one's.
        name = raw.get("pipelineName")
        if name is not None and str(name).casefold() != self.pipeline_name.casefold():
            raise InvalidRun(f"the run is of pipeline {str(name)[:200]!r}, not of this one")
        word = status_word(raw.get("status"))
        status = map_status(word, ADF_STATUS)
        finished_at = parse_timestamp(raw.get("runEnd"), "runEnd")
        duration = None
        if finished_at is not None:
            duration = duration_seconds(raw.get("durationInMs"), "durationInMs", scale=0.001)
        return SourceRun(
            external_run_id=run_identity(raw.get("runId"), "runId"),
            status=status,
            source_status=word,
            started_at=parse_timestamp(raw.get("runStart"), "runStart"),
            finished_at=finished_at,
            duration_seconds=duration,
            error_message=failure_text(status, error_text(raw.get("message"))),
            source_updated_at=parse_timestamp(raw.get("lastUpdated"), "lastUpdated"),
        )


PLATFORM = register(
    Platform(
        name="adf",
        source_model=AdfSource,
        connector=AdfConnector,
        statuses={"status": ADF_STATUS},
        incremental="updated",
        read_time_keys=frozenset({"durationInMs"}),
    )
)
