"""The client summary (FR-007, AC-005): status counts and each pipeline's latest run
in a time window, computed in the database."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from chm.core.lookup import first_or_404
from chm.core.status import RunStatus
from chm.core.types import NullsLowKey
from chm.core.window import resolve_window
from chm.models import Client, Pipeline, Run
from chm.runs.ordering import ORDER_BY
from chm.runs.serialize import RUN_COLUMNS, RUNS, run_document


def latest_run_in_window(since: datetime, until: datetime) -> sa.ColumnElement[int | None]:
    """The id of ``Pipeline``'s latest run with its event time in [since, until), by
    the ordering rule, as two probes of the ordering index (never a scan of the
    window): a run with a start time always ranks before one without, and its
    event time is its start time; only when the window holds no started run do
    the runs without one (event time = finished, else created) decide."""
    started_key = NullsLowKey(RUNS.c.started_at)
    started = (
        sa.select(RUNS.c.id)
        .where(RUNS.c.pipeline_id == Pipeline.id, started_key >= since, started_key < until)
        .order_by(*ORDER_BY)
        .limit(1)
        .correlate(Pipeline)
        .scalar_subquery()
    )
    unstarted = (
        sa.select(RUNS.c.id)
        .where(
            RUNS.c.pipeline_id == Pipeline.id,
            started_key == NullsLowKey(sa.null()),
            RUNS.c.event_at >= since,
            RUNS.c.event_at < until,
        )
        .order_by(*ORDER_BY)
        .limit(1)
        .correlate(Pipeline)
        .scalar_subquery()
    )
    return sa.func.coalesce(started, unstarted)


async def client_summary(
    conn: AsyncConnection, client_id: int, since: datetime | None, until: datetime | None
) -> dict[str, Any]:
    """The summary as a ``ClientSummary``-shaped document (see chm.runs.serialize)."""
    client = await first_or_404(
        conn, sa.select(Client.id, Client.name).where(Client.id == client_id), "client", client_id
    )
    since, until = resolve_window(since, until)

    pipelines = (
        await conn.execute(
            sa.select(Pipeline.id, Pipeline.name, Pipeline.platform, Pipeline.environment)
            .where(Pipeline.client_id == client.id, Pipeline.is_active.is_(True))
            .order_by(Pipeline.name_key, Pipeline.id)
        )
    ).all()
    in_window = (
        Pipeline.client_id == client.id,
        Pipeline.is_active.is_(True),
        Run.event_at >= since,
        Run.event_at < until,
    )
    counts: dict[int, dict[str, int]] = {}
    status_counts = {status: 0 for status in RunStatus}
    for pipeline_id, status, n in await conn.execute(
        sa.select(Run.pipeline_id, Run.status, sa.func.count())
        .join(Pipeline, Pipeline.id == Run.pipeline_id)
        .where(*in_window)
        .group_by(Run.pipeline_id, Run.status)
    ):
        counts.setdefault(pipeline_id, {})[status] = n
        status_counts[RunStatus(status)] += n

    latest_ids = sa.select(latest_run_in_window(since, until)).where(
        Pipeline.client_id == client.id, Pipeline.is_active.is_(True)
    )
    latest = {
        run.pipeline_id: run
        for run in await conn.execute(sa.select(*RUN_COLUMNS).where(RUNS.c.id.in_(latest_ids)))
    }

    rows = []
    for pipeline in pipelines:
        run = latest.get(pipeline.id)
        pipeline_counts = counts.get(pipeline.id, {})
        rows.append(
            {
                "pipeline_id": str(pipeline.id),
                "pipeline_name": pipeline.name,
                "platform": pipeline.platform,
                "environment": pipeline.environment,
                "latest_status": run.status if run is not None else None,
                "latest_run": run_document(run) if run is not None else None,
                "runs_in_window": sum(pipeline_counts.values()),
                "failed_in_window": pipeline_counts.get(RunStatus.failed, 0),
            }
        )
    return {
        "client": {"id": str(client.id), "name": client.name},
        "since": since,
        "until": until,
        "total_runs": sum(status_counts.values()),
        "status_counts": {status.value: n for status, n in status_counts.items()},
        "pipelines": rows,
    }
