"""Every database-backed test runs twice: on SQLite and on PostgreSQL.

Each test gets a fresh database migrated with ``alembic upgrade head`` (never
``create_all``): a copy of a migrated template file on SQLite, and a database
cloned from a migrated template database on PostgreSQL (``CREATE DATABASE ...
TEMPLATE``). Tests therefore commit for real, which the concurrency tests need.

PostgreSQL is the server at ``CHM_TEST_POSTGRES_URL`` (default
postgresql://postgres@127.0.0.1:5432/postgres). When it is unreachable, the
PostgreSQL half is skipped with a plain message, except under CI (CI=true),
where that fails the run.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from chm.app import create_app
from chm.core.db import create_db_engine
from chm.core.migrate import upgrade
from chm.core.settings import Settings

POSTGRES_ADMIN_URL = os.environ.get(
    "CHM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BACKENDS = ("sqlite", "postgresql")


def _admin_connect() -> psycopg.Connection:
    return psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)


def _postgres_problem() -> str | None:
    try:
        with _admin_connect() as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL unreachable at {make_url(POSTGRES_ADMIN_URL).render_as_string(hide_password=True)}: {exc}".strip()
    return None


@dataclass
class Templates:
    sqlite_file: Path | None = None
    postgres_db: str | None = None
    postgres_problem: str | None = None


_templates = Templates()
_run_tag = uuid.uuid4().hex[:8]


def _postgres_url(dbname: str) -> str:
    return make_url(POSTGRES_ADMIN_URL).set(database=dbname).render_as_string(hide_password=False)


def pytest_configure(config: pytest.Config) -> None:
    _templates.postgres_problem = _postgres_problem()
    if _templates.postgres_problem and IN_CI:
        raise pytest.UsageError(
            f"{_templates.postgres_problem}\nUnder CI the PostgreSQL half of the suite must run."
        )


def pytest_report_header(config: pytest.Config) -> list[str]:
    if _templates.postgres_problem:
        return [f"databases: SQLite only -- SKIPPING PostgreSQL ({_templates.postgres_problem})"]
    return ["databases: SQLite and PostgreSQL"]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    if _templates.postgres_problem:
        terminalreporter.write_line(
            f"PostgreSQL tests were SKIPPED: {_templates.postgres_problem}", yellow=True, bold=True
        )


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    engine = create_db_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    if _templates.postgres_problem:
        pytest.skip(_templates.postgres_problem)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"chm_test_tpl_{_run_tag}_{worker}"
    with _admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    engine = create_db_engine(_postgres_url(name))
    upgrade(engine)
    engine.dispose()
    yield name
    with _admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, migrated, empty database of each kind."""
    if request.param == "sqlite":
        if request.node.get_closest_marker("postgres_only"):
            pytest.skip("PostgreSQL-only test")
    elif request.node.get_closest_marker("sqlite_only"):
        pytest.skip("SQLite-only test")
    yield from _fresh_database(request, request.param, tmp_path / "chm.db")


@pytest.fixture
def second_db_url(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> Iterator[str]:
    """Another fresh, migrated, empty database of the same kind as ``db_url``
    (a read replica's stand-in: the same schema, its own rows)."""
    yield from _fresh_database(request, backend, tmp_path / "second.db")


def _fresh_database(request: pytest.FixtureRequest, backend: str, path: Path) -> Iterator[str]:
    if backend == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    template_db: str = request.getfixturevalue("postgres_template")
    name = f"chm_test_{_run_tag}_{uuid.uuid4().hex[:10]}"
    with _admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield _postgres_url(name)
    with _admin_connect() as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def backend(db_url: str) -> str:
    return make_url(db_url).get_backend_name()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, _env_file=None)  # type: ignore[call-arg]


@pytest.fixture
def api(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    """The HTTP API over a fresh database; raises nothing, answers like the server."""
    with TestClient(create_app(settings, engine), raise_server_exceptions=False) as client:
        yield client
