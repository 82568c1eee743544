"""Apache Airflow: ``GET /api/v1/dags/{dag_id}/dagRuns`` (Airflow 2's stable REST
API) or ``GET /api/v2/dags/{dag_id}/dagRuns`` (Airflow 3), by ``api_version``.

A pipeline's ``external_id`` is the DAG id. Pages are asked with ``limit``
and ``offset`` and ordered by ``order_by=id`` (the run's primary key, a
stable total order: runs created during the walk land at the end); a page is
``{"dag_runs": [...], "total_entries": n}``. The next offset is the previous
one plus the runs actually returned, so a server that clamps ``limit`` to its
``maximum_page_limit`` only makes the walk longer; the walk ends once the
runs seen reach ``total_entries``, or on an empty page.

Incremental: ``updated_at_gte`` (Airflow 2.6+ and 3), the run's last update.

Per run: ``dag_run_id``; ``state`` (``DagState``: queued, running, success,
failed); ``start_date``/``end_date`` (ISO 8601, null until known);
``duration`` in seconds (v2 only, ``end_date - start_date``), kept once the
run has ended. Nothing in a DAG run is computed at read time
(``last_scheduling_decision`` is written by the scheduler while the run is
active: a real change).

Clearing a finished DAG run starts it again under the same id: ``queued``
with a new ``queued_at`` and no dates, then ``running`` with a new
``start_date``. v2's ``queued_at`` is the attempt marker. v1 has no
``queued_at`` (nor any update time): there the new attempt shows once it
runs, by a ``start_date`` after the stored ``end_date``; while it is only
queued it cannot be told from an old snapshot and the old outcome stays.
Authentication (``chm.ingestion.credentials``): basic auth on v1, a JWT from
``POST /auth/token`` on v2, or a ready-made token as bearer.

Schedule: ``GET /api/v{1,2}/dags/{dag_id}/details`` (the DAG with its
details: the plain DAG answer has no time zone). Airflow 2 (v1) answers
``schedule_interval``, null or an object by ``__type``: ``CronExpression``
(``value``, a cron or a preset such as ``@daily``), ``TimeDelta`` or
``RelativeDelta`` (an interval: no cron); Airflow 3 (v2) answers
``timetable_summary``, the cron of a cron timetable (presets already
expanded), ``@once``, ``@continuous``, ``Asset``..., an interval's text
(``1 day, 0:00:00``), or null for ``schedule=None``. Both answer
``is_paused`` and ``timezone``: an IANA name, which Airflow 2 with pendulum 2
writes as ``Timezone('Europe/Berlin')``. A paused DAG, one the scheduler no
longer sees (``is_active`` false, ``is_stale`` true), ``@once``,
``@continuous``, asset/dataset triggers, intervals and custom timetables
expect nothing. (Airflow 2.8 to 2.10 answer the instance's default zone for
every DAG, apache/airflow#49720; set the DAG's schedule in CHM where that
matters.)
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import quote

from pydantic import StringConstraints, model_validator

from chm.core.status import TERMINAL_STATUSES, RunStatus
from chm.core.timeutil import isoformat_z
from chm.ingestion.connectors.base import (
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
from chm.ingestion.credentials import Credentials, TokenExchange
from chm.ingestion.normalize import (
    SourceRun,
    attempt_time,
    duration_seconds,
    map_status,
    parse_timestamp,
    run_identity,
    status_word,
)
from chm.ingestion.sources import EnvVarName, SourceBase


class AirflowSource(SourceBase):
    """Airflow's REST API: stable ``/api/v1`` (Airflow 2) or ``/api/v2`` (Airflow 3).

    ``username`` and ``password_env`` log in: basic auth on v1, a JWT from
    ``POST /auth/token`` on v2. Without them, ``token_env`` is sent as bearer.
    """

    platform: Literal["airflow"]
    api_version: Literal["1", "2"] = "2"
    username: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    password_env: EnvVarName | None = None

    @model_validator(mode="after")
    def _login_pair(self) -> AirflowSource:
        if (self.username is None) != (self.password_env is None):
            raise ValueError("username and password_env go together")
        return self

    def credentials(self, environ: Mapping[str, str]) -> Credentials:
        if self.username is None or self.password_env is None:
            return super().credentials(environ)
        password = self._secret(self.password_env, environ, "password_env")
        if self.api_version == "1":
            return Credentials.basic(self.username, password)
        exchange = TokenExchange(
            f"{self.base}/auth/token", {"username": self.username, "password": password}
        )
        return Credentials.exchanged(exchange, (password,))


PAGE_LIMIT = 100

AIRFLOW_STATE = {
    "queued": RunStatus.queued,
    "running": RunStatus.running,
    "success": RunStatus.success,
    "failed": RunStatus.failed,
}


class AirflowConnector:
    def __init__(self, source: AirflowSource, external_id: str, window: Window) -> None:
        dag_id = quote(external_id, safe="")
        self.url = f"{source.base}/api/v{source.api_version}/dags/{dag_id}/dagRuns"
        self.since = window.since

    def page_request(self, cursor: str | None) -> PageRequest:
        params = {"limit": str(PAGE_LIMIT), "offset": str(offset_of(cursor)), "order_by": "id"}
        if self.since is not None:
            params["updated_at_gte"] = isoformat_z(self.since)
        return PageRequest("GET", self.url, params=params)

    def read_page(self, fetched: Fetched) -> Page:
        runs = run_list(fetched.body, "dag_runs", required=True)
        total = count_value(fetched.body.get("total_entries"), "total_entries")
        return Page(runs, next_offset(fetched.cursor, len(runs), total=total))

    def map_run(self, raw: dict[str, Any]) -> SourceRun:
        word = status_word(raw.get("state"), "state")
        status = map_status(word, AIRFLOW_STATE)
        finished_at = parse_timestamp(raw.get("end_date"), "end_date")
        duration = None
        if finished_at is not None and status in TERMINAL_STATUSES:
            duration = duration_seconds(raw.get("duration"), "duration")
        return SourceRun(
            external_run_id=run_identity(raw.get("dag_run_id"), "dag_run_id"),
            status=status,
            source_status=word,
            started_at=parse_timestamp(raw.get("start_date"), "start_date"),
            finished_at=finished_at,
            duration_seconds=duration,
            attempt=attempt_time(parse_timestamp(raw.get("queued_at"), "queued_at")),
        )


# Airflow 2 with pendulum 2 writes a zone as its repr.
_PENDULUM_ZONE = re.compile(r"^Timezone\('(?P<name>[^']*)'\)$")
# Schedules that never call for a run at a time of their own.
_NO_TIME = {
    "@once": "runs once only (@once)",
    "@continuous": "runs continuously, one run after another (@continuous)",
    "asset": "is triggered by assets, not by time",
    "partitioned asset": "is triggered by assets, not by time",
    "partitionatruntime": "is triggered with a partition key, not by time",
    "dataset": "is triggered by datasets, not by time",
}


class AirflowSchedules:
    """The DAG's schedule, from its details (see the module doc)."""

    def __init__(self, source: AirflowSource, external_id: str) -> None:
        dag_id = quote(external_id, safe="")
        self.url = f"{source.base}/api/v{source.api_version}/dags/{dag_id}/details"
        self.version = source.api_version

    def schedule_request(self) -> PageRequest:
        return PageRequest("GET", self.url)

    def read_schedule(self, fetched: Fetched) -> PlatformSchedule:
        dag = fetched.body
        if not isinstance(dag, dict):
            raise PageShapeError("the DAG details are not a JSON object")
        if dag.get("is_paused") is True:
            return no_schedule("the DAG is paused in Airflow")
        if dag.get("is_active") is False or dag.get("is_stale") is True:
            return no_schedule("the Airflow scheduler no longer sees the DAG (inactive or stale)")
        expression = self._expression(dag)
        if isinstance(expression, PlatformSchedule):
            return expression
        why = _NO_TIME.get(expression.strip().lower())
        if why is not None:
            return no_schedule(f"the DAG {why}")
        if _INTERVAL_SUMMARY.match(expression.strip()):
            return no_schedule(f"the DAG runs at an interval ({expression.strip()}), "
                               "not at times a cron names")  # fmt: skip
        zone = zone_name(dag.get("timezone"))
        return cron_schedule(expression, zone, f"the DAG's schedule {shown(expression)}")

    def _expression(self, dag: dict[str, Any]) -> str | PlatformSchedule:
        """The schedule's text, or what its absence or interval means."""
        if self.version == "2":
            summary = dag.get("timetable_summary")
            if summary is not None and not isinstance(summary, str):
                raise PageShapeError("timetable_summary is not a string")
            return _NO_SCHEDULE if summary in (None, "None") else summary
        interval = dag.get("schedule_interval")
        if interval is None:
            return _NO_SCHEDULE
        if not isinstance(interval, dict):
            raise PageShapeError("schedule_interval is not an object")
        kind = interval.get("__type")
        if kind == "CronExpression":
            value = interval.get("value")
            if not isinstance(value, str):
                raise PageShapeError("schedule_interval.value is not a string")
            return value
        if kind in ("TimeDelta", "RelativeDelta"):
            return no_schedule(f"the DAG runs at an interval ({interval_words(interval)}), "
                               "not at times a cron names")  # fmt: skip
        raise PageShapeError(f"schedule_interval.__type {shown(kind)} is not one Airflow documents")


