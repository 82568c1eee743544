"""Ingestion's storage: a page of runs, the watermark, the outcome, the planner
statistics (FR-014, DI-004). The rule that decides what is written is
``chm.ingestion.rule``; this module only reads and writes.

Runs are upserted in batches keyed by (pipeline, external run id). One page is
one transaction:

1. serialize with any other ingester of the same pipeline (PostgreSQL: a
   transaction-scoped advisory lock; SQLite: the write lock taken by
   ``BEGIN IMMEDIATE``), so that what is read next is what is overwritten;
2. read the stored runs of the page's keys (those the rule may change locked);
3. fold each source run into what is stored, by the no-regression rule
   (``rule.fold_page``), and keep only the runs whose stored values would
   really change;
4. write those in one ``INSERT ... ON CONFLICT (pipeline_id, external_run_id)
   DO UPDATE ... WHERE <a value differs>``, ``RETURNING`` the keys actually
   written.

A replay of identical data therefore writes nothing: ``updated_at`` and
``ingested_at`` stay as they were and the run counts as unchanged.

Where PostgreSQL and SQLite differ (the lock, how a page's rows travel to the
database, the planner statistics) is each database's ``RunStore``, one object
per dialect with the same methods (``SQLiteRunStore``, ``PostgresRunStore``),
chosen by ``run_store`` from the engine's dialect (``chm.core.dialects``).

**Cost per run.** What a page costs in Python is kept apart from what the
database does. The rule folds only the runs that may change: a snapshot that
holds exactly the values stored for its key is taken as it is, unchanged
(``rule.fold_page``'s ``identical``), told apart without decoding the stored
run (SQLite: the stored text of its times and documents against the
snapshot's; PostgreSQL: the database compares the page's snapshots, sent as
one JSON document, with the stored runs and only the runs that differ are
read, locked; it first asks which keys are stored unless the walk expects a
replay, ``expect_stored``). The rows are read and written as the driver's own values
(``chm.ingestion.stored_values``: what the column types would write and read
back), without SQLAlchemy's per-value type processing, which cost SQLite more
than the driver's own work.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from itertools import chain, islice
from typing import Any, ClassVar, cast

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from chm.core.dialects import (
    DatabaseDialect,
    HasDialect,
    PostgresDialect,
    SQLiteDialect,
    dialect_for,
)
from chm.ingestion.rule import DATA_FIELDS, Fold, PageCounts, Row, fold_page, merge
from chm.ingestion.stored_values import (
    READ_FIELDS,
    WRITE_FIELDS,
    StoredValues,
    postgres_decode,
    sqlite_decode,
    sqlite_identical,
    sqlite_time,
    sqlite_values,
)
from chm.models import IngestionSource, Pipeline, Run

RUNS = cast(sa.Table, Run.__table__)
_KEY_CHUNK = 1000
# pg_advisory_xact_lock(class, object): "CHMI" marks ingestion's locks. Every
# writer of ingested runs (ingestion, the batch endpoint) locks a pipeline as
# (PIPELINE_LOCK_CLASS, pipeline_lock_object(id)), so they exclude each other.
PIPELINE_LOCK_CLASS = 0x43484D49


def pipeline_lock_object(pipeline_id: int) -> int:
    """A pipeline's advisory lock object: its id, within the 32-bit key."""
    return pipeline_id % 2**31


_WRITTEN = (*DATA_FIELDS, "ingested_at", "updated_at")


def _on_conflict(statement: Any) -> Any:
    """``ON CONFLICT (pipeline_id, external_run_id) DO UPDATE ... WHERE <a value differs>``."""
    excluded = statement.excluded
    changed = sa.or_(*(RUNS.c[name].is_distinct_from(excluded[name]) for name in DATA_FIELDS))
    return statement.on_conflict_do_update(
        index_elements=[RUNS.c.pipeline_id, RUNS.c.external_run_id],
        set_={name: excluded[name] for name in _WRITTEN},
        where=changed,
    ).returning(RUNS.c.external_run_id)


