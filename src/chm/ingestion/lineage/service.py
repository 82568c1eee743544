"""Which pipeline an event is for, and storing its run through the engine's store."""

from __future__ import annotations

import logging
import threading
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy.exc import IntegrityError
from starlette.datastructures import State

from chm.core.errors import ValidationFailed
from chm.core.timeutil import utcnow
from chm.ingestion.config import Sources
from chm.ingestion.lineage.mapping import (
    ParentFailure,
    RunEvent,
    external_run_id,
    fold_lineage_event,
    parent_failure_fold,
)
from chm.ingestion.lineage.unmatched import (
    MAX_UNMATCHED_JOBS,
    NotRegistered,
    record_unmatched,
    register_pipeline,
)
from chm.ingestion.rule import Row
from chm.ingestion.sources import AnySource
from chm.ingestion.store import run_store
from chm.models import Client, Pipeline
from chm.models.base import name_key
from chm.models.pipeline import active_inventory

logger = logging.getLogger("chm.ingestion.lineage")

NO_PIPELINE = "no active pipeline of this namespace has the job as external_id"


class LineageAnswer(BaseModel):
    result: Literal["created", "updated", "unchanged", "ignored"]
    pipeline_id: str | None = None
    external_run_id: str | None = None
    reason: str | None = None
    ignored_total: int | None = Field(
        None, description="Events this process ignored so far (jobs mapped to no pipeline)"
    )
    unmatched_recorded: bool | None = Field(
        None,
        description="Whether the ignored job is listed by GET /api/v1/lineage/unmatched "
        "(false only when that table is full and the job is new to it)",
    )


class IgnoredEvents:
    """The events a process ignored, counted (and logged by the caller)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0

    def add(self) -> int:
        with self._lock:
            self.total += 1
            return self.total


def pipeline_for(
    session: Any, sources: Sources, source: AnySource, job_name: str
) -> tuple[int | None, str | None]:
    """The one active pipeline ``source`` serves for ``job_name``, or the reason there is none."""
    query = (
        sa.select(Pipeline.id, Pipeline.platform, Pipeline.environment, Client.name)
        .join(Client, Client.id == Pipeline.client_id)
        .where(
            active_inventory(),
            Pipeline.platform == source.platform,
            Pipeline.environment == source.environment,
            Pipeline.external_id == job_name,
        )
        .order_by(Pipeline.id)
    )
    if source.client is not None:
        query = query.where(Client.name_key == name_key(source.client))
    served = [
        row.id
        for row in session.execute(query)
        if sources.for_pipeline(row.platform, row.environment, row.name) is source
    ]
    if not served:
        return None, NO_PIPELINE
    if len(served) > 1:
        return None, f"the job is the external_id of {len(served)} pipelines of this namespace"
    return served[0], None


def record_event(
    state: State,
    sources: Sources,
    source: AnySource,
    event: RunEvent,
    row: Row | None,
    failure: ParentFailure | None = None,
) -> tuple[int, LineageAnswer]:
    """Store the run ``row`` (None: the event changes nothing) for the event's
    pipeline, and a failed task's error on its parent run (``failure``, even
    when the task's own job maps to no pipeline); answers the HTTP status and
    the answer."""
    if failure is not None:
        record_parent_failure(state, sources, source, failure)
    with state.read_sessions() as session:
        pipeline_id, reason = pipeline_for(session, sources, source, event.job.name)
    if pipeline_id is None and reason == NO_PIPELINE and source.register_pipelines:
        pipeline_id, reason = _register(state, sources, source, event.job.name)
    if pipeline_id is None:
        return 202, _unmatched(state, source, event, reason or NO_PIPELINE)
    answer = LineageAnswer(
        result="unchanged", pipeline_id=str(pipeline_id), external_run_id=external_run_id(event)
    )
    if row is None:  # OTHER: nothing to change
        return 200, answer
    with state.write_sessions.begin() as session:
        counts = run_store(state.engine).upsert_page(
            session, pipeline_id, [row], utcnow(), fold=fold_lineage_event
        )
    if counts.invalid:
        raise ValidationFailed.one("eventTime", "invalid", counts.invalid[0][1])
    if counts.created or counts.updated:
        answer.result = "created" if counts.created else "updated"
        return 201, answer
    return 200, answer


def record_parent_failure(
    state: State, sources: Sources, source: AnySource, failure: ParentFailure
) -> bool:
    """Put a failed task's error on its parent run, when this source serves the
    parent's job and CHM stores the run (by the platform's id or the runId);
    True when a run changed. Never on another namespace's run."""
    if failure.namespace != source.openlineage_namespace:
        return False
    with state.read_sessions() as session:
        pipeline_id, _reason = pipeline_for(session, sources, source, failure.job_name)
    if pipeline_id is None:
        return False
    with state.write_sessions.begin() as session:
        counts = run_store(state.engine).upsert_page(
            session,
            pipeline_id,
            [{"external_run_id": run_id} for run_id in failure.run_ids],
            utcnow(),
            fold=parent_failure_fold(failure),
        )
    return counts.updated > 0


def _register(
    state: State, sources: Sources, source: AnySource, job_name: str
) -> tuple[int | None, str | None]:
    """The pipeline a ``register_pipelines`` source creates for a new job, or the
    reason it could not (chm.ingestion.lineage.unmatched)."""
    try:
        with state.write_sessions.begin() as session:
            return register_pipeline(session, source, job_name), None
    except NotRegistered as refused:
        reason: str | None = str(refused)
    except IntegrityError:
        reason = None
    # A concurrent first event of the job may have created it meanwhile (its
    # insert refused ours, or it took the name between our checks): that one
    # is ours too.
    with state.read_sessions() as session:
        pipeline_id, lookup_reason = pipeline_for(session, sources, source, job_name)
    return pipeline_id, None if pipeline_id is not None else reason or lookup_reason


def _unmatched(state: State, source: AnySource, event: RunEvent, reason: str) -> LineageAnswer:
    """Count, log and record (in this request's transaction) an event of a job
    that maps to no pipeline."""
    ignored = _ignored(state).add()
    with state.write_sessions.begin() as session:
        recorded = record_unmatched(
            session, source, event.job.namespace, event.job.name, reason, utcnow()
        )
    logger.info("lineage event ignored (namespace %r, job %r): %s; %d ignored so far",
                event.job.namespace, event.job.name, reason, ignored)  # fmt: skip
    if not recorded:
        unrecorded = _ignored(state, "lineage_unrecorded").add()
        logger.warning("lineage job %r of namespace %r not recorded: %d unmatched jobs are "
                       "recorded already; %d such events so far", event.job.name,
                       event.job.namespace, MAX_UNMATCHED_JOBS, unrecorded)  # fmt: skip
    return LineageAnswer(
        result="ignored", reason=reason, ignored_total=ignored, unmatched_recorded=recorded
    )


# Events are handled in worker threads: two first ignored events at once must
# find one counter, not each make their own and lose a count.
_COUNTERS_LOCK = threading.Lock()


def _ignored(state: State, name: str = "lineage_ignored") -> IgnoredEvents:
    with _COUNTERS_LOCK:
        counter = getattr(state, name, None)
        if counter is None:
            counter = IgnoredEvents()
            setattr(state, name, counter)
        return counter
