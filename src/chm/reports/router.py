"""Health and BI outputs (FR-017, OB-001..OB-006): ``/api/v1/reports/...``.

Every report takes ``as_of``, ``client_id``, ``include_inactive`` and
``format`` (``json`` or ``csv``) and answers ``{"items": [...], "since",
"until", "as_of"}``, or the items as CSV. The overdue report covers the
active inventory only: ``include_inactive=true`` is a 422 there.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from chm.core.deps import ReportSession
from chm.core.ids import IdFilter
from chm.core.schemas import SLUG_PATTERN
from chm.core.settings import Settings
from chm.core.status import RunStatus
from chm.reports import durations, failures, flaky, overdue, status
from chm.reports.params import (
    ReportContext,
    ReportTime,
    SinceParam,
    UntilParam,
    render,
    report_context,
)
from chm.reports.schemas import (
    DurationHistogramRow,
    DurationReport,
    FailureRateByPlatformRow,
    FailuresByClientRow,
    FailuresOverTimeRow,
    FlakyPipelineRow,
    LatestStatusRow,
    OverdueRow,
    Report,
    StatusChangeRow,
    StuckRunRow,
)
from chm.reports.sql import Bucket

router = APIRouter(prefix="/reports", tags=["reports"])

Context = Annotated[ReportContext, Depends(report_context)]
MAX_FLAKY_DAYS = 365
MAX_STUCK_MINUTES = 365 * 24 * 60


def _csv_also(model: type[Any]) -> dict[int | str, dict[str, Any]]:
    return {200: {"model": model, "content": {"text/csv": {}}}}


@router.get("/failures-over-time", responses=_csv_also(Report[FailuresOverTimeRow]))
def failures_over_time(
    session: ReportSession,
    ctx: Context,
    bucket: Annotated[Bucket, Query(description="hour or day (UTC-aligned)")] = Bucket.day,
    since: SinceParam = None,
    until: UntilParam = None,
) -> Response:
    """Failed and total runs per time bucket, empty buckets included (default: 7 days)."""
    report = failures.failures_over_time_report(session, ctx, bucket, since, until)
    return render(report, FailuresOverTimeRow, ctx.output, "failures-over-time")


@router.get("/latest-status", responses=_csv_also(Report[LatestStatusRow]))
def latest_status(
    session: ReportSession,
    ctx: Context,
    status_filter: Annotated[
        RunStatus | None, Query(alias="status", description="Only pipelines whose latest is this")
    ] = None,
) -> Response:
    """Each pipeline's latest run before as_of, pipelines without runs included."""
    report = status.latest_status_report(session, ctx, status_filter)
    return render(report, LatestStatusRow, ctx.output, "latest-status")


@router.get("/failures-by-client", responses=_csv_also(Report[FailuresByClientRow]))
def failures_by_client(session: ReportSession, ctx: Context) -> Response:
    """Failed and total runs per client over the 24 hours and 7 days before as_of."""
    report = failures.failures_by_client_report(session, ctx)
    return render(report, FailuresByClientRow, ctx.output, "failures-by-client")


@router.get("/flaky-pipelines", responses=_csv_also(Report[FlakyPipelineRow]))
def flaky_pipelines(
    session: ReportSession,
    ctx: Context,
    days: Annotated[
        int, Query(ge=1, le=MAX_FLAKY_DAYS, description="Window: days before as_of")
    ] = flaky.DEFAULT_DAYS,
    limit: Annotated[
        int, Query(ge=1, le=500, description="At most this many rows")
    ] = flaky.DEFAULT_LIMIT,
) -> Response:
    """Pipelines that both failed and succeeded in the window, most failures first."""
    report = flaky.flaky_pipelines_report(session, ctx, days, limit)
    return render(report, FlakyPipelineRow, ctx.output, "flaky-pipelines")


@router.get("/failure-rate-by-platform", responses=_csv_also(Report[FailureRateByPlatformRow]))
def failure_rate_by_platform(
    session: ReportSession, ctx: Context, since: SinceParam = None, until: UntilParam = None
) -> Response:
    """Failed / total runs per platform in the window (default: 7 days)."""
    report = failures.failure_rate_by_platform_report(session, ctx, since, until)
    return render(report, FailureRateByPlatformRow, ctx.output, "failure-rate-by-platform")


@router.get("/duration-distribution", responses=_csv_also(DurationReport))
def duration_distribution(
    session: ReportSession,
    ctx: Context,
    since: SinceParam = None,
    until: UntilParam = None,
    platform: Annotated[str | None, Query(pattern=SLUG_PATTERN)] = None,
    pipeline_id: Annotated[IdFilter | None, Query(description="Only this pipeline")] = None,
) -> Response:
    """Nearest-rank percentiles and a histogram of run durations (default: 7 days)."""
    report = durations.duration_distribution_report(
        session, ctx, since, until, platform, pipeline_id
    )
    return render(report, DurationHistogramRow, ctx.output, "duration-distribution")


@router.get("/status-changes", responses=_csv_also(Report[StatusChangeRow]))
def status_changes(
    session: ReportSession,
    ctx: Context,
    since: Annotated[ReportTime | None, Query(description="Default: 24 hours before until")] = None,
    until: UntilParam = None,
) -> Response:
    """Pipelines whose latest status as of since differs from that as of until."""
    report = status.status_changes_report(session, ctx, since, until)
    return render(report, StatusChangeRow, ctx.output, "status-changes")


@router.get("/stuck-runs", responses=_csv_also(Report[StuckRunRow]))
def stuck_runs(
    request: Request,
    session: ReportSession,
    ctx: Context,
    older_than_minutes: Annotated[
        int | None,
        Query(ge=1, le=MAX_STUCK_MINUTES, description="Default: CHM_STUCK_AFTER_MINUTES"),
    ] = None,
) -> Response:
    """Runs still queued or running whose event time is older than the threshold, oldest first."""
    settings: Settings = request.app.state.settings
    minutes = settings.stuck_after_minutes if older_than_minutes is None else older_than_minutes
    report = status.stuck_runs_report(session, ctx, timedelta(minutes=minutes))
    return render(report, StuckRunRow, ctx.output, "stuck-runs")


@router.get("/overdue-pipelines", responses=_csv_also(Report[OverdueRow]))
def overdue_pipelines(
    session: ReportSession,
    ctx: Context,
    platform: Annotated[
        str | None, Query(pattern=SLUG_PATTERN, description="Only this platform's pipelines")
    ] = None,
) -> Response:
    """Active scheduled pipelines whose expected run is missed or late at as_of, by due_by
    (active inventory only: include_inactive=true is a 422)."""
    report = overdue.overdue_report(session, ctx, platform)
    return render(report, OverdueRow, ctx.output, "overdue-pipelines")
