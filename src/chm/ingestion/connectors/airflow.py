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
"""

from __future__ import annotations

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
    Window,
    count_value,
    next_offset,
    offset_of,
    run_list,
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


PLATFORM = register(
    Platform(
        name="airflow",
        source_model=AirflowSource,
        connector=AirflowConnector,
        statuses={"state": AIRFLOW_STATE},
        incremental="updated",
    )
)
