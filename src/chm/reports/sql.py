"""SQL building blocks shared by every report: the clock, the scope, UTC time buckets.

Every report is one SQLAlchemy ``Select`` built from these parts. The API
builds it with a ``FixedClock`` (its times are bound parameters); the BI
views build the very same statement with a ``DatabaseClock`` (its times are
the database's own ``now()``, shifted). The per-dialect SQL of the time
arithmetic lives here, in one place:

- PostgreSQL keeps ``timestamptz``; offsets are whole seconds (never days,
  which follow the session time zone across DST) and buckets come from
  ``date_trunc(unit, t, 'UTC')``.
- SQLite keeps fixed-width UTC text ``YYYY-MM-DD HH:MM:SS.ffffff`` (see
  ``chm.core.types.UTCDateTime``), which compares chronologically; every
  expression here yields text of exactly that shape.

Rows computed in Python (the overdue report's expected ticks) reach a
statement as one bound JSON document (``json_rows``), expanded by
``json_each`` on SQLite and ``jsonb_array_elements`` on PostgreSQL.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, TypeAlias, TypeVar

import orjson
import sqlalchemy as sa
from pydantic import BaseModel, TypeAdapter
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import coercions, roles
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.sql.visitors import InternalTraversal

from chm.core.types import UTCDateTime
from chm.models import Client, Pipeline, Run
from chm.models.pipeline import active_inventory

TimeExpr = ColumnElement[datetime]
# A statement of any columns (SQLAlchemy 2.1 types a Select by its columns).
Query: TypeAlias = "sa.Select[*tuple[Any, ...]]"
# A column or an ORM attribute such as ``Run.event_at``.
ColumnLike: TypeAlias = "ColumnElement[Any] | sa.orm.QueryableAttribute[Any]"


def as_expression(value: ColumnLike) -> ColumnElement[Any]:
    return coercions.expect(roles.ExpressionElementRole, value)


ZERO = timedelta(0)


class Bucket(StrEnum):
    hour = "hour"
    day = "day"

    @property
    def width(self) -> timedelta:
        return timedelta(hours=1) if self is Bucket.hour else timedelta(days=1)

    def floor(self, value: datetime) -> datetime:
        """The UTC-aligned start of the bucket holding ``value`` (an aware UTC time)."""
        if self is Bucket.hour:
            return value.replace(minute=0, second=0, microsecond=0)
        return value.replace(hour=0, minute=0, second=0, microsecond=0)


# SQLite: strftime formats giving UTCDateTime's fixed-width text.
_SQLITE_FORMAT = {
    None: "%Y-%m-%d %H:%M:%f",  # milliseconds: padded to microseconds below
    Bucket.hour: "%Y-%m-%d %H:00:00.000000",
    Bucket.day: "%Y-%m-%d 00:00:00.000000",
}


def _whole_seconds(offset: timedelta) -> int:
    seconds = offset.total_seconds()
    if seconds != int(seconds):
        raise ValueError("time offsets in SQL are whole seconds")
    return int(seconds)


def _sqlite_modifier(offset: timedelta) -> str:
    return f"'{_whole_seconds(offset):+d} seconds'"


def _pg_interval(offset: timedelta) -> str:
    return f"INTERVAL '{abs(_whole_seconds(offset))} seconds'"


class DatabaseNow(ColumnElement[datetime]):
    """The database's current time plus ``offset``, then floored to ``floor`` (UTC)."""

    inherit_cache = True
    type = UTCDateTime()
    _traverse_internals = [
        ("offset", InternalTraversal.dp_plain_obj),
        ("floor", InternalTraversal.dp_plain_obj),
    ]

    def __init__(self, offset: timedelta = ZERO, floor: Bucket | None = None) -> None:
        _whole_seconds(offset)
        self.offset = offset
        self.floor = floor


