"""Column types shared by every table, identical in meaning on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal

from chm.core.dialects import dialect_for


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware timestamp stored as UTC.

    PostgreSQL keeps it in ``timestamptz``; SQLite keeps the UTC wall time as
    fixed-width text, which sorts and compares chronologically. Naive values
    are refused on the way in: every caller must know which zone it means.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTCDateTime column")
        return dialect_for(dialect).bind_utc(value.astimezone(UTC))

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# JSON documents: JSONB on PostgreSQL, JSON text on SQLite.
JSONDocument = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

# Integer primary keys: BIGINT on PostgreSQL, the rowid alias on SQLite.
BigIntPK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# The sentinel that stands for "no timestamp" in the ordering keys: below any
# time a column can hold, so a descending order puts missing timestamps last
# on both databases, like ``DESC NULLS LAST``. PostgreSQL has -infinity; on
# SQLite, where times are fixed-width text, the empty string sorts first.
_SQLITE_FLOOR = "''"
_POSTGRES_FLOOR = "'-infinity'::timestamptz"


class NullsLowKey(ColumnElement[datetime]):
    """``coalesce(col, <below any time>)``, rendered with a literal per dialect.

    Used both in the ordering indexes and in the queries, so that the
    database matches the expression index and seeks with a row-value
    comparison (keyset pagination) instead of filtering.
    """

    inherit_cache = True
    # The wrapped column is part of the statement cache key: without it the
    # compiled-SQL cache could not tell started_at's key from finished_at's.
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement)]
    type = UTCDateTime()

    def __init__(self, column: ColumnElement[Any]) -> None:
        self.column = column

    @property
    def _from_objects(self) -> list[Any]:
        return self.column._from_objects


@compiles(NullsLowKey, "postgresql")
def _compile_pg(element: NullsLowKey, compiler: Any, **kw: Any) -> str:
    return f"coalesce({compiler.process(element.column, **kw)}, {_POSTGRES_FLOOR})"


@compiles(NullsLowKey)
def _compile_default(element: NullsLowKey, compiler: Any, **kw: Any) -> str:
    return f"coalesce({compiler.process(element.column, **kw)}, {_SQLITE_FLOOR})"
