"""Runs to JSON on the hot read paths, without a pydantic round trip.

The async read engine hands JSON columns over as ``orjson.Fragment`` (their
stored text, never parsed), and rows are written straight to JSON by orjson.
The output is exactly ``RunOut``'s (tests/test_serialize.py holds them equal):
ids as strings, times as RFC 3339 UTC with a ``Z``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from starlette.responses import Response

from chm.core.responses import json_bytes_response
from chm.models import Run

RUNS = Run.__table__

# The columns a run answer carries, in RunOut's field order.
RUN_COLUMNS = (
    RUNS.c.id,
    RUNS.c.pipeline_id,
    RUNS.c.external_run_id,
    RUNS.c.status,
    RUNS.c.source_status,
    RUNS.c.started_at,
    RUNS.c.finished_at,
    RUNS.c.duration_seconds,
    RUNS.c.metrics,
    RUNS.c.error_message,
    RUNS.c.source_payload,
    RUNS.c.ingested_at,
    RUNS.c.event_at,
    RUNS.c.created_at,
    RUNS.c.updated_at,
)

# A row of RUN_COLUMNS (any arity, as SQLAlchemy types rows).
RunRow = sa.Row[*tuple[Any, ...]]


def run_document(row: RunRow) -> dict[str, Any]:
    document = row._asdict()
    document["id"] = str(document["id"])
    document["pipeline_id"] = str(document["pipeline_id"])
    return document


def runs_page(rows: Sequence[RunRow], next_cursor: str | None) -> Response:
    return json_bytes_response(
        {"items": [run_document(r) for r in rows], "next_cursor": next_cursor}
    )
