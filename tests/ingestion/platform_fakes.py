"""Fake Airflow, dbt Cloud, GitHub, Prefect and Dagster APIs over real sockets.

Each fake registers its documented route(s) on a ``FakeServer`` (see
``ingestion_fakes``) and answers from a list of runs it keeps, paging,
filtering and authenticating as the platform documents: the tests change
``runs`` between ingestions and read ``server.requests`` to see what CHM
asked. Keys starting with ``_`` are the fake's own bookkeeping (the time a
run was last updated, for the time filters) and are never sent.

Values a platform computes against its clock on every read (Prefect's
``estimated_run_time``, dbt Cloud's ``"2 hours ago"``, Databricks'
``run_duration`` of an active run, ADF's ``durationInMs`` in progress) are
recomputed on every read too, against a fake clock that moves
``READ_TICK`` per read: two reads of an unchanged run always differ there.
Airflow's ``clear``/``start``/``finish`` and GitHub's ``rerun`` play a
finished run started again under its id, as the platforms do.
"""

from __future__ import annotations

import base64
import copy
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from ingestion_fakes import ADF_FACTORY, FakeServer, Reply, Seen


def public(run: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in run.items() if not k.startswith("_")}


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def parsed(text: str) -> datetime:
    return datetime.fromisoformat(text)


def scripted(server: FakeServer, path: str, key: str | None) -> Reply | None:
    return server.scripted(path, key)


# The fakes' clock for values derived at read time: it moves this much per read.
READ_TICK = timedelta(seconds=7)
READ_EPOCH = datetime(2026, 3, 1, 10, 10, tzinfo=UTC)


def clock_text(seconds: float) -> str:
    """``HH:MM:SS``, as dbt Cloud writes durations."""
    whole = int(seconds)
    return f"{whole // 3600:02d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def humanized(seconds: float, ago: bool = False) -> str:
    """dbt Cloud's words for a duration (``"5 minutes"``, ``"3 hours ago"``)."""
    value, unit = (seconds / 3600, "hour") if seconds >= 3600 else (seconds / 60, "minute")
    if seconds < 60:
        value, unit = seconds, "second"
    text = f"{int(value)} {unit}{'' if int(value) == 1 else 's'}"
    return f"{text} ago" if ago else text


