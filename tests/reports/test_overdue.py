"""The overdue report (monitoring contract, "Schedules"): every edge of missed
and late, DST in Europe/Berlin and America/New_York, the filters and formats,
the status board, an independent oracle over seeded random data, and the BI
view equal to the API."""

from __future__ import annotations

import bisect
import csv
import io
import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from cronsim import CronSim
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from chm.cli import app
from chm.core.settings import get_settings
from chm.models import Client, Pipeline, Run
from chm.reports.schemas import OverdueRow
from chm.schedules.ticks import rewrite_ticks
from factories import API, make_client, make_pipeline, make_run, ok

MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
MICROSECOND, SECOND, ZERO = timedelta(microseconds=1), timedelta(seconds=1), timedelta(0)
CREATED = datetime(2026, 3, 1, tzinfo=UTC)
# The edge cases' day and their daily 06:00 UTC job with 30 minutes of grace.
T = datetime(2026, 3, 10, 6, 0, tzinfo=UTC)
DAILY = "0 6 * * *"
GRACE = 30 * MINUTE


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def overdue(api: TestClient, as_of: datetime, **params: Any) -> list[dict[str, Any]]:
    body = ok(api.get(f"{API}/reports/overdue-pipelines", params={"as_of": iso(as_of), **params}))
    assert (body["since"], body["until"]) == (None, None)
    assert datetime.fromisoformat(body["as_of"]) == as_of
    return list(body["items"])


def states(api: TestClient, as_of: datetime, **params: Any) -> dict[str, str]:
    """pipeline name -> state, of the rows at ``as_of``."""
    return {row["pipeline_name"]: row["state"] for row in overdue(api, as_of, **params)}


