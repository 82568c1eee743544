"""Keyset pagination: opaque, signed cursors and the page envelope.

A cursor carries the sort key of the last row of a page. The next page is
"every row strictly after that key" in the listing's total order, so a walk
never skips or repeats a row, even when rows arrive between requests.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from datetime import datetime
from typing import Annotated, Any, Generic, TypeVar

import orjson
from fastapi import Query
from pydantic import BaseModel

from chm.core.errors import ValidationFailed
from chm.core.settings import get_settings
from chm.core.timeutil import as_utc

T = TypeVar("T")

DEFAULT_LIMIT = 50
MAX_LIMIT = 500

LimitParam = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"Page size, 1..{MAX_LIMIT}")]
CursorParam = Annotated[
    str | None, Query(description="The previous page's `next_cursor`", max_length=2000)
]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


def _sign(payload: bytes) -> bytes:
    return hmac.new(get_settings().cursor_key, payload, hashlib.sha256).digest()[:12]


def _encode_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"t": as_utc(value).isoformat()}
    return value


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"t"}:
        return datetime.fromisoformat(value["t"])
    return value


def encode_cursor(kind: str, key: list[Any]) -> str:
    payload = orjson.dumps({"k": kind, "v": [_encode_value(v) for v in key]})
    token = base64.urlsafe_b64encode(_sign(payload) + payload).decode().rstrip("=")
    return token


def decode_cursor(kind: str, token: str, types: tuple[type | tuple[type, ...], ...]) -> list[Any]:
    """The key inside ``token``, one value of each of ``types``; a 422 on
    ``cursor`` for anything we did not issue (or that does not fit)."""
    bad = ValidationFailed.one("cursor", "invalid_cursor", "cursor was not issued by this server")
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise bad from None
    signature, payload = raw[:12], raw[12:]
    if not hmac.compare_digest(signature, _sign(payload)):
        raise bad
    try:
        data = orjson.loads(payload)
        values = [_decode_value(v) for v in data["v"]]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        raise bad from None
    if data.get("k") != kind or len(values) != len(types):
        raise bad
    for value, expected in zip(values, types, strict=True):
        # bool is an int to Python, never an id to us
        if not isinstance(value, expected) or isinstance(value, bool):
            raise bad
    return values
