"""Ingestion jobs: an asked-for ingestion, queued by the API and run by a worker.

``POST /api/v1/ingestions`` with ``Prefer: respond-async`` stores a job
(``create_job``) and answers at once; a ``chm worker`` claims it, runs the
engine and finishes it with the report. Plain functions over a Session: they
only flush, the caller's transaction commits.

**Claims.** ``claim_job`` takes the oldest job that is ``queued``, or
``running`` with an expired lease (its worker died), by a conditional UPDATE
that repeats the claimable test: of two workers that picked the same
candidate, only one changes the row. On PostgreSQL the candidate is read
``FOR UPDATE SKIP LOCKED``, so concurrent claimers pass over a row another
transaction is taking and each gets a different job; on SQLite a write
session's ``BEGIN IMMEDIATE`` serializes the claimers. The worker commits the
claim before it runs the job, then renews the lease while it runs.

**Only the owner.** ``renew_job``, ``finish_job`` and ``requeue_job`` change
a job only while it is ``running`` under the caller's lease: a worker whose
lease expired and was taken over by another learns it from their ``False``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from chm.core.keyset import Keyset, SortKey, keyset_page
from chm.core.lookup import get_or_404
from chm.core.redaction import cap_text, redact_known
from chm.core.schemas import EntityId, ResponseModel
from chm.core.types import UTCDateTime
from chm.ingestion.report import IngestionReport
from chm.models import IngestionJob
from chm.models.ingestion_job import FINISHED_JOB_STATUSES, JOB_STATUSES


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    partial = "partial"
    failed = "failed"


assert tuple(JobStatus) == JOB_STATUSES, "the table's CHECK and the API speak the same words"

# A job's error is one line a person reads, not a traceback.
MAX_ERROR_LENGTH = 1000

TABLE = cast(sa.Table, IngestionJob.__table__)
# Newest first: ids grow with creation, and (status, id) serves the status filter.
KEYSET = Keyset("ingestion-jobs", (SortKey(IngestionJob.id, int),), descending=True)


class RequestedScope(ResponseModel):
    """What the job was asked to ingest: the body of the request that created it."""

    client_id: EntityId | None
    pipeline_id: EntityId | None
    full: bool


class IngestionJobOut(ResponseModel):
    """An ingestion job: queued, running, then succeeded, partial or failed."""

    id: EntityId
    status: JobStatus
    requested: RequestedScope
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    report: IngestionReport | None
    error: str | None
    attempts: int

    @classmethod
    def of(cls, job: IngestionJob) -> IngestionJobOut:
        return cls(
            id=str(job.id),
            status=JobStatus(job.status),
            requested=RequestedScope.model_validate(job.requested),
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            report=IngestionReport.model_validate(job.report) if job.report is not None else None,
            error=job.error,
            attempts=job.attempts,
        )


def create_job(session: Session, requested: dict[str, Any], now: datetime) -> IngestionJob:
    """A queued job for ``requested`` (``client_id``, ``pipeline_id``, ``full``, as
    ``engine.resolve_scope`` checked them), flushed: its id is known."""
    job = IngestionJob(
        status=JobStatus.queued.value,
        requested={
            "client_id": requested["client_id"],
            "pipeline_id": requested["pipeline_id"],
            "full": bool(requested["full"]),
        },
        created_at=now,
        attempts=0,
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: int) -> IngestionJob:
    """The job ``job_id``; a 404 when there is none."""
    return get_or_404(session, IngestionJob, job_id, "ingestion job")


def list_jobs(
    session: Session, *, status: JobStatus | None = None, limit: int, cursor: str | None
) -> tuple[list[IngestionJob], str | None]:
    """Jobs newest first (id descending), optionally of one status; a keyset page."""
    query = sa.select(IngestionJob)
    if status is not None:
        query = query.where(IngestionJob.status == status.value)
    return keyset_page(session, KEYSET, query, cursor=cursor, limit=limit)


def claimable(now: datetime) -> sa.ColumnElement[bool]:
    """A job a worker may take: queued, or running under an expired lease."""
    return sa.or_(
        TABLE.c.status == JobStatus.queued.value,
        sa.and_(TABLE.c.status == JobStatus.running.value, TABLE.c.lease_expires_at < now),
    )


def _held_by(job_id: int, owner: str) -> sa.ColumnElement[bool]:
    return sa.and_(
        TABLE.c.id == job_id,
        TABLE.c.status == JobStatus.running.value,
        TABLE.c.lease_owner == owner,
    )


def _changed(session: Session, statement: sa.Update, job_id: int) -> bool:
    """Run a conditional UPDATE of job ``job_id``; whether it changed the row. A
    copy of the job in the session is expired, so it is read again when used."""
    changed = session.execute(statement.returning(TABLE.c.id)).first() is not None
    if changed:
        held = session.identity_map.get(session.identity_key(IngestionJob, job_id))
        if held is not None:
            session.expire(held)
    return changed


def claim_job(session: Session, owner: str, now: datetime, lease_s: float) -> IngestionJob | None:
    """Take the oldest job that is queued, or running with a lease expired before
    ``now``, for ``owner`` until ``now + lease_s``: status running, ``started_at``
    on its first claim, one more attempt. None when no job is waiting."""
    candidate = session.scalar(
        sa.select(TABLE.c.id)
        .where(claimable(now))
        .order_by(TABLE.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if candidate is None:
        return None
    claim = (
        sa.update(TABLE)
        .where(TABLE.c.id == candidate, claimable(now))
        .values(
            status=JobStatus.running.value,
            started_at=sa.func.coalesce(TABLE.c.started_at, sa.literal(now, UTCDateTime())),
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_s),
            attempts=TABLE.c.attempts + 1,
        )
    )
    if not _changed(session, claim, candidate):
        # Another claimer changed it between our read and our update (SQLite
        # readers do not lock): this round finds nothing; the next one goes on.
        return None
    return session.get(IngestionJob, candidate, populate_existing=True)


def renew_job(session: Session, job_id: int, owner: str, until: datetime) -> bool:
    """Extend ``owner``'s lease on a running job to ``until``; False when the job
    is not (or no longer) running under that lease."""
    renew = sa.update(TABLE).where(_held_by(job_id, owner)).values(lease_expires_at=until)
    return _changed(session, renew, job_id)


def job_outcome(report: IngestionReport | None, error: str | None) -> JobStatus:
    """How a job ended: ``failed`` when it could not run (an error, no report) or
    every pipeline it found failed; ``partial`` when some did; else ``succeeded``."""
    if report is None:
        if error is None:
            raise ValueError("a job finishes with a report, an error, or both")
        return JobStatus.failed
    if report.pipelines > 0 and len(report.errors) >= report.pipelines:
        return JobStatus.failed
    if report.errors:
        return JobStatus.partial
    return JobStatus.succeeded


def one_line(error: str) -> str:
    """An error as a job stores it: no credential or configured secret, one line
    of at most MAX_ERROR_LENGTH characters."""
    return cap_text(" ".join(redact_known(error).split()), MAX_ERROR_LENGTH)


def finish_job(
    session: Session,
    job_id: int,
    owner: str,
    now: datetime,
    report: IngestionReport | None,
    error: str | None,
) -> bool:
    """End ``owner``'s running job with its report and/or error (status by
    ``job_outcome``), its lease cleared; False when ``owner`` does not hold it."""
    finish = (
        sa.update(TABLE)
        .where(_held_by(job_id, owner))
        .values(
            status=job_outcome(report, error).value,
            finished_at=now,
            report=report.model_dump(mode="json") if report is not None else sa.null(),
            error=one_line(error) if error is not None else None,
            lease_owner=None,
            lease_expires_at=None,
        )
    )
    return _changed(session, finish, job_id)


def requeue_job(session: Session, job_id: int, owner: str) -> bool:
    """Give ``owner``'s running job back to the queue (a worker stopping before it
    finished it), its lease cleared; False when ``owner`` does not hold it."""
    requeue = (
        sa.update(TABLE)
        .where(_held_by(job_id, owner))
        .values(status=JobStatus.queued.value, lease_owner=None, lease_expires_at=None)
    )
    return _changed(session, requeue, job_id)


def prune_jobs(session: Session, finished_before: datetime) -> int:
    """Delete the jobs that finished before ``finished_before`` (retention); a
    queued or running job is never deleted. Answers how many were."""
    result = session.execute(
        sa.delete(TABLE).where(
            TABLE.c.status.in_(FINISHED_JOB_STATUSES),
            TABLE.c.finished_at < finished_before,
        )
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
