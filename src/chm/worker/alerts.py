"""The worker's alert tasks: evaluation and delivery (docs/alerts.md, docs/delivery.md).

**Evaluation** runs at least every ``CHM_EVALUATE_EVERY_S`` and, within a
poll, after any write that changed what the rules read: the newest
``updated_at`` of runs (an index top-1), of rules, pipelines and clients, and
the number of rules. So a run stored by this worker's ingestion, another
worker's, ``chm ingest``, the API or an OpenLineage event is evaluated about
``CHM_WORKER_POLL_S`` later, without ingestion knowing about alerts. It also
runs, within a poll, when a schedule's tick comes due (``missed_schedule``
rules: a tick's grace or deadline ends; ``next_schedule_due``, read once after
each evaluation): a missed run does not wait for the next periodic one.

**Delivery** sends the due messages of the outbox and, every so often,
creates the repeat deliveries of firing alerts nobody acknowledged.

Named destinations come from the ``CHM_CONFIG`` file, reloaded when it
changes; an invalid change is refused (logged once) and the previous valid
destinations stay in force.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from chm.alerts.delivery import next_due, send_due
from chm.alerts.destinations import Destinations, DestinationsCache, DestinationsError
from chm.alerts.evaluate import evaluate, next_schedule_due
from chm.alerts.outbox import create_repeats
from chm.models import AlertRule, Client, Pipeline, Run
from chm.worker.context import WorkerContext

logger = logging.getLogger("chm.worker")

# How often the worker looks for firing alerts owed a repeat, at most.
_REPEAT_CHECK_S = 30.0


class LiveDestinations:
    """The named destinations of the CHM_CONFIG file, read again when it changes;
    an invalid change is refused (logged once) and the last valid ones kept."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._cache = DestinationsCache()
        self._valid: Destinations | None = None
        self._refused: str | None = None

    def load_initial(self) -> Destinations:
        """At start: ``DestinationsError`` when the file is invalid (the worker
        then does not start)."""
        self._valid = self._cache.load(self.path)
        return self._valid

    def current(self) -> Destinations | None:
        try:
            destinations = self._cache.load(self.path)
        except DestinationsError as error:
            reason = str(error)
            if reason != self._refused:
                self._refused = reason
                logger.error("the destinations changed and are refused, the previous valid "
                             "ones stay in force: %s", reason)  # fmt: skip
            return self._valid
        self._valid, self._refused = destinations, None
        return destinations


def _changes(ctx: WorkerContext) -> tuple[Any, ...]:
    """What evaluation reads, in one round trip: each is an index top-1 or a
    scan of a small table."""
    newest = sa.select(
        sa.select(sa.func.max(Run.updated_at)).scalar_subquery(),
        sa.select(sa.func.max(AlertRule.updated_at)).scalar_subquery(),
        sa.select(sa.func.count()).select_from(AlertRule).scalar_subquery(),
        sa.select(sa.func.max(Pipeline.updated_at)).scalar_subquery(),
        sa.select(sa.func.max(Client.updated_at)).scalar_subquery(),
    )
    with ctx.read_sessions() as session:
        return tuple(session.execute(newest).one())


class Evaluation:
    """The worker task: evaluate every rule when due or when the data changed."""

    name = "alert evaluation"

    def __init__(self, ctx: WorkerContext, destinations: LiveDestinations) -> None:
        self.ctx = ctx
        self.destinations = destinations
        self._last_at: datetime | None = None
        self._seen: tuple[Any, ...] | None = None
        # When a missed_schedule pair may next start to hold (a tick's grace or
        # deadline ends); None: no tick ahead in any such rule's scope.
        self._wake_at: datetime | None = None

    def _due(self, now: datetime, seen: tuple[Any, ...]) -> bool:
        if self._last_at is None or seen != self._seen:
            return True
        if now >= self._last_at + timedelta(seconds=self.ctx.settings.evaluate_every_s):
            return True
        return self._wake_at is not None and now >= self._wake_at

    def step(self) -> bool:
        ctx = self.ctx
        now = ctx.clock()
        seen = _changes(ctx)
        if not self._due(now, seen):
            return False
        report = evaluate(ctx.engine, now, ctx.settings, self.destinations.current(), ctx.environ)
        if report.skipped:
            # Another worker is evaluating, maybe from before the change seen
            # here: nothing is recorded, so the next poll evaluates again.
            return False
        self._last_at, self._seen = now, seen
        # Schedules' ticks are read after the evaluation: one read, not one per
        # poll. A schedule changed since moves its pipeline's updated_at, so
        # the next poll evaluates (and reads this) again.
        with ctx.read_sessions() as session:
            self._wake_at = next_schedule_due(session, now)
        if report.fired or report.resolved:
            logger.info("alerts: %d fired, %d resolved", report.fired, report.resolved)
        return False


class Delivery:
    """The worker task: send the outbox's due messages; create repeats."""

    name = "alert delivery"

    def __init__(self, ctx: WorkerContext, destinations: LiveDestinations) -> None:
        self.ctx = ctx
        self.destinations = destinations
        # One client for every send; the environment's proxies apply.
        self.http = httpx.Client(timeout=ctx.settings.delivery_timeout_s)
        self._repeats_at: datetime | None = None

    def step(self) -> bool:
        ctx = self.ctx
        now = ctx.clock()
        destinations = self.destinations.current()
        if ctx.settings.alert_repeat_s > 0 and (
            self._repeats_at is None or now >= self._repeats_at
        ):
            self._repeats_at = now + timedelta(seconds=_REPEAT_CHECK_S)
            with ctx.write_sessions.begin() as session:
                repeats = create_repeats(session, now, ctx.settings, destinations, ctx.environ)
            if repeats:
                logger.info("alerts: %d repeat notifications due", repeats)
        # A plain read first: an idle worker takes no write lock.
        due = next_due(ctx.engine, now)
        if due is None or due > now:
            return False
        report = send_due(
            ctx.engine,
            owner=ctx.worker_id,
            now=now,
            settings=ctx.settings,
            destinations=destinations,
            environ=ctx.environ,
            http=self.http,
            should_stop=ctx.stopping,
            clock=ctx.clock,
        )
        return bool(report.messages_sent or report.failed_attempts)

    def close(self) -> None:
        self.http.close()
