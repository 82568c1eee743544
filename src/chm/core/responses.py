"""JSON answers written straight by orjson, without a pydantic round trip
(the hot read paths: runs, the client summary).

Times are RFC 3339 UTC with a ``Z``, as every response carries them.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

_OPTIONS = orjson.OPT_UTC_Z


def json_bytes(content: Any) -> bytes:
    return orjson.dumps(content, option=_OPTIONS)


def json_bytes_response(content: Any, status_code: int = 200) -> Response:
    return Response(json_bytes(content), status_code=status_code, media_type="application/json")
