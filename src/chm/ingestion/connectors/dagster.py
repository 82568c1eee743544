"""Dagster GraphQL: ``runsOrError(filter: RunsFilter, cursor: String, limit: Int)``.

``base_url`` is the webserver (``http://HOST:3000``) or the Dagster+
deployment (``https://ORG.dagster.cloud/prod``); the query is POSTed to
``{base_url}/graphql``. A pipeline's ``external_id`` is the job name
(``RunsFilter.pipelineName``). Runs come newest first, ``limit`` (100) at a
time; the next page is asked with the last run's ``runId`` as ``cursor``,
until a page shorter than the limit.

``runsOrError`` is a union: ``Runs {results}``, or
``InvalidPipelineRunsFilterError``/``PythonError`` with a ``message``, both
answered with HTTP 200, as are GraphQL ``errors``. Those end the pipeline
with the source's message (``SourceRejected``), never as an empty history.

Incremental: ``RunsFilter.updatedAfter`` (epoch seconds), the run's last update.

Per run: ``runId``; ``status`` (``RunStatus``: QUEUED, NOT_STARTED,
MANAGED, STARTING, STARTED, SUCCESS, FAILURE, CANCELING, CANCELED);
``startTime``/``endTime``/``updateTime`` in epoch seconds. None of the fields
asked for is computed at read time. A re-execution (from failure, or of
chosen steps) is a new run with its own ``runId`` (``parentRunId`` names the
old one): Dagster never starts a finished run again under the same id.
Authentication: Dagster+ takes ``Dagster-Cloud-Api-Token: <token>``.

Schedule: the query ``repositoriesOrError`` (``RepositoryConnection
{nodes}``, or ``PythonError``/``RepositoryNotFoundError``) lists each
repository's ``schedules`` with ``pipelineName`` (the job), ``cronSchedule``,
``executionTimezone`` (null: UTC) and ``scheduleState.status`` (``RUNNING``
or ``STOPPED``). The job's running schedules become the pipeline's when they
agree; a job without a schedule, with every schedule stopped, with several
differing ones, or with a schedule of several crons (Dagster writes a list
as ``"['0 9 * * *', '0 17 * * *']"``) expects nothing, with a note saying
which.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any, Literal

from chm.core.status import RunStatus
from chm.ingestion.connectors.base import (
    Fetched,
    Page,
    PageRequest,
    PageShapeError,
    PlatformSchedule,
    SourceRejected,
    Window,
    cron_schedule,
    no_schedule,
    run_list,
    shown,
    single_schedule,
)
from chm.ingestion.connectors.registry import Platform, register
from chm.ingestion.credentials import Credentials
from chm.ingestion.normalize import (
    SourceRun,
    map_status,
    parse_timestamp,
    run_identity,
    status_word,
)
from chm.ingestion.sources import SourceBase


class DagsterSource(SourceBase):
    """Dagster GraphQL; ``base_url`` is the webserver (or Dagster+ deployment) URL."""

    platform: Literal["dagster"]

    def credentials(self, environ: Mapping[str, str]) -> Credentials:
        token = self.token(environ)
        if token is None:
            return Credentials.none()
        return Credentials.header("Dagster-Cloud-Api-Token", token.get_secret_value())


PAGE_LIMIT = 100

RUNS_QUERY = """
query ChmRuns($filter: RunsFilter, $cursor: String, $limit: Int) {
  runsOrError(filter: $filter, cursor: $cursor, limit: $limit) {
    __typename
    ... on Runs {
      results { runId status pipelineName creationTime startTime endTime updateTime }
    }
    ... on InvalidPipelineRunsFilterError { message }
    ... on PythonError { message }
  }
}
""".strip()

DAGSTER_STATUS = {
    **dict.fromkeys(("queued", "not_started"), RunStatus.queued),
    # MANAGED: the run is executed by a process outside Dagster's launcher.
    **dict.fromkeys(("managed", "starting", "started", "canceling"), RunStatus.running),
    "success": RunStatus.success,
    "failure": RunStatus.failed,
    "canceled": RunStatus.cancelled,
}


class DagsterConnector:
    def __init__(self, source: DagsterSource, external_id: str, window: Window) -> None:
        self.url = f"{source.base}/graphql"
        # The job's name.
        self.filter: dict[str, Any] = {"pipelineName": external_id}
        if window.since is not None:
            self.filter["updatedAfter"] = window.since.timestamp()

    def page_request(self, cursor: str | None) -> PageRequest:
        variables = {"filter": self.filter, "cursor": cursor, "limit": PAGE_LIMIT}
        return PageRequest("POST", self.url, json={"query": RUNS_QUERY, "variables": variables})

    def read_page(self, fetched: Fetched) -> Page:
        body = fetched.body
        if not isinstance(body, dict):
            raise PageShapeError("the answer is not a JSON object")
        data = body.get("data")
        answer = data.get("runsOrError") if isinstance(data, dict) else None
        errors = body.get("errors")
        if answer is None:
            if isinstance(errors, list) and errors:
                raise SourceRejected("GraphQL errors: " + "; ".join(_messages(errors)))
            raise PageShapeError("the answer has no data.runsOrError")
        if not isinstance(answer, dict):
            raise PageShapeError("data.runsOrError is not an object")
        kind = answer.get("__typename")
        if kind != "Runs":
            message = answer.get("message")
            detail = f": {message}" if isinstance(message, str) and message else ""
            raise SourceRejected(f"runsOrError answered {kind}{detail}")
        runs = run_list(answer, "results", required=True)
        if len(runs) < PAGE_LIMIT:
            return Page(runs, None)
        last = runs[-1]
        if not isinstance(last, dict) or not isinstance(last.get("runId"), str):
            raise PageShapeError("the last run of the page has no runId to page on")
        return Page(runs, last["runId"])

    def map_run(self, raw: dict[str, Any]) -> SourceRun:
        word = status_word(raw.get("status"))
        return SourceRun(
            external_run_id=run_identity(raw.get("runId"), "runId"),
            status=map_status(word, DAGSTER_STATUS),
            source_status=word,
            started_at=parse_timestamp(raw.get("startTime"), "startTime"),
            finished_at=parse_timestamp(raw.get("endTime"), "endTime"),
            source_updated_at=parse_timestamp(raw.get("updateTime"), "updateTime"),
        )


SCHEDULES_QUERY = """
query ChmSchedules {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes {
        name
        location { name }
        schedules { name pipelineName cronSchedule executionTimezone scheduleState { status } }
      }
    }
    ... on RepositoryNotFoundError { message }
    ... on PythonError { message }
  }
}
""".strip()


class DagsterSchedules:
    """The job's schedules, from every repository of the deployment (see the module doc)."""

    def __init__(self, source: DagsterSource, external_id: str) -> None:
        self.url = f"{source.base}/graphql"
        self.job = external_id

    def schedule_request(self) -> PageRequest:
        return PageRequest("POST", self.url, json={"query": SCHEDULES_QUERY, "variables": {}})

    def read_schedule(self, fetched: Fetched) -> PlatformSchedule:
        body = fetched.body
        if not isinstance(body, dict):
            raise PageShapeError("the answer is not a JSON object")
        data = body.get("data")
        answer = data.get("repositoriesOrError") if isinstance(data, dict) else None
        if answer is None:
            errors = body.get("errors")
            if isinstance(errors, list) and errors:
                raise SourceRejected("GraphQL errors: " + "; ".join(_messages(errors)))
            raise PageShapeError("the answer has no data.repositoriesOrError")
        if not isinstance(answer, dict):
            raise PageShapeError("data.repositoriesOrError is not an object")
        kind = answer.get("__typename")
        if kind != "RepositoryConnection":
            message = answer.get("message")
            detail = f": {message}" if isinstance(message, str) and message else ""
            raise SourceRejected(f"repositoriesOrError answered {kind}{detail}")
        schedules = [
            schedule
            for repository in run_list(answer, "nodes", required=True)
            for schedule in _schedules_of(repository)
            if schedule.get("pipelineName") == self.job
        ]
        if not schedules:
            return no_schedule("the job has no schedule in Dagster: it runs only when launched "
                               "(or by a sensor)")  # fmt: skip
        running = [schedule for schedule in schedules if _status(schedule) == "RUNNING"]
        if not running:
            return no_schedule("every schedule of the job is stopped in Dagster")
        return single_schedule([_one(schedule) for schedule in running], "the job")


