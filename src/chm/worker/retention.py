"""Retention: delete old runs in bounded batches, never a pipeline's latest run.

``prune`` deletes the runs whose event time (``runs.event_at``) is before a
cutoff, except, for each pipeline, its latest run before the cutoff by the
ordering rule (``chm.runs.ordering``). That kept run is the pipeline's latest
run whenever the latest run is itself older than the cutoff, so a pipeline
whose runs are all old keeps its latest one; and since every report's "latest
as of T" is the first run by the rule among those whose event time is before
T, keeping it leaves every report and BI view asked about times at or after
the cutoff exactly as it was (docs/retention.md). At most one old run per
pipeline survives.

Each batch is its own short write transaction: one ``DELETE ... WHERE id IN
(the next N candidates by (event_at, id)) RETURNING``, the candidates read
through the index on ``event_at`` from where the previous batch stopped, and
each candidate's "is it the kept run?" answered by a top-1 walk of the
pipeline's ordering index (``ix_runs_pipeline_order``), started at the
cutoff. Nothing ever reads or locks all of history in one transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict
from sqlalchemy import Engine
from sqlalchemy.sql.dml import ReturningDelete
from sqlalchemy.sql.util import ClauseAdapter

from chm.core.db import make_session_factory
from chm.core.keyset import Keyset, SortKey
from chm.core.timeutil import isoformat_z
from chm.core.types import UTCDateTime
from chm.models import Run
from chm.runs.ordering import KEYSET, ORDER_BY

logger = logging.getLogger(__name__)

RUNS = cast(sa.Table, Run.__table__)
# The candidates to delete, and the pipeline's run each one is checked against.
_CANDIDATE = RUNS.alias("candidate")
_KEPT = RUNS.alias("kept")
# The order the candidates are deleted in, and its seek: oldest event time first.
# Served by ix_runs_event_at, on event_at alone: the seek bounds event_at on
# every database (without it, PostgreSQL's reused plan of a batch expected the
# rest of the table and scanned it whole: 3.7 s for the 1 M data set's prune,
# against 1.8).
_SCAN = Keyset(
    "retention",
    (SortKey(_CANDIDATE.c.event_at, datetime), SortKey(_CANDIDATE.c.id, int)),
    bound_first_key="always",
)


class PruneReport(BaseModel):
    """What one prune removed (or, on a dry run, would remove)."""

    model_config = ConfigDict(frozen=True)

    cutoff: datetime  # runs with event time strictly before it were candidates
    dry_run: bool
    runs_deleted: int  # on a dry run: the runs it would delete
    pipelines_touched: int  # pipelines that lost (or would lose) at least one run
    batches: int  # delete transactions committed (0 on a dry run)
    batch_size: int
    elapsed_s: float
    stopped: bool  # should_stop ended it before every candidate was deleted


def retention_cutoff(now: datetime, days: int) -> datetime:
    """The cutoff of "older than ``days`` days" at ``now``."""
    if days < 1:
        raise ValueError("retention keeps at least 1 day")
    return now - timedelta(days=days)


def prune(
    engine: Engine,
    *,
    older_than: datetime,
    batch_size: int,
    dry_run: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
) -> PruneReport:
    """Delete the runs with event time before ``older_than``, ``batch_size`` per
    transaction, keeping each pipeline's latest run before it (see the module).

    ``should_stop`` is asked before each batch; when it answers True the
    prune ends there (``stopped``), every committed batch kept. A dry run
    deletes nothing and counts, in one read, what a prune would delete.
    """
    if older_than.tzinfo is None:
        raise ValueError("older_than must be timezone-aware")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    started = time.monotonic()
    if dry_run:
        runs, pipelines = _count_prunable(engine, older_than)
        report = PruneReport(
            cutoff=older_than,
            dry_run=True,
            runs_deleted=runs,
            pipelines_touched=pipelines,
            batches=0,
            batch_size=batch_size,
            elapsed_s=time.monotonic() - started,
            stopped=False,
        )
    else:
        report = _delete_in_batches(engine, older_than, batch_size, should_stop, started)
    logger.info(
        "prune%s: %d runs of %d pipelines with event time before %s %s in %d batches"
        " of at most %d (%.2f s)%s",
        " (dry run)" if report.dry_run else "",
        report.runs_deleted,
        report.pipelines_touched,
        isoformat_z(report.cutoff),
        "would be deleted" if report.dry_run else "deleted",
        report.batches,
        report.batch_size,
        report.elapsed_s,
        "; stopped before the end" if report.stopped else "",
    )
    return report


def _delete_in_batches(
    engine: Engine,
    cutoff: datetime,
    batch_size: int,
    should_stop: Callable[[], bool],
    started: float,
) -> PruneReport:
    sessions = make_session_factory(engine, write=True)
    deleted, batches, stopped = 0, 0, False
    touched: set[int] = set()
    position: list[Any] | None = None
    while True:
        if should_stop():
            stopped = True
            break
        with sessions.begin() as session:
            rows = session.execute(_batch_statement(cutoff, batch_size, position)).all()
        batches += 1
        deleted += len(rows)
        touched.update(row.pipeline_id for row in rows)
        if len(rows) < batch_size:
            break  # the scan reached the cutoff: nothing is left to delete
        # Candidates are taken in (event_at, id) order and the batch is the
        # first batch_size of them, so the next one starts after its last.
        # Kept runs before that point are not read again.
        last = max(rows, key=lambda row: (row.event_at, row.id))
        position = [last.event_at, last.id]
    return PruneReport(
        cutoff=cutoff,
        dry_run=False,
        runs_deleted=deleted,
        pipelines_touched=len(touched),
        batches=batches,
        batch_size=batch_size,
        elapsed_s=time.monotonic() - started,
        stopped=stopped,
    )


def _batch_statement(
    cutoff: datetime, batch_size: int, position: Sequence[Any] | None
) -> ReturningDelete[tuple[int, int, datetime]]:
    """One batch: the next ``batch_size`` runs before ``cutoff`` after
    ``position`` that are not their pipeline's kept run, deleted."""
    at = sa.literal(cutoff, UTCDateTime())
    candidates = (
        sa.select(_CANDIDATE.c.id)
        .where(_CANDIDATE.c.event_at < at, _CANDIDATE.c.id != _kept_run_id(at))
        .order_by(*_SCAN.order_by)
        .limit(batch_size)
    )
    if position is not None:
        candidates = candidates.where(_SCAN.after(position))
    return (
        sa.delete(RUNS)
        .where(RUNS.c.id.in_(candidates))
        .returning(RUNS.c.id, RUNS.c.pipeline_id, RUNS.c.event_at)
    )


