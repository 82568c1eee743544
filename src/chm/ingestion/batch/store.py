"""What the batch needs beyond the ingestion store (``chm.ingestion.store``):
the locks, and the stored runs, of a whole batch's pipelines and keys, each in
one statement whatever the number of pipelines.

The store locks one pipeline and reads one pipeline's stored runs at a time
(a pulled page belongs to one pipeline), and answers the keys it wrote
without their ids; a batch names up to 1,000 runs of as many pipelines and
answers each item's run id. So, on one database each:

- **the locks**: the store's own advisory lock of each pipeline (the same
  lock key, so a batch serializes with the engine and the OpenLineage intake
  on a pipeline they share), taken in one statement, in the order of their
  keys, so that two batches naming the same pipelines never wait for each
  other in a cycle. SQLite: the write transaction already holds the database;
- **the stored runs**: the batch's keys travel as one parameter joined to the
  runs' unique index: two arrays ``unnest``-ed on PostgreSQL, a JSON array of
  pairs read by ``json_each`` on SQLite (whose planner would scan the whole
  index for a row-value ``IN`` list), locked ``FOR UPDATE`` as the store
  locks a page's runs.

The write is the store's (``RunStore.write``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

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
from chm.ingestion.rule import DATA_FIELDS, Row
from chm.ingestion.store import PIPELINE_LOCK_CLASS, RUNS, pipeline_lock_object

# (pipeline id, external run id): a run's identity, the upsert key.
Key = tuple[int, str]

_IDENTITY = (RUNS.c.id, RUNS.c.pipeline_id, RUNS.c.external_run_id)
_VALUES = tuple(RUNS.c[name] for name in DATA_FIELDS)
# A stored run as the rule reads it.
_ROW_NAMES = ("external_run_id", *DATA_FIELDS)


class BatchStore(ABC):
    """The batch's locks and reads on one database, each one statement."""

    dialect: ClassVar[DatabaseDialect]

    def __init__(self) -> None:
        joined = self._runs_of_keys()
        # The rule's values of the runs, locked as the store locks a page's.
        self._stored = sa.select(*_IDENTITY, *_VALUES).select_from(joined).with_for_update(of=RUNS)
        self._ids = sa.select(*_IDENTITY).select_from(joined)

    @abstractmethod
    def lock_pipelines(self, session: Session, pipeline_ids: Iterable[int]) -> None:
        """Take the ingestion store's lock of each pipeline (``RunStore.lock_pipeline``)."""

    @abstractmethod
    def _runs_of_keys(self) -> sa.Join:
        """``runs`` joined to the keys of the statement's parameters."""

    @abstractmethod
    def _parameters(self, keys: Sequence[Key]) -> dict[str, Any]:
        """The parameters that carry ``keys``."""

    def stored_runs(self, session: Session, keys: Sequence[Key]) -> dict[Key, tuple[int, Row]]:
        """The stored run of each of ``keys`` that has one: its id, and its values
        as the no-regression rule reads them (``external_run_id`` and
        ``DATA_FIELDS``), locked until the transaction ends."""
        found: dict[Key, tuple[int, Row]] = {}
        if keys:
            for run_id, pipeline_id, *values in session.execute(
                self._stored, self._parameters(keys)
            ):
                row = dict(zip(_ROW_NAMES, values, strict=True))
                found[pipeline_id, row["external_run_id"]] = (run_id, row)
        return found

    def run_ids(self, session: Session, keys: Sequence[Key]) -> dict[Key, int]:
        """The id of the stored run of each of ``keys`` that has one."""
        if not keys:
            return {}
        rows = session.execute(self._ids, self._parameters(keys))
        return {(pipeline_id, external_id): run_id for run_id, pipeline_id, external_id in rows}


class PostgresBatchStore(BatchStore):
    """PostgreSQL: the store's advisory locks in one statement; the keys as two
    arrays, ``unnest``-ed side by side."""

    dialect = PostgresDialect()

    def __init__(self) -> None:
        super().__init__()
        objects = (
            sa.func.unnest(sa.bindparam("objects", type_=postgresql.ARRAY(sa.Integer())))
            .table_valued("object", with_ordinality="position")
            .render_derived(name="locks")
        )
        self._locks = (
            sa.select(sa.func.pg_advisory_xact_lock(PIPELINE_LOCK_CLASS, objects.c.object))
            .select_from(objects)
            .order_by(objects.c.position)
        )

    def lock_pipelines(self, session: Session, pipeline_ids: Iterable[int]) -> None:
        # The store's lock of each pipeline (PostgresRunStore.lock_pipeline), in
        # their order, each once: every batch takes them in the same order.
        objects = sorted({pipeline_lock_object(pipeline_id) for pipeline_id in pipeline_ids})
        if objects:
            session.execute(self._locks, {"objects": objects})

    def _runs_of_keys(self) -> sa.Join:
        wanted = (
            sa.func.unnest(
                sa.bindparam("pipeline_ids", type_=postgresql.ARRAY(sa.BigInteger())),
                sa.bindparam("external_run_ids", type_=postgresql.ARRAY(sa.Text())),
            )
            .table_valued("pipeline_id", "external_run_id")
            .render_derived(name="wanted")
        )
        return RUNS.join(
            wanted,
            sa.and_(
                RUNS.c.pipeline_id == wanted.c.pipeline_id,
                RUNS.c.external_run_id == wanted.c.external_run_id,
            ),
        )

    def _parameters(self, keys: Sequence[Key]) -> dict[str, Any]:
        return {"pipeline_ids": [k[0] for k in keys], "external_run_ids": [k[1] for k in keys]}


class SQLiteBatchStore(BatchStore):
    """SQLite: no lock to take (``BEGIN IMMEDIATE`` holds the database's); the
    keys as one JSON array of pairs, read by ``json_each``."""

    dialect = SQLiteDialect()

    def lock_pipelines(self, session: Session, pipeline_ids: Iterable[int]) -> None:
        pass

    def _runs_of_keys(self) -> sa.Join:
        wanted = sa.func.json_each(sa.bindparam("keys", type_=sa.Text())).table_valued("value")
        return wanted.join(
            RUNS,
            sa.and_(
                RUNS.c.pipeline_id == sa.func.json_extract(wanted.c.value, "$[0]"),
                RUNS.c.external_run_id == sa.func.json_extract(wanted.c.value, "$[1]"),
            ),
        )

    def _parameters(self, keys: Sequence[Key]) -> dict[str, Any]:
        return {"keys": orjson.dumps(keys).decode()}


_STORES: dict[str, BatchStore] = {
    store.dialect.name: store for store in (SQLiteBatchStore(), PostgresBatchStore())
}


def batch_store(bind: HasDialect) -> BatchStore:
    """The batch store of the database behind an engine or a connection."""
    return _STORES[dialect_for(bind).name]
