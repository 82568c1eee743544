"""The worker's loop: several kinds of work, one at a time, until asked to stop.

Each task (``chm.worker.context.Task``) does one unit of due work per
``step()``: a queued ingestion job, a batch of due pipelines, a prune (and,
with the alerts, an evaluation and a batch of deliveries). The loop asks each
in turn; when none had work it waits ``CHM_WORKER_POLL_S``, cut short by a
stop. A task that fails (the database went away, a bug) is logged and
retried later, with a growing pause; the worker keeps running.

A heartbeat thread renews this worker's row and every lease it holds each
third of ``CHM_WORKER_LEASE_S``. On SIGTERM or SIGINT the stop flag is set:
the engine ends its walk before the next page and its retry waits end at
once, so the work thread stops after at most the page in flight. If it has
not stopped within ``CHM_SHUTDOWN_TIMEOUT_S`` the worker abandons it: its
open transaction, if any, dies with the process and rolls back, and only
committed pages remain. Either way it then releases its leases and puts a
running job back in the queue, so another worker need not wait for them to
expire.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Sequence
from datetime import timedelta
from types import FrameType

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError

from chm.ingestion.jobs import prune_jobs
from chm.models import IngestionJob
from chm.worker.alerts import Delivery, Evaluation, LiveDestinations
from chm.worker.context import Task, WorkerContext
from chm.worker.jobs import IngestionJobs
from chm.worker.leases import release, renew
from chm.worker.registry import Registration
from chm.worker.retention import prune, retention_cutoff
from chm.worker.scheduled import ScheduledIngestion
from chm.worker.schedules import Schedules

logger = logging.getLogger("chm.worker")

_MAX_ERROR_PAUSE_S = 30.0
# How long a stopping worker tries to release its leases before it leaves them
# to expire.
_CLOSE_TIMEOUT_S = 3.0


class Retention:
    """The worker task: with ``CHM_RETENTION_DAYS``, prune every ``CHM_RETENTION_EVERY_S``."""

    name = "retention"

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self._next_at: float | None = None

    def step(self) -> bool:
        settings = self.ctx.settings
        if settings.retention_days is None:
            return False
        now = time.monotonic()
        if self._next_at is not None and now < self._next_at:
            return False
        self._next_at = now + settings.retention_every_s
        cutoff = retention_cutoff(self.ctx.clock(), settings.retention_days)
        prune(
            self.ctx.engine,
            older_than=cutoff,
            batch_size=settings.retention_batch,
            should_stop=self.ctx.stopping,
        )
        with self.ctx.write_sessions.begin() as session:
            jobs = prune_jobs(session, cutoff)
        if jobs:
            logger.info("retention: %d ingestion jobs finished before %s deleted",
                        jobs, cutoff.isoformat())  # fmt: skip
        return False


def default_tasks(ctx: WorkerContext, destinations: LiveDestinations | None = None) -> list[Task]:
    # Jobs first: a person asked for them and waits; then what keeps runs
    # current, the schedules' ticks (before the evaluation that reads them),
    # what turns them into alerts, and what tells people.
    destinations = destinations or LiveDestinations(ctx.settings.config)
    return [
        IngestionJobs(ctx),
        ScheduledIngestion(ctx),
        Schedules(ctx),
        Evaluation(ctx, destinations),
        Delivery(ctx, destinations),
        Retention(ctx),
    ]


class Worker:
    def __init__(
        self,
        ctx: WorkerContext,
        tasks: Sequence[Task] | None = None,
        destinations: LiveDestinations | None = None,
    ) -> None:
        self.ctx = ctx
        self.tasks = list(tasks) if tasks is not None else default_tasks(ctx, destinations)
        self.registration = Registration(
            ctx.engine, ctx.worker_id, ctx.settings.worker_lease_s, ctx.clock
        )
        # Per task: its consecutive errors, and when it may run again (monotonic).
        self._errors: dict[str, int] = {}
        self._resume_at: dict[str, float] = {}

    # -- one pass, for the loop and for tests ---------------------------------

    def run_once(self) -> bool:
        """Ask every task once; True when one of them had work. A task that
        failed waits, doubling from the poll up to 30 s, before it is asked again."""
        did = False
        for task in self.tasks:
            if self.ctx.stopping():
                break
            if time.monotonic() < self._resume_at.get(task.name, 0.0):
                continue
            try:
                did = task.step() or did
                self._errors.pop(task.name, None)
                continue
            except SQLAlchemyError as error:
                cause = type(getattr(error, "orig", None) or error).__name__
                logger.error("%s: database error (%s); trying again later", task.name, cause)
            except Exception:
                logger.exception("%s: unexpected error; trying again later", task.name)
            errors = self._errors[task.name] = self._errors.get(task.name, 0) + 1
            pause = min(_MAX_ERROR_PAUSE_S, self.ctx.settings.worker_poll_s * 2 ** min(errors, 10))
            self._resume_at[task.name] = time.monotonic() + pause
        return did

    def run_until_idle(self, max_passes: int = 10_000) -> int:
        """Passes until no task has work (tests, with an injected clock)."""
        for passes in range(1, max_passes + 1):
            if not self.run_once() or self.ctx.stopping():
                return passes
        raise RuntimeError(f"still busy after {max_passes} passes")

    def loop(self) -> None:
        while not self.ctx.stopping():
            if self.run_once():
                continue
            self.ctx.stop.wait(self.ctx.settings.worker_poll_s)

    # -- the process ----------------------------------------------------------

    def heartbeat(self) -> None:
        interval = self.ctx.settings.worker_lease_s / 3
        while not self.ctx.stop.wait(interval):
            try:
                self.beat()
            except SQLAlchemyError as error:
                cause = type(getattr(error, "orig", None) or error).__name__
                logger.error("heartbeat: database error (%s)", cause)
            except Exception:  # the heartbeat must outlive any one failure
                logger.exception("heartbeat: unexpected error")

    def beat(self) -> None:
        self.registration.beat()
        until = self.ctx.clock() + timedelta(seconds=self.ctx.settings.worker_lease_s)
        pipelines, job = self.ctx.held()
        if pipelines or job is not None:
            with self.ctx.write_sessions.begin() as session:
                renew(session, self.ctx.worker_id, until, pipelines, job)

    def give_back(self) -> None:
        """Release every lease and requeue a running job of this worker."""
        ctx = self.ctx
        with ctx.write_sessions.begin() as session:
            release(session, ctx.worker_id)
            session.execute(
                sa.update(IngestionJob)
                .where(IngestionJob.lease_owner == ctx.worker_id, IngestionJob.status == "running")
                .values(status="queued", lease_owner=None, lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )

    def serve(self, shutdown_timeout_s: float) -> bool:
        """Run until SIGTERM/SIGINT (call from the main thread; the caller has
        registered the worker). True when the work stopped in time, False when
        it was abandoned after ``shutdown_timeout_s``."""
        ctx = self.ctx
        work = threading.Thread(target=self.loop, name="chm-worker", daemon=True)
        beat = threading.Thread(target=self.heartbeat, name="chm-heartbeat", daemon=True)
        signals = 0
        first: int | None = None

        def on_signal(number: int, _frame: FrameType | None) -> None:
            # A second signal of the same kind stops at once; another kind
            # (Ctrl-C on a terminal, then make's TERM) is the same request.
            nonlocal signals, first
            if first is None:
                first = number
                logger.info("%s: stopping (at most %gs)", signal.Signals(number).name,
                            shutdown_timeout_s)  # fmt: skip
            if number == first:
                signals += 1
            ctx.stop.set()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            work.start()
            beat.start()
            while not ctx.stopping() and work.is_alive():
                ctx.stop.wait(0.5)
            ctx.stop.set()
            deadline = time.monotonic() + shutdown_timeout_s
            while work.is_alive() and time.monotonic() < deadline and signals < 2:
                work.join(0.1)
            in_time = not work.is_alive()
            if not in_time:
                logger.warning("the current work did not stop in time; abandoning it "
                               "(its uncommitted page is rolled back)")  # fmt: skip
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        # In a thread of its own, bounded: an abandoned work thread may still
        # hold a row lock in its open transaction (until the process exits),
        # and waiting on it must not keep the process alive.
        closing = threading.Thread(target=self._close, name="chm-close", daemon=True)
        closing.start()
        closing.join(_CLOSE_TIMEOUT_S)
        if closing.is_alive():
            logger.error("could not release this worker's leases in time; they expire")
        logger.info("worker %s stopped", ctx.worker_id)
        return in_time and not closing.is_alive()

    def _close(self) -> None:
        for task in self.tasks:
            close = getattr(task, "close", None)
            if close is not None:
                close()
        try:
            self.give_back()
            self.registration.stopped()
        except SQLAlchemyError as error:
            cause = type(getattr(error, "orig", None) or error).__name__
            logger.error("could not release this worker's leases (%s); they expire", cause)