def _kept_run_id(cutoff: sa.ColumnElement[datetime]) -> sa.ScalarSelect[Any]:
    """The candidate's pipeline's latest run (ordering rule) with event time
    before the cutoff: the one old run a prune keeps.

    ``started_key < cutoff`` is implied by ``event_at < cutoff`` (a run's event
    time is its start when it has one; a missing start is the key's floor).
    Said explicitly, it starts the walk of the ordering index at the cutoff
    instead of at the pipeline's newest run, so the first entry read is
    (almost always) the answer, however many recent runs the pipeline has.
    """
    on_kept = ClauseAdapter(_KEPT)
    started_key = on_kept.traverse(KEYSET.keys[0].expression)
    return (
        sa.select(_KEPT.c.id)
        .where(
            _KEPT.c.pipeline_id == _CANDIDATE.c.pipeline_id,
            started_key < cutoff,
            _KEPT.c.event_at < cutoff,
        )
        .order_by(*(on_kept.traverse(key) for key in ORDER_BY))
        .limit(1)
        .correlate(_CANDIDATE)
        .scalar_subquery()
    )


def _count_prunable(engine: Engine, cutoff: datetime) -> tuple[int, int]:
    """(runs, pipelines) a prune at ``cutoff`` would delete, in one read.

    A prune keeps exactly one run before the cutoff per pipeline that has
    any, so it deletes n - 1 runs of each pipeline with n >= 2 of them.
    """
    at = sa.literal(cutoff, UTCDateTime())
    per_pipeline = (
        sa.select(RUNS.c.pipeline_id, sa.func.count().label("old_runs"))
        .where(RUNS.c.event_at < at)
        .group_by(RUNS.c.pipeline_id)
        .subquery("per_pipeline")
    )
    statement = sa.select(
        sa.func.coalesce(sa.func.sum(per_pipeline.c.old_runs - 1), 0),
        sa.func.count(),
    ).where(per_pipeline.c.old_runs >= 2)
    with engine.connect() as connection:
        runs, pipelines = connection.execute(statement).one()
    return int(runs), int(pipelines)
