"""dbt Cloud Administrative API v2:
``GET /api/v2/accounts/{account_id}/runs/?job_definition_id=...&order_by=-id``.

A pipeline's ``external_id`` is the job (definition) id. Pages are asked
with ``limit`` (at most 100, the API's maximum) and ``offset``, newest run
first; a page is ``{"data": [...], "status": {...}, "extra": {"filters":
{...}, "order_by": "-id", "pagination": {"count": n, "total_count": N}}}``.
The next offset is the previous one plus the runs returned, until the runs
seen reach ``extra.pagination.total_count`` (or an empty page). A run
created during the walk goes first and shifts the later pages by one: a run
is then read twice, never missed (the upsert absorbs the repeat), and the new
run is read by the next ingestion.

Per run: ``id``; ``status``, an integer (1 queued, 2 starting, 3 running,
10 success, 20 error, 30 cancelled), kept with ``status_humanized`` as
``source_status`` (``"20/Error"``); ``started_at``/``finished_at``
(``"2026-03-01 10:00:00.123456+00:00"``); ``run_duration`` as
``"HH:MM:SS"``, kept once the run is finished; ``status_message`` as the
failure text; ``updated_at`` as the source update time. The list has no time
filter CHM can trust for incremental reads, so every ingestion reads the
job's whole history (100 runs a request).
Authentication: ``Authorization: Token <token>``.

Read-time values, recomputed against the clock on every read and not stored:
``duration``, ``queued_duration``, ``run_duration`` (``"HH:MM:SS"``, counted
up to now while the run is queued or running) and their ``*_humanized``
forms, ``created_at_humanized`` and ``finished_at_humanized`` (``"2 hours
ago"``, for every run). ``run_duration`` still gives the duration of a
finished run (read before the payload is stored). A rerun or a retry of a
run is a new run with its own id: dbt Cloud never starts a finished run
again under the same one.

Schedule: ``GET /api/v2/accounts/{account_id}/jobs/{job_id}/`` answers
``{"data": {...}, "status": {...}}``; the job's ``triggers.schedule`` says
whether it runs on its schedule, ``schedule.cron`` is that schedule (the
one dbt Cloud builds from the chosen days and hours, or the custom cron),
always in UTC (dbt Cloud does not convert schedules to any other zone).
A job with ``triggers.schedule`` off (run by API, CI, on merge, after
another job) or not active (``state`` 2, deleted) expects nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import Field

from chm.core.status import TERMINAL_STATUSES, RunStatus
from chm.ingestion.connectors.base import (
    BadExternalId,
    Fetched,
    Page,
    PageRequest,
    PageShapeError,
    PlatformSchedule,
    Window,
    count_value,
    cron_schedule,
    next_offset,
    no_schedule,
    offset_of,
    run_list,
    shown,
)
from chm.ingestion.connectors.registry import Platform, register
from chm.ingestion.credentials import Credentials
from chm.ingestion.normalize import (
    InvalidRun,
    SourceRun,
    clock_duration,
    error_text,
    failure_text,
    parse_timestamp,
    run_identity,
)
from chm.ingestion.sources import SourceBase


class DbtCloudSource(SourceBase):
    """dbt Cloud Administrative API v2; ``base_url`` is the account's access URL."""

    platform: Literal["dbt_cloud"]
    account_id: Annotated[int, Field(gt=0)]

    def credentials(self, environ: Mapping[str, str]) -> Credentials:
        token = self.token(environ)
        if token is None:
            return Credentials.none()
        return Credentials.header("Authorization", token.get_secret_value(), "Token")


PAGE_LIMIT = 100

DBT_STATUS = {
    1: RunStatus.queued,  # Queued
    2: RunStatus.queued,  # Starting: dequeued, the environment is being prepared
    3: RunStatus.running,
    10: RunStatus.success,
    20: RunStatus.failed,  # Error
    30: RunStatus.cancelled,
}


