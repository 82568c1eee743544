"""Recording a batch of runs: each item parsed and checked on its own, then
every valid one stored in the request's one transaction through the
ingestion store, by the no-regression rule; see the package doc."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.orm import Session

from chm.core.errors import ChmError, NotFound, ValidationFailed, issues_from_pydantic
from chm.core.errors import problem_document as problem
from chm.core.lookup import not_found
from chm.core.redaction import Redactor
from chm.ingestion.batch import BATCH_SOURCE
from chm.ingestion.batch.schemas import BatchRun
from chm.ingestion.batch.store import Key, batch_store
from chm.ingestion.normalize import InvalidRun, SourceRun
from chm.ingestion.rule import PageCounts, Row, differs, merge, snapshot_row
from chm.ingestion.store import run_store
from chm.models import Pipeline
from chm.runs.service import InactivePipeline, check_times

CREATED, UPDATED, UNCHANGED, ERROR = "created", "updated", "unchanged", "error"
UNSTORABLE = "an integer in it is beyond 64 bits, which a batch cannot store"


@dataclass
class _Item:
    """One item once parsed: its key and snapshot, or why it cannot be stored.
    A check that needs the database comes first (``pending``: the time check,
    answered after an unknown or inactive pipeline, as the single-run POST)."""

    key: Key | None = None
    snapshot: Row | None = None
    pending: ChmError | None = None
    error: ChmError | None = None


@dataclass
class BatchOutcome:
    """What became of each item, in request order, and the counts."""

    results: list[str]
    run_ids: list[int | None]
    errors: list[ChmError | None]
    counts: PageCounts = field(default_factory=PageCounts)

    def document(self) -> dict[str, Any]:
        """The answer (``BatchAnswer``), built without a pydantic round trip."""
        items = [
            {
                "index": index,
                "result": result,
                "run_id": None if run_id is None else str(run_id),
                "error": None if error is None else problem(error),
            }
            for index, (result, run_id, error) in enumerate(
                zip(self.results, self.run_ids, self.errors, strict=True)
            )
        ]
        return {
            "items": items,
            "created": self.counts.created,
            "updated": self.counts.updated,
            "unchanged": self.counts.unchanged,
            "errors": self.counts.skipped,
        }


def record_batch(session: Session, runs: Sequence[Any], now: datetime) -> BatchOutcome:
    """Store ``runs`` (raw items of the request) in ``session`` (the caller commits).

    Items naming the same run are recorded in order, as if sent one after the
    other: each item's result is what it did to the run as the items before it
    left it. The pipelines' locks are taken in one order (no deadlock between
    concurrent batches), their stored runs read in one statement and the runs
    that change written in one, ``updated_at``/``ingested_at`` ``now``."""
    # Parsing, redaction and capping first: a write session's first statement
    # takes SQLite's write lock, which nobody should hold while we compute.
    redactor = Redactor()
    items = [_parse(raw, redactor) for raw in runs]
    _check_pipelines(session, items)
    keys = sorted({item.key for item in items if item.error is None and item.key is not None})
    bind = session.get_bind()
    store, reads = run_store(bind), batch_store(bind)
    reads.lock_pipelines(session, {pipeline_id for pipeline_id, _ in keys})
    stored = reads.stored_runs(session, keys)
    outcome = BatchOutcome([ERROR] * len(items), [None] * len(items), [i.error for i in items])
    targets = _fold(items, {key: row for key, (_id, row) in stored.items()}, outcome)
    writes = [
        {**row, "pipeline_id": key[0], "ingested_at": now, "created_at": now, "updated_at": now}
        for key, row in sorted(targets.items())
        if key not in stored or differs(stored[key][1], row)
    ]
    written = store.write(session, writes) if writes else set()
    # The store answers the external run ids it wrote: a run of another
    # pipeline with the same id, written by the same statement, could only
    # hide one the database found unchanged though the rule did not.
    unwritten = {
        (row["pipeline_id"], row["external_run_id"])
        for row in writes
        if row["external_run_id"] not in written
    }
    run_ids = {key: run_id for key, (run_id, _row) in stored.items()}
    run_ids |= reads.run_ids(session, [key for key in targets if key not in run_ids])
    _settle(items, outcome, run_ids, unwritten)
    store.count_ingested(session, BATCH_SOURCE, outcome.counts)
    return outcome


def _parse(raw: Any, redactor: Redactor) -> _Item:
    """One item, validated as the single-run POST validates its path and body."""
    if not isinstance(raw, dict):
        return _Item(error=ValidationFailed.one("body", "invalid_type", "a run is a JSON object"))
    try:
        run = BatchRun.model_validate(raw)
    except ValidationError as invalid:
        errors = invalid.errors(include_url=False, include_input=False)
        for error in errors:
            # A pipeline_id that can be no id of ours names no pipeline: a 404,
            # as the path of POST /pipelines/{id}/runs (chm.core.errors).
            if error["loc"] == ("pipeline_id",) and error["type"] == "unknown_id":
                return _Item(error=NotFound(error["msg"]))
        return _Item(error=ValidationFailed(issues_from_pydantic(errors, raw)))
    key = (run.pipeline_id, run.external_run_id)
    try:
        check_times(run.started_at, run.finished_at)
    except ValidationFailed as invalid:
        return _Item(key=key, pending=invalid)
    # As the single-run POST stores it: failure text and payload redacted,
    # then capped (chm.core.redaction); metrics as sent.
    error_message = None if run.error_message is None else redactor.stored_text(run.error_message)
    source_run = SourceRun(
        external_run_id=run.external_run_id,
        status=run.status,
        source_status=None,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration_seconds=run.duration_seconds,
        metrics=run.metrics,
        error_message=error_message,
    )
    payload = None
    if run.source_payload is not None:
        payload = redactor.stored_payload(run.source_payload)
    for name, document in (("metrics", run.metrics), ("source_payload", payload)):
        try:
            # The store sends a batch's rows to PostgreSQL as one JSON text
            # written by orjson, which refuses integers past 64 bits.
            orjson.dumps(document)
        except TypeError:
            return _Item(error=ValidationFailed.one(name, "unstorable_value", UNSTORABLE))
    return _Item(key=key, snapshot=snapshot_row(source_run, payload))


def _check_pipelines(session: Session, items: list[_Item]) -> None:
    """Each parsed item's pipeline, read in one statement: unknown is the item's
    404, inactive its 409 (as the single-run POST), then its pending error."""
    ids = sorted({item.key[0] for item in items if item.key is not None})
    if not ids:
        return
    query = sa.select(Pipeline.id, Pipeline.is_active).where(Pipeline.id.in_(ids))
    active: dict[int, bool] = {row[0]: row[1] for row in session.execute(query)}
    for item in items:
        if item.key is None:
            continue
        pipeline_id = item.key[0]
        if pipeline_id not in active:
            item.error = not_found("pipeline", pipeline_id)
        elif not active[pipeline_id]:
            item.error = InactivePipeline.of(pipeline_id)
        else:
            item.error = item.pending


def _fold(items: list[_Item], stored: dict[Key, Row], outcome: BatchOutcome) -> dict[Key, Row]:
    """Each valid item folded, in order, into what its run holds so far (the
    stored run, then the items before it) by the no-regression rule; answers
    the run each key ends as, for the keys some item changed."""
    targets: dict[Key, Row] = {}
    for index, item in enumerate(items):
        if item.error is not None or item.key is None or item.snapshot is None:
            continue
        current = targets.get(item.key, stored.get(item.key))
        try:
            merged = merge(current, item.snapshot)
        except InvalidRun as invalid:
            # Its end is before the start stored (or sent before it): as the
            # single-run PATCH refuses it.
            outcome.errors[index] = ValidationFailed.one(
                "finished_at", "before_started_at", str(invalid)
            )
            continue
        if merged is None or (current is not None and not differs(current, merged)):
            outcome.results[index] = UNCHANGED
            continue
        outcome.results[index] = CREATED if current is None else UPDATED
        targets[item.key] = merged
    return targets


def _settle(
    items: list[_Item], outcome: BatchOutcome, run_ids: dict[Key, int], unwritten: set[Key]
) -> None:
    """Each stored item's run id, and the counts. A run the database did not
    write though the rule changed it (it found no value different) is unchanged."""
    counts = outcome.counts
    for index, item in enumerate(items):
        if outcome.errors[index] is not None or item.key is None:
            outcome.results[index] = ERROR
            counts.skipped += 1
            continue
        if item.key in unwritten:
            outcome.results[index] = UNCHANGED
        outcome.run_ids[index] = run_ids[item.key]
        result = outcome.results[index]
        if result == CREATED:
            counts.created += 1
        elif result == UPDATED:
            counts.updated += 1
        else:
            counts.unchanged += 1
