"""The reference dataset of the reports (SC-003): small, deterministic, full of edge cases.

Five clients (one inactive, one without pipelines), fifteen pipelines on four
platforms (one inactive pipeline, two under the inactive client, one that
never ran), and runs over the 35 days before ``as_of``: a generated history
per pipeline plus hand-placed runs for every edge the definitions care about
(null started_at and finished_at, equal start times, unknown statuses, stuck
runs, runs exactly on window and bucket boundaries, runs after ``as_of``).

Every time is relative to ``as_of``, so the same dataset serves the fixed
``AS_OF`` of the value-by-value tests and "now" for the BI views.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from chm.models import Client, Pipeline, Run
from chm.schedules.ticks import rewrite_ticks

AS_OF = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
DAY, HOUR, MINUTE = timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)
SECOND = timedelta(seconds=1)


@dataclass(frozen=True)
class RefClient:
    id: int
    name: str
    is_active: bool = True


@dataclass(frozen=True)
class RefPipeline:
    id: int
    client_id: int
    name: str
    platform: str
    environment: str
    is_active: bool = True


@dataclass(frozen=True)
class RefRun:
    id: int
    pipeline_id: int
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime
    duration_seconds: float | None = None
    error_message: str | None = None
    source_status: str | None = None

    @property
    def event_at(self) -> datetime:
        return self.started_at or self.finished_at or self.created_at


@dataclass
class Dataset:
    as_of: datetime
    clients: list[RefClient]
    pipelines: list[RefPipeline]
    runs: list[RefRun] = field(default_factory=list)

    def client(self, client_id: int) -> RefClient:
        return next(c for c in self.clients if c.id == client_id)

    def pipeline(self, pipeline_id: int) -> RefPipeline:
        return next(p for p in self.pipelines if p.id == pipeline_id)

    def run(self, run_id: int) -> RefRun:
        return next(r for r in self.runs if r.id == run_id)


CLIENTS = [
    RefClient(1, "Acme"),
    RefClient(2, "Globex"),
    RefClient(3, "Initech"),
    RefClient(4, "Umbrella", is_active=False),
    # Lower case: ordered by name case-insensitively, after Acme.
    RefClient(5, "bluebird"),
]

PIPELINES = [
    RefPipeline(1, 1, "orders_daily", "airflow", "prod"),
    RefPipeline(2, 1, "Billing_sync", "databricks", "prod"),
    RefPipeline(3, 1, "customers_etl", "adf", "staging"),
    RefPipeline(4, 1, "legacy_export", "airflow", "prod", is_active=False),
    RefPipeline(5, 1, "inventory_snap", "dbt_cloud", "prod"),
    RefPipeline(6, 2, "events_stream", "databricks", "prod"),
    RefPipeline(7, 2, "finance_close", "adf", "prod"),
    RefPipeline(8, 2, "marketing_dbt", "dbt_cloud", "dev"),
    RefPipeline(9, 2, "never_ran", "airflow", "prod"),
    RefPipeline(10, 3, "payroll", "airflow", "prod"),
    RefPipeline(11, 3, "reports_weekly", "dbt_cloud", "prod"),
    RefPipeline(12, 3, "tps_reports", "adf", "dev"),
    RefPipeline(13, 4, "hive_sync", "databricks", "prod"),
    RefPipeline(15, 3, "quality_checks", "dbt_cloud", "prod"),
    RefPipeline(14, 4, "lab_metrics", "airflow", "prod"),
]

# Schedules (monitoring contract, "Schedules"): pipeline -> (cron, zone, grace
# minutes, deadline minutes). orders_daily is answered at AS_OF; never_ran is
# always missed; inventory_snap is late (its run 9012, running since 2 hours
# before as_of, answers a tick whose deadline has passed); those of the
# inactive pipeline and of the inactive client's pipeline expect nothing.
SCHEDULES: dict[int, tuple[str, str, int, int | None]] = {
    1: ("0 9 * * *", "Europe/Berlin", 30, None),
    4: ("0 * * * *", "UTC", 0, None),
    5: ("* * * * *", "UTC", 180, 60),
    9: ("*/15 * * * *", "UTC", 5, None),
    13: ("0 * * * *", "UTC", 0, None),
}

# Generated history: pipeline -> (hours between runs, failure probability).
HISTORY = {
    1: (24, 0.10),
    2: (12, 0.30),
    3: (24, 0.05),
    4: (24, 0.20),
    5: (6, 0.00),
    6: (8, 0.15),
    7: (24, 0.25),
    8: (12, 0.10),
    10: (24, 0.05),
    13: (12, 0.20),
    14: (24, 0.50),
}
# Durations drawn for generated runs: several sit exactly on histogram edges.
DURATIONS = (0.0, 0.4, 1.0, 3.5, 5.0, 42.0, 60.0, 61.25, 299.0, 300.0, 900.0, 1234.5, 3600.0)
OTHER_STATUSES = (("cancelled", None), ("skipped", None), ("unknown", "UPSTREAM_FAILED"))


def _history(as_of: datetime) -> list[RefRun]:
    """Runs from 35 days to 2 days before ``as_of``, the same for every ``as_of``."""
    rng = random.Random(20260315)
    runs: list[RefRun] = []
    for pipeline_id, (every_hours, failure_rate) in HISTORY.items():
        planned = as_of - 35 * DAY + rng.randrange(0, 3600) * timedelta(seconds=1)
        while planned < as_of - 2 * DAY:
            roll = rng.random()
            source_status = None
            if roll < failure_rate:
                status = "failed"
            elif roll < failure_rate + 0.06:
                status, source_status = OTHER_STATUSES[rng.randrange(len(OTHER_STATUSES))]
            else:
                status = "success"
            duration = DURATIONS[rng.randrange(len(DURATIONS))]
            shape = rng.randrange(40)
            started: datetime | None = planned
            finished: datetime | None = planned + timedelta(seconds=duration)
            if shape == 0:  # no timestamps at all: the event time is created_at
                started = finished = None
            elif shape < 4:  # finished only
                started = None
            recorded = duration if started is not None and finished is not None else None
            if shape == 5:  # a source that reports its own duration
                recorded = duration + 0.5
            runs.append(
                RefRun(
                    id=len(runs) + 1,
                    pipeline_id=pipeline_id,
                    status=status,
                    started_at=started,
                    finished_at=finished,
                    created_at=planned + 5 * MINUTE,
                    duration_seconds=recorded,
                    error_message="generated failure" if status == "failed" else None,
                    source_status=source_status,
                )
            )
            planned += every_hours * HOUR + rng.randrange(-900, 900) * timedelta(seconds=1)
    return runs


def _hand_placed(as_of: datetime) -> list[RefRun]:
    """The edge cases, ids from 9001 (after every generated run)."""
    t = as_of
    cases = [
        # orders_daily: success before yesterday, failed now -> newly failing.
        (9001, 1, "success", t - 30 * HOUR, t - 30 * HOUR + 10 * MINUTE, 600.0, None, None),
        (
            9002,
            1,
            "failed",
            t - 3 * HOUR,
            t - 3 * HOUR + 5 * MINUTE,
            300.0,
            "Task extract failed: timeout after 300 s",
            None,
        ),
        # Billing_sync: failed before yesterday, success now -> recovered; a
        # later finished-only run is not the latest (null started sorts last).
        (9003, 2, "failed", t - 26 * HOUR, t - 25 * HOUR, 3600.0, "OOM", None),
        (9004, 2, "success", t - 5 * HOUR, t - 5 * HOUR + 30 * MINUTE, 1800.0, None, None),
        (9005, 2, "failed", None, t - HOUR, None, "finished-only failure", None),
        # customers_etl: three runs started at the same instant; the later
        # finish wins, then the higher id.
        (9006, 3, "success", t - 10 * HOUR, t - 10 * HOUR + 10 * MINUTE, 600.0, None, None),
        (9007, 3, "failed", t - 10 * HOUR, t - 9 * HOUR, 3600.0, "bad row", None),
        (9008, 3, "unknown", t - 10 * HOUR, t - 9 * HOUR, 3600.0, None, "WEIRD_STATE"),
        # legacy_export (inactive pipeline): stuck and failing, shown only
        # with include_inactive.
        (9009, 4, "running", t - 20 * HOUR, None, None, None, None),
        (9010, 4, "failed", t - 4 * HOUR, t - 4 * HOUR + MINUTE, 60.0, "gone", None),
        # inventory_snap: queued with no timestamps for 8 hours (stuck), and
        # running for 2 hours (stuck only with a 60-minute threshold).
        (9011, 5, "queued", None, None, None, None, None),
        (9012, 5, "running", t - 2 * HOUR, None, None, None, None),
        # events_stream: exactly at since (in the window, not before it),
        # exactly at as_of (excluded), after as_of (excluded), and failures
        # on both sides of the 7-day edge.
        (9013, 6, "success", t - 24 * HOUR, t - 24 * HOUR + 5.5 * MINUTE, 330.0, None, None),
        (9014, 6, "success", t, t + MINUTE, 60.0, None, None),
        (9015, 6, "failed", t + 2 * HOUR, t + 3 * HOUR, 3600.0, "future", None),
        (9032, 6, "failed", t - 7 * DAY, t - 7 * DAY + MINUTE, 60.0, "edge", None),
        (9033, 6, "failed", t - 7 * DAY - timedelta(microseconds=1), None, None, "before", None),
        # finance_close: running 7 h (stuck), a cancelled run, and a run
        # exactly at midnight (a bucket boundary).
        (
            9016,
            7,
            "running",
            t - 7 * HOUR + timedelta(microseconds=250_000),
            None,
            None,
            None,
            None,
        ),
        (9017, 7, "cancelled", t - 27 * HOUR, t - 26 * HOUR, 3600.0, None, None),
        (
            9034,
            7,
            "success",
            t.replace(hour=0, minute=0) - 3 * DAY,
            t.replace(hour=0, minute=0) - 3 * DAY + 2 * MINUTE,
            120.0,
            None,
            None,
        ),
        # marketing_dbt: a recent run without timestamps is never the latest.
        (9018, 8, "failed", None, None, None, "no timestamps", None),
        # payroll: durations past the last edge, exactly on an edge, and zero.
        (9019, 10, "failed", t - HOUR, t - 30 * MINUTE, 86400.5, "late", None),
        (9020, 10, "success", t - 40 * HOUR, t - 39 * HOUR, 60.0, None, None),
        (9021, 10, "skipped", t - 39 * HOUR, t - 39 * HOUR, 0.0, None, None),
        # reports_weekly: its first run ever, within the last day.
        (9022, 11, "success", t - 6 * HOUR, t - 5 * HOUR, 3600.0, None, None),
        # tps_reports: a flaky sequence with a tie in event time.
        (9023, 12, "success", t - 20 * DAY, t - 20 * DAY + MINUTE, 60.0, None, None),
        (9024, 12, "failed", t - 19 * DAY, t - 19 * DAY + MINUTE, 60.0, "x", None),
        (9025, 12, "failed", t - 18 * DAY, t - 18 * DAY + MINUTE, 60.0, "y", None),
        (9026, 12, "success", t - 18 * DAY, t - 18 * DAY + 2 * MINUTE, 120.0, None, None),
        (9027, 12, "cancelled", t - 17 * DAY, t - 17 * DAY + MINUTE, 60.0, None, None),
        (9028, 12, "success", t - 16 * DAY, t - 16 * DAY + MINUTE, 60.0, None, None),
        (9029, 12, "failed", t - 15 * DAY, t - 15 * DAY + MINUTE, 60.0, "z", None),
        (9030, 12, "failed", t - 31 * DAY, t - 31 * DAY + MINUTE, 60.0, "old", None),
        # hive_sync (inactive client): stuck.
        (9031, 13, "running", t - 9 * HOUR, None, None, None, None),
    ]
    # quality_checks: twenty daily successes lasting 10, 20, ... 200 s, so
    # that p/100 x N is a whole rank for every percentile but p99.
    cases += [
        (
            9100 + i,
            15,
            "success",
            t - (34 - i) * DAY,
            t - (34 - i) * DAY + 10 * (i + 1) * SECOND,
            10.0 * (i + 1),
            None,
            None,
        )
        for i in range(20)
    ]
    created = {9011: t - 8 * HOUR, 9018: t - 12 * HOUR}
    runs = []
    for run_id, pipeline_id, status, started, finished, duration, error, source in cases:
        runs.append(
            RefRun(
                id=run_id,
                pipeline_id=pipeline_id,
                status=status,
                started_at=started,
                finished_at=finished,
                created_at=created.get(run_id, (started or finished or t) + MINUTE),
                duration_seconds=duration,
                error_message=error,
                source_status=source,
            )
        )
    return runs


def build_dataset(as_of: datetime = AS_OF) -> Dataset:
    return Dataset(as_of, list(CLIENTS), list(PIPELINES), _history(as_of) + _hand_placed(as_of))


def _schedule_fields(pipeline_id: int, created: datetime) -> dict[str, Any]:
    cron, zone, grace, deadline = SCHEDULES.get(pipeline_id, (None, "UTC", 30, None))
    return {
        "schedule": cron,
        "schedule_timezone": zone,
        "grace_minutes": grace,
        "deadline_minutes": deadline,
        "schedule_source": None if cron is None else "user",
        "schedule_set_at": None if cron is None else created,
    }


def load(engine: Engine, data: Dataset) -> None:
    """Insert the dataset as stored rows (ids and created_at exactly as given)."""
    created = data.as_of - 40 * DAY
    with engine.begin() as conn:
        conn.execute(
            sa.insert(Client.__table__),  # type: ignore[arg-type]
            [
                {
                    "id": c.id,
                    "name": c.name,
                    "name_key": c.name.casefold(),
                    "is_active": c.is_active,
                    "created_at": created,
                    "updated_at": created,
                }
                for c in data.clients
            ],
        )
        conn.execute(
            sa.insert(Pipeline.__table__),  # type: ignore[arg-type]
            [
                {
                    "id": p.id,
                    "client_id": p.client_id,
                    "name": p.name,
                    "name_key": p.name.casefold(),
                    "platform": p.platform,
                    "pipeline_type": "batch",
                    "environment": p.environment,
                    "is_active": p.is_active,
                    "created_at": created,
                    "updated_at": created,
                    **_schedule_fields(p.id, created),
                }
                for p in data.pipelines
            ],
        )
        conn.execute(
            sa.insert(Run.__table__),  # type: ignore[arg-type]
            [
                {
                    "id": r.id,
                    "pipeline_id": r.pipeline_id,
                    "external_run_id": f"ref-{r.id}",
                    "status": r.status,
                    "source_status": r.source_status,
                    "started_at": r.started_at,
                    "finished_at": r.finished_at,
                    "duration_seconds": r.duration_seconds,
                    "duration_from_source": False,
                    "metrics": {},
                    "error_message": r.error_message,
                    "created_at": r.created_at,
                    "updated_at": r.created_at,
                }
                for r in data.runs
            ],
        )
        if conn.dialect.name == "postgresql":
            for table in ("clients", "pipelines", "runs"):
                conn.execute(
                    sa.text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                        f" (SELECT max(id) FROM {table}))"
                    )
                )
    # The schedules' stored ticks, as the API writes them with a schedule (the view reads them).
    with Session(engine) as session, session.begin():
        for pipeline in session.scalars(sa.select(Pipeline).where(Pipeline.schedule.is_not(None))):
            rewrite_ticks(session, pipeline, data.as_of)
