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

Each fake of a platform that says how a pipeline is scheduled also answers
that request (Airflow's DAG details, Databricks' ``jobs/get``, dbt Cloud's
job, Prefect's deployment, Dagster's ``repositoriesOrError``) from an
attribute the test sets with the ``*_schedule``/``*_job``/``*_details``
builders below; left None, it answers the platform's own 404 (or, for
Dagster, a repository without schedules).
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
    # The DAG's details (airflow_dag_details), or None: 404.
    details: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        dag_path = f"/api/v{self.version}/dags/{quote(self.dag_id, safe='')}"
        self.path = f"{dag_path}/dagRuns"
        self.details_path = f"{dag_path}/details"
        self.token = ""
        self.served_with_token = 0
        self.server.routes[("GET", self.path)] = self.answer
        self.server.routes[("GET", self.details_path)] = self.answer_details
        if self.version == "2":
            self.server.routes[("POST", "/auth/token")] = self.issue_token

    def answer_details(self, seen: Seen) -> Reply:
        if not self.authorized(seen):
            return Reply(
                401, {"title": "Unauthorized", "status": 401, "detail": "Not authenticated"}
            )
        queued = scripted(self.server, self.details_path, None)
        if queued is not None:
            return queued
        if self.details is None:
            return Reply(404, {"title": "DAG not found", "status": 404, "type": "NotFound",
                               "detail": f"DAG with dag_id: '{self.dag_id}' not found"})  # fmt: skip
        return Reply(body=self.details)

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


def airflow_dag_details(
    version: str = "2",
    schedule: Any = "0 6 * * *",
    timezone: str = "UTC",
    paused: bool = False,
    dag_id: str = "orders_daily",
    **fields: Any,
) -> dict[str, Any]:
    """``GET /api/v{1,2}/dags/{dag_id}/details`` as Airflow documents it.

    v1 (Airflow 2): ``schedule`` is the ``schedule_interval`` object (or a cron
    string, wrapped as a ``CronExpression``) and the zone is written as pendulum
    2 writes it, ``Timezone('...')``; v2 (Airflow 3): ``schedule`` is the
    ``timetable_summary`` and the zone its IANA name."""
    details: dict[str, Any] = {
        "dag_id": dag_id, "dag_display_name": dag_id, "is_paused": paused,
        "last_parsed_time": "2026-03-01T09:00:00+00:00", "last_expired": None,
        "fileloc": f"/opt/airflow/dags/{dag_id}.py", "description": "Orders, daily",
        "timetable_description": "At 06:00", "tags": [{"name": "orders", "dag_id": dag_id}],
        "max_active_tasks": 16, "max_active_runs": 1, "has_task_concurrency_limits": False,
        "has_import_errors": False, "next_dagrun_data_interval_start": None,
        "next_dagrun_data_interval_end": None, "owners": ["data-eng"], "catchup": False,
        "doc_md": None, "start_date": "2026-01-01T00:00:00+00:00", "params": {},
        "is_paused_upon_creation": None, "render_template_as_native_obj": False,
        "template_search_path": None, "dag_run_timeout": None, "concurrency": 16,
    }  # fmt: skip
    if version == "1":
        interval = (
            {"__type": "CronExpression", "value": schedule}
            if isinstance(schedule, str)
            else schedule
        )
        details |= {"schedule_interval": interval, "timezone": f"Timezone('{timezone}')",
                    "is_active": True, "is_subdag": False, "root_dag_id": None,
                    "file_token": "Ii9vcHQvYWlyZmxvdy9kYWdzL29yZGVycy5weSI", "orientation": "LR",
                    "default_view": "grid", "next_dagrun": None,
                    "next_dagrun_create_after": None}  # fmt: skip
    else:
        details |= {"timetable_summary": schedule, "timezone": timezone, "is_stale": False,
                    "bundle_name": "dags-folder", "bundle_version": None,
                    "relative_fileloc": f"{dag_id}.py", "next_dagrun_logical_date": None,
                    "next_dagrun_run_after": None, "asset_expression": None, "end_date": None,
                    "last_parsed": "2026-03-01T09:00:00+00:00", "default_args": {},
                    "owner_links": {}, "file_token": ".eJw", "latest_dag_version": None}  # fmt: skip
    return details | fields


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
    # The job (dbt_job), or None: 404.
    job: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.path = f"/api/v2/accounts/{self.account_id}/runs/"
        self.job_path = f"/api/v2/accounts/{self.account_id}/jobs/{self.job_id}/"
        self.server.routes[("GET", self.path)] = self.answer
        self.server.routes[("GET", self.job_path)] = self.answer_job

    def answer_job(self, seen: Seen) -> Reply:
        if seen.headers.get("authorization") != f"Token {self.token}":
            return Reply(401, {"status": {"code": 401, "is_success": False,
                                          "user_message": "Invalid token.",
                                          "developer_message": None}, "data": None})  # fmt: skip
        queued = scripted(self.server, self.job_path, None)
        if queued is not None:
            return queued
        if self.job is None:
            return Reply(404, {"status": {"code": 404, "is_success": False,
                                          "user_message": "The requested resource was not found.",
                                          "developer_message": ""}, "data": None})  # fmt: skip
        return Reply(body={"status": {"code": 200, "is_success": True, "user_message": "Success!",
                                      "developer_message": ""}, "data": self.job})  # fmt: skip

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


