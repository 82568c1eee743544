"""Where SQLite and PostgreSQL differ lives in one place (chm.core.dialects, and
the stores that extend it): one object per database, chosen from the engine."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from chm.core.db import (
    create_async_db_engine,
    make_report_session_factory,
    make_session_factory,
    normalize_database_url,
)
from chm.core.deps import _snapshot
from chm.core.dialects import PostgresDialect, SQLiteDialect, dialect_for
from chm.ingestion.store import PostgresRunStore, SQLiteRunStore, run_store

SRC = Path(__file__).resolve().parents[1] / "src" / "chm"
# A branch on which database this is: `dialect.name == ...`, `== "sqlite"`...
NAME_BRANCH = re.compile(r"""dialect\.name\s*[=!]=|[=!]=\s*["'](sqlite|postgresql)["']""")


def test_the_dialect_object_is_chosen_from_the_engine(engine: Engine, backend: str) -> None:
    kind = {"sqlite": SQLiteDialect, "postgresql": PostgresDialect}[backend]
    with engine.connect() as connection:
        chosen = {dialect_for(engine), dialect_for(connection), dialect_for(engine.dialect)}
    assert {type(dialect) for dialect in chosen} == {kind}
    assert dialect_for(engine.url).name == backend
    store = {"sqlite": SQLiteRunStore, "postgresql": PostgresRunStore}[backend]
    assert isinstance(run_store(engine), store)


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("sqlite:///x.db", "sqlite+pysqlite"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite"),
        ("postgres://u@h/db", "postgresql+psycopg"),
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg"),
    ],
)
def test_the_contracts_url_forms_pick_our_drivers(url: str, driver: str) -> None:
    assert normalize_database_url(url).drivername == driver


def test_another_database_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported database backend 'mysql'"):
        normalize_database_url("mysql://u@h/db")
    with pytest.raises(ValueError, match="unsupported database backend 'oracle'"):
        dialect_for(sa.make_url("oracle://u@h/db"))


def test_no_module_branches_on_the_database_name() -> None:
    # The migrations are history, frozen as they ran; everything else asks
    # the dialect object (chm.core.dialects is where the names are looked up).
    allowed = {SRC / "core" / "dialects.py"}
    branches = [
        f"{path.relative_to(SRC)}:{number}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        if path not in allowed and "versions" not in path.parts
        for number, line in enumerate(path.read_text().splitlines(), start=1)
        if NAME_BRANCH.search(line)
    ]
    assert branches == []


@pytest.mark.postgres_only
def test_report_reads_run_without_jit_and_nothing_else_does(engine: Engine) -> None:
    # JIT made the status board's statement slower (PostgresDialect.report_reads):
    # it is turned off for the report transaction alone, whatever the server,
    # PGOPTIONS or a pooler say for the rest.
    with make_report_session_factory(engine)() as session:
        assert session.execute(sa.text("SHOW jit")).scalar() == "off"
        isolation = session.execute(sa.text("SHOW transaction_isolation")).scalar()
        assert isolation == "repeatable read"
    with make_session_factory(engine)() as session:
        assert session.execute(sa.text("SHOW jit")).scalar() == "on"
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SHOW jit").scalar() == "on"


@pytest.mark.postgres_only
def test_a_snapshot_of_the_pages_runs_without_jit_too(db_url: str) -> None:
    async def shown() -> tuple[object, object]:
        engine = create_async_db_engine(db_url)
        try:
            async for connection in _snapshot(engine):
                jit = (await connection.exec_driver_sql("SHOW jit")).scalar()
            async with engine.connect() as connection:
                plain = (await connection.exec_driver_sql("SHOW jit")).scalar()
            return jit, plain
        finally:
            await engine.dispose()

    assert asyncio.run(shown()) == ("off", "on")