class DbtCloudConnector:
    def __init__(self, source: DbtCloudSource, external_id: str, window: Window) -> None:
        if not external_id.isdigit():
            raise BadExternalId(f"external_id {external_id!r} is not a dbt Cloud job id (a number)")
        self.url = f"{source.base}/api/v2/accounts/{quote(str(source.account_id))}/runs/"
        self.job_id = external_id

    def page_request(self, cursor: str | None) -> PageRequest:
        params = {
            "job_definition_id": self.job_id,
            "order_by": "-id",
            "limit": str(PAGE_LIMIT),
            "offset": str(offset_of(cursor)),
        }
        return PageRequest("GET", self.url, params=params)

    def read_page(self, fetched: Fetched) -> Page:
        runs = run_list(fetched.body, "data", required=True)
        extra = fetched.body.get("extra")
        pagination = extra.get("pagination") if isinstance(extra, dict) else None
        if not isinstance(pagination, dict):
            raise PageShapeError("the page has no extra.pagination object")
        total = count_value(pagination.get("total_count"), "extra.pagination.total_count")
        return Page(runs, next_offset(fetched.cursor, len(runs), total=total))

    def map_run(self, raw: dict[str, Any]) -> SourceRun:
        code = raw.get("status")
        if code is None:
            raise InvalidRun("missing status")
        if isinstance(code, bool) or not isinstance(code, int):
            raise InvalidRun("status is not an integer")
        status = DBT_STATUS.get(code, RunStatus.unknown)
        humanized = raw.get("status_humanized")
        words = f"{code}/{humanized}" if isinstance(humanized, str) and humanized else str(code)
        finished_at = parse_timestamp(raw.get("finished_at"), "finished_at")
        duration = None
        if finished_at is not None and status in TERMINAL_STATUSES:
            duration = clock_duration(raw.get("run_duration"), "run_duration")
        return SourceRun(
            external_run_id=run_identity(raw.get("id"), "id"),
            status=status,
            source_status=words[:200],
            started_at=parse_timestamp(raw.get("started_at"), "started_at"),
            finished_at=finished_at,
            duration_seconds=duration,
            error_message=failure_text(status, error_text(raw.get("status_message"))),
            source_updated_at=parse_timestamp(raw.get("updated_at"), "updated_at"),
        )


# Job.state: 1 active, 2 deleted.
_ACTIVE = 1


class DbtCloudSchedules:
    """The job's schedule, from the job itself (see the module doc)."""

    def __init__(self, source: DbtCloudSource, external_id: str) -> None:
        if not external_id.isdigit():
            raise BadExternalId(f"external_id {external_id!r} is not a dbt Cloud job id (a number)")
        account = quote(str(source.account_id))
        self.url = f"{source.base}/api/v2/accounts/{account}/jobs/{external_id}/"

    def schedule_request(self) -> PageRequest:
        return PageRequest("GET", self.url)

    def read_schedule(self, fetched: Fetched) -> PlatformSchedule:
        body = fetched.body
        job = body.get("data") if isinstance(body, dict) else None
        if not isinstance(job, dict):
            raise PageShapeError("the answer has no data object (the job)")
        if job.get("state") != _ACTIVE:
            return no_schedule("the job is not active in dbt Cloud (deleted)")
        triggers = job.get("triggers")
        if not isinstance(triggers, dict):
            raise PageShapeError("the job has no triggers object")
        if triggers.get("schedule") is not True:
            return no_schedule("the job does not run on a schedule in dbt Cloud "
                               "(triggers.schedule is off)")  # fmt: skip
        schedule = job.get("schedule")
        cron = schedule.get("cron") if isinstance(schedule, dict) else None
        if not isinstance(cron, str):
            raise PageShapeError("the job's schedule has no cron")
        return cron_schedule(cron, "UTC", f"the job's cron {shown(cron)}")


PLATFORM = register(
    Platform(
        name="dbt_cloud",
        source_model=DbtCloudSource,
        connector=DbtCloudConnector,
        statuses={"status": DBT_STATUS},
        # The list has no time filter CHM can trust: every read is a full one.
        incremental=None,
        schedules=DbtCloudSchedules,
        read_time_keys=frozenset(
            {
                "duration",
                "queued_duration",
                "run_duration",
                "duration_humanized",
                "queued_duration_humanized",
                "run_duration_humanized",
                "created_at_humanized",
                "finished_at_humanized",
            }
        ),
    )
)
