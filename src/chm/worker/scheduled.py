"""Scheduled ingestion: every pull source's pipelines, each on its source's
``interval_s``, shared among workers by leases (``chm.worker.leases``).

A source that itself fails (``SourceUnavailable``: unreachable, failing after
every retry, refusing CHM's credentials) is backed off: its pipelines are
not claimed until ``backoff_s(failures)`` after its last error, doubling from
30 s with each consecutive failure up to the larger of 30 minutes and its
interval, with a fixed jitter per source so that sources that failed
together do not come back together. Every other source goes on. The
backoff's facts are the ``ingestion_sources`` row the engine keeps (so a
``chm ingest`` that succeeds ends a backoff too).
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timedelta

import sqlalchemy as sa

from chm.ingestion.config import Sources
from chm.ingestion.engine import IngestionEngine
from chm.ingestion.report import NoProgress, PipelineTarget
from chm.models import IngestionSource
from chm.worker.context import WorkerContext
from chm.worker.leases import Scheduled, any_due, claim_due, release, scheduled_sources

logger = logging.getLogger("chm.worker")

BACKOFF_BASE_S = 30.0
BACKOFF_CAP_S = 1800.0


def backoff_s(source_name: str, failures: int, interval_s: float) -> float:
    """How long a source that failed ``failures`` times in a row is left alone."""
    if failures <= 0:
        return 0.0
    delay = min(BACKOFF_BASE_S * 2 ** min(failures - 1, 30), max(BACKOFF_CAP_S, interval_s))
    digest = hashlib.sha256(f"{source_name}:{failures}".encode()).digest()
    jitter = int.from_bytes(digest[:4], "big") / 2**32  # in [0, 1), fixed per source and count
    return float(delay * (0.75 + 0.25 * jitter))


def backed_off(
    ctx: WorkerContext, scheduled: list[Scheduled], now: datetime
) -> dict[str, datetime]:
    """The scheduled sources in backoff at ``now``, and until when."""
    names = [entry.source.name for entry in scheduled]
    with ctx.read_sessions() as session:
        rows = session.execute(
            sa.select(
                IngestionSource.name,
                IngestionSource.consecutive_failures,
                IngestionSource.last_error_at,
            ).where(IngestionSource.name.in_(names), IngestionSource.consecutive_failures > 0)
        ).all()
    intervals = {entry.source.name: entry.source.interval_s for entry in scheduled}
    waiting = {}
    for name, failures, last_error_at in rows:
        if last_error_at is None:
            continue
        until = last_error_at + timedelta(seconds=backoff_s(name, failures, intervals[name]))
        if until > now:
            waiting[name] = until
    return waiting


# Scheduled ingestion tries a failing request this often at most: the next
# interval is its retry, and one worker's other sources must not wait on it.
SCHEDULED_MAX_RETRIES = 1
SCHEDULED_MAX_RETRY_WAIT_S = 10.0


def scheduled_retries(sources: Sources) -> Sources:
    """The sources with the scheduled path's retry limits (``chm ingest``, the
    API and jobs keep each source's own)."""
    return Sources(
        [
            source.model_copy(
                update={
                    "max_retries": min(source.max_retries, SCHEDULED_MAX_RETRIES),
                    "max_retry_wait_s": min(source.max_retry_wait_s, SCHEDULED_MAX_RETRY_WAIT_S),
                }
            )
            for source in sources.all
        ]
    )


class ReleaseEach(NoProgress):
    """Releases each pipeline's lease as soon as its ingestion is recorded."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx

    def pipeline_finished(self, target: PipelineTarget, error: str | None) -> None:
        self.ctx.drop([target.id])
        with self.ctx.write_sessions.begin() as session:
            release(session, self.ctx.worker_id, [target.id])


class ScheduledIngestion:
    """The worker task: claim a batch of due pipelines, ingest them, release them."""

    name = "scheduled ingestion"

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self._announced: dict[str, datetime] = {}

    def step(self) -> bool:
        ctx = self.ctx
        sources = ctx.sources.current()
        if sources is None:
            return False
        scheduled = scheduled_sources(sources)
        if not scheduled:
            return False
        now = ctx.clock()
        waiting = backed_off(ctx, scheduled, now)
        for name, until in waiting.items():
            if self._announced.get(name) != until:
                self._announced[name] = until
                logger.warning("source %r is failing; backing off until %s",
                               name, until.isoformat())  # fmt: skip
        ready = [entry for entry in scheduled if entry.source.name not in waiting]
        settings = ctx.settings
        with ctx.read_sessions() as session:
            if not any_due(session, now, ready):
                return False
        with ctx.write_sessions.begin() as session:
            claimed = claim_due(
                session, ctx.worker_id, now, settings.worker_lease_s, ready, settings.worker_batch
            )
        if not claimed:
            return False
        ctx.hold(claimed)
        logger.info("%d due pipelines claimed", len(claimed))
        engine = IngestionEngine(
            ctx.engine,
            scheduled_retries(sources),
            environ=ctx.environ,
            clock=ctx.clock,
            sleep=ctx.sleep,
            should_stop=ctx.stopping,
            skip_failing_sources=True,
            progress=ReleaseEach(ctx),
            schedule_refresh_s=ctx.settings.schedule_refresh_s,
        )
        try:
            report = engine.run(pipeline_ids=claimed)
        finally:
            # Those not finished (stopped, skipped, no longer matched) stay due.
            # Not renewed any more: should this release fail, they expire.
            ctx.drop(claimed)
            with ctx.write_sessions.begin() as session:
                release(session, ctx.worker_id, claimed)
        logger.info(
            "scheduled ingestion: %d pipelines, %d pages, runs created %d, updated %d, "
            "unchanged %d, %d errors",
            report.pipelines, report.pages, report.runs_created, report.runs_updated,
            report.runs_unchanged, len(report.errors),
        )  # fmt: skip
        return True