def dbt_job(
    job_id: int = 77,
    cron: str = "0 6 * * *",
    on_schedule: bool = True,
    state: int = 1,
    **fields: Any,
) -> dict[str, Any]:
    """A dbt Cloud v2 job (``data`` of ``GET .../jobs/{id}/``), scheduled as the UI
    saves a custom cron."""
    job = {
        "id": job_id, "account_id": 1, "project_id": 3, "environment_id": 5,
        "name": "Daily build", "description": "", "dbt_version": None,
        "triggers": {"github_webhook": False, "schedule": on_schedule,
                     "git_provider_webhook": False, "on_merge": False},
        "execute_steps": ["dbt build"], "settings": {"threads": 4, "target_name": "prod"},
        "state": state, "generate_docs": False, "run_generate_sources": False,
        "schedule": {"cron": cron, "date": {"type": "custom_cron", "cron": cron},
                     "time": {"type": "every_hour", "interval": 1}},
        "job_type": "scheduled", "triggers_on_draft_pr": False,
        "job_completion_trigger_condition": None, "execution": {"timeout_seconds": 0},
        "deferring_job_definition_id": None, "deferring_environment_id": None,
        "created_at": "2026-01-05 09:00:00.000000+00:00",
        "updated_at": "2026-02-01 09:00:00.000000+00:00",
        "next_run": "2026-03-02T06:00:00+00:00", "next_run_humanized": "in 20 hours",
        "cron_humanized": "At 06:00 AM",
    }  # fmt: skip
    return job | fields


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

    def deployment_path(self, deployment_id: str) -> str:
        return f"/api/deployments/{deployment_id}"

    def deploy(self, deployment: dict[str, Any] | None, deployment_id: str | None = None) -> str:
        """Serve ``GET /api/deployments/{id}`` with ``deployment`` (None: Prefect's 404);
        answers the path."""
        path = self.deployment_path(deployment_id or (deployment or {})["id"])

        def answer(seen: Seen) -> Reply:
            if seen.headers.get("authorization") != f"Bearer {self.token}":
                return Reply(401, {"detail": "Unauthorized"})
            queued = scripted(self.server, path, None)
            if queued is not None:
                return queued
            if deployment is None:
                return Reply(404, {"detail": "Deployment not found."})
            return Reply(body=deployment)

        self.server.routes[("GET", path)] = answer
        return path

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


PREFECT_DEPLOYMENT_ID = "5d0b4f2e-7a6c-4e3b-9d1f-2a8c6e4b0f11"


def prefect_schedule(active: bool = True, **schedule: Any) -> dict[str, Any]:
    """One ``DeploymentSchedule``: ``schedule`` is a cron (``cron``, ``timezone``,
    ``day_or``), an interval (``interval`` seconds, ``anchor_date``, ``timezone``)
    or an rrule (``rrule``, ``timezone``)."""
    if "cron" in schedule:
        schedule = {"timezone": None, "day_or": True} | schedule
    return {
        "id": "c1a7e2b0-55d4-4a3c-8f1e-0a9b8c7d6e5f", "created": "2026-01-05T09:00:00Z",
        "updated": "2026-01-05T09:00:00Z", "deployment_id": PREFECT_DEPLOYMENT_ID,
        "schedule": schedule, "active": active, "max_scheduled_runs": None,
        "parameters": {}, "slug": None,
    }  # fmt: skip


def prefect_deployment(
    schedules: list[dict[str, Any]], paused: bool = False, **fields: Any
) -> dict[str, Any]:
    """``GET /api/deployments/{id}`` as Prefect 3 answers it."""
    deployment = {
        "id": PREFECT_DEPLOYMENT_ID, "created": "2026-01-05T09:00:00Z",
        "updated": "2026-02-01T09:00:00Z", "name": "orders-daily", "version": "a1b2c3",
        "description": None, "flow_id": "9f1b0e4e-3c1d-4a9b-8f7e-000000000001",
        "paused": paused, "schedules": schedules, "concurrency_limit": None,
        "global_concurrency_limit": None, "concurrency_options": None,
        "job_variables": {}, "parameters": {}, "tags": ["prod"], "labels": {},
        "work_queue_name": "default", "last_polled": None, "parameter_openapi_schema": {},
        "path": None, "pull_steps": None, "entrypoint": "flows/orders.py:orders",
        "storage_document_id": None, "infrastructure_document_id": None,
        "created_by": None, "updated_by": None, "work_pool_name": "k8s",
        "status": "READY", "enforce_parameter_schema": True,
    }  # fmt: skip
    return deployment | fields


