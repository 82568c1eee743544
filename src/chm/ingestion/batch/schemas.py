"""The batch's request and answer (monitoring contract, "Batch recording")."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, PlainValidator

from chm.core.errors import Problem
from chm.core.ids import PipelineID
from chm.core.schemas import EntityId, RequestModel
from chm.runs.schemas import ExternalRunId, RunCreate

MAX_BATCH_RUNS = 1000


class BatchRun(RunCreate):
    """One run of a batch: a manual run's fields, plus the pipeline it belongs to
    and its external run id, both required here. A ``pipeline_id`` that names no
    pipeline is the item's 404, as the path of ``POST /pipelines/{id}/runs``."""

    pipeline_id: PipelineID
    external_run_id: ExternalRunId


def _unparsed(value: Any) -> Any:
    return value


# An item is parsed on its own by the service: one bad item is that item's
# error in a 200 answer, not the request's 422. The schema says so (an item
# may be anything), and shows what an item must be to be stored: BatchRun.
UnparsedRun = Annotated[Any, PlainValidator(_unparsed, json_schema_input_type=BatchRun | Any)]


class BatchRequest(RequestModel):
    runs: Annotated[
        list[UnparsedRun],
        Field(
            min_length=1,
            max_length=MAX_BATCH_RUNS,
            description="The runs to record, each a `BatchRun`; an item that is not one "
            "is answered as that item's error, and the others are stored",
        ),
    ]


BatchResult = Literal["created", "updated", "unchanged", "error"]


class BatchItemOut(BaseModel):
    index: int = Field(description="The item's position in `runs`, from 0")
    result: BatchResult
    run_id: EntityId | None = Field(description="The stored run; null for an error")
    error: Problem | None = Field(
        description="Why the item was not stored (problem+json, as the single-run "
        "endpoint would answer it; field paths relative to the item); null otherwise"
    )


class BatchAnswer(BaseModel):
    items: list[BatchItemOut] = Field(description="One per run sent, in request order")
    created: int
    updated: int
    unchanged: int
    errors: int
