"""Request dependencies: database sessions (the one transaction boundary) and
read connections."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.orm import Session

from chm.core.db import session_scope
from chm.core.dialects import dialect_for


def _read_session(request: Request) -> Iterator[Session]:
    yield from session_scope(request.app.state.read_sessions)


def _write_session(request: Request) -> Iterator[Session]:
    yield from session_scope(request.app.state.write_sessions)


# scope="function": the commit happens before the response is sent, so a
# failed commit is answered as an error, never acknowledged as a success.
ReadSession = Annotated[Session, Depends(_read_session, scope="function")]
WriteSession = Annotated[Session, Depends(_write_session, scope="function")]


async def _read_connection(request: Request) -> AsyncIterator[AsyncConnection]:
    engine = request.app.state.async_engine
    async with engine.connect() as connection:
        # One statement, one snapshot: no BEGIN/ROLLBACK round trips.
        yield await connection.execution_options(isolation_level="AUTOCOMMIT")


def write_engine(request: Request) -> AsyncEngine:
    """The engine of a write made by one statement on the hot paths (recording a
    run), to open ``chm.core.db.statement_write`` on once the request's own
    work (its redaction) is done: a dependency that opened the connection
    would hold it, and on SQLite the write lock, from before the body is even
    validated. Read off the app by the route, not a dependency: solving one
    costs the hot path more than the lookup."""
    engine: AsyncEngine = request.app.state.write_async_engine
    return engine


def _report_session(request: Request) -> Iterator[Session]:
    yield from session_scope(request.app.state.report_sessions)


async def _read_snapshot(request: Request) -> AsyncIterator[AsyncConnection]:
    async for connection in _snapshot(request.app.state.async_engine):
        yield connection


async def _report_snapshot(request: Request) -> AsyncIterator[AsyncConnection]:
    async for connection in _snapshot(request.app.state.report_async_engine):
        yield connection


async def _snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as connection:
        # Every statement of the request sees the same committed state.
        isolation = dialect_for(connection).snapshot_isolation
        if isolation is not None:
            await connection.execution_options(isolation_level=isolation)
        async with connection.begin():
            for statement in dialect_for(connection).report_reads:
                await connection.exec_driver_sql(statement)
            yield connection


# Read-only requests on the hot paths: an async connection, no ORM session.
# ReadConnection answers from single statements; ReadSnapshot holds one
# consistent snapshot across several (a summary's counts and latest runs).
ReadConnection = Annotated[AsyncConnection, Depends(_read_connection)]
ReadSnapshot = Annotated[AsyncConnection, Depends(_read_snapshot)]

# Report reads: the reports, the operator pages and /metrics, from the read
# database (CHM_READ_DATABASE_URL, a replica) when one is set, else the
# primary. They may lag the primary by the replica's delay; a request that
# must see its own writes uses the sessions above.
ReportSession = Annotated[Session, Depends(_report_session, scope="function")]
ReportSnapshot = Annotated[AsyncConnection, Depends(_report_snapshot)]
