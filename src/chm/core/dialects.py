"""Where SQLite and PostgreSQL differ, in one place: one object per database with
the same methods, chosen once from an engine's (or a URL's) dialect by
``dialect_for``. Nothing else in CHM asks which database it is on.

The model is Prefect's ``server/database/query_components.py``. Core's objects
hold what core needs (how an engine is made, the INSERT with ``ON CONFLICT``,
one read snapshot, how a UTC time is handed to the driver, Alembic's batch
mode); a domain package with statements of its own extends them in its own
module (``chm.ingestion.store``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import datetime
from typing import Any, ClassVar, Protocol

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000
# The execution option of a bind whose transactions write (chm.core.db).
WRITE_OPTION = "chm_write"


class HasDialect(Protocol):
    """An engine or a connection, synchronous or not."""

    @property
    def dialect(self) -> Dialect: ...


class DatabaseDialect(ABC):
    """What differs between the databases CHM runs on; one instance per database."""

    # SQLAlchemy's backend name ("sqlite", "postgresql").
    name: ClassVar[str]
    # The URL driver names read as this database, and the driver CHM uses instead.
    url_aliases: ClassVar[tuple[str, ...]]
    driver: ClassVar[str]
    # Alembic rebuilds tables instead of altering them (SQLite cannot ALTER most things).
    batch_migrations: ClassVar[bool]
    # The isolation level that makes every statement of one transaction see the
    # same committed state; None where a transaction already does.
    snapshot_isolation: ClassVar[str | None]
    # Whether one worker process at most may run on the database (chm worker):
    # SQLite has one writer, and a file on one machine.
    one_worker: ClassVar[bool]
    # Run at the start of each report-reading transaction (the reports, the
    # operator pages, chm status): settings for that transaction only, so a
    # connection pooler or PGOPTIONS sees nothing else changed.
    report_reads: ClassVar[tuple[str, ...]]
    # The execution options of a write that is one statement
    # (chm.core.db.statement_write): atomic by itself, so wherever a
    # transaction costs round trips it runs in autocommit.
    one_statement_write: ClassVar[dict[str, Any]]

    @abstractmethod
    def insert(self, table: sa.Table | sa.TableClause) -> postgresql.Insert | sqlite.Insert:
        """The dialect's own INSERT, which knows ``ON CONFLICT``."""

    @abstractmethod
    def bind_utc(self, value: datetime) -> datetime:
        """A UTC time (aware) as the driver is handed it (chm.core.types.UTCDateTime)."""

    @abstractmethod
    def create_engine(self, url: URL, **kwargs: Any) -> Engine:
        """The synchronous engine, with CHM's connection settings."""

    @abstractmethod
    def create_async_engine(self, url: URL, **kwargs: Any) -> AsyncEngine:
        """The asynchronous engine, with the same connection settings."""

    def create_write_engine(self, url: URL, **kwargs: Any) -> AsyncEngine | None:
        """The engine of the one-statement writes (``chm.core.db.statement_write``),
        or None where they share the asynchronous engine's pool."""
        return None


class SQLiteDialect(DatabaseDialect):
    """The embedded default: WAL, foreign keys, a busy timeout, writers serialized
    by the write lock each writing transaction takes up front."""

    name = "sqlite"
    url_aliases = ("sqlite",)
    driver = "sqlite+pysqlite"
    batch_migrations = True
    # In WAL mode a transaction reads one snapshot from its first read on.
    snapshot_isolation = None
    report_reads = ()
    one_worker = True

    # A local file: BEGIN IMMEDIATE and COMMIT cost no round trip, and the
    # write lock is taken up front as for any writing transaction.
    one_statement_write: ClassVar[dict[str, Any]] = {WRITE_OPTION: True}

    def insert(self, table: sa.Table | sa.TableClause) -> sqlite.Insert:
        return sqlite.insert(table)

    def bind_utc(self, value: datetime) -> datetime:
        # The UTC wall time, kept as fixed-width text that sorts chronologically.
        return value.replace(tzinfo=None)

    def create_engine(self, url: URL, **kwargs: Any) -> Engine:
        _no_pool_size(kwargs)
        engine = sa.create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            **kwargs,
        )
        _prepare_sqlite(engine)
        return engine

    def create_async_engine(self, url: URL, **kwargs: Any) -> AsyncEngine:
        _no_pool_size(kwargs)
        return self._async_engine(url, **kwargs)

    def create_write_engine(self, url: URL, **kwargs: Any) -> AsyncEngine:
        # A writer waiting for the file's write lock (another process may hold
        # it for seconds) holds its connection all that time: the writes get a
        # pool of their own, of one connection, so the process's writers wait
        # in turn for it and never for the connections the reads need.
        _no_pool_size(kwargs)
        return self._async_engine(url, pool_size=1, max_overflow=0, **kwargs)

    def _async_engine(self, url: URL, **kwargs: Any) -> AsyncEngine:
        engine = create_async_engine(
            url.set(drivername="sqlite+aiosqlite"),
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            **kwargs,
        )
        _prepare_sqlite(engine.sync_engine)
        return engine


