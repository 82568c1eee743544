"""The rows of every report, and the envelope they are served in.

A row model's fields, in order, are the report's columns: the JSON items, the
CSV header and the matching BI view (``chm.reports.views``) all follow them,
and their descriptions document the view columns too.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Generic, TypeVar

from pydantic import BaseModel, Field

from chm.core.schemas import EntityId, ResponseModel
from chm.core.status import RunStatus

Row = TypeVar("Row", bound=BaseModel)


class Report(BaseModel, Generic[Row]):
    """Every report's envelope: its rows and the window it used."""

    items: list[Row]
    since: datetime | None = Field(description="Start of the event-time window (inclusive)")
    until: datetime | None = Field(description="End of the event-time window (exclusive)")
    as_of: datetime = Field(description="Reference time of rolling windows and defaults")


class FailuresOverTimeRow(ResponseModel):
    bucket_start: datetime = Field(description="Start of the UTC-aligned hour or day")
    failed_runs: int = Field(description="Runs with status failed whose event time is in it")
    total_runs: int = Field(description="All runs whose event time is in it")


class LatestStatusRow(ResponseModel):
    client_id: EntityId
    client_name: str
    pipeline_id: EntityId
    pipeline_name: str
    platform: str
    environment: str
    latest_run_id: EntityId | None = Field(
        description="The latest run before as_of by the ordering rule; null when none"
    )
    latest_status: RunStatus | None = Field(description="That run's stored status")
    started_at: datetime | None = Field(description="That run's started_at")
    finished_at: datetime | None = Field(description="That run's finished_at")


class FailuresByClientRow(ResponseModel):
    client_id: EntityId
    client_name: str
    failed_24h: int = Field(description="Failed runs in the 24 hours before as_of")
    failed_7d: int = Field(description="Failed runs in the 7 days before as_of")
    total_24h: int = Field(description="All runs in the 24 hours before as_of")
    total_7d: int = Field(description="All runs in the 7 days before as_of")


class FlakyPipelineRow(ResponseModel):
    pipeline_id: EntityId
    pipeline_name: str
    client_id: EntityId
    client_name: str
    platform: str
    total_runs: int = Field(description="All runs in the window")
    failed_runs: int = Field(description="Failed runs in the window")
    success_runs: int = Field(description="Successful runs in the window")
    failure_rate: float = Field(description="failed_runs / total_runs")
    status_changes: int = Field(
        description="Adjacent success/failed runs (oldest first by event time, then id) "
        "whose statuses differ"
    )


class FailureRateByPlatformRow(ResponseModel):
    platform: str
    total_runs: int = Field(description="All runs in the window")
    failed_runs: int = Field(description="Failed runs in the window")
    failure_rate: float = Field(description="failed_runs / total_runs")


class DurationHistogramRow(ResponseModel):
    gt_seconds: int | None = Field(
        description="The previous edge: runs counted here lasted longer (null: from 0)"
    )
    le_seconds: int | None = Field(
        description="The edge: runs counted here lasted at most this (null: no upper bound)"
    )
    count: int = Field(description="Runs with a duration in (gt_seconds, le_seconds]")


class DurationSummaryRow(ResponseModel):
    """The top-level figures of the duration report, as one row (the summary view)."""

    count: int = Field(description="Runs with a duration in the window")
    p50: float | None = Field(description="Nearest-rank 50th percentile, seconds")
    p90: float | None = Field(description="Nearest-rank 90th percentile, seconds")
    p95: float | None = Field(description="Nearest-rank 95th percentile, seconds")
    p99: float | None = Field(description="Nearest-rank 99th percentile, seconds")
    max: float | None = Field(description="Longest duration, seconds")


class DurationReport(Report[DurationHistogramRow], DurationSummaryRow):
    """The duration report: the summary figures at the top level, histogram rows as items."""


class RunDurationRow(ResponseModel):
    """One run with a duration (the base set of the duration report)."""

    run_id: EntityId
    pipeline_id: EntityId
    pipeline_name: str
    client_id: EntityId
    client_name: str
    platform: str
    status: RunStatus
    event_at: datetime = Field(description="started_at, else finished_at, else created_at")
    duration_seconds: float


class StatusChangeRow(ResponseModel):
    pipeline_id: EntityId
    pipeline_name: str
    client_id: EntityId
    client_name: str
    previous_status: RunStatus | None = Field(
        description="Status of the latest run before since; null when there was none"
    )
    current_status: RunStatus = Field(description="Status of the latest run before until")
    changed_at: datetime = Field(description="Event time of the latest run before until")


class StuckRunRow(ResponseModel):
    run_id: EntityId
    pipeline_id: EntityId
    pipeline_name: str
    client_id: EntityId
    client_name: str
    status: RunStatus = Field(description="queued or running")
    started_at: datetime | None
    event_at: datetime = Field(description="started_at, else finished_at, else created_at")


class OverdueState(StrEnum):
    """Why a scheduled pipeline is overdue (monitoring contract, "Schedules")."""

    missed = "missed"
    late = "late"


class OverdueRow(ResponseModel):
    pipeline_id: EntityId
    pipeline_name: str
    client_id: EntityId
    client_name: str
    platform: str
    schedule: str = Field(description="The five-field cron expression")
    schedule_timezone: str = Field(description="The IANA time zone the schedule is read in")
    state: OverdueState = Field(
        description="missed: no run in [expected_at - grace, as_of]; late: one is still open "
        "at due_by"
    )
    expected_at: datetime = Field(
        description="The tick expected: the latest with expected_at + grace <= as_of"
    )
    due_by: datetime = Field(
        description="When it became overdue: expected_at + grace (missed) "
        "or expected_at + deadline (late)"
    )
    last_run_at: datetime | None = Field(
        description="Event time of the latest run at or before as_of by the ordering rule; "
        "null when none"
    )
    last_status: RunStatus | None = Field(description="That run's stored status")
