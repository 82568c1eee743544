"""One keyset page for every listing: its total order, its seek, its cursor.

A listing declares its order once, as a ``Keyset`` (the cursor's kind, the
sort keys, one direction for all of them); ``keyset_page`` (an ORM session)
and ``keyset_page_async`` (an async Core connection) add the seek past the
cursor, the order and the limit to the listing's filtered select, run it, and
return the page's rows and the next cursor.

The seek is one row-value comparison over the keys, ``(k1, k2, ...) > (:v1,
:v2, ...)`` (``<`` when descending), which an index declared in the same
order answers as a range that starts at the cursor, however deep (see
docs/query-plans.md). A key is therefore never NULL in the comparison: a
nullable timestamp is declared ``nulls_low`` and is ordered, compared and
indexed through ``NullsLowKey`` (a missing time below any time, so ``DESC``
puts it last on both databases), and so is the cursor's own value for it.

The two planners want the same condition in different words (``PerDialect``).
SQLite seeks an index with plain comparisons only, so ``bound_first_key``
adds the first key's bound that the row value implies; PostgreSQL, which
seeks an index on the keys with the row value, would count that bound twice
and expect too few rows, so it gets none (unless the index is on the first
key alone: ``"always"``). A descending cursor whose first key is the floor (a
run without a start time) seeks, on PostgreSQL, with the equality form
``k1 = floor AND (k2, ...) < (...)``: nothing lies below the floor, so it is
the same condition, and PostgreSQL estimates a row comparison from its first
column alone (``k1 < floor``: no row), then finds every index free and may
walk the table-wide one. SQLite keeps the row comparison there: it would sort
again behind an equality on an expression key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, TypeVarTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import InstrumentedAttribute, Session
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import Grouping
from sqlalchemy.sql.visitors import InternalTraversal

from chm.core.pagination import decode_cursor, encode_cursor
from chm.core.types import NullsLowKey

R = TypeVar("R")
T = TypeVar("T")
Ts = TypeVarTuple("Ts")


@dataclass(frozen=True)
class SortKey:
    """One key of a listing's total order.

    ``column`` is a table column or a mapped attribute; its name is also the
    attribute that holds the key on a result row or an ORM object.
    ``python_type`` is what a cursor carries for it. A ``nulls_low`` key (a
    nullable timestamp) goes through ``NullsLowKey`` and may be None in a cursor.
    """

    column: sa.ColumnElement[Any] | InstrumentedAttribute[Any]
    python_type: type
    nulls_low: bool = False

    @property
    def _element(self) -> sa.ColumnElement[Any]:
        if isinstance(self.column, InstrumentedAttribute):
            return self.column.__clause_element__()
        return self.column

    @property
    def name(self) -> str:
        key = self._element.key
        assert key is not None, "a sort key is a named column"
        return key

    @property
    def expression(self) -> sa.ColumnElement[Any]:
        """The key as the listing orders by it (and its index declares it)."""
        return NullsLowKey(self._element) if self.nulls_low else self._element

    def bound(self, value: Any) -> sa.ColumnElement[Any]:
        """A cursor's value for this key, through the same expression."""
        if self.nulls_low and value is None:
            return self.floor
        literal = sa.literal(value, self._element.type)
        return NullsLowKey(literal) if self.nulls_low else literal

    @property
    def floor(self) -> sa.ColumnElement[Any]:
        """A ``nulls_low`` key's value for a missing time, as a constant."""
        return NullsLowKey(sa.null())

    @property
    def cursor_type(self) -> type | tuple[type, ...]:
        return (self.python_type, type(None)) if self.nulls_low else self.python_type


class PerDialect(sa.ColumnElement[bool]):
    """A seek condition written one way for SQLite and another for the rest.

    Both forms select the same rows; they differ in what each planner can use.
    """

    inherit_cache = True
    _traverse_internals = [
        ("sqlite", InternalTraversal.dp_clauseelement),
        ("other", InternalTraversal.dp_clauseelement),
    ]
    # Not Boolean: SQLite would render a Boolean element as ``(...) = 1``,
    # which it cannot seek an index with.
    type = sa.types.NullType()  # type: ignore[assignment]

    def __init__(self, *, sqlite: sa.ColumnElement[bool], other: sa.ColumnElement[bool]) -> None:
        self.sqlite = sqlite
        self.other = other

    @property
    def _from_objects(self) -> list[Any]:
        return [*self.sqlite._from_objects, *self.other._from_objects]

    def self_group(self, against: Any = None) -> sa.ColumnElement[Any]:
        # Rendered bare inside an AND (what a seek is part of) or as a whole
        # WHERE; in parentheses anywhere else (under a NOT, an OR), as any
        # compound condition.
        return self if against in (None, operators.and_, operators._asbool) else Grouping(self)


@compiles(PerDialect, "sqlite")
def _compile_sqlite(element: PerDialect, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.sqlite.self_group(against=operators.and_), **kw))


@compiles(PerDialect)
def _compile_other(element: PerDialect, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.other.self_group(against=operators.and_), **kw))