def snapshot(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs as a page would show them now: kept to serve later as an old page."""
    return [public(copy.deepcopy(run)) for run in runs]


# --- Airflow -------------------------------------------------------------------------------


@dataclass
class AirflowFake:
    """``GET /api/v{1,2}/dags/{dag_id}/dagRuns``; v1 checks basic auth, v2 a JWT
    from ``POST /auth/token``. ``clamp`` is the server's maximum_page_limit."""

    server: FakeServer
    dag_id: str
    version: str = "2"
    username: str = "chm"
    password: str = "airflow-pw-Z9"
    clamp: int = 100
    runs: list[dict[str, Any]] = field(default_factory=list)
    tokens_issued: int = 0
    # The JWT expires once this many pages were served with it.
    expire_after: int | None = None

    def __post_init__(self) -> None:
        self.path = f"/api/v{self.version}/dags/{quote(self.dag_id, safe='')}/dagRuns"
        self.token = ""
        self.served_with_token = 0
        self.server.routes[("GET", self.path)] = self.answer
        if self.version == "2":
            self.server.routes[("POST", "/auth/token")] = self.issue_token

    def issue_token(self, seen: Seen) -> Reply:
        if seen.body != {"username": self.username, "password": self.password}:
            return Reply(401, {"detail": "Invalid credentials"})
        self.tokens_issued += 1
        self.token = f"jwt-{self.tokens_issued}-eyJhbGciOi"
        self.served_with_token = 0
        return Reply(201, {"access_token": self.token})

    def authorized(self, seen: Seen) -> bool:
        header = seen.headers.get("authorization", "")
        if self.version == "1":
            expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            return header == f"Basic {expected}"
        return bool(self.token) and header == f"Bearer {self.token}"

    def answer(self, seen: Seen) -> Reply:
        if not self.authorized(seen):
            return Reply(
                401, {"title": "Unauthorized", "status": 401, "detail": "Not authenticated"}
            )
        queued = scripted(self.server, self.path, seen.query.get("offset"))
        if queued is not None:
            return queued
        assert seen.query["order_by"] == "id"
        matching = sorted(self.runs, key=lambda run: run["_id"])
        if "updated_at_gte" in seen.query:
            since = parsed(seen.query["updated_at_gte"])
            matching = [run for run in matching if run["_updated"] >= since]
        offset, limit = int(seen.query.get("offset", 0)), int(seen.query["limit"])
        page = matching[offset : offset + min(limit, self.clamp)]
        self.served_with_token += 1
        if self.expire_after is not None and self.served_with_token >= self.expire_after:
            self.token = "expired"
        return Reply(body={"dag_runs": [public(r) for r in page], "total_entries": len(matching)})

    def run(self, dag_run_id: str) -> dict[str, Any]:
        return next(run for run in self.runs if run["dag_run_id"] == dag_run_id)

    def clear(self, dag_run_id: str, at: datetime) -> None:
        """An operator clears a finished run: ``DagRun.set_state(QUEUED)``, a new
        ``queued_at`` (v2 only shows it), no dates, no scheduling decision yet."""
        run = self.run(dag_run_id)
        run |= {"state": "queued", "start_date": None, "end_date": None,
                "last_scheduling_decision": None, "_updated": at}  # fmt: skip
        if self.version == "2":
            run |= {"queued_at": iso(at), "duration": None}

    def start(self, dag_run_id: str, at: datetime) -> None:
        """The scheduler runs the queued run: ``set_state(RUNNING)`` sets a start."""
        run = self.run(dag_run_id)
        run |= {"state": "running", "start_date": iso(at), "last_scheduling_decision": iso(at),
                "_updated": at}  # fmt: skip

    def finish(self, dag_run_id: str, state: str, at: datetime) -> None:
        run = self.run(dag_run_id)
        run |= {"state": state, "end_date": iso(at), "_updated": at}
        if self.version == "2":
            run["duration"] = (at - parsed(run["start_date"])).total_seconds()


def airflow_run(
    number: int, state: str = "success", version: str = "2", **fields: Any
) -> dict[str, Any]:
    start = datetime(2026, 3, 1, 2, 0, tzinfo=UTC).replace(day=1 + number % 27)
    run: dict[str, Any] = {
        "dag_run_id": f"scheduled__{iso(start)}",
        "dag_id": "orders_daily",
        "logical_date": iso(start),
        "start_date": iso(start) if state != "queued" else None,
        "end_date": iso(start.replace(minute=14)) if state in ("success", "failed") else None,
        "data_interval_start": iso(start),
        "data_interval_end": iso(start),
        "last_scheduling_decision": iso(start),
        "run_type": "scheduled",
        "state": state,
        "conf": {},
        "note": None,
        "_id": number,
        "_updated": start.replace(minute=15),
    }
    if version == "2":
        run |= {"queued_at": iso(start), "run_after": iso(start), "triggered_by": "timetable",
                "triggering_user_name": None, "dag_versions": [], "bundle_version": None,
                "dag_display_name": "orders_daily",
                "duration": 840.0 if run["end_date"] else None}  # fmt: skip
    else:
        run |= {"execution_date": iso(start), "external_trigger": False}
    return run | fields


# --- dbt Cloud -----------------------------------------------------------------------------

DBT_HUMANIZED = {
    1: "Queued",
    2: "Starting",
    3: "Running",
    10: "Success",
    20: "Error",
    30: "Cancelled",
}


@dataclass
class DbtCloudFake:
    """``GET /api/v2/accounts/{account}/runs/``: newest first, ``limit`` at most 100
    (``clamp`` lower still), ``extra.pagination.total_count``."""

    server: FakeServer
    account_id: int
    job_id: int
    token: str
    clamp: int = 100
    runs: list[dict[str, Any]] = field(default_factory=list)
    on_page: Any = None
    reads: int = 0

    def __post_init__(self) -> None:
        self.path = f"/api/v2/accounts/{self.account_id}/runs/"
        self.server.routes[("GET", self.path)] = self.answer

    def answer(self, seen: Seen) -> Reply:
        if seen.headers.get("authorization") != f"Token {self.token}":
            return Reply(401, {"status": {"code": 401, "is_success": False,
                                          "user_message": "Invalid token.",
                                          "developer_message": None}, "data": None})  # fmt: skip
        queued = scripted(self.server, self.path, seen.query.get("offset"))
        if queued is not None:
            return queued
        assert seen.query["order_by"] == "-id"
        limit = int(seen.query["limit"])
        if limit > 100:
            return Reply(400, {"status": {"user_message": "limit must be at most 100"}})
        matching = sorted(
            (
                r
                for r in self.runs
                if r["job_definition_id"] == int(seen.query["job_definition_id"])
            ),
            key=lambda run: -run["id"],
        )
        offset = int(seen.query.get("offset", 0))
        page = matching[offset : offset + min(limit, self.clamp)]
        self.reads += 1
        now = READ_EPOCH + self.reads * READ_TICK
        body = {
            "status": {"code": 200, "is_success": True, "user_message": "Success!",
                       "developer_message": ""},
            "data": [public(r) | dbt_read_time(r, now) for r in page],
            "extra": {"filters": {"limit": limit, "offset": offset, "account_id": self.account_id},
                      "order_by": "-id",
                      "pagination": {"count": len(page), "total_count": len(matching)}},
        }  # fmt: skip
        if self.on_page is not None:
            self.on_page(offset)
        return Reply(body=body)


def dbt_read_time(run: dict[str, Any], now: datetime) -> dict[str, Any]:
    """dbt Cloud's durations, counted up to ``now`` while the run is queued or
    running, and its ``"... ago"`` words, for every run, as of ``now``."""

    def at(key: str) -> datetime | None:
        return datetime.fromisoformat(run[key]) if run.get(key) else None

    created, started, finished = at("created_at"), at("started_at"), at("finished_at")
    assert created is not None
    end = finished or now
    values = {
        "duration": (end - created).total_seconds(),
        "queued_duration": ((started or end) - created).total_seconds(),
        "run_duration": (end - started).total_seconds() if started else 0.0,
    }
    words: dict[str, Any] = {}
    for key, seconds in values.items():
        words[key] = clock_text(seconds)
        words[f"{key}_humanized"] = humanized(seconds)
    words["created_at_humanized"] = humanized((now - created).total_seconds(), ago=True)
    words["finished_at_humanized"] = (
        humanized((now - finished).total_seconds(), ago=True) if finished else None
    )
    return words


def dbt_run(run_id: int, status: int = 10, job_id: int = 77, **fields: Any) -> dict[str, Any]:
    done = status in (10, 20, 30)
    run = {
        "id": run_id, "trigger_id": run_id, "account_id": 1, "environment_id": 5,
        "project_id": 3, "job_definition_id": job_id, "status": status,
        "dbt_version": "1.9.0", "git_branch": "main", "git_sha": "a1b2c3",
        "status_message": "Database Error in model orders" if status == 20 else None,
        "created_at": "2026-03-01 10:00:00.000000+00:00",
        "updated_at": "2026-03-01 10:05:30.000000+00:00" if done else "2026-03-01 10:01:00.000000+00:00",
        "dequeued_at": "2026-03-01 10:00:05.000000+00:00",
        "started_at": "2026-03-01 10:00:30.000000+00:00" if status >= 3 else None,
        "finished_at": "2026-03-01 10:05:30.000000+00:00" if done else None,
        "status_humanized": DBT_HUMANIZED.get(status, "Unknown"),
        "in_progress": not done, "is_complete": done, "is_success": status == 10,
        "is_error": status == 20, "is_cancelled": status == 30,
        "duration": "00:05:30", "queued_duration": "00:00:30", "run_duration": "00:05:00",
        "job_id": job_id, "is_running": status == 3,
        "href": f"https://cloud.getdbt.com/deploy/1/projects/3/runs/{run_id}/",
        "trigger": {"cause": "Kicked off from UI by ops@acme.example", "job_definition_id": job_id},
    }  # fmt: skip
    return run | fields


# --- GitHub Actions ------------------------------------------------------------------------


@dataclass
class GithubFake:
    """``GET /repos/{owner}/{repo}/actions/workflows/{workflow}/runs``, newest
    first, paged by the ``Link`` header (absolute ``page=N`` URLs)."""

    server: FakeServer
    repo: str
    workflow: str
    token: str
    per_page: int = 100
    runs: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.path = f"/repos/{self.repo}/actions/workflows/{self.workflow}/runs"
        self.server.routes[("GET", self.path)] = self.answer

    def answer(self, seen: Seen) -> Reply:
        if seen.headers.get("authorization") != f"Bearer {self.token}":
            return Reply(401, {"message": "Bad credentials", "status": "401"})
        assert seen.headers.get("accept") == "application/vnd.github+json"
        assert seen.headers.get("x-github-api-version") == "2022-11-28"
        queued = scripted(self.server, self.path, seen.query.get("page"))
        if queued is not None:
            return queued
        matching = sorted(self.runs, key=lambda run: -run["id"])
        created = seen.query.get("created")
        if created is not None:
            assert created.startswith(">=")
            since = parsed(created[2:])
            matching = [r for r in matching if parsed(r["created_at"]) >= since]
        page = int(seen.query.get("page", 1))
        size = min(int(seen.query.get("per_page", 30)), self.per_page)
        chunk = matching[(page - 1) * size : page * size]
        pages = max(1, -(-len(matching) // size))
        links = []
        base = f"{self.server.url}{self.path}?per_page={size}"
        if created is not None:
            base += f"&created={quote(created)}"
        if page < pages:
            links.append(f'<{base}&page={page + 1}>; rel="next"')
            links.append(f'<{base}&page={pages}>; rel="last"')
        if page > 1:
            links.insert(0, f'<{base}&page={page - 1}>; rel="prev"')
        headers = {"x-ratelimit-limit": "5000", "x-ratelimit-remaining": "4999",
                   "x-ratelimit-reset": str(int(time.time()) + 3600)}  # fmt: skip
        if links:
            headers["link"] = ", ".join(links)
        body = {"total_count": len(matching), "workflow_runs": [public(r) for r in chunk]}
        return Reply(body=body, headers=headers)

    def run(self, run_id: int) -> dict[str, Any]:
        return next(run for run in self.runs if run["id"] == run_id)

    def rerun(self, run_id: int, at: datetime) -> None:
        """Re-run a completed run: the same id, ``run_attempt`` + 1, queued again,
        ``run_started_at`` reset (``created_at`` kept)."""
        run = self.run(run_id)
        run |= {"status": "queued", "conclusion": None, "run_attempt": run["run_attempt"] + 1,
                "run_started_at": iso(at), "updated_at": iso(at)}  # fmt: skip

    def progress(
        self, run_id: int, status: str, at: datetime, conclusion: str | None = None
    ) -> None:
        self.run(run_id).update(status=status, conclusion=conclusion, updated_at=iso(at))


def github_run(
    run_id: int, status: str = "completed", conclusion: str | None = "success", **fields: Any
) -> dict[str, Any]:
    created = datetime(2026, 3, 1, 9, 0, tzinfo=UTC).replace(minute=run_id % 60)
    run = {
        "id": run_id, "name": "nightly", "node_id": f"WFR_{run_id}", "head_branch": "main",
        "head_sha": "009b8a3a9ccbb128af87f9b1c0f4c62e8a304f6d", "path": ".github/workflows/nightly.yml",
        "display_title": "Nightly load", "run_number": run_id, "event": "schedule",
        "status": status, "conclusion": conclusion if status == "completed" else None,
        "workflow_id": 161335, "url": f"https://api.github.com/repos/acme/etl/actions/runs/{run_id}",
        "html_url": f"https://github.com/acme/etl/actions/runs/{run_id}",
        "created_at": iso(created), "updated_at": iso(created.replace(second=45)),
        "run_attempt": 1, "run_started_at": iso(created.replace(second=5)),
        "actor": {"login": "octocat", "id": 1},
    }  # fmt: skip
    return run | fields


# --- Prefect -------------------------------------------------------------------------------


@dataclass
class PrefectFake:
    """``POST /api/flow_runs/filter``: a JSON list, ``limit`` at most 200 (else 422)."""

    server: FakeServer
    token: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    reads: int = 0

    def __post_init__(self) -> None:
        self.path = "/api/flow_runs/filter"
        self.server.routes[("POST", self.path)] = self.answer

    def answer(self, seen: Seen) -> Reply:
        if seen.headers.get("authorization") != f"Bearer {self.token}":
            return Reply(401, {"detail": "Unauthorized"})
        body = seen.body
        queued = scripted(self.server, self.path, str(body.get("offset", 0)))
        if queued is not None:
            return queued
        if body.get("limit", 200) > 200:
            return Reply(422, {"exception_message": "Invalid request received.",
                               "exception_detail": [{"loc": ["body", "limit"],
                                                     "msg": "ensure this value is less than or equal to 200"}]})  # fmt: skip
        assert body["sort"] == "ID_DESC"
        wanted = body["flow_runs"]["deployment_id"]["any_"]
        matching = sorted(
            (r for r in self.runs if r["deployment_id"] in wanted),
            key=lambda r: r["id"],
            reverse=True,
        )
        offset = body.get("offset", 0)
        self.reads += 1
        now = READ_EPOCH + self.reads * READ_TICK
        page = matching[offset : offset + body["limit"]]
        return Reply(body=[public(r) | prefect_read_time(r, now) for r in page])


def prefect_read_time(run: dict[str, Any], now: datetime) -> dict[str, Any]:
    """Prefect's ``FlowRun`` hybrid properties as the server computes them when it
    reads the run: the run time so far while running, the lateness while late."""

    def at(key: str) -> datetime | None:
        return datetime.fromisoformat(run[key]) if run.get(key) else None

    run_time = float(run["total_run_time"])
    if run["state_type"] == "RUNNING":
        run_time += (now - datetime.fromisoformat(run["state"]["timestamp"])).total_seconds()
    started, expected = at("start_time"), at("expected_start_time")
    late = 0.0
    if started is not None and expected is not None and started > expected:
        late = (started - expected).total_seconds()
    elif started is None and expected is not None and expected < now and run["state_type"] not in (
        "COMPLETED", "FAILED", "CANCELLED", "CRASHED"
    ):  # fmt: skip
        late = (now - expected).total_seconds()
    return {"estimated_run_time": run_time, "estimated_start_time_delta": late}


def prefect_run(
    number: int, state_type: str = "COMPLETED", state_name: str | None = None, **fields: Any
) -> dict[str, Any]:
    name = state_name or state_type.capitalize()
    done = state_type in ("COMPLETED", "FAILED", "CANCELLED", "CRASHED")
    run = {
        "id": f"0c3b5e4a-1f2d-4c5b-9a8e-{number:012d}", "name": f"amber-fox-{number}",
        "flow_id": "9f1b0e4e-3c1d-4a9b-8f7e-000000000001",
        "deployment_id": "5d0b4f2e-7a6c-4e3b-9d1f-2a8c6e4b0f11",
        "work_queue_name": "default", "parameters": {"full_refresh": False}, "tags": ["prod"],
        "state_type": state_type, "state_name": name, "run_count": 1,
        "expected_start_time": "2026-03-01T10:00:00+00:00",
        "start_time": "2026-03-01T10:00:02+00:00" if state_type not in ("SCHEDULED", "PENDING") else None,
        "end_time": "2026-03-01T10:04:02+00:00" if done else None,
        "total_run_time": 240.0 if done else 0.0,
        "created": "2026-03-01T09:59:00+00:00", "updated": "2026-03-01T10:04:03+00:00",
        "state": {"id": f"7e1c0000-0000-4000-8000-{number:012d}", "type": state_type, "name": name,
                  "timestamp": "2026-03-01T10:04:02+00:00",
                  "message": "Flow run encountered an exception: KeyError('orders')"
                  if state_type in ("FAILED", "CRASHED") else None,
                  "state_details": {}},
    }  # fmt: skip
    return run | fields


# --- Dagster -------------------------------------------------------------------------------


@dataclass
class DagsterFake:
    """``POST /graphql`` answering ``runsOrError``: newest first, ``cursor`` is the
    runId after which to continue; errors as a union member with HTTP 200."""

    server: FakeServer
    token: str | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.path = "/graphql"
        self.server.routes[("POST", self.path)] = self.answer

    def answer(self, seen: Seen) -> Reply:
        if self.token is not None and seen.headers.get("dagster-cloud-api-token") != self.token:
            return Reply(401, {"errors": [{"message": "Unauthorized"}]})
        assert "runsOrError(filter: $filter, cursor: $cursor, limit: $limit)" in seen.body["query"]
        variables = seen.body["variables"]
        queued = scripted(self.server, self.path, variables.get("cursor"))
        if queued is not None:
            return queued
        if self.error is not None:
            return Reply(body={"data": {"runsOrError": self.error}})
        run_filter = variables.get("filter") or {}
        matching = sorted(self.runs, key=lambda r: -r["_id"])
        if run_filter.get("pipelineName"):
            matching = [r for r in matching if r["pipelineName"] == run_filter["pipelineName"]]
        if run_filter.get("updatedAfter") is not None:
            matching = [r for r in matching if r["updateTime"] > run_filter["updatedAfter"]]
        cursor = variables.get("cursor")
        if cursor is not None:
            ids = [r["runId"] for r in matching]
            matching = matching[ids.index(cursor) + 1 :]
        page = matching[: variables.get("limit") or len(matching)]
        return Reply(body={"data": {"runsOrError": {"__typename": "Runs",
                                                    "results": [public(r) for r in page]}}})  # fmt: skip


def dagster_run(number: int, status: str = "SUCCESS", **fields: Any) -> dict[str, Any]:
    created = 1_772_359_200.0 + number * 60  # 2026-03-01T10:00:00Z onwards
    run = {
        "runId": f"{number:08x}-5c1e-4f0a-9b3d-6e2a1c4f7b90", "status": status,
        "pipelineName": "orders_job", "creationTime": created,
        "startTime": created + 2 if status not in ("QUEUED", "NOT_STARTED") else None,
        "endTime": created + 92 if status in ("SUCCESS", "FAILURE", "CANCELED") else None,
        "updateTime": created + 92, "_id": number,
    }  # fmt: skip
    return run | fields


# --- Databricks and Azure Data Factory, live --------------------------------------------------


def _read_ms(reads: int) -> int:
    return int((READ_EPOCH + reads * READ_TICK).timestamp() * 1000)


@dataclass
class DatabricksFake:
    """``GET /api/2.2/jobs/runs/list`` of one job in one page; ``run_duration`` of an
    active run and ``queue_duration`` of a queued one count up to the read."""

    server: FakeServer
    job_id: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    reads: int = 0

    def __post_init__(self) -> None:
        self.path = "/api/2.2/jobs/runs/list"
        self.server.routes[("GET", self.path)] = self.answer

    def answer(self, seen: Seen) -> Reply:
        assert seen.query["job_id"] == self.job_id
        self.reads += 1
        now = _read_ms(self.reads)
        page = []
        for run in self.runs:
            shown = public(run)
            state = (run.get("status") or {}).get("state")
            if state in ("QUEUED", "PENDING", "BLOCKED", "WAITING"):
                shown["queue_duration"] = now - run["_queued_ms"]
            elif state != "TERMINATED" and run.get("start_time"):
                shown["run_duration"] = now - run["start_time"]
            page.append(shown)
        return Reply(body={"runs": page, "has_more": False})


@dataclass
class AdfFake:
    """``POST .../queryPipelineRuns`` of one pipeline in one page; ``durationInMs`` of
    a run in progress counts up to the read."""

    server: FakeServer
    runs: list[dict[str, Any]] = field(default_factory=list)
    reads: int = 0

    def __post_init__(self) -> None:
        self.path = f"{ADF_FACTORY}/queryPipelineRuns"
        self.server.routes[("POST", self.path)] = self.answer

    def answer(self, seen: Seen) -> Reply:
        assert seen.query["api-version"] == "2018-06-01"
        self.reads += 1
        now = READ_EPOCH + self.reads * READ_TICK
        page = []
        for run in self.runs:
            shown = public(run)
            if run["status"] in ("Queued", "InProgress", "Canceling"):
                started = datetime.fromisoformat(run["runStart"])
                shown["durationInMs"] = int((now - started).total_seconds() * 1000)
            page.append(shown)
        return Reply(body={"value": page, "continuationToken": None})