@compiles(DatabaseNow, "postgresql")
def _now_pg(element: DatabaseNow, _compiler: Any, **_kw: Any) -> str:
    now = "now()"
    if element.offset:
        sign = "+" if element.offset > ZERO else "-"
        now = f"(now() {sign} {_pg_interval(element.offset)})"
    if element.floor is not None:
        return f"date_trunc('{element.floor.value}', {now}, 'UTC')"
    return now


@compiles(DatabaseNow)
def _now_sqlite(element: DatabaseNow, _compiler: Any, **_kw: Any) -> str:
    modifier = f", {_sqlite_modifier(element.offset)}" if element.offset else ""
    text = f"strftime('{_SQLITE_FORMAT[element.floor]}', 'now'{modifier})"
    # 'now' has millisecond precision: pad to UTCDateTime's six digits.
    return text if element.floor is not None else f"({text} || '000')"


class _BucketTime(ColumnElement[datetime]):
    """A time computed from ``value`` and a bucket width, compiled per dialect."""

    inherit_cache = True
    type = UTCDateTime()
    _traverse_internals = [
        ("value", InternalTraversal.dp_clauseelement),
        ("bucket", InternalTraversal.dp_plain_obj),
    ]

    def __init__(self, value: ColumnLike, bucket: Bucket) -> None:
        self.value = as_expression(value)
        self.bucket = bucket

    @property
    def _from_objects(self) -> list[Any]:
        return self.value._from_objects


class BucketStart(_BucketTime):
    """The UTC-aligned start of the ``bucket`` holding ``value``."""

    inherit_cache = True


@compiles(BucketStart, "postgresql")
def _bucket_start_pg(element: BucketStart, compiler: Any, **kw: Any) -> str:
    return f"date_trunc('{element.bucket.value}', {compiler.process(element.value, **kw)}, 'UTC')"


@compiles(BucketStart)
def _bucket_start_sqlite(element: BucketStart, compiler: Any, **kw: Any) -> str:
    return f"strftime('{_SQLITE_FORMAT[element.bucket]}', {compiler.process(element.value, **kw)})"


class NextBucket(_BucketTime):
    """The start of the bucket after the one starting at ``value``."""

    inherit_cache = True


@compiles(NextBucket, "postgresql")
def _next_bucket_pg(element: NextBucket, compiler: Any, **kw: Any) -> str:
    return f"({compiler.process(element.value, **kw)} + {_pg_interval(element.bucket.width)})"


@compiles(NextBucket)
def _next_bucket_sqlite(element: NextBucket, compiler: Any, **kw: Any) -> str:
    value = compiler.process(element.value, **kw)
    return (
        f"strftime('%Y-%m-%d %H:%M:%S.000000', {value}, {_sqlite_modifier(element.bucket.width)})"
    )


class Clock(ABC):
    """Where a report's reference time ``as_of`` comes from."""

    @abstractmethod
    def at(self, offset: timedelta = ZERO) -> TimeExpr:
        """``as_of + offset`` as SQL."""

    @abstractmethod
    def day_start(self, days_back: int) -> TimeExpr:
        """Midnight UTC of the day ``days_back`` days before the day of ``as_of``."""


@dataclass(frozen=True)
class FixedClock(Clock):
    """The API's clock: ``as_of`` is a value, every derived time a bound parameter."""

    as_of: datetime

    def at(self, offset: timedelta = ZERO) -> TimeExpr:
        return at_time(self.as_of + offset)

    def day_start(self, days_back: int) -> TimeExpr:
        return at_time(Bucket.day.floor(self.as_of) - timedelta(days=days_back))


class DatabaseClock(Clock):
    """The views' clock: ``as_of`` is the database's current time when queried."""

    def at(self, offset: timedelta = ZERO) -> TimeExpr:
        return DatabaseNow(offset)

    def day_start(self, days_back: int) -> TimeExpr:
        return DatabaseNow(-timedelta(days=days_back), floor=Bucket.day)