def scheduled(
    api: TestClient,
    engine: Engine,
    client: dict[str, Any],
    name: str,
    schedule: str = DAILY,
    *,
    created_at: datetime = CREATED,
    set_at: datetime | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A pipeline with a schedule, created (and its schedule set) at the given
    times rather than now, its ticks stored again from there."""
    pipeline = make_pipeline(api, client, name, schedule=schedule, **fields)
    with Session(engine) as session, session.begin():
        row = session.get(Pipeline, int(pipeline["id"]))
        assert row is not None
        row.created_at = created_at
        row.schedule_set_at = set_at or created_at
        rewrite_ticks(session, row, datetime.now(UTC))
    return pipeline


def run(
    api: TestClient,
    pipeline: dict[str, Any],
    status: str,
    at: datetime,
    finished: datetime | None = None,
) -> dict[str, Any]:
    """A run whose event time is ``at`` (its start)."""
    if finished is None and status not in ("queued", "running"):
        finished = at + 5 * MINUTE
    return make_run(api, pipeline, status, started_at=iso(at), finished_at=iso(finished))


def row(
    client: dict[str, Any],
    pipeline: dict[str, Any],
    state: str,
    expected_at: datetime,
    due_by: datetime,
    last: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "pipeline_id": pipeline["id"],
        "pipeline_name": pipeline["name"],
        "client_id": client["id"],
        "client_name": client["name"],
        "platform": pipeline["platform"],
        "schedule": pipeline["schedule"],
        "schedule_timezone": pipeline["schedule_timezone"],
        "state": state,
        "expected_at": iso(expected_at),
        "due_by": iso(due_by),
        "last_run_at": None if last is None else last["started_at"] or last["finished_at"],
        "last_status": None if last is None else last["status"],
    }


# --- missed ---------------------------------------------------------------------------


def test_missed_from_exactly_the_tick_plus_grace(api: TestClient, engine: Engine) -> None:
    client = make_client(api, "Acme")
    pipeline = scheduled(api, engine, client, "orders")
    yesterday = run(api, pipeline, "success", T - DAY + 5 * MINUTE)
    # Just before T + grace the tick expected is yesterday's, which was answered.
    assert overdue(api, T + GRACE - MICROSECOND) == []
    assert overdue(api, T + GRACE) == [
        row(client, pipeline, "missed", T, T + GRACE, last=yesterday)
    ]
    # And it stays missed until a run arrives.
    assert states(api, T + 20 * HOUR) == {"orders": "missed"}


def test_a_run_exactly_grace_before_the_tick_answers_it_one_microsecond_earlier_does_not(
    api: TestClient, engine: Engine
) -> None:
    client = make_client(api)
    early = scheduled(api, engine, client, "early")
    too_early = scheduled(api, engine, client, "too_early")
    run(api, early, "success", T - GRACE)
    last = run(api, too_early, "success", T - GRACE - MICROSECOND)
    assert overdue(api, T + GRACE) == [row(client, too_early, "missed", T, T + GRACE, last=last)]


def test_a_run_at_as_of_exactly_answers_and_one_after_it_does_not(
    api: TestClient, engine: Engine
) -> None:
    client = make_client(api)
    at_as_of = scheduled(api, engine, client, "at_as_of")
    after = scheduled(api, engine, client, "after")
    as_of = T + HOUR
    run(api, at_as_of, "success", as_of)
    run(api, after, "success", as_of + MICROSECOND)
    rows = overdue(api, as_of)
    assert [r["pipeline_name"] for r in rows] == ["after"]
    assert rows[0]["last_run_at"] is None, "a run after as_of is not its last run either"


def test_a_run_that_finished_within_the_window_answers_whatever_its_status(
    api: TestClient, engine: Engine
) -> None:
    client = make_client(api)
    failed = scheduled(api, engine, client, "failed")
    finished_only = scheduled(api, engine, client, "finished_only")
    run(api, failed, "failed", T + MINUTE)
    # No start time: the event time is its finish.
    make_run(api, finished_only, "cancelled", finished_at=iso(T + 10 * MINUTE))
    assert overdue(api, T + 2 * HOUR) == []


# --- late -----------------------------------------------------------------------------


def test_late_from_exactly_the_tick_plus_deadline(api: TestClient, engine: Engine) -> None:
    client = make_client(api)
    pipeline = scheduled(api, engine, client, "slow", deadline_minutes=90)
    running = run(api, pipeline, "running", T + 10 * MINUTE)
    assert overdue(api, T + 90 * MINUTE - MICROSECOND) == []
    assert overdue(api, T + 90 * MINUTE) == [
        row(client, pipeline, "late", T, T + 90 * MINUTE, last=running)
    ]


def test_a_late_run_that_finishes_is_no_longer_overdue(api: TestClient, engine: Engine) -> None:
    client = make_client(api)
    pipeline = scheduled(api, engine, client, "slow", deadline_minutes=60)
    running = run(api, pipeline, "running", T + 5 * MINUTE)
    assert states(api, T + 3 * HOUR) == {"slow": "late"}
    finished = ok(
        api.patch(
            f"{API}/runs/{running['id']}",
            json={"status": "success", "finished_at": iso(T + 2 * HOUR)},
        )
    )
    assert finished["status"] == "success"
    assert overdue(api, T + 3 * HOUR) == []


def test_a_queued_run_is_late_too_a_finished_one_never(api: TestClient, engine: Engine) -> None:
    client = make_client(api)
    queued = scheduled(api, engine, client, "queued", deadline_minutes=15)
    finished = scheduled(api, engine, client, "finished", deadline_minutes=15)
    mixed = scheduled(api, engine, client, "mixed", deadline_minutes=15)
    run(api, queued, "queued", T)
    run(api, finished, "failed", T, T + 2 * HOUR)
    # One run of the window finished, another is still open: late.
    run(api, mixed, "success", T - 10 * MINUTE)
    run(api, mixed, "running", T + 5 * MINUTE)
    assert states(api, T + HOUR) == {"queued": "late", "mixed": "late"}


def test_the_next_periods_run_is_not_late_for_the_tick_before(
    api: TestClient, engine: Engine
) -> None:
    # A daily job with a 20-minute deadline: the day's run starts on time and
    # runs, while the day before's tick is still the expected one (until its
    # grace ends). It was not running at that tick's deadline: nothing is late.
    client = make_client(api)
    pipeline = scheduled(api, engine, client, "daily", deadline_minutes=20)
    run(api, pipeline, "success", T, T + 10 * MINUTE)
    next_day = T + DAY
    run(api, pipeline, "running", next_day)
    assert overdue(api, next_day + 5 * MINUTE) == []
    assert overdue(api, next_day + GRACE - MICROSECOND) == []
    # From the new tick's deadline on, the run that is still open is late.
    assert states(api, next_day + GRACE) == {"daily": "late"}


def test_without_a_deadline_an_open_run_is_never_late(api: TestClient, engine: Engine) -> None:
    client = make_client(api)
    pipeline = scheduled(api, engine, client, "no_deadline")
    run(api, pipeline, "running", T + MINUTE)
    assert overdue(api, T + 23 * HOUR) == []


def test_an_open_run_before_the_window_makes_the_tick_missed_not_late(
    api: TestClient, engine: Engine
) -> None:
    client = make_client(api)
    pipeline = scheduled(api, engine, client, "stuck", deadline_minutes=60)
    stuck = run(api, pipeline, "running", T - DAY + MINUTE)
    assert overdue(api, T + 2 * HOUR) == [row(client, pipeline, "missed", T, T + GRACE, last=stuck)]


# --- who is expected at all -----------------------------------------------------------


def test_inactive_pipelines_and_pipelines_of_inactive_clients_are_ignored(
    api: TestClient, engine: Engine
) -> None:
    active, dormant = make_client(api, "active"), make_client(api, "dormant")
    scheduled(api, engine, active, "kept")
    paused = scheduled(api, engine, active, "paused")
    orphan = scheduled(api, engine, dormant, "orphan")
    ok(api.patch(f"{API}/pipelines/{paused['id']}", json={"is_active": False}))
    ok(api.patch(f"{API}/clients/{dormant['id']}", json={"is_active": False}))
    assert states(api, T + HOUR) == {"kept": "missed"}
    assert states(api, T + HOUR, client_id=dormant["id"]) == {}
    # Active again: expected again.
    ok(api.patch(f"{API}/clients/{dormant['id']}", json={"is_active": True}))
    assert states(api, T + HOUR) == {"kept": "missed", orphan["name"]: "missed"}


def test_a_pipeline_without_a_schedule_is_never_overdue(api: TestClient, engine: Engine) -> None:
    client = make_client(api)
    never_ran = make_pipeline(api, client, "unscheduled")
    assert never_ran["schedule"] is None
    cleared = scheduled(api, engine, client, "cleared")
    ok(api.patch(f"{API}/pipelines/{cleared['id']}", json={"schedule": None}))
    assert overdue(api, T + HOUR) == []


def test_a_tick_before_the_pipeline_was_created_expects_nothing(
    api: TestClient, engine: Engine
) -> None:
    client = make_client(api)
    scheduled(api, engine, client, "new", created_at=T + MICROSECOND)
    scheduled(api, engine, client, "born_at_the_tick", created_at=T)
    assert states(api, T + HOUR) == {"born_at_the_tick": "missed"}
    # The next day's tick is expected.
    assert states(api, T + DAY + HOUR) == {"new": "missed", "born_at_the_tick": "missed"}


def test_a_tick_before_the_schedule_was_last_set_expects_nothing(
    api: TestClient, engine: Engine
) -> None:
    client = make_client(api)
    scheduled(api, engine, client, "moved", set_at=T + 5 * MINUTE)
    assert overdue(api, T + HOUR) == []
    assert states(api, T + DAY + HOUR) == {"moved": "missed"}


# --- daylight saving ------------------------------------------------------------------

# Spring forward: a 02:30 daily job is expected at 03:00 local that night.
SPRING = {
    # 29 March 2026, 02:00 CET -> 03:00 CEST: 03:00 CEST is 01:00 UTC.
    "Europe/Berlin": (utc(2026, 3, 29, 1, 0), utc(2026, 3, 28, 1, 30)),
    # 8 March 2026, 02:00 EST -> 03:00 EDT: 03:00 EDT is 07:00 UTC.
    "America/New_York": (utc(2026, 3, 8, 7, 0), utc(2026, 3, 7, 7, 30)),
}


@pytest.mark.parametrize("zone", SPRING)
def test_spring_forward_a_0230_job_is_expected_at_0300_local(
    api: TestClient, engine: Engine, zone: str
) -> None:
    tick, day_before = SPRING[zone]
    client = make_client(api)
    pipeline = scheduled(
        api, engine, client, "nightly", "30 2 * * *", schedule_timezone=zone, grace_minutes=20
    )
    answered = scheduled(
        api, engine, client, "answered", "30 2 * * *", schedule_timezone=zone, grace_minutes=20
    )
    run(api, answered, "success", tick)
    grace = 20 * MINUTE
    assert datetime(2026, 3, tick.day, 3, 0, tzinfo=ZoneInfo(zone)) == tick
    # Before that night's tick is due, the day before's is expected (and the
    # run at 03:00 local is in its window: it answers it).
    assert overdue(api, tick + grace - MICROSECOND) == [
        row(client, pipeline, "missed", day_before, day_before + grace)
    ]
    assert overdue(api, tick + grace) == [row(client, pipeline, "missed", tick, tick + grace)]


# Autumn: the hour before the change repeats. (zone, fixed-time job, first copy
# of its tick, second copy of that wall time, both copies of the half hours).
AUTUMN = {
    # 25 October 2026, 03:00 CEST -> 02:00 CET: 02:00-02:59 twice.
    "Europe/Berlin": (
        "30 2 * * *",
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 25, 1, 30),
        [utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 0)],
    ),
    # 1 November 2026, 02:00 EDT -> 01:00 EST: 01:00-01:59 twice.
    "America/New_York": (
        "30 1 * * *",
        utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 1, 6, 30),
        [utc(2026, 11, 1, 5, 0), utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 6, 0)],
    ),
}


@pytest.mark.parametrize("zone", AUTUMN)
def test_autumn_a_fixed_time_job_is_expected_once(
    api: TestClient, engine: Engine, zone: str
) -> None:
    cron, first, second, _ = AUTUMN[zone]
    client = make_client(api)
    fields = {"schedule_timezone": zone, "grace_minutes": 0}
    # Created after the day before's tick: only that night's tick can be expected.
    answered = scheduled(api, engine, client, "answered", cron, created_at=first - HOUR, **fields)
    silent = scheduled(api, engine, client, "silent", cron, created_at=first - HOUR, **fields)
    run(api, answered, "success", first)
    # In the second copy of the hour, before and at its wall time, the tick
    # expected is the first copy's: answered once, not expected again.
    for as_of in (second - 20 * MINUTE, second, second + 10 * MINUTE):
        assert overdue(api, as_of) == [row(client, silent, "missed", first, first)], as_of


@pytest.mark.parametrize("zone", AUTUMN)
def test_autumn_a_wildcard_hour_job_is_expected_in_both_copies(
    api: TestClient, engine: Engine, zone: str
) -> None:
    _, _, second, answered_ticks = AUTUMN[zone]
    client = make_client(api)
    pipeline = scheduled(
        api, engine, client, "halfhourly", "*/30 * * * *", schedule_timezone=zone,
        grace_minutes=0, created_at=answered_ticks[0] - HOUR,
    )  # fmt: skip
    runs = [run(api, pipeline, "success", tick) for tick in answered_ticks]
    assert overdue(api, second - MICROSECOND) == []
    # The same wall time again, an hour later: expected again, and missed.
    assert overdue(api, second) == [row(client, pipeline, "missed", second, second, last=runs[-1])]


# --- filters, formats, order --------------------------------------------------------------


def _filter_fixture(api: TestClient, engine: Engine) -> dict[str, dict[str, Any]]:
    acme, globex = make_client(api, "Acme"), make_client(api, "Globex")
    return {
        "acme_airflow": scheduled(api, engine, acme, "acme_airflow"),
        "acme_dbt": scheduled(api, engine, acme, "acme_dbt", platform="dbt_cloud"),
        "globex_airflow": scheduled(api, engine, globex, "globex_airflow"),
        "acme": acme,
        "globex": globex,
    }


def test_client_and_platform_filters(api: TestClient, engine: Engine) -> None:
    made = _filter_fixture(api, engine)
    as_of = T + HOUR
    everything = {"acme_airflow", "acme_dbt", "globex_airflow"}
    assert set(states(api, as_of)) == everything
    assert set(states(api, as_of, client_id=made["acme"]["id"])) == {"acme_airflow", "acme_dbt"}
    assert set(states(api, as_of, platform="airflow")) == {"acme_airflow", "globex_airflow"}
    both = states(api, as_of, client_id=made["globex"]["id"], platform="airflow")
    assert set(both) == {"globex_airflow"}
    assert states(api, as_of, platform="prefect") == {}
    assert states(api, as_of, client_id="424242") == {}


def test_csv_has_the_same_rows_as_json(api: TestClient, engine: Engine) -> None:
    made = _filter_fixture(api, engine)
    late = scheduled(api, engine, made["acme"], "late", deadline_minutes=5)
    run(api, late, "running", T)
    params = {"as_of": iso(T + HOUR)}
    items = ok(api.get(f"{API}/reports/overdue-pipelines", params=params))["items"]
    assert {item["state"] for item in items} == {"missed", "late"}
    response = api.get(f"{API}/reports/overdue-pipelines", params={**params, "format": "csv"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert 'filename="overdue-pipelines.csv"' in response.headers["content-disposition"]
    lines = list(csv.reader(io.StringIO(response.text)))
    assert lines[0] == list(OverdueRow.model_fields)
    assert lines[1:] == [["" if v is None else str(v) for v in item.values()] for item in items]


def test_csv_of_no_overdue_pipeline_is_its_header(api: TestClient) -> None:
    response = api.get(f"{API}/reports/overdue-pipelines", params={"format": "csv"})
    assert response.text == ",".join(OverdueRow.model_fields) + "\r\n"


def test_rows_are_ordered_by_due_by_then_pipeline_id(api: TestClient, engine: Engine) -> None:
    client = make_client(api)
    # Created in this order, due in another: c (T + 10), a and d (T + 45), b (T + 60, late).
    a = scheduled(api, engine, client, "a", grace_minutes=45)
    b = scheduled(api, engine, client, "b", "0 5 * * *", grace_minutes=5, deadline_minutes=120)
    scheduled(api, engine, client, "c", grace_minutes=10)
    d = scheduled(api, engine, client, "d", grace_minutes=45)
    run(api, b, "running", utc(2026, 3, 10, 5, 0))
    rows = overdue(api, T + 3 * HOUR)
    assert [(r["pipeline_name"], r["state"], r["due_by"]) for r in rows] == [
        ("c", "missed", iso(T + 10 * MINUTE)),
        ("a", "missed", iso(T + 45 * MINUTE)),
        ("d", "missed", iso(T + 45 * MINUTE)),
        ("b", "late", iso(T + HOUR)),
    ]
    assert int(a["id"]) < int(d["id"]), "equal due_by: by pipeline id"


def test_the_last_run_is_the_latest_by_the_ordering_rule_at_or_before_as_of(
    api: TestClient, engine: Engine
) -> None:
    client = make_client(api)
    pipeline = scheduled(api, engine, client, "p")
    as_of = T + HOUR
    started = run(api, pipeline, "failed", T - 3 * HOUR, T - 2 * HOUR)
    # A later event time without a start sorts after every started run.
    make_run(api, pipeline, "success", finished_at=iso(T - HOUR))
    run(api, pipeline, "success", as_of + MINUTE)  # after as_of: not yet
    assert overdue(api, as_of) == [row(client, pipeline, "missed", T, T + GRACE, last=started)]
    at = run(api, pipeline, "queued", as_of - 2 * MINUTE)
    assert overdue(api, as_of) == [], "a run in the window answers the tick"
    assert at["status"] == "queued"


@pytest.mark.parametrize(
    ("params", "fields"),
    [
        ({"include_inactive": "true"}, ["include_inactive"]),
        ({"platform": "Air Flow"}, ["platform"]),
        ({"client_id": "acme"}, ["client_id"]),
        ({"as_of": "1969-12-31T23:59:59Z"}, ["as_of"]),
        ({"format": "xml"}, ["format"]),
    ],
)
def test_bad_parameters_are_a_422_on_the_named_field(
    api: TestClient, params: dict[str, str], fields: list[str]
) -> None:
    response = api.get(f"{API}/reports/overdue-pipelines", params=params)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["field"] for e in response.json()["errors"]] == fields
    if fields == ["include_inactive"]:
        assert "active pipelines of active clients only" in response.text
    assert ok(api.get(f"{API}/reports/overdue-pipelines", params={"include_inactive": "false"}))


# --- chm status -----------------------------------------------------------------------


@pytest.fixture
def chm(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("CHM_DATABASE_URL", db_url)
    monkeypatch.delenv("CHM_CONFIG", raising=False)
    monkeypatch.delenv("COLUMNS", raising=False)
    get_settings.cache_clear()

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(app, list(args))

    yield invoke
    get_settings.cache_clear()


def test_the_status_board_lists_the_overdue_pipelines(
    api: TestClient, engine: Engine, chm: Any
) -> None:
    made = _filter_fixture(api, engine)
    late = scheduled(api, engine, made["globex"], "nightly_late", deadline_minutes=5)
    run(api, late, "running", T)
    as_of = T + HOUR
    result = chm("status", "--as-of", iso(as_of), "--json")
    assert result.exit_code == 0, result.output
    board = json.loads(result.stdout)
    assert board["overdue"] == overdue(api, as_of)
    assert len(board["overdue"]) == 4
    keys = list(board)
    assert keys.index("failing_now") < keys.index("overdue") < keys.index("stuck_runs")

    one = json.loads(chm("status", "--client", "acme", "--as-of", iso(as_of), "--json").stdout)
    assert one["overdue"] == overdue(api, as_of, client_id=made["acme"]["id"])

    drawn = chm("status", "--as-of", iso(as_of))
    assert drawn.exit_code == 0, drawn.output
    text = drawn.stdout
    assert max(len(line) for line in text.splitlines()) <= 80
    lines = text.splitlines()
    start = next(
        i for i, line in enumerate(lines) if line.startswith("Overdue scheduled pipelines")
    )
    assert lines[start] == "Overdue scheduled pipelines (missed or late): 4"
    section = "\n".join(lines[start : start + 12])
    for expected in ("acme_dbt", "missed", "late", "2026-03-10 06:00", "running, 1h 00m ago"):
        assert expected in section, section
    quiet = chm("status", "--as-of", iso(CREATED + HOUR)).stdout
    assert "Overdue scheduled pipelines (missed or late): none" in quiet


# --- an independent oracle over seeded random data ----------------------------------------

PLATFORMS = ("airflow", "databricks", "dbt_cloud", "prefect", "dagster")
SCHEDULES = (
    ("*/15 * * * *", "UTC"),
    ("0 * * * *", "Europe/Berlin"),
    ("30 2 * * *", "Europe/Berlin"),
    ("30 2 * * *", "America/New_York"),
    ("30 1 * * *", "America/New_York"),
    ("*/30 * * * *", "Europe/Berlin"),
    ("*/30 * * * *", "America/New_York"),
    ("0 6 * * MON-FRI", "UTC"),
    ("15 9 * * *", "Asia/Tokyo"),
    ("0 */4 * * *", "America/New_York"),
    ("45 23 * * SUN", "Europe/Berlin"),
)
GRACES = (0, 5, 30, 90)
DEADLINES = (None, None, 15, 60, 240)
STATUSES = ("success",) * 6 + ("failed", "failed", "running", "running", "queued", "cancelled")
OPEN = ("queued", "running")
LOOKBACK = timedelta(days=10)


@dataclass(frozen=True)
class OClient:
    id: int
    name: str
    is_active: bool


@dataclass(frozen=True)
class OPipeline:
    id: int
    client_id: int
    name: str
    platform: str
    is_active: bool
    schedule: str | None
    timezone: str
    grace: int
    deadline: int | None
    created_at: datetime
    set_at: datetime | None


@dataclass(frozen=True)
class ORun:
    id: int
    pipeline_id: int
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime

    @property
    def event_at(self) -> datetime:
        return self.started_at or self.finished_at or self.created_at


@dataclass
class Data:
    start: datetime
    end: datetime
    clients: dict[int, OClient]
    pipelines: list[OPipeline]
    runs: list[ORun] = field(default_factory=list)
    ticks: dict[int, list[datetime]] = field(default_factory=dict)


def oracle_ticks(cron: str, timezone: str, start: datetime, end: datetime) -> list[datetime]:
    """Every tick in ``(start, end]``, in UTC: cronsim's forward walk, read in the zone."""
    ticks = []
    for tick in CronSim(cron, start.astimezone(ZoneInfo(timezone))):
        value = tick.astimezone(UTC)
        if value > end:
            return ticks
        ticks.append(value)
    return ticks  # pragma: no cover


def build_data(seed: int, start: datetime, end: datetime) -> Data:
    """Pipelines with random schedules and runs around their ticks in [start, end],
    plus two that are always overdue (one missed, one late)."""
    rng = random.Random(seed)
    clients = {
        1: OClient(1, "Acme", True),
        2: OClient(2, "Globex", True),
        3: OClient(3, "Initech", False),
        4: OClient(4, "bluebird", True),
    }
    pipelines = []
    for pipeline_id in range(1, 61):
        schedule, timezone = rng.choice(SCHEDULES) if rng.random() < 0.85 else (None, "UTC")
        created = start - rng.choice((LOOKBACK, DAY, 3 * HOUR)) + rng.randrange(7200) * SECOND
        set_at = None if rng.random() < 0.6 else created + rng.randrange(0, 3 * 24 * 60) * MINUTE
        pipelines.append(
            OPipeline(
                id=pipeline_id,
                client_id=rng.choice(list(clients)),
                name=f"pipeline_{pipeline_id:02d}",
                platform=rng.choice(PLATFORMS),
                is_active=rng.random() < 0.9,
                schedule=schedule,
                timezone=timezone,
                grace=rng.choice(GRACES),
                deadline=rng.choice(DEADLINES),
                created_at=created,
                set_at=set_at,
            )
        )
    # Always overdue at any as_of past start + 1 h: no runs at all, and a
    # run still running at every tick with a one-minute deadline.
    pipelines.append(
        OPipeline(61, 1, "always_missed", "airflow", True, "*/15 * * * *", "UTC", 5, None,
                  start - LOOKBACK, None)
    )  # fmt: skip
    pipelines.append(
        OPipeline(62, 2, "always_late", "prefect", True, "*/15 * * * *", "UTC", 20, 1,
                  start - LOOKBACK, None)
    )  # fmt: skip
    data = Data(start, end, clients, pipelines)
    runs: list[ORun] = []

    def add(pipeline: OPipeline, status: str, event: datetime, shape: int) -> None:
        started: datetime | None = event
        finished = None if status in OPEN else event + rng.randrange(1, 7200) * SECOND
        if shape == 0 and finished is not None:  # finished only: the event time is its finish
            started, finished = None, event
        created = event if started is None and finished is None else event - MINUTE
        runs.append(ORun(len(runs) + 1, pipeline.id, status, started, finished, created))

    for pipeline in pipelines:
        if pipeline.schedule is None:
            for _ in range(rng.randrange(0, 4)):
                event = start + rng.randrange(0, int((end - start) / MINUTE)) * MINUTE
                add(pipeline, rng.choice(STATUSES), event, rng.randrange(10))
            continue
        ticks = oracle_ticks(pipeline.schedule, pipeline.timezone, start - LOOKBACK - DAY, end)
        data.ticks[pipeline.id] = ticks
        if pipeline.id == 61:
            continue
        grace = pipeline.grace * MINUTE
        for tick in ticks:
            if pipeline.id == 62:
                add(pipeline, "running", tick, 1)
                continue
            if tick < start - DAY or rng.random() < 0.3:
                continue
            # Around the window's edges, exactly on them, or anywhere near.
            offset = rng.choice(
                (-grace, -grace - MICROSECOND, -grace + MICROSECOND, ZERO, grace, grace + MINUTE,
                 rng.randrange(-int(grace / MINUTE) - 10, int(grace / MINUTE) + 90) * MINUTE)
            )  # fmt: skip
            add(pipeline, rng.choice(STATUSES), tick + offset, rng.randrange(10))
            if rng.random() < 0.1:  # a rerun with the same start
                add(pipeline, rng.choice(STATUSES), tick + offset, 1)
    data.runs = runs
    return data


def _ordering_key(r: ORun) -> tuple[datetime, datetime, int]:
    floor = datetime.min.replace(tzinfo=UTC)
    return (r.started_at or floor, r.finished_at or floor, r.id)


def oracle(
    data: Data, as_of: datetime, client_id: int | None = None, platform: str | None = None
) -> list[dict[str, Any]]:
    """The report's rows by the contract's words, from the forward walk's ticks."""
    rows = []
    for p in data.pipelines:
        client = data.clients[p.client_id]
        if p.schedule is None or not (p.is_active and client.is_active):
            continue
        if (client_id is not None and p.client_id != client_id) or (
            platform is not None and p.platform != platform
        ):
            continue
        grace = p.grace * MINUTE
        ticks = data.ticks[p.id]
        due = bisect.bisect_right(ticks, as_of - grace)
        assert due > 0 and as_of <= data.end, "the oracle's ticks cover every as_of asked"
        tick = ticks[due - 1]
        if tick < max(p.created_at, p.set_at or p.created_at):
            continue
        runs = [r for r in data.runs if r.pipeline_id == p.id]
        window = [r for r in runs if tick - grace <= r.event_at <= as_of]
        if not window:
            state, due_by = "missed", tick + grace
        elif (
            p.deadline is not None
            and tick + p.deadline * MINUTE <= as_of
            and any(r.status in OPEN and r.event_at <= tick + p.deadline * MINUTE for r in window)
        ):
            state, due_by = "late", tick + p.deadline * MINUTE
        else:
            continue
        before = [r for r in runs if r.event_at <= as_of]
        last = max(before, key=_ordering_key) if before else None
        rows.append(
            {
                "pipeline_id": str(p.id),
                "pipeline_name": p.name,
                "client_id": str(client.id),
                "client_name": client.name,
                "platform": p.platform,
                "schedule": p.schedule,
                "schedule_timezone": p.timezone,
                "state": state,
                "expected_at": iso(tick),
                "due_by": iso(due_by),
                "last_run_at": None if last is None else iso(last.event_at),
                "last_status": None if last is None else last.status,
            }
        )
    return sorted(rows, key=lambda r: (r["due_by"], int(r["pipeline_id"])))


def load(engine: Engine, data: Data, ticks_at: datetime) -> None:
    """The data as stored rows (ids and times as given), ticks stored at ``ticks_at``."""
    with engine.begin() as conn:
        conn.execute(
            sa.insert(Client.__table__),  # type: ignore[arg-type]
            [
                {"id": c.id, "name": c.name, "name_key": c.name.casefold(),
                 "is_active": c.is_active, "created_at": data.start - 30 * DAY,
                 "updated_at": data.start - 30 * DAY}
                for c in data.clients.values()
            ],
        )  # fmt: skip
        conn.execute(
            sa.insert(Pipeline.__table__),  # type: ignore[arg-type]
            [
                {"id": p.id, "client_id": p.client_id, "name": p.name, "name_key": p.name,
                 "platform": p.platform, "pipeline_type": "batch", "environment": "prod",
                 "is_active": p.is_active, "schedule": p.schedule,
                 "schedule_timezone": p.timezone, "grace_minutes": p.grace,
                 "deadline_minutes": p.deadline,
                 "schedule_source": None if p.schedule is None else "user",
                 "schedule_set_at": p.set_at, "created_at": p.created_at,
                 "updated_at": p.created_at}
                for p in data.pipelines
            ],
        )  # fmt: skip
        conn.execute(
            sa.insert(Run.__table__),  # type: ignore[arg-type]
            [
                {"id": r.id, "pipeline_id": r.pipeline_id, "external_run_id": f"o-{r.id}",
                 "status": r.status, "started_at": r.started_at, "finished_at": r.finished_at,
                 "duration_from_source": False, "metrics": {}, "created_at": r.created_at,
                 "updated_at": r.created_at}
                for r in data.runs
            ],
        )  # fmt: skip
    with Session(engine) as session, session.begin():
        for pipeline in session.scalars(sa.select(Pipeline).where(Pipeline.schedule.is_not(None))):
            rewrite_ticks(session, pipeline, ticks_at)


# Seasons: each a few days around daylight-saving changes.
SEASONS = {
    "new-york-spring": (utc(2026, 3, 6), utc(2026, 3, 10)),
    "berlin-spring": (utc(2026, 3, 27), utc(2026, 3, 31)),
    "autumn-both": (utc(2026, 10, 23), utc(2026, 11, 3)),
}
DST_INSTANTS = {
    "new-york-spring": [utc(2026, 3, 8, 7, 0), utc(2026, 3, 8, 7, 5), utc(2026, 3, 8, 8, 30)],
    "berlin-spring": [utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 30), utc(2026, 3, 29, 2, 0)],
    "autumn-both": [
        utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 0), utc(2026, 10, 25, 1, 10),
        utc(2026, 10, 25, 1, 30), utc(2026, 10, 25, 2, 0), utc(2026, 11, 1, 5, 30),
        utc(2026, 11, 1, 6, 10), utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 7, 0),
    ],
}  # fmt: skip


