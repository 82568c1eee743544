"""Small query helpers shared by the listings."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute


def contains_ci(column: InstrumentedAttribute[str], needle_key: str) -> sa.ColumnElement[bool]:
    """Substring match on an already case-folded key column; ``%`` and ``_`` are literal."""
    escaped = needle_key.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return column.like(f"%{escaped}%", escape="\\")
