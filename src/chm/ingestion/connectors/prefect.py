"""Prefect 3 REST API: ``POST {api_url}/flow_runs/filter``.

``base_url`` is the API URL (``PREFECT_API_URL``: ``http://HOST:4200/api``,
or Prefect Cloud's ``https://api.prefect.cloud/api/accounts/{account}/workspaces/{workspace}``).
A pipeline's ``external_id`` is the deployment id (a UUID). The body filters
on it, ``{"flow_runs": {"deployment_id": {"any_": [id]}}, "sort": "ID_DESC",
"limit": 200, "offset": n}`` (200 is the server's default maximum); the
answer is a JSON list of flow runs, and the walk ends on a page shorter than
the limit. ``ID_DESC`` is a total order, so a run created during the walk
can only make one run read twice, which the upsert absorbs.

Per run: ``id``; ``state_type`` (``StateType``: SCHEDULED, PENDING, RUNNING,
COMPLETED, FAILED, CANCELLED, CRASHED, PAUSED, CANCELLING) decides the
status, and ``source_status`` keeps it with ``state_name`` (``"SCHEDULED/Late"``,
``"FAILED/TimedOut"``); ``start_time``/``end_time``; ``total_run_time``
(seconds) once the run is final; ``state.message`` as the failure text;
``updated`` as the source update time.

Read-time values: ``estimated_run_time`` (while running, the run time so far
against the server's clock) and ``estimated_start_time_delta`` (while late,
how late against the clock) are recomputed on every read: not stored.

A retry of the same flow run (automatic, or "Retry" on a failed run) goes
back to ``SCHEDULED/AwaitingRetry`` then ``RUNNING`` (``run_count`` + 1),
each a write that moves ``updated``: the update time already orders every
snapshot, so no attempt marker is needed. Prefect keeps ``start_time`` as the
first start and clears ``end_time`` when the run leaves a final state.

Schedule: ``GET {api_url}/deployments/{id}`` answers the deployment:
``paused``, and ``schedules``, a list of ``{active, schedule}`` where
``schedule`` is a cron (``{cron, timezone, day_or}``), an interval
(``{interval, anchor_date, timezone}``, seconds) or an RFC 5545 rule
(``{rrule, timezone}``); Prefect 2 servers before ``schedules`` answer one
``schedule`` and ``is_schedule_active``. The active cron schedules become
the pipeline's when they agree (a missing zone is UTC, as Prefect reads
it); a paused deployment, no active schedule, an interval or rrule, a cron
with ``day_or`` false restricting both days (cron joins them with OR), or
several differing schedules expect nothing, with a note saying which.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from chm.core.status import TERMINAL_STATUSES, RunStatus
from chm.ingestion.connectors.base import (
    BadExternalId,
    Fetched,
    Page,
    PageRequest,
    PageShapeError,
    PlatformSchedule,
    Window,
    cron_schedule,
    next_offset,
    no_schedule,
    offset_of,
    shown,
    single_schedule,
)
from chm.ingestion.connectors.registry import Platform, register
from chm.ingestion.normalize import (
    InvalidRun,
    SourceRun,
    duration_seconds,
    error_text,
    failure_text,
    map_status,
    parse_timestamp,
    run_identity,
    status_word,
)
from chm.ingestion.sources import SourceBase


class PrefectSource(SourceBase):
    """Prefect 3 REST API; ``base_url`` is the API URL (``PREFECT_API_URL``)."""

    platform: Literal["prefect"]


PAGE_LIMIT = 200

PREFECT_STATE = {
    **dict.fromkeys(("scheduled", "pending"), RunStatus.queued),
    # A paused run has started and waits to be resumed; a cancelling one has
    # not stopped yet.
    **dict.fromkeys(("running", "paused", "cancelling"), RunStatus.running),
    "completed": RunStatus.success,
    **dict.fromkeys(("failed", "crashed"), RunStatus.failed),
    "cancelled": RunStatus.cancelled,
}


class PrefectConnector:
    def __init__(self, source: PrefectSource, external_id: str, window: Window) -> None:
        try:
            self.deployment_id = str(uuid.UUID(external_id))
        except ValueError:
            raise BadExternalId(
                f"external_id {external_id!r} is not a Prefect deployment id (a UUID)"
            ) from None
        self.url = f"{source.base}/flow_runs/filter"

    def page_request(self, cursor: str | None) -> PageRequest:
        body = {
            "flow_runs": {"deployment_id": {"any_": [self.deployment_id]}},
            "sort": "ID_DESC",
            "limit": PAGE_LIMIT,
            "offset": offset_of(cursor),
        }
        return PageRequest("POST", self.url, json=body)

    def read_page(self, fetched: Fetched) -> Page:
        if not isinstance(fetched.body, list):
            raise PageShapeError("the answer is not a JSON list of flow runs")
        runs = fetched.body
        return Page(runs, next_offset(fetched.cursor, len(runs), page_size=PAGE_LIMIT))

    def map_run(self, raw: dict[str, Any]) -> SourceRun:
        state = raw.get("state")
        if state is not None and not isinstance(state, dict):
            raise InvalidRun("state is not an object")
        state = state or {}
        state_type = status_word(raw.get("state_type") or state.get("type"), "state_type")
        status = map_status(state_type, PREFECT_STATE)
        name = raw.get("state_name") or state.get("name")
        words = f"{state_type}/{status_word(name, 'state_name')}" if name else state_type
        duration = None
        if status in TERMINAL_STATUSES:
            duration = duration_seconds(raw.get("total_run_time"), "total_run_time")
        return SourceRun(
            external_run_id=run_identity(raw.get("id"), "id"),
            status=status,
            source_status=words[:200],
            started_at=parse_timestamp(raw.get("start_time"), "start_time"),
            finished_at=parse_timestamp(raw.get("end_time"), "end_time"),
            duration_seconds=duration,
            error_message=failure_text(status, error_text(state.get("message"))),
            source_updated_at=parse_timestamp(raw.get("updated"), "updated"),
        )


class PrefectSchedules:
    """The deployment's schedule, from the deployment (see the module doc)."""

    def __init__(self, source: PrefectSource, external_id: str) -> None:
        try:
            deployment_id = str(uuid.UUID(external_id))
        except ValueError:
            raise BadExternalId(
                f"external_id {external_id!r} is not a Prefect deployment id (a UUID)"
            ) from None
        self.url = f"{source.base}/deployments/{deployment_id}"

    def schedule_request(self) -> PageRequest:
        return PageRequest("GET", self.url)

    def read_schedule(self, fetched: Fetched) -> PlatformSchedule:
        deployment = fetched.body
        if not isinstance(deployment, dict):
            raise PageShapeError("the deployment is not a JSON object")
        if deployment.get("paused") is True:
            return no_schedule("the deployment is paused in Prefect")
        entries = _schedule_entries(deployment)
        if not entries:
            return no_schedule("the deployment has no schedule in Prefect: it runs only when "
                               "triggered")  # fmt: skip
        active = [schedule for schedule, is_active in entries if is_active]
        if not active:
            return no_schedule("every schedule of the deployment is inactive in Prefect")
        return single_schedule([_one(schedule) for schedule in active], "the deployment")


