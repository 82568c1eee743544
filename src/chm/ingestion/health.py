"""Each source's ingestion health, and the workers alive (docs/health.md).

What ``GET /healthz?detail=1`` and ``chm status`` show: per source of the
sources file, in file order, when it was last attempted and last succeeded,
its last error, how long it is past its due time and one ``state``; and the
``chm worker`` processes whose heartbeat is current.

The records are the ``ingestion_sources`` rows the engine writes after each
pipeline it ingests (``IngestionSource``); the sources themselves come from
the file, so a row whose source left the file is not shown. The rules, all
at an injected ``now``:

- A source is *scheduled* when it pulls (has a ``base_url``) and its
  ``interval_s`` is above 0; only a scheduled source is ever due.
- ``overdue_s``: how long past its due time (its last success plus
  ``interval_s``) a scheduled source is, 0 when not yet due; null when it is
  not scheduled or has never been attempted. A source that never succeeded
  counts from its first failure (``failing_since``) instead.
- ``state``, the first that holds:
  ``stale``: scheduled, and its last success (or, never having succeeded,
  its first failure) is ``STALE_INTERVALS`` intervals old or older (exactly
  3 intervals is stale): flagged;
  ``failing``: its last attempt failed (``consecutive_failures`` above 0,
  or its last error is newer than its last success, or it was attempted and
  never succeeded);
  ``unscheduled``: not scheduled (push-only, or ``interval_s = 0``);
  ``never``: scheduled and never attempted (no pipeline of it ingested yet);
  ``ok``.

A worker is alive while it has not stopped and its last heartbeat is less
than the lease time (``CHM_WORKER_LEASE_S``) old: past that its leases have
expired too. ``workers_lost`` counts the workers that stopped without saying
so (no ``stopped_at``, heartbeat expired) within the last ``LOST_WORKERS_WINDOW``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated

import sqlalchemy as sa
from pydantic import BaseModel, Field, PlainSerializer
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from chm.core.redaction import Redactor, redact_known
from chm.core.timeutil import isoformat_z
from chm.ingestion.config import Sources
from chm.ingestion.sources import AnySource
from chm.models import IngestionSource, WorkerProcess

# A scheduled source whose last success is this many intervals old is stale.
STALE_INTERVALS = 3
# A worker that vanished (heartbeat expired, never stopped) is counted as lost
# for this long after its last heartbeat; older ones are history.
LOST_WORKERS_WINDOW = timedelta(days=1)

# A source's ingestion_sources row (the columns read below).
_Record = sa.Row[
    str, datetime | None, datetime | None, str | None, datetime | None, int, datetime | None
]

HealthTime = Annotated[datetime, PlainSerializer(isoformat_z, when_used="json")]


class SourceState(StrEnum):
    ok = "ok"
    failing = "failing"
    stale = "stale"
    never = "never"
    unscheduled = "unscheduled"


class SourceHealth(BaseModel):
    """One source of the sources file and its ingestion record."""

    name: str
    platform: str
    environment: str
    client: str | None
    pulls: bool
    interval_s: float
    scheduled: bool = Field(description="Pulls, with interval_s above 0")
    state: SourceState
    last_attempt_at: HealthTime | None
    last_success_at: HealthTime | None
    last_error: str | None = Field(description="Redacted when stored, and again when shown")
    last_error_at: HealthTime | None
    consecutive_failures: int
    overdue_s: float | None = Field(
        description="Seconds past the last success plus interval_s (0: not due yet); null "
        "when not scheduled or never succeeded"
    )


class WorkerHealth(BaseModel):
    """A ``chm worker`` process whose heartbeat is current."""

    id: str
    hostname: str
    pid: int
    started_at: HealthTime
    heartbeat_at: HealthTime


class HealthDetail(BaseModel):
    """The detail of ``GET /healthz?detail=1`` and the sources part of ``chm status``."""

    checked_at: HealthTime
    sources: list[SourceHealth]
    stale_sources: int
    # Why ``sources`` is empty when the sources file could not be loaded.
    sources_error: str | None = None
    workers: list[WorkerHealth]
    workers_lost: int


def _is_failing(record: _Record | None) -> bool:
    if record is None or record.last_attempt_at is None:
        return False
    if record.consecutive_failures > 0 or record.last_success_at is None:
        return True
    return bool(record.last_error_at is not None and record.last_error_at > record.last_success_at)


def _secret_values(sources: Sources, environ: Mapping[str, str]) -> list[str]:
    """The values of the environment variables the sources read secrets from
    (``token_env``, ``password_env``...): never shown, whatever was stored."""
    values = []
    for source in sources.all:
        for field in type(source).model_fields:
            variable = getattr(source, field)
            if field.endswith("_env") and field != "chm_env" and isinstance(variable, str):
                values.append(environ.get(variable, ""))
    return values


def _source_health(
    source: AnySource,
    record: _Record | None,
    now: datetime,
    redactor: Redactor,
) -> SourceHealth:
    scheduled = source.pulls and source.interval_s > 0
    interval = timedelta(seconds=source.interval_s)
    last_success = record.last_success_at if record is not None else None
    # Counted from the last success or, for a source that never succeeded,
    # from its first failure (when it was first due).
    since = last_success
    if since is None and record is not None:
        since = record.failing_since
    overdue_s = None
    if scheduled and since is not None:
        overdue_s = max(0.0, (now - (since + interval)).total_seconds())
    if scheduled and since is not None and now - since >= STALE_INTERVALS * interval:
        state = SourceState.stale
    elif _is_failing(record):
        state = SourceState.failing
    elif not scheduled:
        state = SourceState.unscheduled
    elif record is None or record.last_attempt_at is None:
        state = SourceState.never
    else:
        state = SourceState.ok
    last_error = record.last_error if record is not None else None
    return SourceHealth(
        name=source.name,
        platform=source.platform,
        environment=source.environment,
        client=source.client,
        pulls=source.pulls,
        interval_s=source.interval_s,
        scheduled=scheduled,
        state=state,
        last_attempt_at=record.last_attempt_at if record is not None else None,
        last_success_at=last_success,
        last_error=redact_known(redactor.text(last_error)) if last_error is not None else None,
        last_error_at=record.last_error_at if record is not None else None,
        consecutive_failures=record.consecutive_failures if record is not None else 0,
        overdue_s=overdue_s,
    )


def _workers(
    db: Session | Connection, now: datetime, lease: timedelta
) -> tuple[list[WorkerHealth], int]:
    rows = db.execute(
        sa.select(
            WorkerProcess.id,
            WorkerProcess.hostname,
            WorkerProcess.pid,
            WorkerProcess.started_at,
            WorkerProcess.heartbeat_at,
        )
        .where(
            WorkerProcess.stopped_at.is_(None),
            WorkerProcess.heartbeat_at > now - lease - LOST_WORKERS_WINDOW,
        )
        .order_by(WorkerProcess.started_at, WorkerProcess.id)
    ).all()
    alive = [
        WorkerHealth(
            id=row.id,
            hostname=row.hostname,
            pid=row.pid,
            started_at=row.started_at,
            heartbeat_at=row.heartbeat_at,
        )
        for row in rows
        if now - row.heartbeat_at < lease
    ]
    return alive, len(rows) - len(alive)


def source_health(
    db: Session | Connection,
    sources: Sources,
    now: datetime,
    *,
    lease_s: float,
    environ: Mapping[str, str] | None = None,
) -> HealthDetail:
    """Each source's health at ``now``, in the file's order, and the workers alive
    (heartbeat less than ``lease_s`` old). Two queries: the sources' records
    (one ``IN``), the workers. ``environ`` holds the sources' secrets (default:
    this process's environment), removed from every error shown."""
    names = [source.name for source in sources.all]
    records: dict[str, _Record] = {}
    if names:
        rows = db.execute(
            sa.select(
                IngestionSource.name,
                IngestionSource.last_attempt_at,
                IngestionSource.last_success_at,
                IngestionSource.last_error,
                IngestionSource.last_error_at,
                IngestionSource.consecutive_failures,
                IngestionSource.failing_since,
            ).where(IngestionSource.name.in_(names))
        )
        records = {row.name: row for row in rows}
    redactor = Redactor(_secret_values(sources, os.environ if environ is None else environ))
    health = [
        _source_health(source, records.get(source.name), now, redactor) for source in sources.all
    ]
    workers, lost = _workers(db, now, timedelta(seconds=lease_s))
    return HealthDetail(
        checked_at=now,
        sources=health,
        stale_sources=sum(1 for source in health if source.state is SourceState.stale),
        workers=workers,
        workers_lost=lost,
    )
