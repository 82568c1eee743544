"""Idempotent, batched run upserts keyed by (pipeline, external run id) (FR-014, DI-004).

One page is one transaction:

1. serialize with any other ingester of the same pipeline (PostgreSQL: a
   transaction-scoped advisory lock; SQLite: the write lock taken by
   ``BEGIN IMMEDIATE``), so that what is read next is what is overwritten;
2. read the stored runs of the page's keys;
3. fold each source run into what is stored, by the no-regression rule below,
   and keep only the runs whose stored values would really change;
4. write those in one ``INSERT ... ON CONFLICT (pipeline_id, external_run_id)
   DO UPDATE ... WHERE <a value differs>`` through the dialect's own insert,
   ``RETURNING`` the keys actually written.

A replay of identical data therefore writes nothing: ``updated_at`` and
``ingested_at`` stay as they were and the run counts as unchanged.

**The no-regression rule.** A run's stored state never goes back in time:

- when both the stored run and the snapshot carry the source's own update
  time (``source_updated_at``) and the snapshot's is older, the snapshot is
  stale and ignored;
- a snapshot of an earlier attempt of the run than the stored one is stale,
  and one of a later attempt replaces it whatever the statuses, with the
  new attempt's own times (``attempt_order``: the source's attempt markers,
  ``source_attempt``, when both carry one; else a start after the stored
  end, or an end before the stored start);
- within one attempt, a snapshot that is not terminal (queued, running,
  unknown) never replaces a terminal status (success, failed, cancelled,
  skipped), unless both carry an update time and the snapshot's is strictly
  newer: the source shows the run really restarted;
- within one attempt ``started_at`` is never lost once known: a snapshot
  without one keeps the stored value; a terminal snapshot without
  ``finished_at`` keeps the stored one too; and so do the source update
  time and the attempt marker;
- the duration is the source's when it gave one, else finished - started.

A stale snapshot counts as unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from chm.core.status import TERMINAL_STATUSES
from chm.ingestion.normalize import InvalidRun, SourceRun
from chm.models import Pipeline, Run
from chm.models.run import derived_duration

RUNS = cast(sa.Table, Run.__table__)
# The values a source decides; everything a replay compares.
DATA_FIELDS = (
    "status",
    "source_status",
    "started_at",
    "finished_at",
    "duration_seconds",
    "duration_from_source",
    "metrics",
    "error_message",
    "source_payload",
    "source_updated_at",
    "source_attempt",
)
_KEY_CHUNK = 1000
# pg_advisory_xact_lock(class, object): "CHMI" marks ingestion's locks.
_LOCK_CLASS = 0x43484D49

Row = dict[str, Any]
# How a snapshot folds into what is stored (None: stale, nothing to write).
Fold = Callable[[Row | None, Row], Row | None]


@dataclass
class PageCounts:
    """What became of each source run of a page: every run counts exactly once."""

    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped: int = 0
    # (external run id, reason) of the skipped runs, for the logs.
    invalid: list[tuple[str, str]] = field(default_factory=list)

    def add(self, other: PageCounts) -> None:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.skipped += other.skipped
        self.invalid += other.invalid


def snapshot_row(run: SourceRun, payload: dict[str, Any] | None) -> Row:
    """The stored values a source run asks for, before it meets the stored run."""
    if run.started_at and run.finished_at and run.finished_at < run.started_at:
        raise InvalidRun("finished_at is before started_at")
    from_source = run.duration_seconds is not None
    return {
        "external_run_id": run.external_run_id,
        "status": run.status.value,
        "source_status": run.source_status,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration_seconds": run.duration_seconds
        if from_source
        else derived_duration(run.started_at, run.finished_at),
        "duration_from_source": from_source,
        "metrics": run.metrics,
        "error_message": run.error_message,
        "source_payload": payload,
        "source_updated_at": run.source_updated_at,
        "source_attempt": run.attempt,
    }


def _before(earlier: datetime | None, later: datetime | None) -> bool:
    return earlier is not None and later is not None and earlier < later


def attempt_order(stored: Row, snapshot: Row) -> int:
    """Whether ``snapshot`` shows a later attempt of the run than ``stored`` (1), an
    earlier one (-1), or the same one, or no evidence either way (0).

    The source's attempt markers decide when both carry one. Without them, only
    times that one attempt cannot hold do: a start after the stored run's end
    is a later attempt, an end before the stored run's start an earlier one.
    """
    new, old = snapshot["source_attempt"], stored["source_attempt"]
    if new is not None and old is not None:
        return int(new > old) - int(new < old)
    if _before(stored["finished_at"], snapshot["started_at"]):
        return 1
    if _before(snapshot["finished_at"], stored["started_at"]):
        return -1
    return 0


def is_stale(stored: Row, snapshot: Row) -> bool:
    """True when ``snapshot`` would move ``stored`` back in time (see the module rule)."""
    new, old = snapshot["source_updated_at"], stored["source_updated_at"]
    if _before(new, old):
        return True
    order = attempt_order(stored, snapshot)
    if order != 0:
        return order < 0
    if stored["status"] in TERMINAL_STATUSES and snapshot["status"] not in TERMINAL_STATUSES:
        return not _before(old, new)  # restarted in place: a strictly newer update
    return False


def merge(stored: Row | None, snapshot: Row) -> Row | None:
    """The values to store for ``snapshot`` given the ``stored`` run; None when stale."""
    if stored is None:
        return snapshot
    if is_stale(stored, snapshot):
        return None
    merged = dict(snapshot)
    if attempt_order(stored, snapshot) == 0:
        # The same attempt: what is known of it is kept. A new attempt brings
        # its own start and end (none yet while it is queued).
        if merged["started_at"] is None:
            merged["started_at"] = stored["started_at"]
        if merged["finished_at"] is None and snapshot["status"] in TERMINAL_STATUSES:
            merged["finished_at"] = stored["finished_at"]
        if merged["source_attempt"] is None:
            merged["source_attempt"] = stored["source_attempt"]
    if merged["source_updated_at"] is None:
        merged["source_updated_at"] = stored["source_updated_at"]
    started, finished = merged["started_at"], merged["finished_at"]
    if started is not None and finished is not None and finished < started:
        raise InvalidRun("finished_at is before the started_at already stored")
    if not merged["duration_from_source"]:
        merged["duration_seconds"] = derived_duration(started, finished)
    return merged


def _differs(stored: Row, merged: Row) -> bool:
    return any(stored[name] != merged[name] for name in DATA_FIELDS)


def _lock_pipeline(session: Session, pipeline_id: int) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_CLASS, pipeline_id % 2**31)))


def _stored_runs(session: Session, pipeline_id: int, keys: Sequence[str]) -> dict[str, Row]:
    columns = [RUNS.c.external_run_id, *(RUNS.c[name] for name in DATA_FIELDS)]
    stored: dict[str, Row] = {}
    for start in range(0, len(keys), _KEY_CHUNK):
        query = (
            sa.select(*columns)
            .where(
                RUNS.c.pipeline_id == pipeline_id,
                RUNS.c.external_run_id.in_(keys[start : start + _KEY_CHUNK]),
            )
            .order_by(RUNS.c.external_run_id)
            .with_for_update()
        )
        for row in session.execute(query).mappings():
            stored[row["external_run_id"]] = dict(row)
    return stored


_WRITTEN = (*DATA_FIELDS, "ingested_at", "updated_at")
_TIMESTAMP = postgresql.TIMESTAMP(timezone=True)
# The columns of a page as PostgreSQL reads them from one JSON document.
_RECORD_TYPES: dict[str, Any] = {
    "pipeline_id": sa.BigInteger(),
    "external_run_id": sa.Text(),
    "status": sa.Text(),
    "source_status": sa.Text(),
    "started_at": _TIMESTAMP,
    "finished_at": _TIMESTAMP,
    "duration_seconds": sa.Float(),
    "duration_from_source": sa.Boolean(),
    "metrics": postgresql.JSONB(),
    "error_message": sa.Text(),
    "source_payload": postgresql.JSONB(),
    "source_updated_at": _TIMESTAMP,
    "source_attempt": sa.BigInteger(),
    "ingested_at": _TIMESTAMP,
    "created_at": _TIMESTAMP,
    "updated_at": _TIMESTAMP,
}


def _on_conflict(statement: Any) -> Any:
    """``ON CONFLICT (pipeline_id, external_run_id) DO UPDATE ... WHERE <a value differs>``."""
    excluded = statement.excluded
    changed = sa.or_(*(RUNS.c[name].is_distinct_from(excluded[name]) for name in DATA_FIELDS))
    return statement.on_conflict_do_update(
        index_elements=[RUNS.c.pipeline_id, RUNS.c.external_run_id],
        set_={name: excluded[name] for name in _WRITTEN},
        where=changed,
    ).returning(RUNS.c.external_run_id)


def _sqlite_statement() -> Any:
    """Executed with one parameter set per run (SQLAlchemy batches them)."""
    return _on_conflict(sqlite.insert(RUNS))


def _postgresql_statement() -> Any:
    """One statement per page whatever its size: the rows travel as a single JSON
    document read by ``jsonb_to_recordset``, which spares the driver from
    rewriting a statement with thousands of placeholders."""
    page = (
        sa.func.jsonb_to_recordset(sa.cast(sa.bindparam("rows", type_=sa.Text()), postgresql.JSONB))
        .table_valued(*(sa.column(name, type_) for name, type_ in _RECORD_TYPES.items()))
        .render_derived(name="page", with_types=True)
    )
    rows = sa.select(*(page.c[name] for name in _RECORD_TYPES))
    return _on_conflict(postgresql.insert(RUNS).from_select(list(_RECORD_TYPES), rows))


_STATEMENTS = {"sqlite": _sqlite_statement(), "postgresql": _postgresql_statement()}


def _write(session: Session, rows: list[Row]) -> set[str]:
    """Upsert ``rows``; answers the keys actually written (inserted or changed)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        document = orjson.dumps(rows).decode()
        return set(session.scalars(_STATEMENTS[dialect], {"rows": document}))
    return set(session.scalars(_STATEMENTS[dialect], rows))