def _schedule_entries(deployment: dict[str, Any]) -> list[tuple[dict[str, Any], bool]]:
    """Each schedule of the deployment, and whether it is active."""
    if "schedules" in deployment:
        listed = deployment["schedules"] or []
        if not isinstance(listed, list):
            raise PageShapeError("schedules is not a list")
        entries = []
        for item in listed:
            if not isinstance(item, dict) or not isinstance(item.get("schedule"), dict):
                raise PageShapeError("a deployment schedule has no schedule object")
            entries.append((item["schedule"], item.get("active", True) is not False))
        return entries
    # Prefect 2 before multiple schedules: one schedule and its switch.
    single = deployment.get("schedule")
    if single is None:
        return []
    if not isinstance(single, dict):
        raise PageShapeError("schedule is not an object")
    return [(single, deployment.get("is_schedule_active", True) is not False)]


def _one(schedule: dict[str, Any]) -> PlatformSchedule:
    """One Prefect schedule (cron, interval or rrule) in CHM's terms."""
    zone = schedule.get("timezone")
    if zone is not None and not isinstance(zone, str):
        raise PageShapeError("a schedule's timezone is not a string")
    if "cron" in schedule:
        cron = schedule["cron"]
        if not isinstance(cron, str):
            raise PageShapeError("a schedule's cron is not a string")
        fields = cron.split()
        if (schedule.get("day_or") is False and len(fields) == 5
                and fields[2] != "*" and fields[4] != "*"):  # fmt: skip
            return no_schedule(f"the deployment's cron {shown(cron)} runs when both the day of "
                               "month and the day of week match (day_or false); a five-field "
                               "cron means either")  # fmt: skip
        return cron_schedule(cron, zone, f"the deployment's cron {shown(cron)}")
    if "interval" in schedule:
        interval = schedule["interval"]
        every = (
            f"{interval:g} seconds"
            if isinstance(interval, (int, float)) and not isinstance(interval, bool)
            else shown(interval, 60)
        )
        return no_schedule(f"the deployment runs every {every} (an interval schedule), "
                           "not at times a cron names")  # fmt: skip
    if "rrule" in schedule:
        return no_schedule(f"the deployment runs on an RRule ({shown(schedule['rrule'])}), "
                           "which a five-field cron cannot express")  # fmt: skip
    return no_schedule("the deployment's schedule is of a kind Prefect does not document")


PLATFORM = register(
    Platform(
        name="prefect",
        source_model=PrefectSource,
        connector=PrefectConnector,
        statuses={"state_type": PREFECT_STATE},
        incremental=None,
        read_time_keys=frozenset({"estimated_run_time", "estimated_start_time_delta"}),
        schedules=PrefectSchedules,
    )
)