def at_time(value: datetime) -> TimeExpr:
    """A fixed time as a bound parameter stored like the timestamp columns."""
    return sa.literal(value, UTCDateTime())


@dataclass(frozen=True)
class Window:
    """A half-open event-time window ``since <= event_at < until``, as SQL."""

    since: TimeExpr
    until: TimeExpr

    def contains(self, event_at: ColumnLike) -> ColumnElement[bool]:
        return sa.and_(event_at >= self.since, event_at < self.until)


@dataclass(frozen=True)
class Scope:
    """Which inventory a report covers: one client or all, active or everything."""

    client_id: int | None = None
    include_inactive: bool = False

    def filters(self) -> list[ColumnElement[bool]]:
        """Conditions on ``pipelines`` and ``clients`` (both must be in the FROM)."""
        conditions: list[ColumnElement[bool]] = []
        if self.client_id is not None:
            conditions.append(Pipeline.client_id == self.client_id)
        if not self.include_inactive:
            conditions.append(active_inventory())
        return conditions

    def client_filters(self) -> list[ColumnElement[bool]]:
        """The same conditions for reports that list clients rather than pipelines."""
        conditions: list[ColumnElement[bool]] = []
        if self.client_id is not None:
            conditions.append(Client.id == self.client_id)
        if not self.include_inactive:
            conditions.append(Client.is_active.is_(True))
        return conditions


# The scope of everything the BI views show: all clients, active inventory.
ACTIVE_INVENTORY = Scope()


def runs_in_scope(*columns: Any) -> Query:
    """``SELECT columns FROM runs JOIN pipelines JOIN clients`` (filters left to the caller)."""
    return (
        sa.select(*columns)
        .select_from(Run)
        .join(Pipeline, Pipeline.id == Run.pipeline_id)
        .join(Client, Client.id == Pipeline.client_id)
    )


ModelT = TypeVar("ModelT", bound=BaseModel)


def rows_as(model: type[ModelT], result: sa.Result[Any]) -> list[ModelT]:
    """Each row of ``result`` validated as ``model``, in one pydantic call.

    Plain dicts built with the result's keys read once: validating a
    RowMapping (or ``dict(mapping)``) asks SQLAlchemy for the keys of every
    row, which cost 0.17 s of the 0.5 s the status board took for 12,000 rows.
    """
    return _validated(model, tuple(result.keys()), result)


def head_as(
    model: type[ModelT], result: sa.Result[Any], rows: int | None
) -> tuple[list[ModelT], int]:
    """The first ``rows`` rows of ``result`` (all when None) validated as
    ``model``, and how many rows it had: a page showing the head of a long
    list counts it without building every row."""
    keys = tuple(result.keys())
    fetched = result.all()
    return _validated(model, keys, fetched if rows is None else fetched[:rows]), len(fetched)


def _validated(model: type[ModelT], keys: tuple[str, ...], rows: Iterable[Any]) -> list[ModelT]:
    plain = [dict(zip(keys, row, strict=True)) for row in rows]
    return _list_adapter(model).validate_python(plain)


_ADAPTERS: dict[type[BaseModel], TypeAdapter[Any]] = {}


def _list_adapter(model: type[ModelT]) -> TypeAdapter[list[ModelT]]:
    adapter = _ADAPTERS.get(model)
    if adapter is None:
        adapter = _ADAPTERS[model] = TypeAdapter(list[model])  # type: ignore[valid-type]
    return adapter


def count_where(condition: ColumnElement[bool]) -> ColumnElement[int]:
    """The number of rows meeting ``condition`` (0, never NULL, on an empty group too)."""
    return sa.func.coalesce(sa.func.sum(sa.case((condition, 1), else_=0)), 0)


def ratio(numerator: ColumnElement[Any], denominator: ColumnElement[Any]) -> ColumnElement[float]:
    """``numerator / denominator`` in double precision on both databases."""
    # A plain operator: SQLAlchemy's own true division adds casts per dialect.
    divide = sa.cast(numerator, sa.Float).op("/", return_type=sa.Float)
    return divide(sa.cast(denominator, sa.Float))


