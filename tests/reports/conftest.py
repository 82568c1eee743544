"""The reference dataset in a migrated database of each kind, built once per test module.

The report tests only read, so one database per backend and module serves
them all (the suite's own ``db_url`` gives a fresh database per test, which
these tests do not need). The databases come from the same migrated
templates as ``db_url``'s.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import pytest
from fastapi.testclient import TestClient
from reference import AS_OF, Dataset, build_dataset, load
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from chm.app import create_app
from chm.core.db import create_db_engine
from chm.core.settings import Settings

POSTGRES_ADMIN_URL = os.environ.get(
    "CHM_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


@dataclass
class ReferenceDB:
    url: str
    backend: str
    engine: Engine
    api: TestClient
    data: Dataset


def _scratch_database(request: pytest.FixtureRequest, tmp: str) -> Iterator[str]:
    if request.param == "sqlite":
        template = request.getfixturevalue("sqlite_template")
        path = f"{tmp}/reference.db"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    template_db = request.getfixturevalue("postgres_template")
    name = f"chm_test_reports_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    yield make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _reference(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    as_of: datetime,
) -> Iterator[ReferenceDB]:
    for url in _scratch_database(request, str(tmp_path_factory.mktemp("reports"))):
        engine = create_db_engine(url)
        data = build_dataset(as_of)
        load(engine, data)
        settings = Settings(database_url=url, _env_file=None)  # type: ignore[call-arg]
        with TestClient(create_app(settings, engine), raise_server_exceptions=False) as api:
            yield ReferenceDB(url, request.param, engine, api, data)
        engine.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def ref(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReferenceDB]:
    """The reference dataset at the fixed ``AS_OF``."""
    yield from _reference(request, tmp_path_factory, AS_OF)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def ref_now(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReferenceDB]:
    """The reference dataset anchored at the current time (for the views, which use now())."""
    now = datetime.now(UTC).replace(microsecond=0)
    yield from _reference(request, tmp_path_factory, now)