def _as_ofs(data: Data, season: str, rng: random.Random) -> list[datetime]:
    """DST instants, random instants, and the boundaries of random pipelines'
    windows exactly (tick + grace, tick + deadline, and a microsecond before)."""
    first, last = data.start + 2 * HOUR, data.end - 2 * HOUR
    span = int((last - first).total_seconds())
    moments = list(DST_INSTANTS[season])
    moments += [first + timedelta(seconds=rng.randrange(span)) for _ in range(8)]
    scheduled_pipelines = [p for p in data.pipelines if p.schedule is not None]
    for p in rng.sample(scheduled_pipelines, 6):
        ticks = [t for t in data.ticks[p.id] if first <= t <= last - DAY]
        tick = rng.choice(ticks)
        for edge in (p.grace, p.deadline):
            if edge is not None:
                moments += [tick + edge * MINUTE, tick + edge * MINUTE - MICROSECOND]
    return moments


@pytest.mark.parametrize("season", SEASONS)
def test_the_report_equals_the_oracle_on_seeded_random_data(
    api: TestClient, engine: Engine, season: str
) -> None:
    start, end = SEASONS[season]
    data = build_data(1515, start, end)
    load(engine, data, end)
    rng = random.Random(season)
    kinds: set[str] = set()
    for as_of in _as_ofs(data, season, rng):
        expected = oracle(data, as_of)
        assert overdue(api, as_of) == expected, as_of
        kinds |= {r["state"] for r in expected}
        client_id, platform = rng.choice((1, 2, 4)), rng.choice(PLATFORMS)
        assert overdue(api, as_of, client_id=str(client_id)) == oracle(data, as_of, client_id)
        assert overdue(api, as_of, platform=platform) == oracle(data, as_of, platform=platform)
        assert overdue(api, as_of, client_id=str(client_id), platform=platform) == oracle(
            data, as_of, client_id, platform
        )
    assert kinds == {"missed", "late"}