# --- Rows computed in Python, handed to a statement as one JSON document ---------


class _JsonElements(FunctionElement[Any]):
    """The elements of a JSON array parameter, one row each (column ``value``)."""

    name = "json_elements"
    inherit_cache = True


@compiles(_JsonElements, "postgresql")
def _json_elements_pg(element: _JsonElements, compiler: Any, **kw: Any) -> str:
    return f"jsonb_array_elements(CAST({compiler.process(element.clauses, **kw)} AS JSONB))"


@compiles(_JsonElements)
def _json_elements_sqlite(element: _JsonElements, compiler: Any, **kw: Any) -> str:
    return f"json_each({compiler.process(element.clauses, **kw)})"


class _JsonField(ColumnElement[Any]):
    """Field ``field`` of a JSON object, read as ``type`` (an integer, a time or text)."""

    inherit_cache = True
    _traverse_internals = [
        ("value", InternalTraversal.dp_clauseelement),
        ("field", InternalTraversal.dp_string),
        ("type", InternalTraversal.dp_type),
    ]

    def __init__(self, value: ColumnElement[Any], field: str, type_: sa.types.TypeEngine[Any]):
        if not field.isidentifier():
            raise ValueError(f"a JSON field name is an identifier, not {field!r}")
        self.value = value
        self.field = field
        self.type = type_

    @property
    def _from_objects(self) -> list[Any]:
        return self.value._from_objects


@compiles(_JsonField, "postgresql")
def _json_field_pg(element: _JsonField, compiler: Any, **kw: Any) -> str:
    text = f"({compiler.process(element.value, **kw)} ->> '{element.field}')"
    if isinstance(element.type, UTCDateTime):
        return f"(CAST({text} AS TIMESTAMP) AT TIME ZONE 'UTC')"
    if isinstance(element.type, sa.Integer):
        return f"CAST({text} AS BIGINT)"
    return text


@compiles(_JsonField)
def _json_field_sqlite(element: _JsonField, compiler: Any, **kw: Any) -> str:
    return f"json_extract({compiler.process(element.value, **kw)}, '$.{element.field}')"


def _json_value(value: Any) -> Any:
    """A value as the document holds it. A time is the fixed-width UTC text
    UTCDateTime stores on SQLite, ``YYYY-MM-DD HH:MM:SS.ffffff``, which SQLite
    then compares with the columns as they are and PostgreSQL reads as a
    timestamp in UTC."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a JSON row")
        return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    return value


def json_rows(
    name: str, columns: dict[str, sa.types.TypeEngine[Any]], rows: list[dict[str, Any]]
) -> sa.Subquery:
    """``rows`` (computed in Python) as a relation ``name(columns...)`` of one
    statement: a single bound JSON document, expanded by the database
    (``json_each`` on SQLite, ``jsonb_array_elements`` on PostgreSQL), however
    many rows there are. Columns are integers, UTC times (``UTCDateTime``,
    aware datetimes in ``rows``) or text."""
    records = [{key: _json_value(row[key]) for key in columns} for row in rows]
    document = orjson.dumps(records).decode()
    parameter = sa.bindparam(f"{name}_document", document, type_=sa.Text())
    elements = _JsonElements(parameter).table_valued("value", name=f"{name}_elements")
    fields = [_JsonField(elements.c.value, key, type_).label(key) for key, type_ in columns.items()]
    # Expanded once (a MATERIALIZED CTE): with stale statistics PostgreSQL
    # may put the expansion on the inner side of a nested loop, parsing the
    # whole document again for every pipeline.
    expanded = sa.select(*fields).select_from(elements).cte(name).prefix_with("MATERIALIZED")
    return sa.select(expanded).subquery(f"{name}_rows")
