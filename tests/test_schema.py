"""Migrations are the schema: they agree with the models, carry the database
constraints, and serve the ordering rule from an index on both databases."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine

from chm.core.migrate import upgrade
from chm.models import Base, Run
from chm.runs.ordering import KEYSET, ORDER_BY

# Expression indexes are declared in the migrations only (see chm.runs.ordering).
EXPRESSION_INDEXES = {"ix_runs_pipeline_order", "ix_runs_order"}


def _include(obj, name, type_, reflected, compare_to) -> bool:  # type: ignore[no-untyped-def]
    return not (type_ == "index" and name in EXPRESSION_INDEXES)


@pytest.mark.filterwarnings("ignore:Skipped unsupported reflection of expression-based index")
def test_models_and_migrations_agree(engine: Engine) -> None:
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"include_object": _include, "compare_type": True}
        )
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_migrations_reach_head_and_are_idempotent(engine: Engine) -> None:
    upgrade(engine)  # already at head: a second upgrade changes nothing
    with engine.connect() as conn:
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
    from alembic.script import ScriptDirectory

    from chm.core.migrate import alembic_config

    assert version == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_ordering_indexes_exist_in_query_order(engine: Engine, backend: str) -> None:
    with engine.connect() as conn:
        if backend == "postgresql":
            rows = conn.execute(
                sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'runs'")
            ).all()
        else:
            rows = conn.execute(
                sa.text(
                    "SELECT name, sql FROM sqlite_master WHERE type='index' AND tbl_name='runs'"
                )
            ).all()
    definitions = {name: sql for name, sql in rows}
    pipeline_order = definitions["ix_runs_pipeline_order"].lower()
    assert pipeline_order.index("pipeline_id") < pipeline_order.index("started_at")
    assert pipeline_order.index("started_at") < pipeline_order.index("finished_at")
    assert pipeline_order.count(" desc") == 3
    assert "ix_runs_order" in definitions


def _seed_many_runs(engine: Engine, backend: str, n: int = 6000, pipelines: int = 20) -> None:
    """Pipelines with many runs (some without timestamps), then statistics."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO clients (id, name, name_key, is_active, created_at, updated_at)"
                " VALUES (1, 'A', 'a', true, :t, :t)"
            ),
            {"t": now.replace(tzinfo=None) if backend == "sqlite" else now},
        )
        for pid in range(1, pipelines + 1):
            conn.execute(
                sa.text(
                    "INSERT INTO pipelines (id, client_id, name, name_key, platform, pipeline_type,"
                    " environment, is_active, created_at, updated_at)"
                    " VALUES (:id, 1, :n, :n, 'airflow', 'batch', 'prod', true, :t, :t)"
                ),
                {
                    "id": pid,
                    "n": f"p{pid}",
                    "t": now.replace(tzinfo=None) if backend == "sqlite" else now,
                },
            )
        rows = []
        for i in range(n):
            started = None if i % 50 == 0 else now - timedelta(minutes=i)
            rows.append(
                {
                    "pipeline_id": 1 + (i % pipelines),
                    "external_run_id": f"r{i}",
                    "status": "success",
                    "started_at": started,
                    "finished_at": None if started is None else started + timedelta(seconds=30),
                    "duration_from_source": False,
                    "metrics": {},
                    "created_at": now,
                    "updated_at": now,
                }
            )
        conn.execute(sa.insert(Run.__table__), rows)  # type: ignore[arg-type]
        conn.execute(sa.text("ANALYZE"))


def _plan(engine: Engine, backend: str, query: sa.Select) -> str:  # type: ignore[type-arg]
    compiled = query.compile(engine, compile_kwargs={"literal_binds": True})
    prefix = "EXPLAIN QUERY PLAN " if backend == "sqlite" else "EXPLAIN "
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(prefix + str(compiled)).all()
    return "\n".join(str(r[-1]) for r in rows)


def test_latest_run_and_history_pages_are_index_driven(engine: Engine, backend: str) -> None:
    _seed_many_runs(engine, backend)
    latest = sa.select(Run).where(Run.pipeline_id == 1).order_by(*ORDER_BY).limit(1)
    deep_page = (
        sa.select(Run)
        .where(
            Run.pipeline_id == 1,
            KEYSET.after(
                [
                    datetime(2025, 12, 31, tzinfo=UTC),
                    datetime(2025, 12, 31, 0, 0, 30, tzinfo=UTC),
                    1500,
                ],
            ),
        )
        .order_by(*ORDER_BY)
        .limit(51)
    )
    for query in (latest, deep_page):
        plan = _plan(engine, backend, query)
        assert "ix_runs_pipeline_order" in plan, plan
        # The index order is the query order: no sort step.
        assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan
    # The cursor seeks into the index instead of filtering from its start.
    deep_plan = _plan(engine, backend, deep_page)
    if backend == "postgresql":
        assert "Index Cond" in deep_plan and "ROW(" in deep_plan, deep_plan
    else:
        assert "pipeline_id=? AND <expr><?" in deep_plan, deep_plan


