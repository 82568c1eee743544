"""The partitioned layout of ``runs`` that ``bench/partitioning.py`` measures, as SQL.

``runs`` partitioned by RANGE (``created_at``), weekly or monthly, beside a
small unpartitioned key table that keeps the idempotency key globally unique:

    run_keys (pipeline_id, external_run_id) PRIMARY KEY, id UNIQUE, created_at
    runs     PARTITION BY RANGE (created_at), PRIMARY KEY (id, created_at),
             every other index of the plain table, but not the unique
             (pipeline_id, external_run_id), which PostgreSQL cannot declare
             on a table partitioned by anything else
    runs_default  the DEFAULT partition: where the few runs rescued from a
             dropped partition live (and anything outside the premade range)

Why these keys (docs/scaling.md, "Partitioning runs by time"): ``event_at``
cannot be a partition key (a generated column is refused; the same
expression as a key forbids any primary key or unique index), and it changes
when a run starts, which ``INSERT ... ON CONFLICT DO UPDATE`` refuses to do
across partitions. ``created_at`` never changes after the insert, is known
at the insert, and in a steady feed follows event time within minutes.

Everything here is plain SQL text run through psycopg (the DDL) or a
SQLAlchemy connection (the upsert), against whatever ``runs`` and
``run_keys`` the connection's ``search_path`` finds: the schema ``part`` for
the side-by-side layout, ``public`` for the live migration.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from chm.ingestion.rule import DATA_FIELDS

INTERVALS = ("week", "month")
# The schema of the side-by-side layout.
PART = "part"

# --- partition bounds -------------------------------------------------------------


def floor_bound(at: datetime, interval: str) -> datetime:
    """The partition bound at or before ``at``: Monday 00:00 UTC, or the 1st."""
    day = at.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if interval == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def next_bound(bound: datetime, interval: str) -> datetime:
    if interval == "week":
        return bound + timedelta(days=7)
    return (bound.replace(day=28) + timedelta(days=4)).replace(day=1)


def bounds(first: datetime, last: datetime, interval: str, ahead: int) -> list[datetime]:
    """Bounds from the one at or before ``first`` to ``ahead`` partitions past ``last``."""
    out = [floor_bound(first, interval)]
    while out[-1] <= last:
        out.append(next_bound(out[-1], interval))
    for _ in range(ahead):
        out.append(next_bound(out[-1], interval))
    return out


def partition_name(low: datetime) -> str:
    return f"runs_{low:%Y%m%d}"


# --- the plain table, read back (never restated) --------------------------------


def copied_columns(conn: psycopg.Connection[Any], schema: str = "public") -> list[str]:
    """The runs table's columns a copy writes (not the generated ``event_at``)."""
    return [
        row[0]
        for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = %s"
            " AND table_name = 'runs' AND is_generated = 'NEVER' ORDER BY ordinal_position",
            (schema,),
        )
    ]


def plain_indexes(
    conn: psycopg.Connection[Any], table: str = "public.runs"
) -> list[tuple[str, str]]:
    """(name, CREATE INDEX ...) of the table's indexes that back no constraint:
    every index but the primary key and the unique (pipeline_id, external_run_id)."""
    return [
        (row[0], row[1])
        for row in conn.execute(
            "SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x"
            " JOIN pg_class i ON i.oid = x.indexrelid WHERE x.indrelid = %s::regclass"
            " AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)"
            " ORDER BY i.relname",
            (table,),
        )
    ]


# --- the side-by-side layout (schema part) ---------------------------------------

KEYS_DDL = """
CREATE TABLE {schema}.run_keys (
    id bigint NOT NULL DEFAULT nextval('public.runs_id_seq'),
    pipeline_id bigint NOT NULL,
    external_run_id varchar(500) NOT NULL,
    created_at timestamptz NOT NULL,
    CONSTRAINT pk_run_keys PRIMARY KEY (pipeline_id, external_run_id),
    CONSTRAINT uq_run_keys_id UNIQUE (id)
)"""


