"""The BI views: one definition with the API, applied by the migrations, read-only friendly."""

from __future__ import annotations

import csv
import io
import itertools
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import oracle
import pytest
import sqlalchemy as sa
from alembic import command
from reference import build_dataset
from sqlalchemy import Engine

from chm.core.migrate import MIGRATIONS_DIR, alembic_config, upgrade
from chm.reports.views import (
    BEGIN_MARKER,
    VIEWS,
    VIEWS_BY_NAME,
    ViewSpec,
    current_block,
    generated_block,
    view_sql,
)
from factories import API, make_client, make_pipeline, make_run, ok

_SQLITE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")
CLOCK_COLUMNS = ("as_of", "since", "until")


def test_the_latest_view_migration_holds_the_current_definitions() -> None:
    """Changing a report without a migration that re-creates the views fails here."""
    migrations = sorted(
        path
        for path in (MIGRATIONS_DIR / "versions").glob("*.py")
        if BEGIN_MARKER in path.read_text()
    )
    assert migrations, "no migration creates the views"
    latest = migrations[-1].read_text()
    assert current_block(latest) == generated_block(), (
        f"the views of {migrations[-1].name} differ from chm.reports: add a migration that "
        "re-creates them (python -m chm.reports.views block)"
    )


def test_a_migrated_database_holds_exactly_the_report_definitions(
    engine: Engine, backend: str
) -> None:
    with engine.begin() as conn:
        if backend == "sqlite":
            stored = dict(
                conn.execute(
                    sa.text("SELECT name, sql FROM sqlite_master WHERE type = 'view'")
                ).all()
            )
            assert stored == {
                view.name: f"CREATE VIEW {view.name} AS\n{view_sql(view, 'sqlite')}"
                for view in VIEWS
            }
            return
        names = conn.execute(
            sa.text("SELECT viewname FROM pg_views WHERE schemaname = 'public'")
        ).scalars()
        assert set(names) == set(VIEWS_BY_NAME)
        for view in VIEWS:
            # PostgreSQL keeps a normalized definition: compare it with the
            # normalized definition of the current statement.
            conn.exec_driver_sql(f"CREATE TEMP VIEW probe AS {view_sql(view, 'postgresql')}")
            stored, current = conn.execute(
                sa.text(
                    "SELECT pg_get_viewdef(:name ::regclass), pg_get_viewdef('probe'::regclass)"
                ),
                {"name": view.name},
            ).one()
            assert stored == current, view.name
            conn.exec_driver_sql("DROP VIEW probe")
            comments = dict(
                conn.execute(
                    sa.text(
                        "SELECT a.attname, col_description(a.attrelid, a.attnum) FROM pg_attribute a"
                        " WHERE a.attrelid = :name ::regclass AND a.attnum > 0"
                    ),
                    {"name": view.name},
                ).all()
            )
            assert comments == view.columns(), view.name


def _api_form(view: ViewSpec, row: dict[str, Any]) -> dict[str, Any]:
    """A view row as the API serves the same row (ids as strings, times RFC 3339)."""
    values = {
        key: datetime.fromisoformat(value).replace(tzinfo=UTC)
        if isinstance(value, str) and _SQLITE_TIME.match(value)
        else value
        for key, value in row.items()
    }
    return view.row_model.model_validate(values).model_dump(mode="json")


def _iso(value: Any) -> str:
    if isinstance(value, str):
        value = datetime.fromisoformat(value).replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


