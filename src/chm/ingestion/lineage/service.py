"""Which pipeline an event is for, and storing its run through the engine's store."""

from __future__ import annotations

import logging
import threading
from typing import Any, Literal

import sqlalchemy as sa
from pydantic import BaseModel, Field
from starlette.datastructures import State

from chm.core.errors import ValidationFailed
from chm.core.timeutil import utcnow
from chm.ingestion.config import Sources
from chm.ingestion.lineage.mapping import RunEvent
from chm.ingestion.rule import Row, fold_event
from chm.ingestion.sources import AnySource
from chm.ingestion.store import run_store
from chm.models import Client, Pipeline
from chm.models.base import name_key
from chm.models.pipeline import active_inventory

logger = logging.getLogger("chm.ingestion.lineage")


class LineageAnswer(BaseModel):
    result: Literal["created", "updated", "unchanged", "ignored"]
    pipeline_id: str | None = None
    external_run_id: str | None = None
    reason: str | None = None
    ignored_total: int | None = Field(
        None, description="Events this process ignored so far (jobs mapped to no pipeline)"
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
        return None, "no active pipeline of this namespace has the job as external_id"
    if len(served) > 1:
        return None, f"the job is the external_id of {len(served)} pipelines of this namespace"
    return served[0], None


def record_event(
    state: State, sources: Sources, source: AnySource, event: RunEvent, row: Row | None
) -> tuple[int, LineageAnswer]:
    """Store the run ``row`` (None: the event changes nothing) for the event's
    pipeline; answers the HTTP status and the answer."""
    with state.read_sessions() as session:
        pipeline_id, reason = pipeline_for(session, sources, source, event.job.name)
    if pipeline_id is None:
        ignored = _ignored(state).add()
        logger.info("lineage event ignored (namespace %r, job %r): %s; %d ignored so far",
                    event.job.namespace, event.job.name, reason, ignored)  # fmt: skip
        return 202, LineageAnswer(result="ignored", reason=reason, ignored_total=ignored)
    answer = LineageAnswer(
        result="unchanged", pipeline_id=str(pipeline_id), external_run_id=event.run.runId
    )
    if row is None:  # OTHER: nothing to change
        return 200, answer
    with state.write_sessions.begin() as session:
        counts = run_store(state.engine).upsert_page(
            session, pipeline_id, [row], utcnow(), fold=fold_event
        )
    if counts.invalid:
        raise ValidationFailed.one("eventTime", "invalid", counts.invalid[0][1])
    if counts.created or counts.updated:
        answer.result = "created" if counts.created else "updated"
        return 201, answer
    return 200, answer


def _ignored(state: State) -> IgnoredEvents:
    counter = getattr(state, "lineage_ignored", None)
    if counter is None:
        counter = state.lineage_ignored = IgnoredEvents()
    return counter