def upsert_page(
    session: Session,
    pipeline_id: int,
    snapshots: Iterable[Row],
    now: datetime,
    fold: Fold = merge,
) -> PageCounts:
    """Store one page of snapshots in ``session`` (the caller commits); see the module doc.

    ``fold`` is ``merge`` for pulled pages; the OpenLineage intake passes its
    own, built on ``merge``, for events that each tell part of a run."""
    snapshots = list(snapshots)
    counts = PageCounts()
    _lock_pipeline(session, pipeline_id)
    keys = sorted({s["external_run_id"] for s in snapshots})
    stored = _stored_runs(session, pipeline_id, keys)
    # Fold the page into one target per key: a key seen again in the same page
    # is merged by the same rule as against the database, and the later
    # snapshot counts as unchanged (the key's first one carries the outcome).
    targets: dict[str, Row] = {}
    for snapshot in snapshots:
        key = snapshot["external_run_id"]
        seen = key in targets
        try:
            merged = fold(targets[key] if seen else stored.get(key), snapshot)
        except InvalidRun as error:
            counts.skipped += 1
            counts.invalid.append((key, str(error)))
            continue
        if seen or merged is None:
            counts.unchanged += 1
        if merged is not None:
            targets[key] = merged
    writes = []
    for key in sorted(targets):
        target = targets[key]
        if key in stored and not _differs(stored[key], target):
            counts.unchanged += 1
            continue
        writes.append(
            {
                **target,
                "pipeline_id": pipeline_id,
                "ingested_at": now,
                "created_at": now,
                "updated_at": now,
            }
        )
    written = _write(session, writes) if writes else set()
    for row in writes:
        key = row["external_run_id"]
        if key not in written:
            counts.unchanged += 1
        elif key in stored:
            counts.updated += 1
        else:
            counts.created += 1
    return counts


