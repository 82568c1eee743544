"""Engine and session: SQLite (embedded default) or PostgreSQL (psycopg 3)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import Session, sessionmaker

from chm.core.settings import get_settings

SQLITE_BUSY_TIMEOUT_MS = 30_000


def normalize_database_url(raw: str) -> URL:
    """Accept the contract's URL forms and pick our drivers."""
    url = make_url(raw)
    if url.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        url = url.set(drivername="postgresql+psycopg")
    elif url.drivername == "sqlite":
        url = url.set(drivername="sqlite+pysqlite")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"unsupported database backend {url.get_backend_name()!r}")
    return url


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


WRITE_OPTION = "chm_write"


def _on_sqlite_begin(conn: sa.Connection) -> None:
    # pysqlite's own implicit BEGIN comes late; issue our own so every ORM
    # transaction is one SQLite transaction. A transaction that will write
    # takes the write lock up front (BEGIN IMMEDIATE): a deferred one that
    # read first could not upgrade once another writer committed, and would
    # fail at once instead of waiting out the busy timeout.
    if conn.get_execution_options().get(WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def _prepare_sqlite(engine: Engine) -> None:
    event.listen(engine, "connect", _on_sqlite_connect)
    # Let SQLAlchemy, not the driver, decide where transactions begin.
    event.listen(
        engine,
        "connect",
        lambda dbapi_connection, _record: setattr(dbapi_connection, "isolation_level", None),
    )
    event.listen(engine, "begin", _on_sqlite_begin)


def _postgres_pool_defaults(kwargs: dict[str, Any], pool_size: int) -> dict[str, Any]:
    # Connections beyond pool_size are opened and closed per use: size the
    # pool for the steady concurrency so they stay rare. No pre-ping: it
    # costs a round trip per request; a connection found dead fails its one
    # request (503) and SQLAlchemy then invalidates the pool.
    kwargs.setdefault("pool_size", pool_size)
    kwargs.setdefault("max_overflow", 10)
    kwargs.setdefault("pool_recycle", 3600)
    return kwargs


def create_db_engine(raw_url: str, **kwargs: Any) -> Engine:
    """The synchronous engine: writes (ORM sessions), ingestion, reports, the CLI."""
    url = normalize_database_url(raw_url)
    if url.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            **kwargs,
        )
        _prepare_sqlite(engine)
        return engine
    return sa.create_engine(url, **_postgres_pool_defaults(kwargs, pool_size=10))


def create_async_db_engine(raw_url: str, **kwargs: Any) -> AsyncEngine:
    """The asynchronous engine of the hot read paths (latest run, history pages,
    client summary): no thread hop per request, psycopg's async mode on
    PostgreSQL and aiosqlite on SQLite, with the same connection settings.
    Its JSON columns come back unparsed (``orjson.Fragment``): its rows are
    written to JSON by chm.runs.serialize, never handled as Python values."""
    url = normalize_database_url(raw_url)
    # JSON columns stay their stored text, embedded as is when answering.
    kwargs.setdefault("json_deserializer", orjson.Fragment)
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(
            url.set(drivername="sqlite+aiosqlite"),
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            **kwargs,
        )
        _prepare_sqlite(engine.sync_engine)
        return engine
    return create_async_engine(url, **_postgres_pool_defaults(kwargs, pool_size=20))


@lru_cache
def get_engine() -> Engine:
    return create_db_engine(get_settings().effective_database_url)


def make_session_factory(engine: Engine, *, write: bool = False) -> sessionmaker[Session]:
    """Sessions for reading, or (``write=True``) for transactions that write."""
    bind = engine.execution_options(**{WRITE_OPTION: True}) if write else engine
    return sessionmaker(bind=bind, expire_on_commit=False, autoflush=False)


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