def create_partitioned(
    conn: psycopg.Connection[Any], schema: str, interval: str, first: datetime, last: datetime
) -> list[tuple[datetime, datetime]]:
    """``{schema}.runs`` partitioned by created_at, its partitions (two premade past
    ``last``) and DEFAULT, and ``{schema}.run_keys``. Answers the ranges."""
    conn.execute(f"CREATE SCHEMA {schema}")
    conn.execute(
        f"CREATE TABLE {schema}.runs (LIKE public.runs INCLUDING DEFAULTS INCLUDING GENERATED"
        " INCLUDING CONSTRAINTS) PARTITION BY RANGE (created_at)"
    )
    conn.execute(f"ALTER TABLE {schema}.runs ADD CONSTRAINT pk_runs PRIMARY KEY (id, created_at)")
    conn.execute(
        f"ALTER TABLE {schema}.runs ADD CONSTRAINT fk_runs_pipeline_id_pipelines FOREIGN KEY"
        " (pipeline_id) REFERENCES public.pipelines (id) ON DELETE RESTRICT"
    )
    for _name, definition in plain_indexes(conn):
        conn.execute(definition.replace(" ON public.runs ", f" ON {schema}.runs "))
    edges = bounds(first, last, interval, ahead=2)
    ranges = list(itertools.pairwise(edges))
    for low, high in ranges:
        conn.execute(
            f"CREATE TABLE {schema}.{partition_name(low)} PARTITION OF {schema}.runs"
            f" FOR VALUES FROM ('{low.isoformat()}') TO ('{high.isoformat()}')"
        )
    conn.execute(f"CREATE TABLE {schema}.runs_default PARTITION OF {schema}.runs DEFAULT")
    conn.execute(KEYS_DDL.format(schema=schema))
    return ranges


def copy_id_range(
    conn: psycopg.Connection[Any], schema: str, columns: Sequence[str], start: int, stop: int
) -> int:
    """Copy the plain runs with ``start <= id < stop`` and their keys (one transaction)."""
    names = ", ".join(columns)
    with conn.transaction():
        copied = conn.execute(
            f"INSERT INTO {schema}.runs ({names}) SELECT {names} FROM public.runs"
            " WHERE id >= %s AND id < %s",
            (start, stop),
        ).rowcount
        conn.execute(
            f"INSERT INTO {schema}.run_keys (id, pipeline_id, external_run_id, created_at)"
            " SELECT id, pipeline_id, external_run_id, created_at FROM public.runs"
            " WHERE id >= %s AND id < %s",
            (start, stop),
        )
    return copied


# --- the upsert through the key table ---------------------------------------------

# A page's columns as jsonb_to_recordset reads them (chm.ingestion.store's page).
PAGE_TYPES = {
    "pipeline_id": "bigint",
    "external_run_id": "text",
    "status": "text",
    "source_status": "text",
    "started_at": "timestamptz",
    "finished_at": "timestamptz",
    "duration_seconds": "double precision",
    "duration_from_source": "boolean",
    "metrics": "jsonb",
    "error_message": "text",
    "source_payload": "jsonb",
    "source_updated_at": "timestamptz",
    "source_attempt": "bigint",
    "ingested_at": "timestamptz",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
}
_WRITTEN = (*DATA_FIELDS, "ingested_at", "updated_at")
_VALUES = [name for name in PAGE_TYPES if name not in ("pipeline_id", "external_run_id")]


def _page_cte() -> str:
    record = ", ".join(f"{name} {kind}" for name, kind in PAGE_TYPES.items())
    return (
        "page AS MATERIALIZED (SELECT * FROM"
        f" jsonb_to_recordset(%(rows)s::jsonb) AS page({record}))"
    )


def _on_conflict(target: str) -> str:
    changed = " OR ".join(f"runs.{name} IS DISTINCT FROM excluded.{name}" for name in DATA_FIELDS)
    return (
        f"ON CONFLICT ({target}) DO UPDATE SET {', '.join(f'{n} = excluded.{n}' for n in _WRITTEN)}"
        f"\nWHERE {changed}\nRETURNING runs.external_run_id"
    )


def plain_upsert() -> str:
    """Today's page upsert (``chm.ingestion.store``, PostgreSQL): the page as one
    JSON document, ``ON CONFLICT (pipeline_id, external_run_id) DO UPDATE ...
    WHERE <a value differs>``."""
    names = ", ".join(PAGE_TYPES)
    return f"""
WITH {_page_cte()}
INSERT INTO runs ({names})
SELECT {names} FROM page
{_on_conflict("pipeline_id, external_run_id")}"""