@dataclass(frozen=True)
class Keyset:
    """A listing's total order: ``keys`` in one direction, the last one unique.

    ``kind`` is signed into its cursors, so a cursor of one listing is not
    taken by another. ``bound_first_key`` adds the first key's own bound,
    implied by the row-value comparison: ``"sqlite"`` on SQLite only, which
    does not seek an index with a row value and starts its range at the
    cursor only with it (PostgreSQL seeks an index on the keys with the row
    value, and would count the bound twice); ``"always"`` on every database,
    for a listing served by an index on the first key alone, which neither
    can seek with the row value (PostgreSQL's plan for it, prepared once and
    reused, then expects the whole table after the cursor).
    """

    kind: str
    keys: tuple[SortKey, ...]
    descending: bool = False
    bound_first_key: Literal["sqlite", "always"] | None = None

    @property
    def order_by(self) -> list[sa.ColumnElement[Any]]:
        expressions = [key.expression for key in self.keys]
        return [e.desc() for e in expressions] if self.descending else expressions

    def after(self, values: Sequence[Any]) -> sa.ColumnElement[bool]:
        """Rows strictly after ``values`` (a row's ``position``) in this order."""
        if len(values) != len(self.keys):
            raise ValueError(f"a position of {len(self.keys)} keys, not {len(values)}")
        keys, rest = list(self.keys), list(values)
        floors: list[sa.ColumnElement[bool]] = []
        # Descending, a missing time is the last value a key can take: the rows
        # after it share it, and the seek goes on with the next keys.
        while self.descending and len(keys) > 1 and keys[0].nulls_low and rest[0] is None:
            floors.append(keys[0].expression == keys[0].floor)
            keys, rest = keys[1:], rest[1:]
        seek = self._seek(self.keys, values, bound_first_key=self.bound_first_key)
        if not floors:
            return seek
        # SQLite sorts again when an expression key is held by equality, so it
        # keeps the row comparison (its range starts at the floor either way).
        bound = self.bound_first_key if self.bound_first_key == "always" else None
        rest_seek = self._seek(keys, rest, bound_first_key=bound)
        return PerDialect(sqlite=seek, other=sa.and_(*floors, rest_seek))

    def _seek(
        self,
        keys: Sequence[SortKey],
        values: Sequence[Any],
        *,
        bound_first_key: Literal["sqlite", "always"] | None,
    ) -> sa.ColumnElement[bool]:
        expressions = [key.expression for key in keys]
        bounds = [key.bound(v) for key, v in zip(keys, values, strict=True)]
        if len(keys) == 1:
            (expression,), (bound,) = expressions, bounds
            return expression < bound if self.descending else expression > bound
        row, row_bound = sa.tuple_(*expressions), sa.tuple_(*bounds)
        seek = row < row_bound if self.descending else row > row_bound
        if bound_first_key is None:
            return seek
        first = expressions[0] <= bounds[0] if self.descending else expressions[0] >= bounds[0]
        if bound_first_key == "always":
            return sa.and_(first, seek)
        # PostgreSQL seeks with the row value itself; the implied bound would
        # only make it count the condition twice and expect too few rows.
        return sa.and_(PerDialect(sqlite=first, other=sa.true()), seek)

    def position(self, row: Any) -> list[Any]:
        """The keys of ``row`` (a result row or an ORM object), as a cursor holds them."""
        return [getattr(row, key.name) for key in self.keys]

    def decode(self, cursor: str) -> list[Any]:
        """The position inside ``cursor``; a 422 on ``cursor`` unless we issued it."""
        return decode_cursor(self.kind, cursor, tuple(key.cursor_type for key in self.keys))

    def statement(self, query: sa.Select[*Ts], cursor: str | None, limit: int) -> sa.Select[*Ts]:
        """``query`` past ``cursor``, in this order, one row more than a page."""
        if cursor is not None:
            query = query.where(self.after(self.decode(cursor)))
        return query.order_by(*self.order_by).limit(limit + 1)

    def page(self, rows: Sequence[R], limit: int) -> tuple[list[R], str | None]:
        """The page and the cursor of the next one (None on the last page)."""
        if len(rows) <= limit:
            return list(rows), None
        page = list(rows[:limit])
        return page, encode_cursor(self.kind, self.position(page[-1]))


def keyset_page(
    session: Session, keyset: Keyset, query: sa.Select[T], *, cursor: str | None, limit: int
) -> tuple[list[T], str | None]:
    """A page of the ORM entities ``query`` selects, in ``keyset`` order."""
    rows = list(session.scalars(keyset.statement(query, cursor, limit)))
    return keyset.page(rows, limit)


async def keyset_page_async(
    conn: AsyncConnection,
    keyset: Keyset,
    query: sa.Select[*Ts],
    *,
    cursor: str | None,
    limit: int,
) -> tuple[list[sa.Row[*Ts]], str | None]:
    """A page of the rows ``query`` selects, in ``keyset`` order."""
    rows = (await conn.execute(keyset.statement(query, cursor, limit))).all()
    return keyset.page(rows, limit)