# The API request each view answers, given the view's own reference times.
def _api_request(view: ViewSpec, times: dict[str, str]) -> tuple[str, dict[str, Any]]:
    fixed: dict[str, tuple[str, dict[str, Any]]] = {
        "chm_failures_over_time_daily": (
            "failures-over-time",
            {"bucket": "day", "since": times.get("since"), "until": times.get("until")},
        ),
        "chm_latest_status": ("latest-status", {}),
        "chm_failures_by_client": ("failures-by-client", {}),
        "chm_flaky_pipelines": ("flaky-pipelines", {"days": 30, "limit": 500}),
        "chm_failure_rate_by_platform": ("failure-rate-by-platform", {}),
        "chm_run_durations": ("duration-distribution", {}),
        "chm_duration_summary": ("duration-distribution", {}),
        "chm_duration_histogram": ("duration-distribution", {}),
        "chm_status_changes": ("status-changes", {}),
        "chm_stuck_runs": ("stuck-runs", {"older_than_minutes": 360}),
        "chm_overdue_pipelines": ("overdue-pipelines", {}),
    }
    path, params = fixed[view.name]
    return path, {"as_of": times["as_of"], **params}


@pytest.mark.parametrize("view", VIEWS, ids=[view.name for view in VIEWS])
def test_each_view_answers_what_the_api_answers(ref_now: Any, view: ViewSpec) -> None:
    with ref_now.engine.connect() as conn:
        rows = [dict(row) for row in conn.execute(sa.text(f"SELECT * FROM {view.name}")).mappings()]
    assert rows, "the dataset anchored at now gives every view rows to compare"
    times = {key: _iso(rows[0][key]) for key in CLOCK_COLUMNS if key in rows[0]}
    assert all(_iso(row["as_of"]) == times["as_of"] for row in rows)
    path, params = _api_request(view, times)
    body = ok(ref_now.api.get(f"{API}/reports/{path}", params=params))
    # The view's reference times are the window the API used.
    for key in ("since", "until"):
        if key in times:
            assert body[key] == times[key], key
    items = [_api_form(view, row) for row in rows]
    if view.name == "chm_duration_summary":
        assert items == [{k: body[k] for k in ("count", "p50", "p90", "p95", "p99", "max")}]
    elif view.name == "chm_run_durations":
        # No API lists these runs one by one: the distribution is over exactly them.
        data, as_of = ref_now.data, datetime.fromisoformat(times["as_of"])
        durations = oracle.durations(data, as_of - timedelta(days=7), as_of)
        assert (len(items), max(i["duration_seconds"] for i in items)) == (
            body["count"],
            body["max"],
        )
        assert durations["count"] == body["count"]
    else:
        assert items == body["items"]


# The histogram's bins (gt_seconds, le_seconds), the open one last.
_EDGES = [None, 1, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 86400, None]
HISTOGRAM_BINS = list(itertools.pairwise(_EDGES))


def _histogram_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [
            dict(row)
            for row in conn.execute(sa.text("SELECT * FROM chm_duration_histogram")).mappings()
        ]


def test_the_histogram_view_of_an_empty_database_has_every_bin_at_zero(engine: Engine) -> None:
    rows = _histogram_rows(engine)
    assert [(r["gt_seconds"], r["le_seconds"], r["count"]) for r in rows] == [
        (lower, upper, 0) for lower, upper in HISTOGRAM_BINS
    ]


def test_the_histogram_view_the_json_and_the_csv_agree_on_empty_bins(api, engine: Engine) -> None:
    pipeline = make_pipeline(api, make_client(api))
    started = datetime.now(UTC) - timedelta(hours=2)
    for seconds in (0.5, 4000.0, 4000.0):
        finished = started + timedelta(seconds=seconds)
        make_run(api, pipeline, started_at=_iso(started), finished_at=_iso(finished),
                 duration_seconds=seconds)  # fmt: skip
    rows = _histogram_rows(engine)
    counts = [0] * len(HISTOGRAM_BINS)
    counts[0], counts[11] = 1, 2  # (0, 1] and (3600, 7200]: a gap of ten empty bins between
    assert [(r["gt_seconds"], r["le_seconds"], r["count"]) for r in rows] == [
        (lower, upper, n) for (lower, upper), n in zip(HISTOGRAM_BINS, counts, strict=True)
    ]
    params = {"as_of": _iso(rows[0]["as_of"])}
    body = ok(api.get(f"{API}/reports/duration-distribution", params=params))
    view = VIEWS_BY_NAME["chm_duration_histogram"]
    assert body["items"] == [_api_form(view, row) for row in rows]
    assert body["items"][-1] == {"gt_seconds": 86400, "le_seconds": None, "count": 0}
    as_csv = api.get(f"{API}/reports/duration-distribution", params={**params, "format": "csv"})
    assert list(csv.reader(io.StringIO(as_csv.text)))[1:] == [
        ["" if r["gt_seconds"] is None else str(r["gt_seconds"]),
         "" if r["le_seconds"] is None else str(r["le_seconds"]), str(r["count"])]
        for r in rows
    ]  # fmt: skip