def keyed_upsert() -> str:
    """The same upsert through ``run_keys``: still one statement.

    New keys get their id (from ``runs_id_seq``) and their ``created_at`` in
    ``run_keys``; every row of the page then goes to ``runs`` under the (id,
    created_at) its key holds, so a replay finds the same partition and the
    same primary key, and ``ON CONFLICT ... DO UPDATE ... WHERE <a value
    differs>`` works as before. Both parts read one snapshot: the join finds
    the keys stored before the statement, ``new_keys`` the ones it added.
    """
    values = [name for name in _VALUES if name != "created_at"]
    return f"""
WITH {_page_cte()}, new_keys AS (
    INSERT INTO run_keys (pipeline_id, external_run_id, created_at)
    SELECT pipeline_id, external_run_id, created_at FROM page
    ON CONFLICT (pipeline_id, external_run_id) DO NOTHING
    RETURNING id, pipeline_id, external_run_id, created_at
), keys AS (
    SELECT id, pipeline_id, external_run_id, created_at FROM new_keys
    UNION ALL
    SELECT k.id, k.pipeline_id, k.external_run_id, k.created_at
    FROM run_keys k JOIN page
      ON k.pipeline_id = page.pipeline_id AND k.external_run_id = page.external_run_id
)
INSERT INTO runs (id, created_at, pipeline_id, external_run_id, {", ".join(values)})
SELECT keys.id, keys.created_at, page.pipeline_id, page.external_run_id,
       {", ".join(f"page.{name}" for name in values)}
FROM page JOIN keys
  ON keys.pipeline_id = page.pipeline_id AND keys.external_run_id = page.external_run_id
{_on_conflict("id, created_at")}"""


# Today's read of a page's stored runs (chm.ingestion.store, PostgreSQL).
PLAIN_READ = (
    "SELECT external_run_id, "
    + ", ".join(DATA_FIELDS)
    + " FROM runs WHERE pipeline_id = %s AND external_run_id = ANY(%s)"
    " ORDER BY external_run_id FOR UPDATE"
)


# The store's read of a page's stored runs, through the key table: each key's
# (id, created_at) finds its one partition (run-time pruning in the nested loop).
KEYED_READ = (
    "SELECT runs.external_run_id, "
    + ", ".join(f"runs.{name}" for name in DATA_FIELDS)
    + " FROM run_keys k JOIN runs ON runs.id = k.id AND runs.created_at = k.created_at"
    " WHERE k.pipeline_id = %s AND k.external_run_id = ANY(%s)"
    " ORDER BY k.external_run_id FOR UPDATE OF runs"
)


# --- retention by dropping partitions ---------------------------------------------


def kept_run_ids_sql() -> str:
    """Each pipeline's latest run with event time before the cutoff (the ordering
    rule; ``chm.worker.retention``'s kept run), walked from the cutoff down."""
    started = "coalesce(kept.started_at, '-infinity'::timestamptz)"
    finished = "coalesce(kept.finished_at, '-infinity'::timestamptz)"
    return (
        "SELECT (SELECT kept.id FROM runs kept WHERE kept.pipeline_id = p.id"
        f" AND {started} < %(cutoff)s AND kept.event_at < %(cutoff)s"
        f" ORDER BY {started} DESC, {finished} DESC, kept.id DESC LIMIT 1) FROM pipelines p"
    )


def rescued_ids(
    conn: psycopg.Connection[Any], partition: str, cutoff: datetime, kept: Sequence[int]
) -> list[int]:
    """The runs of a partition wholly before the cutoff that a prune would not
    delete: any whose event time is at or after the cutoff (a run created
    before it but started after), and the pipelines' kept runs."""
    return [
        row[0]
        for row in conn.execute(
            f"SELECT id FROM {partition} WHERE event_at >= %s OR id = ANY(%s)",
            (cutoff, list(kept)),
        )
    ]


def detach_and_rescue(
    conn: psycopg.Connection[Any],
    schema: str,
    partitions: Sequence[str],
    rescue: Sequence[int],
    columns: Sequence[str],
    prepared_at: datetime,
) -> int:
    """One short transaction: detach the partitions and put the rescued runs back
    through the parent (they land in DEFAULT, their range being gone), with any
    run of those partitions changed since the rescue set was read. Readers never
    see a kept run missing. DETACH takes ACCESS EXCLUSIVE on the parent (a
    DEFAULT partition rules out DETACH ... CONCURRENTLY); nothing in the
    transaction scans more than the rescued rows. Answers the rows put back."""
    names = ", ".join(columns)
    moved = 0
    with conn.transaction():
        conn.execute("SET LOCAL lock_timeout = '5s'")
        for partition in partitions:
            conn.execute(f"ALTER TABLE {schema}.runs DETACH PARTITION {schema}.{partition}")
        for partition in partitions:
            moved += conn.execute(
                f"INSERT INTO {schema}.runs ({names}) SELECT {names}"
                f" FROM {schema}.{partition} WHERE id = ANY(%s) OR updated_at >= %s",
                (list(rescue), prepared_at),
            ).rowcount
    return moved


