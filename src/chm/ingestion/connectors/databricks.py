"""Databricks Jobs API: ``GET /api/{2.1|2.2}/jobs/runs/list?job_id=...``.

A page is ``{"runs": [...], "has_more": bool, "next_page_token": "..."}``
(``runs`` is left out when there are none); the next page is asked with
``page_token``, until the token is absent or empty, or ``has_more`` is false.
A pipeline's ``external_id`` is the job id.

A run's status is read from ``status`` (``state`` + ``termination_details``,
the current model) when present, else from the older ``state``
(``life_cycle_state`` + ``result_state``). Times are epoch milliseconds, an
``end_time`` of 0 meaning not finished; ``run_duration`` is in milliseconds.
Status words are those documented for ``RunLifecycleStateV2``,
``TerminationCode``, ``RunLifeCycleState`` and ``RunResultState``; any
other word maps to ``unknown`` with the source's words kept.

Incremental: ``start_time_from`` (epoch milliseconds, runs started at or
after it).

Read-time values: ``run_duration`` and ``queue_duration`` count the time so
far while a run is active or queued: not stored (``run_duration`` of an ended
run is kept as its duration).

A repair re-runs tasks of a finished run under the same ``run_id``; the
number of repairs in its ``repair_history`` is the attempt marker when the
list answers one (``runs/get`` documents it behind ``include_history``).
Without it, a repair shows once it ends, its outcome replacing the old one;
while it runs, only a ``start_time`` after the stored end would tell it from
an old snapshot. A retry (``max_retries``) is a new run with its own id
(``attempt_number`` + 1, ``original_attempt_run_id``).

Schedule: ``GET /api/{2.1|2.2}/jobs/get?job_id=...`` answers the job with its
``settings``; ``settings.schedule`` is ``{quartz_cron_expression,
timezone_id, pause_status}`` (``PAUSED`` or ``UNPAUSED``). The Quartz
expression (``sec min hour day-of-month month day-of-week [year]``, days of
week 1-7 from Sunday, ``?`` for "no specific value") becomes five fields
when its seconds are ``0`` and it names no year
(``chm.core.cron.quartz_to_cron``); otherwise, or when paused, no
expectation, and the note says why. A job without ``schedule`` runs
continuously (``settings.continuous``), on a trigger (``settings.trigger``:
file arrival, table update, periodic) or by hand: no expectation either.
"""

from __future__ import annotations

from typing import Any, Literal

from chm.core.cron import CronError, TimezoneError, check_timezone, quartz_to_cron
from chm.core.status import RunStatus
from chm.ingestion.connectors.base import (
    Fetched,
    Page,
    PageRequest,
    PageShapeError,
    PlatformSchedule,
    Window,
    cursor_value,
    no_schedule,
    run_list,
    shown,
)
from chm.ingestion.connectors.registry import Platform, register
from chm.ingestion.normalize import (
    InvalidRun,
    SourceRun,
    duration_seconds,
    error_text,
    failure_text,
    from_epoch_ms,
    map_status,
    run_identity,
    status_word,
)
from chm.ingestion.sources import SourceBase


class DatabricksSource(SourceBase):
    """Databricks Jobs API ``runs/list``; ``base_url`` is the workspace URL."""

    platform: Literal["databricks"]
    api_version: Literal["2.1", "2.2"] = "2.2"


# runs/list accepts a limit of at most 25 runs per page.
PAGE_LIMIT = 25

_FAILED_CODES = (
    "INTERNAL_ERROR", "DRIVER_ERROR", "CLUSTER_ERROR", "REPOSITORY_CHECKOUT_FAILED",
    "INVALID_CLUSTER_REQUEST", "WORKSPACE_RUN_LIMIT_EXCEEDED", "FEATURE_DISABLED",
    "CLUSTER_REQUEST_LIMIT_EXCEEDED", "STORAGE_ACCESS_ERROR", "RUN_EXECUTION_ERROR",
    "UNAUTHORIZED_ERROR", "LIBRARY_INSTALLATION_ERROR", "MAX_SPARK_CONTEXTS_EXCEEDED",
    "RESOURCE_NOT_FOUND", "INVALID_RUN_CONFIGURATION", "CLOUD_FAILURE",
    "BUDGET_POLICY_LIMIT_EXCEEDED", "BREAKING_CHANGE",
)  # fmt: skip

