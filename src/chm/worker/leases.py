"""Pipeline leases: how many workers share scheduled ingestion through the database.

A pipeline is *due* when its last ingestion attempt started longer ago than
its source's ``interval_s`` (monitoring contract), and *free* when no worker
holds an unexpired lease on it (``ingest_lease_owner``,
``ingest_lease_expires_at``). A worker claims a batch of due, free pipelines
in one short write transaction:

1. select them, oldest attempt first, ``FOR UPDATE SKIP LOCKED`` (PostgreSQL:
   rows another worker is claiming right now are passed over, not waited
   for; SQLite renders nothing and needs nothing, its write lock taken by
   ``BEGIN IMMEDIATE`` already serializes claims);
2. set the lease on those whose row still says due and free (the same
   conditions again, in the UPDATE: the claim is right even where the SELECT
   saw an older state), and keep the ids the UPDATE returned.

Attempts are recorded by the engine when a pipeline's ingestion ends
(``last_ingest_attempt_at`` = when it started), before the lease is released:
a second worker that read the pipeline as due before that finds it not due
when it tries to claim it. A pipeline is thus ingested by one worker at a
time and once per due period. A worker renews its leases while it works
(``renew``); one killed outright stops renewing, its leases expire after
``CHM_WORKER_LEASE_S``, and since its attempt was never recorded the pipeline
is still due: another worker takes it over.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from chm.ingestion.config import Sources
from chm.ingestion.sources import AnySource
from chm.models import Client, IngestionJob, Pipeline
from chm.models.base import name_key
from chm.models.pipeline import active_inventory


def lease_free(now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(
        Pipeline.ingest_lease_expires_at.is_(None), Pipeline.ingest_lease_expires_at < now
    )


@dataclass(frozen=True)
class Scheduled:
    """A pull source whose pipelines the worker ingests every ``interval_s``."""

    source: AnySource
    # The client keys of other sources of the same platform and environment
    # that serve one client: a source without client serves every other one.
    overridden: frozenset[str]

    def scope(self) -> sa.ColumnElement[bool]:
        """The pipelines this source serves (``Sources.for_pipeline`` in SQL)."""
        source = self.source
        conditions = [
            Pipeline.platform == source.platform,
            Pipeline.environment == source.environment,
        ]
        if source.client is not None:
            conditions.append(Client.name_key == name_key(source.client))
        elif self.overridden:
            conditions.append(Client.name_key.not_in(sorted(self.overridden)))
        return sa.and_(*conditions)

    def due(self, now: datetime) -> sa.ColumnElement[bool]:
        attempted = Pipeline.last_ingest_attempt_at
        before = now - timedelta(seconds=self.source.interval_s)
        return sa.and_(self.scope(), sa.or_(attempted.is_(None), attempted <= before))


def scheduled_sources(sources: Sources) -> list[Scheduled]:
    """The sources the worker ingests on their own: they pull, ``interval_s > 0``."""
    by_scope: dict[tuple[str, str], set[str]] = {}
    for source in sources.all:
        if source.client is not None:
            by_scope.setdefault((source.platform, source.environment), set()).add(
                name_key(source.client)
            )
    return [
        Scheduled(source, frozenset(by_scope.get((source.platform, source.environment), ())))
        for source in sources.all
        if source.pulls and source.interval_s > 0
    ]


def _eligible(now: datetime, scheduled: Sequence[Scheduled]) -> sa.ColumnElement[bool]:
    due = sa.or_(*(entry.due(now) for entry in scheduled))
    return sa.and_(active_inventory(), Pipeline.external_id.is_not(None), lease_free(now), due)


def any_due(session: Session, now: datetime, scheduled: Sequence[Scheduled]) -> bool:
    """Whether some pipeline is due and free: a plain read, so that an idle
    worker takes no write lock (SQLite's is the whole database's)."""
    if not scheduled:
        return False
    probe = (
        sa.select(Pipeline.id)
        .join(Client, Client.id == Pipeline.client_id)
        .where(_eligible(now, scheduled))
        .limit(1)
    )
    return session.scalar(probe) is not None


def claim_due(
    session: Session,
    owner: str,
    now: datetime,
    lease_s: float,
    scheduled: Sequence[Scheduled],
    limit: int,
) -> list[int]:
    """Lease up to ``limit`` due, free pipelines of the ``scheduled`` sources to
    ``owner``, oldest attempt first; the ids claimed (the caller commits)."""
    if not scheduled:
        return []
    eligible = _eligible(now, scheduled)
    candidates = (
        sa.select(Pipeline.id)
        .join(Client, Client.id == Pipeline.client_id)
        .where(eligible)
        # Never attempted first, then the longest waiting.
        .order_by(Pipeline.last_ingest_attempt_at.is_not(None), Pipeline.last_ingest_attempt_at)
        .order_by(Pipeline.id)
        .limit(limit)
        .with_for_update(of=Pipeline, skip_locked=True)
    )
    ids = list(session.scalars(candidates))
    if not ids:
        return []
    claimed = session.scalars(
        sa.update(Pipeline)
        .where(
            Pipeline.id.in_(ids),
            lease_free(now),
            Pipeline.id.in_(
                sa.select(Pipeline.id)
                .join(Client, Client.id == Pipeline.client_id)
                .where(Pipeline.id.in_(ids), eligible)
                .scalar_subquery()
            ),
        )
        .values(
            ingest_lease_owner=owner,
            ingest_lease_expires_at=now + timedelta(seconds=lease_s),
        )
        .returning(Pipeline.id)
        .execution_options(synchronize_session=False)
    )
    return sorted(claimed)


def claim_pipeline(
    session: Session, owner: str, pipeline_id: int, now: datetime, lease_s: float
) -> bool:
    """Lease one pipeline, due or not (a job asked for it), if no other worker
    holds it; True when ``owner`` holds it now."""
    result = session.execute(
        sa.update(Pipeline)
        .where(
            Pipeline.id == pipeline_id,
            sa.or_(lease_free(now), Pipeline.ingest_lease_owner == owner),
        )
        .values(
            ingest_lease_owner=owner,
            ingest_lease_expires_at=now + timedelta(seconds=lease_s),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def release(session: Session, owner: str, pipeline_ids: Sequence[int] | None = None) -> int:
    """Release ``owner``'s leases (only those of ``pipeline_ids`` when given)."""
    statement = sa.update(Pipeline).where(Pipeline.ingest_lease_owner == owner)
    if pipeline_ids is not None:
        statement = statement.where(Pipeline.id.in_(list(pipeline_ids)))
    result = session.execute(
        statement.values(ingest_lease_owner=None, ingest_lease_expires_at=None).execution_options(
            synchronize_session=False
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def renew(
    session: Session,
    owner: str,
    until: datetime,
    pipeline_ids: Sequence[int],
    job_id: int | None,
) -> None:
    """Extend the leases ``owner`` holds and is working on (``pipeline_ids``, the
    running job ``job_id``) to ``until``; any other lease of it is left to expire."""
    if pipeline_ids:
        session.execute(
            sa.update(Pipeline)
            .where(Pipeline.ingest_lease_owner == owner, Pipeline.id.in_(list(pipeline_ids)))
            .values(ingest_lease_expires_at=until)
            .execution_options(synchronize_session=False)
        )
    if job_id is not None:
        session.execute(
            sa.update(IngestionJob)
            .where(
                IngestionJob.id == job_id,
                IngestionJob.lease_owner == owner,
                IngestionJob.status == "running",
            )
            .values(lease_expires_at=until)
            .execution_options(synchronize_session=False)
        )