def delete_keys_of(
    conn: psycopg.Connection[Any], schema: str, partition: str, batch: int
) -> tuple[int, list[float]]:
    """Delete the keys of a detached partition's runs that were not put back, in
    batches (one transaction each). Answers (keys deleted, each batch's seconds)."""
    deleted, seconds, after = 0, [], 0
    while True:
        started = time.perf_counter()
        with conn.transaction():
            ids = [
                row[0]
                for row in conn.execute(
                    f"SELECT d.id FROM {schema}.{partition} d WHERE d.id > %s"
                    f" AND NOT EXISTS (SELECT 1 FROM {schema}.runs r"
                    "  WHERE r.id = d.id AND r.created_at = d.created_at)"
                    " ORDER BY d.id LIMIT %s",
                    (after, batch),
                )
            ]
            if ids:
                deleted += conn.execute(
                    f"DELETE FROM {schema}.run_keys WHERE id = ANY(%s)", (ids,)
                ).rowcount
        seconds.append(time.perf_counter() - started)
        if len(ids) < batch:
            return deleted, seconds
        after = ids[-1]


# --- the live migration (schema public) -------------------------------------------

DUAL_WRITE = """
CREATE FUNCTION runs_keys_dual_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO run_keys (id, pipeline_id, external_run_id, created_at)
    SELECT id, pipeline_id, external_run_id, created_at FROM new_rows
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER runs_keys_dual_write AFTER INSERT ON runs
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION runs_keys_dual_write();
"""


def create_parent(conn: psycopg.Connection[Any], boundary: datetime, interval: str) -> list[str]:
    """``runs_partitioned`` beside the live ``runs``: the same columns, defaults
    (the same id sequence), checks and indexes (named ``*_p`` until the swap),
    primary key (id, created_at), partitions from ``boundary`` (two premade)
    and DEFAULT. Answers the parent's index names."""
    conn.execute(
        "CREATE TABLE runs_partitioned (LIKE runs INCLUDING DEFAULTS INCLUDING GENERATED"
        " INCLUDING CONSTRAINTS) PARTITION BY RANGE (created_at)"
    )
    # LIKE copied the live table's CHECK (created_at < boundary): not the parent's.
    conn.execute("ALTER TABLE runs_partitioned DROP CONSTRAINT ck_runs_created_before")
    conn.execute(
        "ALTER TABLE runs_partitioned ADD CONSTRAINT pk_runs_p PRIMARY KEY (id, created_at)"
    )
    conn.execute(
        "ALTER TABLE runs_partitioned ADD CONSTRAINT fk_runs_pipeline_id_pipelines FOREIGN KEY"
        " (pipeline_id) REFERENCES pipelines (id) ON DELETE RESTRICT"
    )
    names = []
    for name, definition in plain_indexes(conn):
        conn.execute(
            definition.replace(
                f"INDEX {name} ON public.runs ", f"INDEX {name}_p ON runs_partitioned "
            )
        )
        names.append(name)
    low = boundary
    for _ in range(2):
        high = next_bound(low, interval)
        conn.execute(
            f"CREATE TABLE {partition_name(low)} PARTITION OF runs_partitioned"
            f" FOR VALUES FROM ('{low.isoformat()}') TO ('{high.isoformat()}')"
        )
        low = high
    conn.execute("CREATE TABLE runs_default PARTITION OF runs_partitioned DEFAULT")
    return names


def swap(conn: psycopg.Connection[Any], boundary: datetime, indexes: Sequence[str]) -> None:
    """The one short transaction: the live table becomes the partition of
    everything before ``boundary`` (no scan: its CHECK implies the bound; no
    index build: each of the parent's indexes matches one it has), and the
    partitioned table takes its name, its indexes' names and its sequence."""
    with conn.transaction():
        conn.execute("SET LOCAL lock_timeout = '2s'")
        conn.execute("ALTER TABLE runs RENAME TO runs_legacy")
        conn.execute("DROP TRIGGER runs_keys_dual_write ON runs_legacy")
        conn.execute(
            "ALTER TABLE runs_partitioned ATTACH PARTITION runs_legacy"
            f" FOR VALUES FROM (MINVALUE) TO ('{boundary.isoformat()}')"
        )
        conn.execute("ALTER TABLE runs_partitioned RENAME TO runs")
        conn.execute("ALTER SEQUENCE runs_id_seq OWNED BY runs.id")
        conn.execute("ALTER INDEX pk_runs RENAME TO pk_runs_legacy")
        conn.execute("ALTER INDEX pk_runs_p RENAME TO pk_runs")
        for name in indexes:
            conn.execute(f"ALTER INDEX {name} RENAME TO {name}_legacy")
            conn.execute(f"ALTER INDEX {name}_p RENAME TO {name}")
