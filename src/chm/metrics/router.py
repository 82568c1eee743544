"""``GET /metrics``: Prometheus text (``text/plain; version=0.0.4``), or
OpenMetrics when the ``Accept`` header asks for it. In production it needs
``Authorization: Bearer <CHM_API_TOKEN>``, checked by the same middleware as
``/api/v1`` (``chm.app``)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client.exposition import choose_encoder

from chm.core.errors import problem_responses
from chm.core.timeutil import utcnow
from chm.metrics.collector import InventoryCollector
from chm.metrics.multiprocess import scrape_registry

METRICS_PATH = "/metrics"

router = APIRouter(tags=["metrics"])


def scrape_time() -> datetime:
    """The time a scrape is computed at (ages, latest status, stuck runs); a
    dependency, so that tests fix it."""
    return utcnow()


_TEXT = {"schema": {"type": "string"}}


@router.get(
    METRICS_PATH,
    response_class=Response,
    responses={
        200: {
            "description": "The metrics (docs/metrics.md)",
            "content": {"text/plain": _TEXT, "application/openmetrics-text": _TEXT},
        },
        **problem_responses(401),
    },
)
def metrics(request: Request, now: Annotated[datetime, Depends(scrape_time)]) -> Response:
    """Prometheus metrics: the inventory's, computed from the database now, and
    the HTTP requests of every server process (docs/metrics.md)."""
    state = request.app.state
    read_engine = state.report_engine if state.report_engine is not state.engine else None
    collector = InventoryCollector(
        state.engine, state.settings, state.sources, now, read_engine=read_engine
    )
    try:
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
    except (TypeError, ValueError):
        # prometheus_client compares an Accept header's version as a number:
        # one that is not ("version=abc") gets the default text format.
        encode, content_type = choose_encoder("")
    return Response(encode(scrape_registry(collector)), headers={"Content-Type": content_type})
