"""Run-duration distribution (OB-006): nearest-rank percentiles and a histogram.

All three outputs start from one set, the runs with a duration whose event
time is in the window (``run_durations_query``): the summary and the
histogram aggregate exactly that set, and the ``chm_run_durations`` view
shows it run by run, so a BI tool can draw its own bins.
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from chm.models import Client, Pipeline, Run
from chm.reports.params import ReportContext, sql_window
from chm.reports.schemas import DurationHistogramRow, DurationReport, DurationSummaryRow
from chm.reports.sql import Query, Scope, Window, rows_as, runs_in_scope

DEFAULT_DURATION_WINDOW = timedelta(days=7)
PERCENTILES = (50, 90, 95, 99)
# Histogram edges in seconds: 1 s to a day, then one open-ended bin.
HISTOGRAM_EDGES = (1, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400)


def run_durations_query(
    window: Window,
    scope: Scope,
    platform: str | None = None,
    pipeline_id: int | None = None,
) -> Query:
    """Every run in scope with a duration and its event time in the window."""
    query = runs_in_scope(
        Run.id.label("run_id"),
        Pipeline.id.label("pipeline_id"),
        Pipeline.name.label("pipeline_name"),
        Client.id.label("client_id"),
        Client.name.label("client_name"),
        Pipeline.platform.label("platform"),
        Run.status.label("status"),
        Run.event_at.label("event_at"),
        Run.duration_seconds.label("duration_seconds"),
    ).where(*scope.filters(), window.contains(Run.event_at), Run.duration_seconds.is_not(None))
    if platform is not None:
        query = query.where(Pipeline.platform == platform)
    if pipeline_id is not None:
        query = query.where(Run.pipeline_id == pipeline_id)
    return query


def duration_summary_query(durations: Query) -> Query:
    """One row: how many durations, their nearest-rank percentiles and the longest."""
    source = durations.subquery("durations")
    ranked = sa.select(
        source.c.duration_seconds.label("duration"),
        sa.func.row_number().over(order_by=source.c.duration_seconds).label("rank"),
        sa.func.count().over().label("n"),
    ).subquery("ranked")

    def percentile(p: int) -> sa.ColumnElement[Any]:
        # Nearest rank: the value at 1-based rank ceil(p/100 * n), in
        # integer arithmetic (identical on both databases, no ceil()).
        numerator = sa.sql.expression.Grouping(p * ranked.c.n + 99)
        target_rank = numerator.op("/", return_type=sa.Integer)(100)
        return sa.func.max(sa.case((ranked.c.rank == target_rank, ranked.c.duration)))

    return sa.select(
        sa.func.count(ranked.c.duration).label("count"),
        *(percentile(p).label(f"p{p}") for p in PERCENTILES),
        sa.func.max(ranked.c.duration).label("max"),
    )


def histogram_bins() -> sa.Subquery:
    """The fixed bins as rows ``(bin, gt_seconds, le_seconds)``, the open one last.

    Inline literals (a ``UNION ALL`` of one-row selects, which both databases
    accept, unlike a named ``VALUES`` list on SQLite): the API and the view
    run the very same text, and the first row's typed NULL gives PostgreSQL
    the column type.
    """
    edges = (None, *HISTOGRAM_EDGES, None)

    def edge(value: int | None) -> sa.ColumnElement[Any]:
        if value is None:
            return sa.cast(sa.null(), sa.Integer)
        return sa.literal_column(str(value), sa.Integer)

    rows = [
        sa.select(
            sa.literal_column(str(i), sa.Integer).label("bin"),
            edge(lower).label("gt_seconds"),
            edge(upper).label("le_seconds"),
        )
        for i, (lower, upper) in enumerate(itertools.pairwise(edges))
    ]
    return sa.union_all(*rows).subquery("bins")


def duration_histogram_query(durations: Query) -> Query:
    """One row per bin of the fixed edges, shortest first, empty bins counted 0."""
    source = durations.subquery("durations")
    bin_index = sa.case(
        *((source.c.duration_seconds <= edge, i) for i, edge in enumerate(HISTOGRAM_EDGES)),
        else_=len(HISTOGRAM_EDGES),
    )
    # Grouped by the output column's name: the CASE is written once.
    counts = (
        sa.select(bin_index.label("bin"), sa.func.count().label("count"))
        .group_by("bin")
        .subquery("counts")
    )
    bins = histogram_bins()
    return (
        sa.select(
            bins.c.gt_seconds,
            bins.c.le_seconds,
            sa.func.coalesce(counts.c.count, 0).label("count"),
        )
        .select_from(bins)
        .outerjoin(counts, counts.c.bin == bins.c.bin)
        .order_by(bins.c.bin)
    )


def duration_summary(session: Session, durations: Query) -> DurationSummaryRow:
    row = session.execute(duration_summary_query(durations)).mappings().one()
    return DurationSummaryRow.model_validate(row)


def duration_histogram(session: Session, durations: Query) -> list[DurationHistogramRow]:
    return rows_as(DurationHistogramRow, session.execute(duration_histogram_query(durations)))


def duration_distribution_report(
    session: Session,
    ctx: ReportContext,
    since: datetime | None,
    until: datetime | None,
    platform: str | None,
    pipeline_id: int | None,
) -> DurationReport:
    since, until = ctx.window(since, until, DEFAULT_DURATION_WINDOW)
    durations = run_durations_query(sql_window(since, until), ctx.scope, platform, pipeline_id)
    summary = duration_summary(session, durations)
    return DurationReport(
        **summary.model_dump(),
        items=duration_histogram(session, durations),
        since=since,
        until=until,
        as_of=ctx.as_of,
    )
