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

from chm.core.keyset import Keyset, SortKey
from chm.models import Run

# The bounds of a cursor go through the same key expression, so a missing
# time in the cursor becomes the same floor the index holds. The row-value
# comparison is the exact rule, and PostgreSQL seeks the index with it; the
# implied bound on started_at lets SQLite, which does not seek with row
# values, start its index range at the cursor too.
KEYSET = Keyset(
    "runs",
    (
        SortKey(Run.__table__.c.started_at, datetime, nulls_low=True),
        SortKey(Run.__table__.c.finished_at, datetime, nulls_low=True),
        SortKey(Run.__table__.c.id, int),
    ),
    descending=True,
    bound_first_key="sqlite",
)
ORDER_BY = KEYSET.order_by


def _time_key(value: datetime | None) -> tuple[int, datetime]:
    return (1, value) if value is not None else (0, datetime.min.replace(tzinfo=UTC))


def sort_key(run: Any) -> tuple[tuple[int, datetime], tuple[int, datetime], int]:
    """The same rule in Python (for checks and tests): sort with ``reverse=True``."""
    return (_time_key(run.started_at), _time_key(run.finished_at), run.id)