# --- Dagster -------------------------------------------------------------------------------


@dataclass
class DagsterFake:
    """``POST /graphql`` answering ``runsOrError``: newest first, ``cursor`` is the
    runId after which to continue; errors as a union member with HTTP 200."""

    server: FakeServer
    token: str | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    # repositoriesOrError's nodes (dagster_repository), or its whole answer.
    repositories: list[dict[str, Any]] = field(default_factory=list)
    repositories_answer: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.path = "/graphql"
        self.server.routes[("POST", self.path)] = self.answer

    def run_requests(self) -> list[Seen]:
        """The ``runsOrError`` queries asked (not the schedule queries)."""
        return [r for r in self.server.hits(self.path) if "runsOrError" in r.body["query"]]

    def schedule_requests(self) -> list[Seen]:
        return [r for r in self.server.hits(self.path) if "repositoriesOrError" in r.body["query"]]

    def answer(self, seen: Seen) -> Reply:
        if self.token is not None and seen.headers.get("dagster-cloud-api-token") != self.token:
            return Reply(401, {"errors": [{"message": "Unauthorized"}]})
        if "repositoriesOrError" in seen.body["query"]:
            return self.answer_schedules()
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

    def answer_schedules(self) -> Reply:
        queued = scripted(self.server, self.path, "repositoriesOrError")
        if queued is not None:
            return queued
        if self.repositories_answer is not None:
            return Reply(body={"data": {"repositoriesOrError": self.repositories_answer}})
        answer = {"__typename": "RepositoryConnection", "nodes": self.repositories}
        return Reply(body={"data": {"repositoriesOrError": answer}})


def dagster_schedule(
    name: str = "orders_daily_schedule",
    job: str = "orders_job",
    cron: str = "0 6 * * *",
    timezone: str | None = None,
    status: str = "RUNNING",
) -> dict[str, Any]:
    """A ``Schedule`` as the query asks for it."""
    return {"name": name, "pipelineName": job, "cronSchedule": cron,
            "executionTimezone": timezone, "scheduleState": {"status": status}}  # fmt: skip


def dagster_repository(
    *schedules: dict[str, Any], name: str = "__repository__", location: str = "orders"
) -> dict[str, Any]:
    return {"name": name, "location": {"name": location}, "schedules": list(schedules)}


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
    # The job's settings (databricks_settings), or None: 404.
    settings: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.path = "/api/2.2/jobs/runs/list"
        self.job_path = "/api/2.2/jobs/get"
        self.server.routes[("GET", self.path)] = self.answer
        self.server.routes[("GET", self.job_path)] = self.answer_job

    def answer_job(self, seen: Seen) -> Reply:
        queued = scripted(self.server, self.job_path, None)
        if queued is not None:
            return queued
        if self.settings is None or seen.query.get("job_id") != self.job_id:
            return Reply(400, {"error_code": "INVALID_PARAMETER_VALUE",
                               "message": f"Job {seen.query.get('job_id')} does not exist."})  # fmt: skip
        return Reply(body={"job_id": int(self.job_id), "creator_user_name": "ops@acme.example",
                           "run_as_user_name": "ops@acme.example", "run_as_owner": True,
                           "created_time": 1767603600000, "settings": self.settings,
                           "has_more": False})  # fmt: skip

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


def databricks_settings(
    quartz: str | None = "0 0 6 * * ?",
    timezone: str = "Europe/Berlin",
    pause_status: str = "UNPAUSED",
    **fields: Any,
) -> dict[str, Any]:
    """A job's ``settings`` as ``jobs/get`` answers them; ``quartz`` None: no schedule."""
    settings: dict[str, Any] = {
        "name": "orders_nightly", "email_notifications": {}, "webhook_notifications": {},
        "timeout_seconds": 0, "max_concurrent_runs": 1, "format": "MULTI_TASK",
        "queue": {"enabled": True},
        "tasks": [{"task_key": "load", "notebook_task": {"notebook_path": "/Repos/etl/load",
                                                         "source": "WORKSPACE"}}],
    }  # fmt: skip
    if quartz is not None:
        settings["schedule"] = {"quartz_cron_expression": quartz, "timezone_id": timezone,
                                "pause_status": pause_status}  # fmt: skip
    return settings | fields


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
