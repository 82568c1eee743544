"""Small query helpers shared by the listings."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute


def contains_ci(column: InstrumentedAttribute[str], needle_key: str) -> sa.ColumnElement[bool]:
    """Substring match on an already case-folded key column; ``%`` and ``_`` are literal."""
    escaped = needle_key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(f"%{escaped}%", escape="\\")


def after_key(columns: list[Any], values: list[Any]) -> sa.ColumnElement[bool]:
    """Rows strictly after ``values`` in ascending ``columns`` order (a row-value seek)."""
    return sa.tuple_(*columns) > sa.tuple_(
        *[sa.literal(v, c.type) for c, v in zip(columns, values, strict=True)]
    )