_NO_SCHEDULE = no_schedule(
    "the DAG has no schedule in Airflow (schedule=None): it runs only when triggered"
)
# Airflow 3's summary of an interval timetable: str(timedelta) or a relativedelta's repr.
_INTERVAL_SUMMARY = re.compile(r"^(\d+ days?, )?\d+:\d\d:\d\d(\.\d+)?$|^relativedelta\(")


def interval_words(interval: dict[str, Any]) -> str:
    """An Airflow 2 interval in words: ``every 1 day``, ``every 6 hours``."""
    units = ("years", "months", "days", "hours", "minutes", "seconds", "microseconds")
    parts = []
    for unit in units:
        value = interval.get(unit)
        if isinstance(value, int) and not isinstance(value, bool) and value:
            parts.append(f"{value} {unit[:-1] if value == 1 else unit}")
    return "every " + (", ".join(parts) or "0 seconds")


def zone_name(value: Any) -> str | None:
    """The IANA name in Airflow's ``timezone``, or None (UTC) when absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise PageShapeError("timezone is not a string")
    match = _PENDULUM_ZONE.match(value)
    return match.group("name") if match else value


PLATFORM = register(
    Platform(
        name="airflow",
        source_model=AirflowSource,
        connector=AirflowConnector,
        statuses={"state": AIRFLOW_STATE},
        incremental="updated",
        schedules=AirflowSchedules,
    )
)