def test_a_page_after_a_run_without_start_time_seeks_the_pipelines_index(
    engine: Engine, backend: str
) -> None:
    """The last pages of a history follow runs without a start time: the cursor's
    first key is the floor. They seek the pipeline's index (on PostgreSQL with
    equality on the floor), never the table-wide order, which PostgreSQL took
    when it estimated the row comparison ``< (-infinity, ...)`` as matching no
    row, and then read every pipeline's runs without a start time."""
    _seed_many_runs(engine, backend)
    floor_page = (
        sa.select(Run)
        .where(Run.pipeline_id == 1, KEYSET.after([None, None, 5000]))
        .order_by(*ORDER_BY)
        .limit(51)
    )
    plan = _plan(engine, backend, floor_page)
    assert "ix_runs_pipeline_order" in plan and "ix_runs_order " not in plan + " ", plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan
    if backend == "postgresql":
        assert "Index Cond" in plan and "'-infinity'" in plan.split("Index Cond")[1], plan
    else:
        assert "pipeline_id=? AND <expr><?" in plan, plan


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        (
            "INSERT INTO runs (pipeline_id, external_run_id, status, duration_from_source, metrics,"
            " created_at, updated_at) VALUES (1, 'x', 'exploded', false, '{}', :t, :t)",
            "status",
        ),
        (
            "INSERT INTO clients (name, name_key, is_active, created_at, updated_at)"
            " VALUES ('b', 'a', true, :t, :t)",
            "name_key",
        ),
        (
            "INSERT INTO pipelines (client_id, name, name_key, platform, pipeline_type, environment,"
            " is_active, created_at, updated_at) VALUES (999, 'p', 'p', 'x', 'x', 'x', true, :t, :t)",
            "foreign key",
        ),
        (
            "INSERT INTO alert_rules (rule_type, destination, is_enabled, created_at, updated_at)"
            " VALUES ('on_failure', 'd', true, :t, :t)",
            "scope",
        ),
        (
            "INSERT INTO alert_rules (rule_type, client_id, destination, is_enabled, created_at,"
            " updated_at) VALUES ('failures_in_window', 1, 'd', true, :t, :t)",
            "window",
        ),
    ],
)
def test_constraints_live_in_the_database(
    engine: Engine, backend: str, statement: str, constraint: str
) -> None:
    t = datetime(2026, 1, 1) if backend == "sqlite" else datetime(2026, 1, 1, tzinfo=UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO clients (id, name, name_key, is_active, created_at, updated_at)"
                " VALUES (1, 'A', 'a', true, :t, :t)"
            ),
            {"t": t},
        )
        conn.execute(
            sa.text(
                "INSERT INTO pipelines (id, client_id, name, name_key, platform, pipeline_type,"
                " environment, is_active, created_at, updated_at)"
                " VALUES (1, 1, 'p', 'p', 'x', 'x', 'x', true, :t, :t)"
            ),
            {"t": t},
        )
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.text(statement), {"t": t})


def test_timestamps_are_stored_as_utc(engine: Engine, backend: str) -> None:
    from zoneinfo import ZoneInfo

    from chm.core.types import UTCDateTime

    table = sa.table("probe", sa.column("t", UTCDateTime()))
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE probe (t TIMESTAMP WITH TIME ZONE)"))
        local = datetime(2026, 3, 1, 12, 0, tzinfo=ZoneInfo("Europe/Paris"))
        conn.execute(sa.insert(table).values(t=local))
        stored = conn.execute(sa.select(table.c.t)).scalar_one()
        assert stored == local and stored.tzinfo == UTC and stored.hour == 11
        with pytest.raises(sa.exc.StatementError):
            conn.execute(sa.insert(table).values(t=datetime(2026, 3, 1, 12, 0)))


def test_ordering_keys_are_cached_with_their_column() -> None:
    from chm.core.types import NullsLowKey

    started = sa.select(Run.id).order_by(NullsLowKey(Run.__table__.c.started_at))
    finished = sa.select(Run.id).order_by(NullsLowKey(Run.__table__.c.finished_at))
    started_key, finished_key = started._generate_cache_key(), finished._generate_cache_key()
    assert started_key is not None and finished_key is not None
    assert started_key != finished_key
    assert sa.select(Run.id).order_by(*ORDER_BY)._generate_cache_key() is not None


def test_the_database_records_its_environment_and_refuses_others(engine: Engine) -> None:
    from chm.core.environment import (
        EnvironmentMismatch,
        recorded_environment,
        verify_database_environment,
    )
    from chm.core.settings import Environment

    with engine.connect() as conn:
        assert recorded_environment(conn) == "development"
    verify_database_environment(engine, Environment.development)
    with pytest.raises(EnvironmentMismatch, match="belongs to the development environment"):
        verify_database_environment(engine, Environment.production)
    with pytest.raises(EnvironmentMismatch):
        upgrade(engine, environment=Environment.production)
    with engine.connect() as conn:
        assert recorded_environment(conn) == "development"


def test_the_environment_record_is_described_as_the_settings_table_is() -> None:
    """chm.core.environment reads chm_settings through its own Core description
    (core imports no model): each column it names is the model's, same type."""
    from chm.core.environment import _SETTINGS
    from chm.models import DatabaseSetting

    table = DatabaseSetting.__table__
    assert _SETTINGS.name == table.name
    for column in _SETTINGS.columns:
        assert column.name in table.c, column.name
        assert type(column.type) is type(table.c[column.name].type), column.name
        assert repr(column.type) == repr(table.c[column.name].type), column.name