def _schedules_of(repository: Any) -> list[dict[str, Any]]:
    if not isinstance(repository, dict):
        raise PageShapeError("a repository is not an object")
    schedules = run_list(repository, "schedules", required=True)
    if not all(isinstance(schedule, dict) for schedule in schedules):
        raise PageShapeError("a schedule is not an object")
    return schedules


def _status(schedule: dict[str, Any]) -> str:
    state = schedule.get("scheduleState")
    status = state.get("status") if isinstance(state, dict) else None
    if not isinstance(status, str):
        raise PageShapeError("a schedule has no scheduleState.status")
    return status.upper()


def _one(schedule: dict[str, Any]) -> PlatformSchedule:
    """One running schedule in CHM's terms; a list of crons is one only if they agree."""
    cron = schedule.get("cronSchedule")
    zone = schedule.get("executionTimezone")
    if not isinstance(cron, str):
        raise PageShapeError("a schedule's cronSchedule is not a string")
    if zone is not None and not isinstance(zone, str):
        raise PageShapeError("a schedule's executionTimezone is not a string")
    name = shown(schedule.get("name"))
    crons = _cron_list(cron)
    parts = [cron_schedule(one, zone, f"schedule {name}'s cron {shown(one)}") for one in crons]
    return single_schedule(parts, f"schedule {name}", "crons")


def _cron_list(text: str) -> list[str]:
    """The crons of a ``cronSchedule``: one, or the list Dagster writes as a Python list."""
    if not text.lstrip().startswith("[") or len(text) > 2000:
        return [text]
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, SyntaxError):
        return [text]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        return [text]
    return value


def _messages(errors: list[Any]) -> list[str]:
    messages = []
    for error in errors[:5]:
        message = error.get("message") if isinstance(error, dict) else None
        messages.append(str(message)[:300] if message else "an error without a message")
    return messages


PLATFORM = register(
    Platform(
        name="dagster",
        source_model=DagsterSource,
        connector=DagsterConnector,
        statuses={"status": DAGSTER_STATUS},
        incremental="updated",
        schedules=DagsterSchedules,
    )
)