class PostgresDialect(DatabaseDialect):
    """PostgreSQL through psycopg 3, synchronous and asynchronous, pooled."""

    name = "postgresql"
    url_aliases = ("postgresql", "postgres", "postgresql+psycopg2")
    driver = "postgresql+psycopg"
    batch_migrations = False
    snapshot_isolation = "REPEATABLE READ"
    one_worker = False
    # JIT compiles any statement the planner costs above jit_above_cost
    # (100,000): at 10,000 pipelines, every report statement that walks each
    # pipeline's index, which JIT makes slower: 13-15 ms of compiling each,
    # and the status board's statement took 132 ms with it, 100 ms without.
    # These are index walks, not the long scans JIT is for (alert evaluation
    # turns it off the same way).
    report_reads = ("SET LOCAL jit = off",)

    # BEGIN and COMMIT would be two more round trips around the one statement.
    one_statement_write: ClassVar[dict[str, Any]] = {"isolation_level": "AUTOCOMMIT"}

    def insert(self, table: sa.Table | sa.TableClause) -> postgresql.Insert:
        return postgresql.insert(table)

    def bind_utc(self, value: datetime) -> datetime:
        return value  # timestamptz

    def create_engine(self, url: URL, **kwargs: Any) -> Engine:
        return sa.create_engine(url, **_postgres_defaults(kwargs))

    def create_async_engine(self, url: URL, **kwargs: Any) -> AsyncEngine:
        return create_async_engine(url, **_postgres_defaults(kwargs))


DIALECTS: dict[str, DatabaseDialect] = {
    dialect.name: dialect for dialect in (SQLiteDialect(), PostgresDialect())
}


def dialect_named(name: str) -> DatabaseDialect:
    """The dialect object of SQLAlchemy's backend ``name``."""
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(f"unsupported database backend {name!r}") from None


def dialect_for(bind: HasDialect | Dialect | URL) -> DatabaseDialect:
    """The dialect object of an engine, a connection, SQLAlchemy's dialect or a URL."""
    if isinstance(bind, URL):
        return dialect_named(bind.get_backend_name())
    if isinstance(bind, Dialect):
        return dialect_named(bind.name)
    return dialect_named(bind.dialect.name)


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


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


# Each engine's pool when the caller does not say (CHM_DB_POOL_SIZE and
# CHM_DB_MAX_OVERFLOW do, for the server and the worker): small, because
# every process of a deployment has its own and PostgreSQL admits 100
# connections in all by default; without overflow, since an overflow
# connection is opened for one use and closed after it, a new PostgreSQL
# backend each time (docs/deployment.md).
POOL_SIZE = 8
MAX_OVERFLOW = 0


def _no_pool_size(kwargs: dict[str, Any]) -> None:
    # SQLite's connections are a file's: its pool is SQLAlchemy's default.
    kwargs.pop("pool_size", None)
    kwargs.pop("max_overflow", None)


def _postgres_defaults(kwargs: dict[str, Any]) -> dict[str, Any]:
    # Connections beyond pool_size are opened and closed per use: size the
    # pool for the steady concurrency so they stay rare. No pre-ping: it
    # costs a round trip per request; a connection found dead fails its one
    # request (503) and SQLAlchemy then invalidates the pool.
    kwargs.setdefault("pool_size", POOL_SIZE)
    kwargs.setdefault("max_overflow", MAX_OVERFLOW)
    kwargs.setdefault("pool_recycle", 3600)
    return kwargs
