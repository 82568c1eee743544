"""The one keyset page (chm.core.keyset): the seek each order compiles to,
and the next cursor a page hands out."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from chm.core.errors import ValidationFailed
from chm.core.keyset import Keyset, SortKey
from chm.core.pagination import encode_cursor
from chm.core.types import UTCDateTime

ITEMS = sa.table(
    "items",
    sa.column("name_key", sa.String()),
    sa.column("started_at", UTCDateTime()),
    sa.column("id", sa.Integer()),
)
BY_NAME = Keyset("items", (SortKey(ITEMS.c.name_key, str), SortKey(ITEMS.c.id, int)))
BY_ID = Keyset("items-by-id", (SortKey(ITEMS.c.id, int),))
NEWEST_FIRST = Keyset(
    "items-newest",
    (SortKey(ITEMS.c.started_at, datetime, nulls_low=True), SortKey(ITEMS.c.id, int)),
    descending=True,
    bound_first_key=True,
)
T = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _sql(keyset: Keyset, cursor: str | None, dialect: sa.Dialect) -> str:
    statement = keyset.statement(sa.select(ITEMS.c.id), cursor, limit=10)
    return " ".join(str(statement.compile(dialect=dialect)).split())


def test_ascending_keys_seek_with_one_row_value_comparison() -> None:
    cursor = encode_cursor("items", ["acme", 7])
    assert _sql(BY_NAME, cursor, sqlite.dialect()) == (
        "SELECT items.id FROM items WHERE (items.name_key, items.id) > (?, ?)"
        " ORDER BY items.name_key, items.id LIMIT ? OFFSET ?"
    )


def test_a_single_key_seeks_with_a_plain_comparison() -> None:
    cursor = encode_cursor("items-by-id", [7])
    assert _sql(BY_ID, cursor, sqlite.dialect()) == (
        "SELECT items.id FROM items WHERE items.id > ? ORDER BY items.id LIMIT ? OFFSET ?"
    )


def test_the_first_page_has_no_seek() -> None:
    assert _sql(BY_NAME, None, sqlite.dialect()) == (
        "SELECT items.id FROM items ORDER BY items.name_key, items.id LIMIT ? OFFSET ?"
    )


def test_nulls_low_keys_descend_and_bound_the_cursor_through_the_same_expression() -> None:
    cursor = encode_cursor("items-newest", [None, 7])
    floor = "'-infinity'::timestamptz"
    key = f"coalesce(items.started_at, {floor})"
    bound = f"coalesce(%(param_1)s::TIMESTAMP WITH TIME ZONE, {floor})"
    assert _sql(NEWEST_FIRST, cursor, postgresql.dialect()) == (
        f"SELECT items.id FROM items WHERE {key} <= {bound}"
        f" AND ({key}, items.id) < ({bound}, %(param_2)s::INTEGER)"
        f" ORDER BY {key} DESC, items.id DESC LIMIT %(param_3)s::INTEGER"
    )


def test_a_full_page_hands_out_the_position_of_its_last_row() -> None:
    rows = [SimpleNamespace(started_at=None if i == 2 else T, id=i) for i in (3, 2, 1)]
    page, next_cursor = NEWEST_FIRST.page(rows, limit=2)
    assert page == rows[:2]
    assert next_cursor is not None
    assert NEWEST_FIRST.decode(next_cursor) == [None, 2]


def test_the_last_page_has_no_next_cursor() -> None:
    rows = [SimpleNamespace(name_key="a", id=1)]
    assert BY_NAME.page(rows, limit=1) == (rows, None)


@pytest.mark.parametrize(
    "cursor",
    [
        encode_cursor("items-by-id", [7]),  # another listing's
        encode_cursor("items", [7, 7]),  # a key of the wrong type
        encode_cursor("items", ["acme", None]),  # a missing key that cannot be missing
    ],
)
def test_a_cursor_that_does_not_fit_the_order_is_a_422(cursor: str) -> None:
    with pytest.raises(ValidationFailed) as error:
        BY_NAME.decode(cursor)
    assert [issue.code for issue in error.value.errors] == ["invalid_cursor"]
