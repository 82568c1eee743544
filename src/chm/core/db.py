"""Engine and session: SQLite (embedded default) or PostgreSQL (psycopg 3).

How each database's engine is made (its driver, connection settings and
pool) is its dialect object's (``chm.core.dialects``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import Session, sessionmaker

from chm.core.dialects import DIALECTS, WRITE_OPTION, dialect_for
from chm.core.settings import get_settings

logger = logging.getLogger(__name__)


def normalize_database_url(raw: str) -> URL:
    """Accept the contract's URL forms and pick our drivers."""
    url = make_url(raw)
    for dialect in DIALECTS.values():
        if url.drivername in dialect.url_aliases:
            url = url.set(drivername=dialect.driver)
    dialect_for(url)  # any other database is refused
    return url


def create_db_engine(raw_url: str, **kwargs: Any) -> Engine:
    """The synchronous engine: writes (ORM sessions), ingestion, reports, the CLI."""
    url = normalize_database_url(raw_url)
    return dialect_for(url).create_engine(url, **kwargs)


def create_async_db_engine(raw_url: str, **kwargs: Any) -> AsyncEngine:
    """The asynchronous engine of the hot read paths (latest run, history pages,
    client summary): no thread hop per request, psycopg's async mode on
    PostgreSQL and aiosqlite on SQLite, with the same connection settings.
    Its JSON columns come back unparsed (``orjson.Fragment``): its rows are
    written to JSON by chm.runs.serialize, never handled as Python values."""
    url = normalize_database_url(raw_url)
    # JSON columns stay their stored text, embedded as is when answering.
    kwargs.setdefault("json_deserializer", orjson.Fragment)
    return dialect_for(url).create_async_engine(url, **kwargs)


def create_write_engine(async_engine: AsyncEngine) -> AsyncEngine:
    """The engine of the one-statement writes (``statement_write``): the
    asynchronous engine itself, or on SQLite one with a pool of its own."""
    dialect = dialect_for(async_engine)
    url = normalize_database_url(async_engine.url.render_as_string(hide_password=False))
    own = dialect.create_write_engine(url, json_deserializer=orjson.Fragment)
    return async_engine if own is None else own


@asynccontextmanager
async def statement_write(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection for a write made by one statement, committed on leaving (rolled
    back on an error): on PostgreSQL in autocommit, since the statement is atomic
    and BEGIN and COMMIT would be two more round trips; on SQLite in a
    transaction that takes the write lock up front (the dialect's
    ``one_statement_write``). Statements after the write that only read (why
    nothing was written) may use it too. Open it only once the request's own
    work is done: on SQLite it holds the write lock."""
    async with engine.connect() as connection:
        options = dialect_for(connection).one_statement_write
        connection = await connection.execution_options(**options)
        async with connection.begin():
            yield connection


def read_database_url(raw_url: str, primary: URL) -> URL:
    """``CHM_READ_DATABASE_URL``, checked against the primary's URL: the same
    kind of database (a replica of another kind could not hold CHM's schema
    as the primary has it)."""
    url = normalize_database_url(raw_url)
    if url.get_backend_name() != primary.get_backend_name():
        raise ValueError(
            f"it is a {url.get_backend_name()} database and CHM_DATABASE_URL a"
            f" {primary.get_backend_name()} one: the read database must be a copy of"
            " the primary (a replica)"
        )
    return url


def create_read_engines(
    raw_url: str, primary: Engine, primary_async: AsyncEngine, **kwargs: Any
) -> tuple[Engine, AsyncEngine]:
    """The engines of the report reads (``CHM_READ_DATABASE_URL``): the
    primary's own when ``raw_url`` names the primary, else new ones."""
    if read_database_url(raw_url, primary.url) == primary.url:
        return primary, primary_async
    return create_db_engine(raw_url, **kwargs), create_async_db_engine(raw_url, **kwargs)


def database_answers(engine: Engine) -> bool:
    """Whether ``engine``'s database answers ``SELECT 1`` now (the log says why not)."""
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except SQLAlchemyError as error:
        cause = type(getattr(error, "orig", None) or error).__name__
        logger.error("database %s does not answer (%s)", engine.url.database, cause)
        return False
    return True


@lru_cache
def get_engine() -> Engine:
    return create_db_engine(get_settings().effective_database_url)


def make_session_factory(engine: Engine, *, write: bool = False) -> sessionmaker[Session]:
    """Sessions for reading, or (``write=True``) for transactions that write."""
    bind = engine.execution_options(**{WRITE_OPTION: True}) if write else engine
    return sessionmaker(bind=bind, expire_on_commit=False, autoflush=False)


def make_report_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for report reads (the reports, ``chm status``): every statement
    of a transaction sees the same committed state (the dialect's snapshot
    isolation), which begins with the dialect's report settings."""
    dialect = dialect_for(engine)
    bind = engine
    if dialect.snapshot_isolation is not None:
        bind = engine.execution_options(isolation_level=dialect.snapshot_isolation)
    factory = sessionmaker(bind=bind, expire_on_commit=False, autoflush=False)
    if dialect.report_reads:

        def prepare(_session: Session, _transaction: Any, connection: Connection) -> None:
            for statement in dialect.report_reads:
                connection.exec_driver_sql(statement)

        event.listen(factory, "after_begin", prepare)
    return factory


def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """The one transaction boundary: commit on success, roll back on error."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