class PlannerStatistics:
    """Keeps PostgreSQL's statistics on ``runs`` fresh during a large ingestion.

    A page's stored runs are read with ``pipeline_id = :p AND external_run_id
    = ANY(:keys)``. Planned from statistics taken when the table was small
    (autovacuum analyzes at most once a minute), that read scans every run of
    the pipeline instead of probing the unique index 1,000 times, and a first
    backfill turns quadratic. So, as PostgreSQL advises after bulk loads, the
    engine analyzes the two key columns once it has created more than a fifth
    of the rows the statistics know of (at least ``MIN_ROWS``). ANALYZE blocks
    neither readers nor writers; without the privilege it is a warning, not
    an error. SQLite plans this read from the unique index without statistics.
    """

    MIN_ROWS = 5_000

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.enabled = engine.dialect.name == "postgresql"
        self.created_since = 0

    def rows_created(self, count: int) -> None:
        if not self.enabled:
            return
        self.created_since += count
        if self.created_since < self.MIN_ROWS:
            return
        with self.engine.begin() as connection:
            known = connection.scalar(
                sa.text("SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = 'runs'::regclass")
            )
            if self.created_since >= 0.2 * float(known or 0):
                connection.execute(sa.text("ANALYZE runs (pipeline_id, external_run_id)"))
                self.created_since = 0


def advance_watermark(
    session: Session, pipeline_id: int, key: str, value: datetime, *, reset: bool = False
) -> None:
    """Move the pipeline's ingestion watermark to ``value`` for ``key`` (its source
    and external id), in the transaction of the page that justifies it. It only
    moves forward, unless ``reset`` (a full re-read) or the key changed.
    Bookkeeping, like ``record_outcome``: ``updated_at`` stays put."""
    stored = session.execute(
        sa.select(Pipeline.ingest_watermark, Pipeline.ingest_watermark_key).where(
            Pipeline.id == pipeline_id
        )
    ).one()
    current, current_key = stored
    if not reset and current_key == key and current is not None and current >= value:
        return
    session.execute(
        sa.update(Pipeline)
        .where(Pipeline.id == pipeline_id)
        .values(ingest_watermark=value, ingest_watermark_key=key)
    )


def record_outcome(session: Session, pipeline_id: int, now: datetime, error: str | None) -> None:
    """Remember on the pipeline when it was last ingested, or why it last failed.

    Ingestion bookkeeping, not a user's change: ``updated_at`` stays put.
    """
    values: dict[str, Any] = {"last_ingestion_error": error}
    if error is None:
        values["last_ingested_at"] = now
    session.execute(sa.update(Pipeline).where(Pipeline.id == pipeline_id).values(**values))