# status.state (RunLifecycleStateV2) before termination.
STATE_V2 = {
    **dict.fromkeys(("blocked", "pending", "queued", "waiting"), RunStatus.queued),
    **dict.fromkeys(("running", "terminating"), RunStatus.running),
}
# status.termination_details.code, once status.state is TERMINATED.
TERMINATION_CODE = {
    **dict.fromkeys(("success", "success_with_failures"), RunStatus.success),
    **dict.fromkeys(("user_canceled", "canceled"), RunStatus.cancelled),
    **dict.fromkeys(
        ("skipped", "disabled", "max_concurrent_runs_exceeded", "max_job_queue_size_exceeded"),
        RunStatus.skipped,
    ),
    **dict.fromkeys((code.lower() for code in _FAILED_CODES), RunStatus.failed),
}
# state.life_cycle_state (RunLifeCycleState).
LIFE_CYCLE_STATE = {
    **dict.fromkeys(("queued", "pending", "blocked", "waiting_for_retry"), RunStatus.queued),
    **dict.fromkeys(("running", "terminating"), RunStatus.running),
    "skipped": RunStatus.skipped,
    "internal_error": RunStatus.failed,
}
# state.result_state (RunResultState), for the terminal life cycle states.
RESULT_STATE = {
    **dict.fromkeys(("success", "success_with_failures"), RunStatus.success),
    **dict.fromkeys(("failed", "timedout"), RunStatus.failed),
    "canceled": RunStatus.cancelled,
    **dict.fromkeys(
        ("maximum_concurrent_runs_reached", "excluded", "upstream_failed", "upstream_canceled",
         "disabled"),
        RunStatus.skipped,
    ),
}  # fmt: skip
_TERMINAL_LIFE_CYCLES = ("terminated", "internal_error", "skipped")


