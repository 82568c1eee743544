"""Top flaky pipelines (OB-004): pipelines that both fail and succeed in a window."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from chm.core.status import RunStatus
from chm.models import Client, Pipeline, Run
from chm.reports.params import ReportContext, sql_window
from chm.reports.schemas import FlakyPipelineRow, Report
from chm.reports.sql import Query, Scope, Window, count_where, ratio, rows_as, runs_in_scope

DEFAULT_DAYS = 30
DEFAULT_LIMIT = 10

_OUTCOMES = (RunStatus.success.value, RunStatus.failed.value)


def flaky_pipelines_query(window: Window, scope: Scope, limit: int | None) -> Query:
    """Pipelines with at least one failed and one success run in the window, most failing first."""
    # One ordered pass over the window's runs. Status changes are counted
    # among the success and failed runs only, oldest first by event time
    # (ties by id): partitioning the window function by "is an outcome" makes
    # lag() see the previous outcome of the same pipeline, and other runs are
    # left out of that count below, while still counting in total_runs.
    is_outcome = Run.status.in_(_OUTCOMES)
    previous = sa.func.lag(Run.status).over(
        partition_by=(Run.pipeline_id, is_outcome), order_by=(Run.event_at, Run.id)
    )
    runs = (
        runs_in_scope(
            Run.pipeline_id.label("pipeline_id"),
            Run.status.label("status"),
            sa.case((is_outcome, previous)).label("previous_outcome"),
        )
        .where(*scope.filters(), window.contains(Run.event_at))
        .subquery("window_runs")
    )
    failed = count_where(runs.c.status == RunStatus.failed.value)
    success = count_where(runs.c.status == RunStatus.success.value)
    counts = (
        sa.select(
            runs.c.pipeline_id,
            sa.func.count().label("total_runs"),
            failed.label("failed_runs"),
            success.label("success_runs"),
            count_where(runs.c.previous_outcome != runs.c.status).label("status_changes"),
        )
        .group_by(runs.c.pipeline_id)
        .having(sa.and_(failed > 0, success > 0))
        .subquery("counts")
    )
    failure_rate = ratio(counts.c.failed_runs, counts.c.total_runs)
    query = (
        sa.select(
            Pipeline.id.label("pipeline_id"),
            Pipeline.name.label("pipeline_name"),
            Client.id.label("client_id"),
            Client.name.label("client_name"),
            Pipeline.platform.label("platform"),
            counts.c.total_runs,
            counts.c.failed_runs,
            counts.c.success_runs,
            failure_rate.label("failure_rate"),
            counts.c.status_changes,
        )
        .select_from(counts)
        .join(Pipeline, Pipeline.id == counts.c.pipeline_id)
        .join(Client, Client.id == Pipeline.client_id)
        .order_by(counts.c.failed_runs.desc(), failure_rate.desc(), Pipeline.id)
    )
    return query.limit(limit) if limit is not None else query


def flaky_pipelines(
    session: Session, window: Window, scope: Scope, limit: int | None
) -> list[FlakyPipelineRow]:
    return rows_as(FlakyPipelineRow, session.execute(flaky_pipelines_query(window, scope, limit)))


def flaky_pipelines_report(
    session: Session, ctx: ReportContext, days: int, limit: int
) -> Report[FlakyPipelineRow]:
    since, until = ctx.as_of - timedelta(days=days), ctx.as_of
    items = flaky_pipelines(session, sql_window(since, until), ctx.scope, limit)
    return Report[FlakyPipelineRow](items=items, since=since, until=until, as_of=ctx.as_of)