def test_downgrading_migration_0005_restores_the_histogram_of_non_empty_bins(
    engine: Engine,
) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0004")
    assert _histogram_rows(engine) == []  # the old view: empty bins left out
    upgrade(engine)
    assert len(_histogram_rows(engine)) == len(HISTOGRAM_BINS)


@pytest.mark.postgres_only
def test_migration_0005_keeps_the_grants_on_the_histogram_view(engine: Engine) -> None:
    """PostgreSQL replaces the view in place: the BI role's SELECT survives."""
    role = f"chm_bi_{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} NOLOGIN")
        conn.exec_driver_sql(f"GRANT SELECT ON chm_duration_histogram TO {role}")
    try:
        config = alembic_config()
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0004")
        upgrade(engine)
        with engine.connect() as conn:
            granted = conn.execute(
                sa.text("SELECT has_table_privilege(:role, 'chm_duration_histogram', 'SELECT')"),
                {"role": role},
            ).scalar_one()
        assert granted is True
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")


@pytest.mark.postgres_only
def test_a_read_only_role_reads_the_views_and_nothing_else(ref_now: Any) -> None:
    if ref_now.backend != "postgresql":
        pytest.skip("roles are PostgreSQL's")
    role = f"chm_bi_{uuid.uuid4().hex[:8]}"
    views = ", ".join(view.name for view in VIEWS)
    with ref_now.engine.begin() as conn:
        # The statements of docs/reports.md (less the password and LOGIN).
        conn.exec_driver_sql(f"CREATE ROLE {role} NOLOGIN")
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {role}")
        conn.exec_driver_sql(f"GRANT SELECT ON {views} TO {role}")
    try:
        with ref_now.engine.begin() as conn:
            conn.exec_driver_sql(f"SET LOCAL ROLE {role}")
            assert conn.execute(sa.text("SELECT count(*) FROM chm_latest_status")).scalar_one() > 0
        with ref_now.engine.begin() as conn:
            conn.exec_driver_sql(f"SET LOCAL ROLE {role}")
            denied = conn.begin_nested()
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.execute(sa.text("SELECT count(*) FROM runs"))
            denied.rollback()
    finally:
        with ref_now.engine.begin() as conn:
            conn.exec_driver_sql(f"DROP OWNED BY {role}")
            conn.exec_driver_sql(f"DROP ROLE {role}")


def test_the_reference_dataset_has_what_the_issue_asks_for() -> None:
    data = build_dataset()
    active_clients = [c for c in data.clients if c.is_active]
    assert len(data.clients) >= 3 and len(active_clients) < len(data.clients)
    assert len(data.pipelines) >= 12 and len({p.platform for p in data.pipelines}) >= 4
    assert any(not p.is_active for p in data.pipelines)
    span = max(r.event_at for r in data.runs) - min(r.event_at for r in data.runs)
    assert span >= timedelta(days=35)
    assert any(r.started_at is None and r.finished_at is None for r in data.runs)
    assert any(r.started_at is None and r.finished_at is not None for r in data.runs)
    starts = [r.started_at for r in data.runs if r.started_at is not None]
    assert len(starts) > len(set(starts))
    assert any(r.status == "unknown" for r in data.runs)
    assert any(r.status in ("queued", "running") for r in data.runs)
