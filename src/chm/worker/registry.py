"""The worker processes of a database: registered at start, alive while their
heartbeat is fresh, and on SQLite one at a time.

On PostgreSQL any number of workers run side by side. On SQLite (one writer,
one file on one machine) a second worker refuses to start while the first is
alive, with a message that says which process it is and what to do; a worker
whose process is gone (same machine, no such pid) or whose heartbeat is older
than the lease time counts as dead and is replaced.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Engine

from chm.core.db import make_session_factory
from chm.core.dialects import dialect_for
from chm.models import WorkerProcess


class WorkerRefused(Exception):
    """Another worker runs on this database, which allows only one (SQLite)."""


def new_worker_id() -> str:
    return f"{socket.gethostname()[:150]}:{os.getpid()}:{secrets.token_hex(4)}"


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


@dataclass
class Registration:
    """This process's row in ``workers``."""

    engine: Engine
    worker_id: str
    lease_s: float
    clock: Callable[[], datetime]

    def register(self) -> None:
        """Insert this worker; on a one-worker database, refuse if another lives."""
        now = self.clock()
        hostname = socket.gethostname()[:255]
        sessions = make_session_factory(self.engine, write=True)
        with sessions.begin() as session:
            if dialect_for(self.engine).one_worker:
                alive = session.scalars(
                    sa.select(WorkerProcess).where(
                        WorkerProcess.stopped_at.is_(None),
                        WorkerProcess.heartbeat_at > now - timedelta(seconds=self.lease_s),
                        WorkerProcess.id != self.worker_id,
                    )
                ).all()
                for other in alive:
                    same_host = other.hostname == hostname
                    if same_host and (other.pid == os.getpid() or not _process_exists(other.pid)):
                        # Killed: its process is gone (or this is a restart that
                        # got its pid, as pid 1 in a container does).
                        other.stopped_at = now
                        continue
                    raise WorkerRefused(
                        f"another worker is running on this SQLite database (pid {other.pid} "
                        f"on {other.hostname}, last seen {other.heartbeat_at.isoformat()}); "
                        "SQLite takes one worker: stop that one first, or use PostgreSQL "
                        "(CHM_DATABASE_URL) to run several"
                    )
            session.add(
                WorkerProcess(
                    id=self.worker_id,
                    hostname=hostname,
                    pid=os.getpid(),
                    started_at=now,
                    heartbeat_at=now,
                )
            )

    def beat(self) -> None:
        with make_session_factory(self.engine, write=True).begin() as session:
            session.execute(
                sa.update(WorkerProcess)
                .where(WorkerProcess.id == self.worker_id)
                .values(heartbeat_at=self.clock())
            )

    def stopped(self) -> None:
        with make_session_factory(self.engine, write=True).begin() as session:
            session.execute(
                sa.update(WorkerProcess)
                .where(WorkerProcess.id == self.worker_id)
                .values(stopped_at=self.clock())
            )


# Leases last CHM_WORKER_LEASE_S and are renewed each third of it: workers whose
# clocks differ by more than that third could take each other's work.
def clock_skew_s(engine: Engine, now: datetime) -> float:
    """This machine's clock (``now``) minus the database server's, in seconds."""
    with engine.connect() as connection:
        value: Any = connection.scalar(sa.select(sa.func.current_timestamp()))
    server = datetime.fromisoformat(value) if isinstance(value, str) else value
    if not isinstance(server, datetime):
        return 0.0
    if server.tzinfo is None:  # SQLite: 'YYYY-MM-DD HH:MM:SS', UTC
        server = server.replace(tzinfo=UTC)
    return (now - server).total_seconds()
