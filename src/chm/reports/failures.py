"""Failure counts: over time (OB-001), by client (OB-003) and by platform (OB-005).

Each output is a ``*_query`` that builds the statement (shared with the BI
views) and a function that runs it for the API and the terminal board.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from chm.core.status import RunStatus
from chm.models import Client, Pipeline, Run
from chm.reports.params import ReportContext, check_bucket_count, sql_window
from chm.reports.schemas import (
    FailureRateByPlatformRow,
    FailuresByClientRow,
    FailuresOverTimeRow,
    Report,
)
from chm.reports.sql import (
    Bucket,
    BucketStart,
    Clock,
    NextBucket,
    Query,
    Scope,
    Window,
    count_where,
    ratio,
    rows_as,
    runs_in_scope,
)

DEFAULT_FAILURES_WINDOW = timedelta(days=7)
DEFAULT_PLATFORM_WINDOW = timedelta(days=7)
ROLLING_SHORT = timedelta(hours=24)
ROLLING_LONG = timedelta(days=7)

_FAILED = Run.status == RunStatus.failed.value


def failures_over_time_query(window: Window, bucket: Bucket, scope: Scope) -> Query:
    """One row per bucket overlapping the window, oldest first, empty buckets included."""
    # The buckets: a recursive CTE from the bucket holding `since` while it
    # starts before `until`, so every bucket exists even without runs.
    first = sa.select(BucketStart(window.since, bucket).label("bucket_start")).cte(
        "buckets", recursive=True
    )
    buckets = first.union_all(
        sa.select(NextBucket(first.c.bucket_start, bucket)).where(
            NextBucket(first.c.bucket_start, bucket) < window.until
        )
    )
    run_bucket = BucketStart(Run.event_at, bucket)
    counts = (
        runs_in_scope(
            run_bucket.label("bucket_start"),
            count_where(_FAILED).label("failed_runs"),
            sa.func.count().label("total_runs"),
        )
        .where(*scope.filters(), window.contains(Run.event_at))
        .group_by(run_bucket)
        .subquery("counts")
    )
    return (
        sa.select(
            buckets.c.bucket_start,
            sa.func.coalesce(counts.c.failed_runs, 0).label("failed_runs"),
            sa.func.coalesce(counts.c.total_runs, 0).label("total_runs"),
        )
        .select_from(buckets)
        .outerjoin(counts, counts.c.bucket_start == buckets.c.bucket_start)
        .order_by(buckets.c.bucket_start)
    )


def failures_over_time(
    session: Session, window: Window, bucket: Bucket, scope: Scope
) -> list[FailuresOverTimeRow]:
    rows = session.execute(failures_over_time_query(window, bucket, scope))
    return rows_as(FailuresOverTimeRow, rows)


def failures_by_client_query(clock: Clock, scope: Scope) -> Query:
    """One row per client in scope, zero rows included; windows end at ``as_of``."""
    as_of, since_short, since_long = clock.at(), clock.at(-ROLLING_SHORT), clock.at(-ROLLING_LONG)
    # Count per client over the long window first; the short window is a
    # subset of it, so one pass over the runs serves all four counts.
    in_short = Run.event_at >= since_short
    counts = (
        runs_in_scope(
            Pipeline.client_id.label("client_id"),
            count_where(sa.and_(_FAILED, in_short)).label("failed_24h"),
            count_where(_FAILED).label("failed_7d"),
            count_where(in_short).label("total_24h"),
            sa.func.count().label("total_7d"),
        )
        .where(*scope.filters(), Run.event_at >= since_long, Run.event_at < as_of)
        .group_by(Pipeline.client_id)
        .subquery("counts")
    )
    failed_24h = sa.func.coalesce(counts.c.failed_24h, 0)
    failed_7d = sa.func.coalesce(counts.c.failed_7d, 0)
    return (
        sa.select(
            Client.id.label("client_id"),
            Client.name.label("client_name"),
            failed_24h.label("failed_24h"),
            failed_7d.label("failed_7d"),
            sa.func.coalesce(counts.c.total_24h, 0).label("total_24h"),
            sa.func.coalesce(counts.c.total_7d, 0).label("total_7d"),
        )
        .select_from(Client)
        .outerjoin(counts, counts.c.client_id == Client.id)
        .where(*scope.client_filters())
        .order_by(failed_24h.desc(), failed_7d.desc(), Client.name_key, Client.id)
    )


def failures_by_client(session: Session, clock: Clock, scope: Scope) -> list[FailuresByClientRow]:
    return rows_as(FailuresByClientRow, session.execute(failures_by_client_query(clock, scope)))


def failure_rate_by_platform_query(window: Window, scope: Scope) -> Query:
    """One row per platform with runs in the window, ordered by platform."""
    failed = count_where(_FAILED)
    total = sa.func.count()
    return (
        runs_in_scope(
            Pipeline.platform.label("platform"),
            total.label("total_runs"),
            failed.label("failed_runs"),
            ratio(failed, total).label("failure_rate"),
        )
        .where(*scope.filters(), window.contains(Run.event_at))
        .group_by(Pipeline.platform)
        .order_by(Pipeline.platform)
    )


def failure_rate_by_platform(
    session: Session, window: Window, scope: Scope
) -> list[FailureRateByPlatformRow]:
    rows = session.execute(failure_rate_by_platform_query(window, scope))
    return rows_as(FailureRateByPlatformRow, rows)


def failures_over_time_report(
    session: Session,
    ctx: ReportContext,
    bucket: Bucket,
    since: datetime | None,
    until: datetime | None,
) -> Report[FailuresOverTimeRow]:
    since, until = ctx.window(since, until, DEFAULT_FAILURES_WINDOW)
    check_bucket_count(since, until, bucket)
    items = failures_over_time(session, sql_window(since, until), bucket, ctx.scope)
    return Report[FailuresOverTimeRow](items=items, since=since, until=until, as_of=ctx.as_of)


def failures_by_client_report(session: Session, ctx: ReportContext) -> Report[FailuresByClientRow]:
    items = failures_by_client(session, ctx.clock, ctx.scope)
    return Report[FailuresByClientRow](
        items=items, since=ctx.as_of - ROLLING_LONG, until=ctx.as_of, as_of=ctx.as_of
    )


def failure_rate_by_platform_report(
    session: Session, ctx: ReportContext, since: datetime | None, until: datetime | None
) -> Report[FailureRateByPlatformRow]:
    since, until = ctx.window(since, until, DEFAULT_PLATFORM_WINDOW)
    items = failure_rate_by_platform(session, sql_window(since, until), ctx.scope)
    return Report[FailureRateByPlatformRow](items=items, since=since, until=until, as_of=ctx.as_of)