def _object(raw: Any, what: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise InvalidRun(f"{what} is not an object")
    return raw


def run_status(raw: dict[str, Any]) -> tuple[RunStatus, str, str | None]:
    """The canonical status, the source's words (``STATE/CODE``) and the failure text."""
    status = _object(raw.get("status"), "status")
    if status.get("state") is not None:
        state = status_word(status.get("state"), "status.state")
        if state.lower() != "terminated":
            return map_status(state, STATE_V2), state, None
        details = _object(status.get("termination_details"), "status.termination_details")
        if details.get("code") is None:
            return RunStatus.unknown, state, error_text(details.get("message"))
        code = status_word(details.get("code"), "status.termination_details.code")
        return (
            map_status(code, TERMINATION_CODE),
            f"{state}/{code}",
            error_text(details.get("message")),
        )
    legacy = _object(raw.get("state"), "state")
    life_cycle = status_word(legacy.get("life_cycle_state"), "state.life_cycle_state")
    message = error_text(legacy.get("state_message"))
    if life_cycle.lower() in _TERMINAL_LIFE_CYCLES and legacy.get("result_state") is not None:
        result = status_word(legacy.get("result_state"), "state.result_state")
        return map_status(result, RESULT_STATE), f"{life_cycle}/{result}", message
    mapped = map_status(life_cycle, LIFE_CYCLE_STATE)
    return mapped, life_cycle, message


def repairs(raw: Any) -> int | None:
    """How many repairs ``repair_history`` lists (its other item is the original
    run), or None when the run carries no history."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidRun("repair_history is not a list")
    return sum(1 for item in raw if isinstance(item, dict) and item.get("type") == "REPAIR")


class DatabricksConnector:
    def __init__(self, source: DatabricksSource, external_id: str, window: Window) -> None:
        self.url = f"{source.base}/api/{source.api_version}/jobs/runs/list"
        self.job_id = external_id
        self.since = window.since

    def page_request(self, cursor: str | None) -> PageRequest:
        params = {"job_id": self.job_id, "limit": str(PAGE_LIMIT), "expand_tasks": "false"}
        if self.since is not None:
            params["start_time_from"] = str(int(self.since.timestamp() * 1000))
        if cursor:
            params["page_token"] = cursor
        return PageRequest("GET", self.url, params=params)

    def read_page(self, fetched: Fetched) -> Page:
        body = fetched.body
        runs = run_list(body, "runs", required=False)
        has_more = body.get("has_more")
        if has_more is not None and not isinstance(has_more, bool):
            raise PageShapeError("has_more is not a boolean")
        token = cursor_value(body.get("next_page_token"), "next_page_token")
        return Page(runs, token if has_more is not False else None)

    def map_run(self, raw: dict[str, Any]) -> SourceRun:
        # The request filters on job_id: a run of another job (a filter the
        # service ignored) must not be stored as this one's.
        job_id = raw.get("job_id")
        if job_id is not None and str(job_id) != self.job_id:
            raise InvalidRun(f"the run is of job {str(job_id)[:100]!r}, not of this one")
        status, words, message = run_status(raw)
        finished_at = from_epoch_ms(raw.get("end_time"), "end_time", zero_is_none=True)
        # run_duration grows while a run is active: keep it once the run ended.
        duration = None
        if finished_at is not None:
            duration = duration_seconds(raw.get("run_duration"), "run_duration", scale=0.001)
        return SourceRun(
            external_run_id=run_identity(raw.get("run_id")),
            status=status,
            source_status=words,
            started_at=from_epoch_ms(raw.get("start_time"), "start_time", zero_is_none=True),
            finished_at=finished_at,
            duration_seconds=duration,
            error_message=failure_text(status, message),
            attempt=repairs(raw.get("repair_history")),
        )


class DatabricksSchedules:
    """The job's schedule, from ``jobs/get`` (see the module doc)."""

    def __init__(self, source: DatabricksSource, external_id: str) -> None:
        self.url = f"{source.base}/api/{source.api_version}/jobs/get"
        self.job_id = external_id

    def schedule_request(self) -> PageRequest:
        return PageRequest("GET", self.url, params={"job_id": self.job_id})

    def read_schedule(self, fetched: Fetched) -> PlatformSchedule:
        job = fetched.body
        if not isinstance(job, dict) or not isinstance(job.get("settings"), dict):
            raise PageShapeError("the job has no settings object")
        settings = job["settings"]
        schedule = settings.get("schedule")
        if schedule is None:
            return _unscheduled(settings)
        if not isinstance(schedule, dict):
            raise PageShapeError("settings.schedule is not an object")
        if str(schedule.get("pause_status", "")).upper() == "PAUSED":
            return no_schedule("the job's schedule is paused in Databricks")
        quartz = schedule.get("quartz_cron_expression")
        if not isinstance(quartz, str):
            raise PageShapeError("settings.schedule.quartz_cron_expression is not a string")
        zone = schedule.get("timezone_id") or "UTC"
        if not isinstance(zone, str):
            raise PageShapeError("settings.schedule.timezone_id is not a string")
        try:
            cron = quartz_to_cron(quartz)
        except CronError as error:
            reason = str(error)
            if reason.startswith("Quartz cron"):
                return no_schedule(f"Databricks {reason}")
            return no_schedule(f"Databricks Quartz cron {shown(quartz)} has no five-field form: "
                               f"{reason}")  # fmt: skip
        try:
            check_timezone(zone)
        except TimezoneError:
            return no_schedule(
                f"the job's schedule is read in {shown(zone)}, which is not an IANA time zone"
            )
        return PlatformSchedule(cron, zone)


def _unscheduled(settings: dict[str, Any]) -> PlatformSchedule:
    """Why a job without ``settings.schedule`` expects nothing at a time."""
    if isinstance(settings.get("continuous"), dict):
        return no_schedule("the job runs continuously in Databricks (no cron schedule)")
    trigger = settings.get("trigger")
    if isinstance(trigger, dict):
        kinds = [kind for kind in ("file_arrival", "table_update", "table", "periodic")
                 if kind in trigger]  # fmt: skip
        what = kinds[0].replace("_", " ") if kinds else "an event"
        return no_schedule(
            f"the job runs on a trigger in Databricks ({what}), not on a cron schedule"
        )
    return no_schedule("the job has no schedule in Databricks: it runs only when started")


PLATFORM = register(
    Platform(
        name="databricks",
        source_model=DatabricksSource,
        connector=DatabricksConnector,
        statuses={
            "status.state": STATE_V2,
            "status.termination_details.code": TERMINATION_CODE,
            "state.life_cycle_state": LIFE_CYCLE_STATE,
            "state.result_state": RESULT_STATE,
        },
        # start_time_from filters on the run's start: an older active run is
        # held by the engine's watermark rule.
        incremental="started",
        read_time_keys=frozenset({"run_duration", "queue_duration"}),
        schedules=DatabricksSchedules,
    )
)
