"""The route of ``POST /api/v1/runs:batch`` (see the package doc)."""

from __future__ import annotations

import threading

from fastapi import APIRouter, BackgroundTasks, Request
from starlette.responses import Response

from chm.core.deps import WriteSession
from chm.core.errors import problem_responses
from chm.core.responses import json_bytes_response
from chm.core.timeutil import utcnow
from chm.ingestion.batch.schemas import BatchAnswer, BatchRequest
from chm.ingestion.batch.service import record_batch
from chm.ingestion.store import PlannerStatistics

router = APIRouter(tags=["runs"])


@router.post(
    "/runs:batch",
    response_model=BatchAnswer,
    responses=problem_responses(400, 401, 413, 422, 503),
)
def record_runs(
    body: BatchRequest, session: WriteSession, request: Request, background: BackgroundTasks
) -> Response:
    """Record 1 to 1,000 runs of any pipelines, each named by `pipeline_id` and
    `external_run_id`, with ingestion's upsert and no-regression rule; answers
    each item's result (created, updated, unchanged, or its error) in order."""
    outcome = record_batch(session, body.runs, utcnow())
    # After the commit (the session's dependency commits before the answer),
    # off the answer's path: PostgreSQL's statistics kept fresh during a backfill.
    background.add_task(_statistics(request).rows_created, outcome.counts.created)
    return json_bytes_response(outcome.document())


_STATISTICS_LOCK = threading.Lock()


def _statistics(request: Request) -> PlannerStatistics:
    """This application's planner statistics (one per process, created once:
    requests run in worker threads)."""
    state = request.app.state
    with _STATISTICS_LOCK:
        statistics = getattr(state, "batch_statistics", None)
        if statistics is None:
            statistics = PlannerStatistics(state.engine)
            state.batch_statistics = statistics
        return statistics
