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
    bound_first_key="sqlite",
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
    cursor = encode_cursor("items-newest", [T, 7])
    floor = "'-infinity'::timestamptz"
    key = f"coalesce(items.started_at, {floor})"
    bound = f"coalesce(%(param_1)s::TIMESTAMP WITH TIME ZONE, {floor})"
    # PostgreSQL seeks with the row value alone: the implied first-key bound
    # is SQLite's, and renders as true here (it would skew the estimate).
    assert _sql(NEWEST_FIRST, cursor, postgresql.dialect()) == (
        f"SELECT items.id FROM items WHERE true"
        f" AND ({key}, items.id) < ({bound}, %(param_2)s::INTEGER)"
        f" ORDER BY {key} DESC, items.id DESC LIMIT %(param_3)s::INTEGER"
    )


def test_sqlite_gets_the_implied_first_key_bound_as_a_plain_comparison() -> None:
    cursor = encode_cursor("items-newest", [T, 7])
    key = "coalesce(items.started_at, '')"
    bound = "coalesce(?, '')"
    assert _sql(NEWEST_FIRST, cursor, sqlite.dialect()) == (
        f"SELECT items.id FROM items WHERE {key} <= {bound}"
        f" AND ({key}, items.id) < ({bound}, ?)"
        f" ORDER BY {key} DESC, items.id DESC LIMIT ? OFFSET ?"
    )


@pytest.mark.parametrize(
    ("dialect", "floor"),
    [(postgresql.dialect(), "'-infinity'::timestamptz"), (sqlite.dialect(), "''")],
)
def test_a_cursor_at_the_floor_seeks_with_equality_on_it(dialect: sa.Dialect, floor: str) -> None:
    """A run without a start time is last: the rows after it share the floor.

    PostgreSQL seeks with equality on it and the remaining key; SQLite keeps
    the row comparison and its implied bound (behind an equality on an
    expression key it would sort again). Either way the floor is a constant.
    """
    cursor = encode_cursor("items-newest", [None, 7])
    sql = _sql(NEWEST_FIRST, cursor, dialect)
    key = f"coalesce(items.started_at, {floor})"
    where = sql.split(" WHERE ")[1].split(" ORDER BY ")[0]
    conditions = where.split(" AND ")
    if dialect.name == "postgresql":
        assert conditions[0] == f"{key} = coalesce(NULL, {floor})"
        assert conditions[-1].startswith("items.id < ")
        assert "(" + key not in where  # no row comparison led by the floor key
    else:
        assert conditions == [
            f"{key} <= coalesce(NULL, {floor})",
            f"({key}, items.id) < (coalesce(NULL, {floor}), ?)",
        ]


def test_the_equality_form_selects_the_same_rows_as_the_row_comparison() -> None:
    """On real rows (SQLite's form), the seek from every position, a missing
    start time's included, selects exactly the rows after it, in order; the
    PostgreSQL form is walked the same way by tests/test_runs.py on both
    databases."""
    engine = sa.create_engine("sqlite://")
    rows = [
        {"name_key": "x", "started_at": None if i % 3 == 0 else T.replace(minute=i % 7), "id": i}
        for i in range(1, 40)
    ]
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE items (name_key TEXT, started_at TEXT, id INTEGER)")
        conn.execute(sa.insert(ITEMS), rows)
        ordered = conn.execute(NEWEST_FIRST.statement(sa.select(ITEMS.c.id), None, 100)).scalars()
        order = list(ordered)
        plain = Keyset("items-newest", NEWEST_FIRST.keys, descending=True)
        for position in range(len(order)):
            row = next(r for r in rows if r["id"] == order[position])
            values = [row["started_at"], row["id"]]
            after = list(
                conn.execute(
                    sa.select(ITEMS.c.id)
                    .where(NEWEST_FIRST.after(values))
                    .order_by(*NEWEST_FIRST.order_by)
                ).scalars()
            )
            assert after == order[position + 1 :]
            expected = sa.select(ITEMS.c.id).where(
                sa.tuple_(*[k.expression for k in plain.keys])
                < sa.tuple_(*[k.bound(v) for k, v in zip(plain.keys, values, strict=True)])
            )
            assert sorted(after) == sorted(conn.execute(expected).scalars())


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


def test_a_per_dialect_seek_is_one_condition_under_not_and_or() -> None:
    seek = NEWEST_FIRST.after([None, 7])  # PerDialect: the floor's two forms
    for dialect, inner in ((sqlite.dialect(), "<="), (postgresql.dialect(), " = ")):
        negated = str(sa.select(ITEMS.c.id).where(sa.not_(seek)).compile(dialect=dialect))
        assert "WHERE NOT (" in negated and inner in negated
        either = sa.or_(ITEMS.c.id == 1, seek)
        assert " OR (" in str(sa.select(ITEMS.c.id).where(either).compile(dialect=dialect))


def test_a_keyset_on_a_one_column_index_bounds_its_first_key_everywhere() -> None:
    by_time = Keyset(
        "items-by-time",
        (SortKey(ITEMS.c.started_at, datetime), SortKey(ITEMS.c.id, int)),
        bound_first_key="always",
    )
    cursor = encode_cursor("items-by-time", [T, 7])
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        where = _sql(by_time, cursor, dialect).split(" WHERE ")[1].split(" ORDER BY ")[0]
        assert where.startswith("items.started_at >= ")
        assert "(items.started_at, items.id) > (" in where
