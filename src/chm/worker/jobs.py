"""Ingestion jobs (``POST /api/v1/ingestions`` with ``Prefer: respond-async``),
run by the worker: claimed one at a time (``chm.ingestion.jobs.claim_job``),
each of their pipelines taken under its lease (waiting while another worker
ingests it), finished with the engine's report. A worker asked to stop puts
its job back in the queue; one killed outright loses it when its lease
expires, and another worker runs it again (``attempts`` says how often).
"""

from __future__ import annotations

import logging

import sqlalchemy as sa

from chm.core.errors import ValidationFailed
from chm.ingestion.engine import Abandoned, IngestionEngine, resolve_scope
from chm.ingestion.jobs import claim_job, claimable, finish_job, requeue_job
from chm.ingestion.report import IngestionReport, PipelineTarget
from chm.models import IngestionJob
from chm.worker.context import WorkerContext
from chm.worker.leases import claim_pipeline, release
from chm.worker.scheduled import ReleaseEach

logger = logging.getLogger("chm.worker")

# How often a job waiting for another worker's pipeline looks again.
_LEASE_POLL_S = 0.5


class IngestionJobs:
    """The worker task: run the oldest queued job, if any."""

    name = "ingestion jobs"

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    def _acquire(self, target: PipelineTarget) -> None:
        ctx = self.ctx
        waited = False
        while True:
            with ctx.write_sessions.begin() as session:
                if claim_pipeline(
                    session, ctx.worker_id, target.id, ctx.clock(), ctx.settings.worker_lease_s
                ):
                    ctx.hold([target.id])
                    return
            if not waited:
                logger.info("%s: another worker is ingesting it; waiting", target.describe())
                waited = True
            ctx.sleep(_LEASE_POLL_S)

    def step(self) -> bool:
        ctx = self.ctx
        now = ctx.clock()
        # A plain read first: an idle worker takes no write lock.
        with ctx.read_sessions() as session:
            if session.scalar(sa.select(IngestionJob.id).where(claimable(now)).limit(1)) is None:
                return False
        with ctx.write_sessions.begin() as session:
            job = claim_job(session, ctx.worker_id, now, ctx.settings.worker_lease_s)
            job_id = job.id if job is not None else None
            requested = dict(job.requested) if job is not None else {}
        if job_id is None:
            return False
        ctx.hold(job_id=job_id)
        logger.info("ingestion job %d: started (%s)", job_id, requested)
        report: IngestionReport | None = None
        error: str | None = None
        try:
            report, error = self._run(requested)
        except Abandoned:
            with ctx.write_sessions.begin() as session:
                requeue_job(session, job_id, ctx.worker_id)
            logger.info("ingestion job %d: put back in the queue (the worker is stopping)", job_id)
            return True
        except Exception as failure:  # a bug must not stop the worker
            logger.exception("ingestion job %d: unexpected error", job_id)
            error = f"unexpected error ({type(failure).__name__})"
        finally:
            # No longer renewed: should what follows fail, the job's lease
            # expires and another worker runs it again.
            held, _ = ctx.held()
            ctx.drop(held, job_id=job_id)
            with ctx.write_sessions.begin() as session:
                release(session, ctx.worker_id)
        with ctx.write_sessions.begin() as session:
            finished = finish_job(session, job_id, ctx.worker_id, ctx.clock(), report, error)
        if not finished:
            logger.warning("ingestion job %d: its lease passed to another worker before it "
                           "finished here; that worker's outcome stands", job_id)  # fmt: skip
        else:
            logger.info("ingestion job %d: finished%s", job_id, f" ({error})" if error else "")
        return True

    def _run(self, requested: dict[str, object]) -> tuple[IngestionReport | None, str | None]:
        ctx = self.ctx
        sources = ctx.sources.current()
        if sources is None:
            return None, "ingestion is not configured: CHM_CONFIG names no valid sources file"
        client_id = requested.get("client_id")
        pipeline_id = requested.get("pipeline_id")
        try:
            with ctx.read_sessions() as session:
                scope = resolve_scope(
                    session,
                    int(client_id) if isinstance(client_id, (int, str)) else None,
                    int(pipeline_id) if isinstance(pipeline_id, (int, str)) else None,
                )
        except ValidationFailed as invalid:
            return None, invalid.errors[0].message
        engine = IngestionEngine(
            ctx.engine,
            sources,
            environ=ctx.environ,
            clock=ctx.clock,
            sleep=ctx.sleep,
            should_stop=ctx.stopping,
            full=bool(requested.get("full", False)),
            acquire=self._acquire,
            progress=ReleaseEach(ctx),
            schedule_refresh_s=ctx.settings.schedule_refresh_s,
        )
        report = engine.run(*scope)
        if engine.abandoned:
            raise Abandoned
        return report, None