# --- the BI view -----------------------------------------------------------------------

_SQLITE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")


def _api_form(view_row: dict[str, Any]) -> dict[str, Any]:
    values = {
        key: datetime.fromisoformat(value).replace(tzinfo=UTC)
        if isinstance(value, str) and _SQLITE_TIME.match(value)
        else value
        for key, value in view_row.items()
    }
    return OverdueRow.model_validate(values).model_dump(mode="json")


def test_the_view_answers_what_the_api_answers_at_the_databases_now(
    api: TestClient, engine: Engine
) -> None:
    now = datetime.now(UTC)
    data = build_data(2026, now - 3 * DAY, now + DAY)
    load(engine, data, now)
    with engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(sa.text("SELECT * FROM chm_overdue_pipelines"))
                .mappings()]  # fmt: skip
    assert len({str(r["as_of"]) for r in rows}) == 1
    value = rows[0]["as_of"]
    view_as_of = (
        datetime.fromisoformat(value).replace(tzinfo=UTC) if isinstance(value, str) else value
    )
    items = [_api_form(r) for r in rows]
    assert {"always_missed", "always_late"} <= {item["pipeline_name"] for item in items}
    assert items == overdue(api, view_as_of)
    assert items == oracle(data, view_as_of)


def test_the_reference_dataset_by_hand(ref: Any) -> None:
    """The reports' reference dataset (tests/reports/reference.py) at AS_OF."""
    from reference import AS_OF

    body = ok(ref.api.get(f"{API}/reports/overdue-pipelines", params={"as_of": iso(AS_OF)}))
    assert [
        (r["pipeline_name"], r["state"], r["expected_at"], r["due_by"], r["last_run_at"],
         r["last_status"])
        for r in body["items"]
    ] == [
        # Every minute, 3 hours' grace: the 09:00 tick; its run (started 10:00)
        # is still running past the 60-minute deadline.
        ("inventory_snap", "late", "2026-03-15T09:00:00Z", "2026-03-15T10:00:00Z",
         "2026-03-15T10:00:00Z", "running"),
        ("never_ran", "missed", "2026-03-15T11:45:00Z", "2026-03-15T11:50:00Z", None, None),
    ]  # fmt: skip
