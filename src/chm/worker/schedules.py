"""The worker's schedules task: keep the stored ticks of every scheduled
pipeline ahead of the clock (``chm.schedules.ticks``; docs/worker.md).

Alert evaluation and the view ``chm_overdue_pipelines`` find a pipeline's
expected tick among its stored ticks; a schedule's change stores them up to a
day ahead at once, and this task **tops them up** before they run out (when
fewer than ``TOP_UP_AHEAD`` remain, or none are stored) and **prunes** those
no longer needed. It comes before the evaluation in each pass of the loop, so
an evaluation finds the ticks current.

An idle pass is one read: whether any scheduled pipeline needs a top-up, two
top-1s of the partial index on ``schedule_ticks_until``. The write
transaction (the rows locked, ``SKIP LOCKED``, so two workers share the work)
is taken only when one does. The prune runs every ``PRUNE_EVERY``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

import sqlalchemy as sa

from chm.models import Pipeline
from chm.schedules.ticks import TOP_UP_AHEAD, TOP_UP_BATCH, prune, top_up
from chm.worker.context import WorkerContext

logger = logging.getLogger("chm.worker")

# How often the ticks no longer needed are deleted (a scan of schedule_ticks).
PRUNE_EVERY = timedelta(hours=1)


def needs_top_up(ctx: WorkerContext, now: datetime) -> bool:
    """Whether a scheduled pipeline has fewer than ``TOP_UP_AHEAD`` of ticks
    stored ahead of ``now``, or none: the partial index on
    ``schedule_ticks_until`` answers both halves with a top-1."""
    scheduled = Pipeline.schedule.is_not(None)
    never = sa.select(Pipeline.id).where(scheduled, Pipeline.schedule_ticks_until.is_(None))
    running_out = sa.select(Pipeline.id).where(
        scheduled, Pipeline.schedule_ticks_until < now + TOP_UP_AHEAD
    )
    with ctx.read_sessions() as session:
        found = session.execute(sa.select(never.exists(), running_out.exists())).one()
    return any(found)


class Schedules:
    """The worker task: top up the stored ticks that run out; prune the old ones."""

    name = "schedules"

    def __init__(self, ctx: WorkerContext, batch: int = TOP_UP_BATCH) -> None:
        self.ctx = ctx
        self.batch = batch
        self._pruned_at: datetime | None = None

    def step(self) -> bool:
        ctx = self.ctx
        now = ctx.clock()
        more = False
        if needs_top_up(ctx, now):
            with ctx.write_sessions.begin() as session:
                extended = top_up(session, now, limit=self.batch)
            # A full batch: more may be waiting; the loop asks again at once.
            more = extended >= self.batch
        if self._pruned_at is None or now >= self._pruned_at + PRUNE_EVERY:
            with ctx.write_sessions.begin() as session:
                pruned = prune(session, now)
            self._pruned_at = now
            if pruned:
                logger.info("schedules: %d ticks no longer needed deleted", pruned)
        return more
