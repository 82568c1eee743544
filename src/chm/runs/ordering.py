"""The ordering rule (FR-006) and its keyset seek.

Runs are ordered by ``started_at`` desc, then ``finished_at`` desc, with
missing timestamps last in both, then ``id`` desc. In SQL each timestamp is
ordered through ``coalesce(ts, <below any time>)`` (see ``NullsLowKey``): the same
order as ``DESC NULLS LAST``, identical on SQLite (which sorts NULL lowest
and rejects NULLS in CREATE INDEX) and PostgreSQL (which sorts NULL highest),
and, unlike a nullable column, usable in a row-value comparison. The
expression indexes of the migrations are declared on exactly these keys, so
"latest" is an index top-1 and each history page an index range scan that
starts right at the cursor, however deep.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from chm.core.types import NullsLowKey
from chm.models import Run

ORDER_KEYS: list[Any] = [
    NullsLowKey(Run.__table__.c.started_at),
    NullsLowKey(Run.__table__.c.finished_at),
    Run.id,
]
ORDER_BY = [key.desc() for key in ORDER_KEYS]


def cursor_key(run: Any) -> list[Any]:
    """The keyset position of a run (an ORM object or a row)."""
    return [run.started_at, run.finished_at, run.id]


def after_cursor(key: list[Any]) -> sa.ColumnElement[bool]:
    """Runs strictly after ``key`` (a run's ``cursor_key``) in the ordering rule."""
    started, finished, run_id = key
    # The bounds go through the same key expression, so a missing time in
    # the cursor becomes the same floor the index holds.
    started_bound = NullsLowKey(sa.literal(started, Run.started_at.type))
    bound = sa.tuple_(
        started_bound,
        NullsLowKey(sa.literal(finished, Run.finished_at.type)),
        sa.literal(run_id, Run.id.type),
    )
    # The row-value comparison is the exact rule, and PostgreSQL seeks the
    # index with it. The implied first-key bound lets SQLite, which does not
    # seek with row values, start its index range at the cursor too.
    return sa.and_(ORDER_KEYS[0] <= started_bound, sa.tuple_(*ORDER_KEYS) < bound)


def _time_key(value: datetime | None) -> tuple[int, datetime]:
    return (1, value) if value is not None else (0, datetime.min.replace(tzinfo=UTC))


def sort_key(run: Any) -> tuple[tuple[int, datetime], tuple[int, datetime], int]:
    """The same rule in Python (for checks and tests): sort with ``reverse=True``."""
    return (_time_key(run.started_at), _time_key(run.finished_at), run.id)
