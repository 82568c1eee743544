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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, TypeVarTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import InstrumentedAttribute, Session

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
        literal = sa.literal(value, self._element.type)
        return NullsLowKey(literal) if self.nulls_low else literal

    @property
    def cursor_type(self) -> type | tuple[type, ...]:
        return (self.python_type, type(None)) if self.nulls_low else self.python_type


@dataclass(frozen=True)
class Keyset:
    """A listing's total order: ``keys`` in one direction, the last one unique.

    ``kind`` is signed into its cursors, so a cursor of one listing is not
    taken by another. ``bound_first_key`` adds the first key's own bound,
    implied by the row-value comparison: SQLite does not seek an index with a
    row value, and starts its range at the cursor only with it.
    """

    kind: str
    keys: tuple[SortKey, ...]
    descending: bool = False
    bound_first_key: bool = False

    @property
    def order_by(self) -> list[sa.ColumnElement[Any]]:
        expressions = [key.expression for key in self.keys]
        return [e.desc() for e in expressions] if self.descending else expressions

    def after(self, values: Sequence[Any]) -> sa.ColumnElement[bool]:
        """Rows strictly after ``values`` (a row's ``position``) in this order."""
        expressions = [key.expression for key in self.keys]
        bounds = [key.bound(v) for key, v in zip(self.keys, values, strict=True)]
        if len(self.keys) == 1:
            (expression,), (bound,) = expressions, bounds
            return expression < bound if self.descending else expression > bound
        row, row_bound = sa.tuple_(*expressions), sa.tuple_(*bounds)
        seek = row < row_bound if self.descending else row > row_bound
        if not self.bound_first_key:
            return seek
        first = expressions[0] <= bounds[0] if self.descending else expressions[0] >= bounds[0]
        return sa.and_(first, seek)

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
