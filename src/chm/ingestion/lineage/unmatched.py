"""Jobs whose events match no pipeline: recorded, bounded, listed; and the
pipelines a ``register_pipelines`` source creates from its first event.

**Recorded.** An event whose job maps to no pipeline is still answered 202,
and its (namespace, job name) is upserted into ``lineage_unmatched_jobs`` in
the request's own transaction: the first event inserts the row, every later
one adds one to ``event_count`` and moves ``last_seen_at`` (the reason and
the source's scope are refreshed). No payload is kept.

**Bounded.** At most ``MAX_UNMATCHED_JOBS`` rows: once the table is full, the
events of a job already recorded are still counted, but a new job name is not
added; it is logged and counted in the process's ``unrecorded`` counter (and
the answer says so). Concurrent first sightings on PostgreSQL may pass the
check together, so the table can hold a few rows more than the cap, never
unboundedly more.

**Listed while unmatched.** A row is shown (``GET /api/v1/lineage/unmatched``,
``chm status``) only while the job still does not match exactly one active
pipeline of the row's platform and environment (and client, when the source
has one): fixing the pipeline's ``external_id`` makes it disappear, its row
kept (``chm.models.lineage_unmatched_job.still_unmatched``).

**Registered.** A source with ``register_pipelines = true`` (it has a client)
creates the pipeline instead, on the job's first event: in the source's
client, platform and environment, named after the job (trimmed), with
``external_id`` = the job name and ``pipeline_type`` = ``REGISTERED_TYPE``.
When it cannot (the client is missing or inactive, the name is longer than
200 characters, the name is taken in the client by a pipeline of another
external id, or a pipeline of the client and platform already has that
external id but is inactive or of another environment), the job is recorded
as unmatched with that reason. Two first events at once create one pipeline:
the database's unique constraints refuse the second, which then finds the
first's (PostgreSQL), or finds it once its turn to write comes (SQLite).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from chm.core.dialects import dialect_for
from chm.core.keyset import Keyset, SortKey, keyset_page
from chm.core.schemas import ResponseModel
from chm.ingestion.sources import AnySource
from chm.models import Client, LineageUnmatchedJob, Pipeline
from chm.models.base import name_key
from chm.models.lineage_unmatched_job import still_unmatched

logger = logging.getLogger("chm.ingestion.lineage")

MAX_UNMATCHED_JOBS = 10_000
REGISTERED_TYPE = "batch"
MAX_REASON = 500
NAME_MAX = 200

TABLE = cast(sa.Table, LineageUnmatchedJob.__table__)
KEYSET = Keyset(
    "lineage-unmatched",
    (SortKey(LineageUnmatchedJob.last_seen_at, datetime), SortKey(LineageUnmatchedJob.id, int)),
    descending=True,
)


def record_unmatched(
    session: Session, source: AnySource, namespace: str, job_name: str, reason: str, now: datetime
) -> bool:
    """Count one event of an unmatched job; False when the job is new and the
    table is full (nothing written)."""
    scope = {
        "source_name": source.name,
        "platform": source.platform,
        "environment": source.environment,
        "client_key": name_key(source.client) if source.client else None,
        "reason": reason[:MAX_REASON],
    }
    key = sa.and_(TABLE.c.namespace == namespace, TABLE.c.job_name == job_name)
    counted = session.execute(
        sa.update(TABLE)
        .where(key)
        .values(event_count=TABLE.c.event_count + 1, last_seen_at=now, **scope)
    )
    if cast(Any, counted).rowcount:
        return True
    if (session.scalar(sa.select(sa.func.count()).select_from(TABLE)) or 0) >= MAX_UNMATCHED_JOBS:
        return False
    insert = dialect_for(session.get_bind()).insert(TABLE)
    # A concurrent first event of the same job inserted it first: count this one too.
    session.execute(
        insert.values(
            namespace=namespace,
            job_name=job_name,
            first_seen_at=now,
            last_seen_at=now,
            event_count=1,
            **scope,
        ).on_conflict_do_update(
            index_elements=[TABLE.c.namespace, TABLE.c.job_name],
            set_={
                "event_count": TABLE.c.event_count + 1,
                "last_seen_at": insert.excluded.last_seen_at,
                **{name: insert.excluded[name] for name in scope},
            },
        )
    )
    return True


class UnmatchedJobOut(ResponseModel):
    """A job whose events match no pipeline: who sent it, why, how often."""

    namespace: str
    job_name: str
    source: str
    reason: str
    first_seen_at: datetime
    last_seen_at: datetime
    event_count: int

    @classmethod
    def of(cls, job: LineageUnmatchedJob) -> UnmatchedJobOut:
        return cls(
            namespace=job.namespace,
            job_name=job.job_name,
            source=job.source_name,
            reason=job.reason,
            first_seen_at=job.first_seen_at,
            last_seen_at=job.last_seen_at,
            event_count=job.event_count,
        )


def list_unmatched(
    session: Session, *, limit: int, cursor: str | None, client_key: str | None = None
) -> tuple[list[LineageUnmatchedJob], str | None]:
    """The jobs still unmatched, last seen first (then id, descending)."""
    query = sa.select(LineageUnmatchedJob).where(still_unmatched())
    if client_key is not None:
        query = query.where(LineageUnmatchedJob.client_key == client_key)
    return keyset_page(session, KEYSET, query, cursor=cursor, limit=limit)


class NotRegistered(Exception):
    """The pipeline of a job could not be created; the message is the reason."""


def register_pipeline(session: Session, source: AnySource, job_name: str) -> int:
    """Create the active pipeline of ``job_name`` for ``source`` (see the module
    doc) and flush it; its id. ``NotRegistered`` when it cannot be created;
    ``IntegrityError`` when a concurrent request created it first."""
    assert source.client is not None  # the sources file refuses it otherwise
    client = session.scalar(sa.select(Client).where(Client.name_key == name_key(source.client)))
    if client is None or not client.is_active:
        state = "does not exist" if client is None else "is inactive"
        raise NotRegistered(f"register_pipelines: client {source.client!r} {state}")
    name = job_name.strip()
    if not name or len(name) > NAME_MAX:
        raise NotRegistered(
            f"register_pipelines: a pipeline name is 1..{NAME_MAX} characters; "
            f"the job name has {len(name)}"
        )
    same_id = session.scalar(
        sa.select(Pipeline).where(
            Pipeline.client_id == client.id,
            Pipeline.platform == source.platform,
            Pipeline.external_id == job_name,
        )
    )
    if same_id is not None and same_id.is_active and same_id.environment == source.environment:
        return same_id.id  # a concurrent first event created it (SQLite serializes writers)
    if same_id is not None:
        state = (
            "is inactive" if not same_id.is_active else f"is in environment {same_id.environment!r}"
        )
        raise NotRegistered(
            f"register_pipelines: pipeline {same_id.name!r} of this client and platform has "
            f"the job as external_id but {state}"
        )
    same_name = session.scalar(
        sa.select(Pipeline).where(
            Pipeline.client_id == client.id, Pipeline.name_key == name_key(name)
        )
    )
    if same_name is not None:
        raise NotRegistered(
            f"register_pipelines: the name is taken by pipeline {same_name.name!r} of this "
            f"client (external_id {same_name.external_id!r})"
        )
    pipeline = Pipeline(
        client_id=client.id,
        name=name,
        platform=source.platform,
        pipeline_type=REGISTERED_TYPE,
        environment=source.environment,
        external_id=job_name,
        is_active=True,
    )
    session.add(pipeline)
    session.flush()
    logger.info("lineage: registered pipeline %r (id %d) for job %r of namespace %r",
                name, pipeline.id, job_name, source.openlineage_namespace)  # fmt: skip
    return pipeline.id
