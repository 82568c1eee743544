"""Opaque ids on the wire, integers in the database."""

from __future__ import annotations

from chm.core.errors import NotFound, ValidationFailed

_MAX_ID = 2**63 - 1


def parse_id(raw: str) -> int | None:
    """The integer behind an opaque id, or None when it cannot be one of ours."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
        return None
    value = int(raw)
    return value if 0 < value <= _MAX_ID else None


def path_id(raw: str, what: str) -> int:
    """An id from the path: anything not ours is simply unknown (404)."""
    value = parse_id(raw)
    if value is None:
        raise NotFound(f"{what} {raw!r} not found")
    return value


def body_id(raw: str, field: str, what: str) -> int:
    """An id from a body or query: anything not ours is a 422 on that field."""
    value = parse_id(raw)
    if value is None:
        raise ValidationFailed.one(field, "not_found", f"{what} {raw!r} does not exist")
    return value


def filter_id(raw: str | None, field: str) -> int | None:
    """An id used as a list filter: malformed is a 422, unknown just matches nothing."""
    if raw is None:
        return None
    value = parse_id(raw)
    if value is None:
        raise ValidationFailed.one(field, "invalid_id", f"{raw!r} is not a valid id")
    return value
