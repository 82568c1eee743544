"""Where SQLite and PostgreSQL differ lives in one place (chm.core.dialects, and
the stores that extend it): one object per database, chosen from the engine."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine

from chm.core.db import create_async_db_engine, create_db_engine, normalize_database_url
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
def test_postgres_connections_run_without_jit_unless_the_url_says(db_url: str) -> None:
    # JIT made the status board's statement slower (see POSTGRES_OPTIONS).
    # Both engines CHM makes, and a URL's own options win.
    engines = [create_db_engine(db_url), create_db_engine(db_url + "?options=-c%20jit%3Don")]
    try:
        shown = []
        for engine in engines:
            with engine.connect() as connection:
                shown.append(connection.exec_driver_sql("SHOW jit").scalar())
        assert shown == ["off", "on"]
    finally:
        for engine in engines:
            engine.dispose()


@pytest.mark.postgres_only
def test_the_async_engine_runs_without_jit_too(db_url: str) -> None:
    async def shown() -> object:
        engine = create_async_db_engine(db_url)
        try:
            async with engine.connect() as connection:
                return (await connection.exec_driver_sql("SHOW jit")).scalar()
        finally:
            await engine.dispose()

    assert asyncio.run(shown()) == "off"