class RunStore(ABC):
    """Ingestion's reads and writes on one database; see the module doc."""

    dialect: ClassVar[DatabaseDialect]
    # Whether the engine keeps the planner's statistics fresh (PlannerStatistics).
    keeps_statistics: ClassVar[bool]

    @abstractmethod
    def lock_pipeline(self, session: Session, pipeline_id: int) -> None:
        """Serialize the page's transaction with every other ingester of the pipeline."""

    @abstractmethod
    def stored_runs(
        self,
        session: Session,
        pipeline_id: int,
        snapshots: list[Row],
        *,
        expect_stored: bool = False,
    ) -> StoredRuns:
        """The stored runs of the snapshots' keys, those the rule may change locked
        until the transaction ends. ``expect_stored``: a hint that most of them are
        stored (a replay), which may choose how to look for them."""

    @abstractmethod
    def write(self, session: Session, rows: list[Row]) -> set[str]:
        """Upsert ``rows``; answers the keys actually written (inserted or changed)."""

    @abstractmethod
    def refresh_statistics(self, connection: sa.Connection, created_since: int) -> bool:
        """Analyze the runs' key columns if ``created_since`` new rows make the
        planner's statistics stale; True when it did."""

    def upsert_page(
        self,
        session: Session,
        pipeline_id: int,
        snapshots: Iterable[Row],
        now: datetime,
        fold: Fold = merge,
        *,
        expect_stored: bool = False,
    ) -> PageCounts:
        """Store one page of snapshots in ``session`` (the caller commits); see the module doc.

        ``fold`` is ``merge`` for pulled pages; the OpenLineage intake passes
        ``fold_event``, for events that each tell part of a run.
        ``expect_stored`` (a hint, see ``stored_runs``): the engine passes it when
        the walk's previous page found most of its runs stored."""
        snapshots = list(snapshots)
        self.lock_pipeline(session, pipeline_id)
        stored = self.stored_runs(session, pipeline_id, snapshots, expect_stored=expect_stored)
        targets, counts = fold_page(stored, snapshots, fold, identical=stored.identical)
        written = self.write_page(session, pipeline_id, targets, now) if targets else set()
        for target in targets:
            key = target["external_run_id"]
            if key not in written:
                counts.unchanged += 1
            elif key in stored:
                counts.updated += 1
            else:
                counts.created += 1
        return counts

    def write_page(
        self, session: Session, pipeline_id: int, targets: list[Row], now: datetime
    ) -> set[str]:
        """``write`` the runs of one pipeline, ingested, created or updated ``now``."""
        bookkeeping = {
            "pipeline_id": pipeline_id,
            "ingested_at": now,
            "created_at": now,
            "updated_at": now,
        }
        return self.write(session, [target | bookkeeping for target in targets])

    def advance_watermark(
        self, session: Session, pipeline_id: int, key: str, value: datetime, *, reset: bool = False
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

    def record_outcome(
        self,
        session: Session,
        pipeline_id: int,
        now: datetime,
        error: str | None,
        *,
        attempted_at: datetime | None = None,
    ) -> None:
        """Remember on the pipeline when it was last ingested, or why it last failed,
        and when this attempt started (the worker's due rule).

        Ingestion bookkeeping, not a user's change: ``updated_at`` stays put.
        """
        values: dict[str, Any] = {"last_ingestion_error": error}
        if error is None:
            values["last_ingested_at"] = now
        if attempted_at is not None:
            values["last_ingest_attempt_at"] = attempted_at
        session.execute(sa.update(Pipeline).where(Pipeline.id == pipeline_id).values(**values))

    def record_source_outcome(
        self,
        session: Session,
        source_name: str,
        now: datetime,
        error: str | None,
        *,
        source_failed: bool = False,
        counts: PageCounts | None = None,
    ) -> None:
        """Each source's health (``IngestionSource``): a success resets its failures;
        an error is its last error, and counts as a failure of the source only
        when the source itself failed (``SourceUnavailable``). The source's
        counters grow by ``counts`` (the pipeline's runs) and by one ingestion,
        succeeded or failed."""
        table = cast(sa.Table, IngestionSource.__table__)
        values: dict[str, Any] = {"name": source_name, "last_attempt_at": now}
        if error is None:
            values |= {"last_success_at": now, "consecutive_failures": 0, "failing_since": None}
        else:
            values |= {"last_error": error, "last_error_at": now, "failing_since": now}
        increments = _run_counts(counts) | {
            "ingestions_succeeded" if error is None else "ingestions_failed": 1
        }
        insert = self.dialect.insert(table).values(
            {"consecutive_failures": 1 if source_failed else 0, **values, **increments}
        )
        update: dict[str, Any] = {k: insert.excluded[k] for k in values if k != "name"}
        if source_failed:
            update["consecutive_failures"] = table.c.consecutive_failures + 1
        if error is not None:  # the first error since the last success stays
            update["failing_since"] = sa.func.coalesce(table.c.failing_since, now)
        update |= {name: table.c[name] + insert.excluded[name] for name in increments}
        session.execute(insert.on_conflict_do_update(index_elements=[table.c.name], set_=update))

    def count_ingested(self, session: Session, source_name: str, counts: PageCounts) -> None:
        """Add ``counts`` to the source's run counters alone, when the walk's outcome
        is not recorded: the pages a walk committed before it was abandoned, or
        before an outcome the database refused."""
        table = cast(sa.Table, IngestionSource.__table__)
        increments = _run_counts(counts)
        insert = self.dialect.insert(table).values(
            {"name": source_name, "consecutive_failures": 0, **increments}
        )
        update = {name: table.c[name] + insert.excluded[name] for name in increments}
        session.execute(insert.on_conflict_do_update(index_elements=[table.c.name], set_=update))


def _run_counts(counts: PageCounts | None) -> dict[str, int]:
    """The ``ingestion_sources`` run counters ``counts`` adds to."""
    counts = counts or PageCounts()
    return {
        "runs_created": counts.created,
        "runs_updated": counts.updated,
        "runs_unchanged": counts.unchanged,
        "runs_skipped": counts.skipped,
    }


class StoredRuns(Mapping[str, Row]):
    """The stored runs of a page's keys: those read, each decoded into the rule's
    values the first time the rule looks at it; and, on PostgreSQL, those the
    database found to hold exactly the values of the page's snapshot of their
    key (``same``), which read as that snapshot."""

    def __init__(
        self,
        found: dict[str, StoredValues],
        decode: Callable[[StoredValues], Row],
        *,
        identical: Callable[[StoredValues, Row], bool] | None = None,
        same: dict[str, Row] | None = None,
    ) -> None:
        self._found = found
        self._decode = decode
        self._identical = identical
        self._same = same or {}
        self._decoded: dict[str, Row] = {}

    def __getitem__(self, key: str) -> Row:
        row = self._same.get(key) or self._decoded.get(key)
        if row is None:
            row = self._decoded[key] = self._decode(self._found[key])
        return row

    def __contains__(self, key: object) -> bool:
        return key in self._found or key in self._same

    def __iter__(self) -> Iterator[str]:
        return chain(self._found, self._same)

    def __len__(self) -> int:
        return len(self._found) + len(self._same)

    def identical(self, key: str, snapshot: Row) -> bool:
        """Whether ``snapshot`` holds exactly the values stored for ``key`` (every
        DATA field), told without decoding; False may still be equal values."""
        same = self._same.get(key)
        if same is not None:
            return same is snapshot
        found = self._found.get(key)
        return (
            found is not None and self._identical is not None and self._identical(found, snapshot)
        )


# Rows per INSERT on SQLite: 16 parameters each, under its 32,766 variables.
_SQLITE_ROWS_PER_STATEMENT = 1000


@lru_cache(maxsize=16)
def _sqlite_read(keys: int) -> str:
    """The stored runs of ``keys`` keys of one pipeline. (S608: the text holds the
    table's own column names and placeholders, no input.)"""
    wanted = ", ".join("?" * keys)
    return (
        f"SELECT {', '.join(READ_FIELDS)} FROM runs WHERE pipeline_id = ?"  # noqa: S608
        f" AND external_run_id IN ({wanted}) ORDER BY external_run_id"
    )


@lru_cache(maxsize=16)
def _sqlite_upsert(rows: int) -> str:
    """One INSERT of ``rows`` rows, ``ON CONFLICT ... DO UPDATE ... WHERE <a value
    differs>``, ``RETURNING`` the keys written, as ``_on_conflict`` renders it
    for one row. (S608: column names and placeholders only.)"""
    row = "(" + ", ".join("?" * len(WRITE_FIELDS)) + ")"
    differs = " OR ".join(f"runs.{name} IS NOT excluded.{name}" for name in DATA_FIELDS)
    return (
        f"INSERT INTO runs ({', '.join(WRITE_FIELDS)}) VALUES {', '.join([row] * rows)}"  # noqa: S608
        " ON CONFLICT (pipeline_id, external_run_id) DO UPDATE SET "
        + ", ".join(f"{name} = excluded.{name}" for name in _WRITTEN)
        + f" WHERE {differs} RETURNING external_run_id"
    )


def _sqlite_driver(session: Session) -> Any:
    """The sqlite3 connection under ``session``'s transaction (begun by it: BEGIN
    IMMEDIATE). A page's reads and writes go to it directly: through SQLAlchemy
    each of their rows cost more than SQLite's own work on it."""
    return session.connection().connection.driver_connection


class SQLiteRunStore(RunStore):
    """SQLite: one writer at a time; a page's stored runs read as SQLite holds them
    and told apart from its snapshots without decoding; its rows written in
    one multi-row INSERT, as SQLite holds them (``chm.ingestion.stored_values``)."""

    dialect = SQLiteDialect()
    # SQLite plans the read of a page's stored runs from the unique index
    # without statistics.
    keeps_statistics = False

    def lock_pipeline(self, session: Session, pipeline_id: int) -> None:
        pass  # the write transaction's BEGIN IMMEDIATE already holds the database's lock

    def stored_runs(
        self,
        session: Session,
        pipeline_id: int,
        snapshots: list[Row],
        *,
        expect_stored: bool = False,
    ) -> StoredRuns:
        keys = sorted({s["external_run_id"] for s in snapshots})
        driver = _sqlite_driver(session)
        found: dict[str, StoredValues] = {}
        for start in range(0, len(keys), _KEY_CHUNK):
            chunk = keys[start : start + _KEY_CHUNK]
            read = driver.execute(_sqlite_read(len(chunk)), (pipeline_id, *chunk))
            for values in read.fetchall():
                found[values[0]] = values
        return StoredRuns(found, sqlite_decode, identical=sqlite_identical)

    def write(self, session: Session, rows: list[Row]) -> set[str]:
        # Rows share their bookkeeping times (a page's, a batch's): each written once.
        stamps: dict[datetime, str | None] = {}

        def stamp(value: datetime) -> str | None:
            text = stamps.get(value)
            if text is None:
                text = stamps[value] = sqlite_time(value)
            return text

        return self._insert(
            session,
            (
                (row["pipeline_id"], *sqlite_values(row),
                 stamp(row["ingested_at"]), stamp(row["created_at"]), stamp(row["updated_at"]))
                for row in rows
            ),
        )  # fmt: skip

    def write_page(
        self, session: Session, pipeline_id: int, targets: list[Row], now: datetime
    ) -> set[str]:
        stamp = sqlite_time(now)
        return self._insert(
            session,
            ((pipeline_id, *sqlite_values(target), stamp, stamp, stamp) for target in targets),
        )

    def _insert(self, session: Session, rows: Iterable[tuple[Any, ...]]) -> set[str]:
        """Rows as SQLite holds them (WRITE_FIELDS), in multi-row INSERTs."""
        driver = _sqlite_driver(session)
        written: set[str] = set()
        iterator = iter(rows)
        while chunk := list(islice(iterator, _SQLITE_ROWS_PER_STATEMENT)):
            parameters = tuple(chain.from_iterable(chunk))
            result = driver.execute(_sqlite_upsert(len(chunk)), parameters)
            written.update(key for (key,) in result.fetchall())
        return written

    def refresh_statistics(self, connection: sa.Connection, created_since: int) -> bool:
        return False


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


def _page_document() -> Any:
    """A page's rows as one JSON document parameter, read as jsonb.

    Untyped, so that the text goes to PostgreSQL as a parameter of unknown
    type that it reads as jsonb when the statement is bound. Typed as text,
    the cast would be a function of a constant: folded while planning, it
    parsed the document again on every page (about 4 ms per 1,000 runs)."""
    return sa.cast(sa.bindparam("rows"), postgresql.JSONB)


def _postgresql_statement(dialect: DatabaseDialect) -> Any:
    """One statement per page whatever its size: the rows travel as a single JSON
    document read by ``jsonb_to_recordset``, which spares the driver from
    rewriting a statement with thousands of placeholders."""
    page = (
        sa.func.jsonb_to_recordset(_page_document())
        .table_valued(*(sa.column(name, type_) for name, type_ in _RECORD_TYPES.items()))
        .render_derived(name="page", with_types=True)
    )
    rows = sa.select(*(page.c[name] for name in _RECORD_TYPES))
    return _on_conflict(dialect.insert(RUNS).from_select(list(_RECORD_TYPES), rows))


def _postgresql_page_statement(dialect: DatabaseDialect) -> Any:
    """``_postgresql_statement`` for one pipeline's page written at one time: the
    pipeline and the time are parameters, not fields of every row, so the
    document is a fifth smaller (and PostgreSQL reads it in as much less time)."""
    page = (
        sa.func.jsonb_to_recordset(_page_document())
        .table_valued(*(sa.column(name, _RECORD_TYPES[name]) for name in READ_FIELDS))
        .render_derived(name="page", with_types=True)
    )
    now = sa.bindparam("now", type_=_TIMESTAMP)
    rows = sa.select(
        sa.bindparam("pipeline_id", type_=sa.BigInteger()),
        *(page.c[name] for name in READ_FIELDS),
        now,
        now,
        now,
    )
    return _on_conflict(dialect.insert(RUNS).from_select(list(_RECORD_TYPES), rows))


def _postgresql_same() -> Any:
    """The keys of a page (one snapshot each, as one JSON document) that are stored,
    and whether the stored run holds exactly the snapshot's values (IS NOT
    DISTINCT FROM on every DATA field: times by instant, documents as jsonb).

    Not locked: a run found the same is not written, whatever another writer
    does to it meanwhile; the runs that differ are read again, locked
    (``_POSTGRES_READ``), and folded from what that read finds."""
    page = (
        sa.func.jsonb_to_recordset(_page_document())
        .table_valued(*(sa.column(name, _RECORD_TYPES[name]) for name in READ_FIELDS))
        .render_derived(name="page", with_types=True)
    )
    same = sa.and_(*(RUNS.c[name].is_not_distinct_from(page.c[name]) for name in DATA_FIELDS))
    return (
        sa.select(RUNS.c.external_run_id, same.label("same"))
        .join_from(
            page,
            RUNS,
            sa.and_(
                RUNS.c.pipeline_id == sa.bindparam("pipeline_id"),
                RUNS.c.external_run_id == page.c.external_run_id,
            ),
        )
        .order_by(RUNS.c.external_run_id)
    )


# The stored values of some keys of one pipeline, untyped: as psycopg gives them.
_UNTYPED_RUNS = sa.table("runs", *(sa.column(name) for name in ("pipeline_id", *READ_FIELDS)))
_POSTGRES_READ = (
    sa.select(*(_UNTYPED_RUNS.c[name] for name in READ_FIELDS))
    .where(
        _UNTYPED_RUNS.c.pipeline_id == sa.bindparam("pipeline_id"),
        _UNTYPED_RUNS.c.external_run_id
        == sa.any_(sa.bindparam("keys", type_=postgresql.ARRAY(sa.Text()))),
    )
    .order_by(_UNTYPED_RUNS.c.external_run_id)
    .with_for_update()
)


# The stored keys among some keys of one pipeline.
_POSTGRES_KEYS = (
    sa.select(_UNTYPED_RUNS.c.external_run_id)
    .where(
        _UNTYPED_RUNS.c.pipeline_id == sa.bindparam("pipeline_id"),
        _UNTYPED_RUNS.c.external_run_id
        == sa.any_(sa.bindparam("keys", type_=postgresql.ARRAY(sa.Text()))),
    )
    .order_by(_UNTYPED_RUNS.c.external_run_id)
)


class PostgresRunStore(RunStore):
    """PostgreSQL: an advisory lock per pipeline; which of a page's keys are stored
    (unless ``expect_stored``), their snapshots compared with the stored runs by
    the database, only the runs that differ read and locked; a page's rows
    written as one JSON document."""

    dialect = PostgresDialect()
    keeps_statistics = True
    _statement = _postgresql_statement(dialect)
    _page_statement = _postgresql_page_statement(dialect)
    _same = _postgresql_same()

    def lock_pipeline(self, session: Session, pipeline_id: int) -> None:
        lock = sa.func.pg_advisory_xact_lock(PIPELINE_LOCK_CLASS, pipeline_lock_object(pipeline_id))
        session.execute(sa.select(lock))

    def stored_runs(
        self,
        session: Session,
        pipeline_id: int,
        snapshots: list[Row],
        *,
        expect_stored: bool = False,
    ) -> StoredRuns:
        # Each key's first snapshot: the one the rule may take as it is.
        first: dict[str, Row] = {}
        for snapshot in snapshots:
            first.setdefault(snapshot["external_run_id"], snapshot)
        compared_keys: Sequence[str] = sorted(first)
        if not expect_stored:
            # Which keys are stored at all, first: a page of new runs (a first
            # ingestion) then needs no comparison, whose document PostgreSQL
            # would have to read (about 5 ms per 1,000 runs).
            keys = {"pipeline_id": pipeline_id, "keys": compared_keys}
            compared_keys = session.execute(_POSTGRES_KEYS, keys).scalars().all()
        if not compared_keys:
            return StoredRuns({}, postgres_decode)
        document = orjson.dumps([first[key] for key in compared_keys]).decode()
        compared = session.execute(self._same, {"rows": document, "pipeline_id": pipeline_id})
        same: dict[str, Row] = {}
        differ: list[str] = []
        for key, is_same in compared:
            if is_same:
                same[key] = first[key]
            else:
                differ.append(key)
        found: dict[str, StoredValues] = {}
        for start in range(0, len(differ), _KEY_CHUNK):
            chunk = differ[start : start + _KEY_CHUNK]
            for values in session.execute(
                _POSTGRES_READ, {"pipeline_id": pipeline_id, "keys": chunk}
            ):
                found[values[0]] = tuple(values)
        return StoredRuns(found, postgres_decode, same=same)

    def write(self, session: Session, rows: list[Row]) -> set[str]:
        document = orjson.dumps(rows).decode()
        return set(session.scalars(self._statement, {"rows": document}))

    def write_page(
        self, session: Session, pipeline_id: int, targets: list[Row], now: datetime
    ) -> set[str]:
        parameters = {
            "rows": orjson.dumps(targets).decode(),
            "pipeline_id": pipeline_id,
            "now": now,
        }
        return set(session.scalars(self._page_statement, parameters))

    def refresh_statistics(self, connection: sa.Connection, created_since: int) -> bool:
        known = connection.scalar(
            sa.text("SELECT greatest(reltuples, 0) FROM pg_class WHERE oid = 'runs'::regclass")
        )
        if created_since < 0.2 * float(known or 0):
            return False
        connection.execute(sa.text("ANALYZE runs (pipeline_id, external_run_id)"))
        return True


_STORES: dict[str, RunStore] = {
    store.dialect.name: store for store in (SQLiteRunStore(), PostgresRunStore())
}


def run_store(bind: HasDialect) -> RunStore:
    """The store of the database behind an engine or a connection."""
    return _STORES[dialect_for(bind).name]


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
        self.store = run_store(engine)
        self.enabled = self.store.keeps_statistics
        self.created_since = 0

    def rows_created(self, count: int) -> None:
        if not self.enabled:
            return
        self.created_since += count
        if self.created_since < self.MIN_ROWS:
            return
        with self.engine.begin() as connection:
            if self.store.refresh_statistics(connection, self.created_since):
                self.created_since = 0
