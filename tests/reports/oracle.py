"""The reports' definitions (contract: Reports) computed the plain way, in Python.

A second, independent computation of every report over the reference
dataset: loops and sorts over the runs, written from the contract's words,
sharing no code with chm.reports. Rows come out as the API serves them
(ids as strings, times as RFC 3339 with Z).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from typing import Any

from reference import Dataset, RefPipeline, RefRun

NO_TIME = datetime.min.replace(tzinfo=UTC)
EDGES = [1, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400]
STATUSES = ["queued", "running", "success", "failed", "cancelled", "skipped", "unknown"]


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def ident(value: int | None) -> str | None:
    return None if value is None else str(value)


def pipelines_in_scope(
    data: Dataset, client_id: int | None = None, include_inactive: bool = False
) -> list[RefPipeline]:
    chosen = []
    for pipeline in data.pipelines:
        client = data.client(pipeline.client_id)
        if client_id is not None and pipeline.client_id != client_id:
            continue
        if not include_inactive and not (pipeline.is_active and client.is_active):
            continue
        chosen.append(pipeline)
    return chosen


def runs_of(data: Dataset, pipelines: Iterable[RefPipeline]) -> list[RefRun]:
    ids = {p.id for p in pipelines}
    return [r for r in data.runs if r.pipeline_id in ids]


def in_window(run: RefRun, since: datetime, until: datetime) -> bool:
    return since <= run.event_at < until


def ordering_key(run: RefRun) -> tuple[datetime, datetime, int]:
    """Started desc, finished desc, nulls last, then id desc: the largest key is the latest."""
    return (run.started_at or NO_TIME, run.finished_at or NO_TIME, run.id)


def latest_before(data: Dataset, pipeline_id: int, before: datetime) -> RefRun | None:
    candidates = [r for r in data.runs if r.pipeline_id == pipeline_id and r.event_at < before]
    return max(candidates, key=ordering_key) if candidates else None


def by_names(data: Dataset, pipeline: RefPipeline) -> tuple[str, int, str, int]:
    client = data.client(pipeline.client_id)
    return (client.name.casefold(), client.id, pipeline.name.casefold(), pipeline.id)


def failures_over_time(
    data: Dataset,
    since: datetime,
    until: datetime,
    bucket: str = "day",
    client_id: int | None = None,
    include_inactive: bool = False,
) -> list[dict[str, Any]]:
    width = timedelta(hours=1) if bucket == "hour" else timedelta(days=1)
    start = since.replace(minute=0, second=0, microsecond=0)
    if bucket == "day":
        start = start.replace(hour=0)
    runs = [
        r
        for r in runs_of(data, pipelines_in_scope(data, client_id, include_inactive))
        if in_window(r, since, until)
    ]
    rows = []
    while start < until:
        inside = [r for r in runs if start <= r.event_at < start + width]
        rows.append(
            {
                "bucket_start": iso(start),
                "failed_runs": sum(r.status == "failed" for r in inside),
                "total_runs": len(inside),
            }
        )
        start += width
    return rows


def latest_status(
    data: Dataset,
    as_of: datetime,
    status: str | None = None,
    client_id: int | None = None,
    include_inactive: bool = False,
) -> list[dict[str, Any]]:
    rows = []
    pipelines = pipelines_in_scope(data, client_id, include_inactive)
    for pipeline in sorted(pipelines, key=lambda p: by_names(data, p)):
        run = latest_before(data, pipeline.id, as_of)
        if status is not None and (run is None or run.status != status):
            continue
        rows.append(
            {
                "client_id": str(pipeline.client_id),
                "client_name": data.client(pipeline.client_id).name,
                "pipeline_id": str(pipeline.id),
                "pipeline_name": pipeline.name,
                "platform": pipeline.platform,
                "environment": pipeline.environment,
                "latest_run_id": ident(run.id if run else None),
                "latest_status": run.status if run else None,
                "started_at": iso(run.started_at) if run else None,
                "finished_at": iso(run.finished_at) if run else None,
            }
        )
    return rows


def failures_by_client(
    data: Dataset, as_of: datetime, client_id: int | None = None, include_inactive: bool = False
) -> list[dict[str, Any]]:
    rows = []
    for client in data.clients:
        if client_id is not None and client.id != client_id:
            continue
        if not include_inactive and not client.is_active:
            continue
        runs = runs_of(data, pipelines_in_scope(data, client.id, include_inactive))
        day = [r for r in runs if in_window(r, as_of - timedelta(hours=24), as_of)]
        week = [r for r in runs if in_window(r, as_of - timedelta(days=7), as_of)]
        rows.append(
            {
                "client_id": str(client.id),
                "client_name": client.name,
                "failed_24h": sum(r.status == "failed" for r in day),
                "failed_7d": sum(r.status == "failed" for r in week),
                "total_24h": len(day),
                "total_7d": len(week),
            }
        )
    rows.sort(
        key=lambda row: (
            -row["failed_24h"],
            -row["failed_7d"],
            row["client_name"].casefold(),
            int(row["client_id"]),
        )
    )
    return rows


def status_change_count(runs: list[RefRun]) -> int:
    outcomes = [
        r.status
        for r in sorted(runs, key=lambda r: (r.event_at, r.id))
        if r.status in ("success", "failed")
    ]
    return sum(1 for before, after in itertools.pairwise(outcomes) if before != after)


def flaky_pipelines(
    data: Dataset,
    as_of: datetime,
    days: int = 30,
    limit: int = 10,
    client_id: int | None = None,
    include_inactive: bool = False,
) -> list[dict[str, Any]]:
    since = as_of - timedelta(days=days)
    rows = []
    for pipeline in pipelines_in_scope(data, client_id, include_inactive):
        runs = [r for r in runs_of(data, [pipeline]) if in_window(r, since, as_of)]
        failed = sum(r.status == "failed" for r in runs)
        success = sum(r.status == "success" for r in runs)
        if failed == 0 or success == 0:
            continue
        rows.append(
            {
                "pipeline_id": str(pipeline.id),
                "pipeline_name": pipeline.name,
                "client_id": str(pipeline.client_id),
                "client_name": data.client(pipeline.client_id).name,
                "platform": pipeline.platform,
                "total_runs": len(runs),
                "failed_runs": failed,
                "success_runs": success,
                "failure_rate": failed / len(runs),
                "status_changes": status_change_count(runs),
            }
        )
    rows.sort(key=lambda r: (-r["failed_runs"], -r["failure_rate"], int(r["pipeline_id"])))
    return rows[:limit]


def failure_rate_by_platform(
    data: Dataset,
    since: datetime,
    until: datetime,
    client_id: int | None = None,
    include_inactive: bool = False,
) -> list[dict[str, Any]]:
    per_platform: dict[str, list[RefRun]] = {}
    for pipeline in pipelines_in_scope(data, client_id, include_inactive):
        for run in runs_of(data, [pipeline]):
            if in_window(run, since, until):
                per_platform.setdefault(pipeline.platform, []).append(run)
    return [
        {
            "platform": platform,
            "total_runs": len(runs),
            "failed_runs": sum(r.status == "failed" for r in runs),
            "failure_rate": sum(r.status == "failed" for r in runs) / len(runs),
        }
        for platform, runs in sorted(per_platform.items())
    ]


def durations(
    data: Dataset,
    since: datetime,
    until: datetime,
    platform: str | None = None,
    pipeline_id: int | None = None,
    client_id: int | None = None,
    include_inactive: bool = False,
) -> dict[str, Any]:
    """The duration report: summary figures and every histogram bin, empty ones 0."""
    pipelines = [
        p
        for p in pipelines_in_scope(data, client_id, include_inactive)
        if (platform is None or p.platform == platform)
        and (pipeline_id is None or p.id == pipeline_id)
    ]
    values = sorted(
        r.duration_seconds
        for r in runs_of(data, pipelines)
        if r.duration_seconds is not None and in_window(r, since, until)
    )
    n = len(values)

    def percentile(p: int) -> float | None:
        return values[math.ceil(Fraction(p, 100) * n) - 1] if n else None

    bins = []
    lower: int | None = None
    for edge in [*EDGES, None]:
        count = sum(
            1 for v in values if (lower is None or v > lower) and (edge is None or v <= edge)
        )
        bins.append({"gt_seconds": lower, "le_seconds": edge, "count": count})
        lower = edge
    return {
        "count": n,
        "p50": percentile(50),
        "p90": percentile(90),
        "p95": percentile(95),
        "p99": percentile(99),
        "max": values[-1] if n else None,
        "items": bins,
    }


def status_changes(
    data: Dataset,
    since: datetime,
    until: datetime,
    client_id: int | None = None,
    include_inactive: bool = False,
) -> list[dict[str, Any]]:
    rows = []
    pipelines = pipelines_in_scope(data, client_id, include_inactive)
    for pipeline in sorted(pipelines, key=lambda p: by_names(data, p)):
        before = latest_before(data, pipeline.id, since)
        now = latest_before(data, pipeline.id, until)
        previous = before.status if before else None
        current = now.status if now else None
        if previous == current:
            continue
        assert now is not None
        rows.append(
            {
                "pipeline_id": str(pipeline.id),
                "pipeline_name": pipeline.name,
                "client_id": str(pipeline.client_id),
                "client_name": data.client(pipeline.client_id).name,
                "previous_status": previous,
                "current_status": current,
                "changed_at": iso(now.event_at),
            }
        )
    return rows


def stuck_runs(
    data: Dataset,
    as_of: datetime,
    older_than: timedelta,
    client_id: int | None = None,
    include_inactive: bool = False,
) -> list[dict[str, Any]]:
    runs = [
        r
        for r in runs_of(data, pipelines_in_scope(data, client_id, include_inactive))
        if r.status in ("queued", "running") and r.event_at < as_of - older_than
    ]
    return [
        {
            "run_id": str(r.id),
            "pipeline_id": str(r.pipeline_id),
            "pipeline_name": data.pipeline(r.pipeline_id).name,
            "client_id": str(data.pipeline(r.pipeline_id).client_id),
            "client_name": data.client(data.pipeline(r.pipeline_id).client_id).name,
            "status": r.status,
            "started_at": iso(r.started_at),
            "event_at": iso(r.event_at),
        }
        for r in sorted(runs, key=lambda r: (r.event_at, r.id))
    ]


def run_fields(run: RefRun) -> dict[str, Any]:
    """The fields of a served run that the dataset determines."""
    return {
        "id": str(run.id),
        "pipeline_id": str(run.pipeline_id),
        "external_run_id": f"ref-{run.id}",
        "status": run.status,
        "source_status": run.source_status,
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration_seconds": run.duration_seconds,
        "error_message": run.error_message,
        "event_at": iso(run.event_at),
    }


def client_summary(
    data: Dataset, client_id: int, since: datetime, until: datetime
) -> dict[str, Any]:
    """Contract: Client summary. The client's active pipelines (their own flag)."""
    client = data.client(client_id)
    pipelines = sorted(
        (p for p in data.pipelines if p.client_id == client_id and p.is_active),
        key=lambda p: (p.name.casefold(), p.id),
    )
    counts = dict.fromkeys(STATUSES, 0)
    rows = []
    for pipeline in pipelines:
        runs = [r for r in runs_of(data, [pipeline]) if in_window(r, since, until)]
        for run in runs:
            counts[run.status] += 1
        latest = max(runs, key=ordering_key) if runs else None
        rows.append(
            {
                "pipeline_id": str(pipeline.id),
                "pipeline_name": pipeline.name,
                "platform": pipeline.platform,
                "environment": pipeline.environment,
                "latest_status": latest.status if latest else None,
                "latest_run": run_fields(latest) if latest else None,
                "runs_in_window": len(runs),
                "failed_in_window": sum(r.status == "failed" for r in runs),
            }
        )
    return {
        "client": {"id": str(client.id), "name": client.name},
        "since": iso(since),
        "until": iso(until),
        "total_runs": sum(counts.values()),
        "status_counts": counts,
        "pipelines": rows,
    }
