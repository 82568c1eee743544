"""Apply a PATCH to an entity so that ``updated_at`` moves only on a real change."""

from __future__ import annotations

from typing import Any

from chm.core.timeutil import utcnow


def apply_changes(entity: Any, changes: dict[str, Any]) -> bool:
    """Set every field whose value differs; bump ``updated_at`` if any did."""
    changed = False
    for field, value in changes.items():
        if getattr(entity, field) != value:
            setattr(entity, field, value)
            changed = True
    if changed:
        entity.updated_at = utcnow()
    return changed
