"""``POST /api/v1/lineage``: OpenLineage run events pushed by the platforms (issue 7 §3).

The endpoint takes RunEvents exactly as the official openlineage-python HTTP
transport sends them (its default endpoint ``api/v1/lineage``, JSON,
optionally ``Content-Encoding: gzip``, ``Authorization: Bearer <api key>``),
so an Airflow, Spark, dbt or Flink integration points ``OPENLINEAGE_URL`` at
CHM with no code.

**Who may write what (SE-001).** A source of the sources file with an
``openlineage_namespace`` maps that namespace to its platform, environment
and (optional) client. The bearer key must be that source's token (read
from its ``token_env``): a key for one namespace cannot write another's
runs. A missing or unknown key, or a key of another namespace, is a 401
that changes nothing.

**Mapping.** ``job.name`` is matched against the ``external_id`` of the
active pipelines of the source's platform and environment that this source
serves (its client's, or every client's when it has none, as for pulls).
``run.runId`` is the external run id. START and RUNNING mean running,
COMPLETE success, FAIL failed, ABORT cancelled; OTHER (or no eventType)
changes nothing. ``started_at`` is the START event's time, ``finished_at``
the terminal event's; the ``errorMessage`` run facet's message is the
failure text; the event itself, redacted, is the run's source payload; the
event time is the source update time.

**Order.** Events may arrive out of order or twice. Each is stored through
the engine's store with its no-regression rule (``chm.ingestion.rule``):
a late START or RUNNING never regresses a terminal run (and a duplicate
changes nothing); ``fold_event`` adds only that a late START still tells
when the run started. The stored run thus ends as if the events had arrived
in order, once.

**Answers.** 201 when a run was created or changed, 200 when the event
changed nothing, 202 when the job maps to no pipeline (ignored, counted and
logged), 401 for a missing or wrong key, 422 (problem+json) for a body that
is not a valid RunEvent, 400 for a body that is not JSON (or not gzip when
it says so), 413 past ``CHM_MAX_BODY_BYTES`` (5 MiB by default) as sent or
once inflated.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
import zlib
from typing import Any, Literal

import orjson
import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from chm.core.errors import (
    BadRequest,
    FieldIssue,
    PayloadTooLarge,
    Unauthorized,
    ValidationFailed,
    issues_from_pydantic,
    problem_responses,
)
from chm.core.redaction import stored_payload, stored_text
from chm.core.status import RunStatus
from chm.core.timeutil import utcnow
from chm.ingestion.config import ConfigError, Sources, load_sources
from chm.ingestion.normalize import (
    InvalidRun,
    SourceRun,
    canonical_json,
    error_text,
    parse_timestamp,
    run_identity,
)
from chm.ingestion.router import IngestionNotConfigured
from chm.ingestion.rule import Row, fold_event, snapshot_row
from chm.ingestion.sources import AnySource, TokenMissing
from chm.ingestion.store import run_store
from chm.models import Client, Pipeline
from chm.models.base import name_key

logger = logging.getLogger("chm.ingestion.lineage")

router = APIRouter(prefix="/lineage", tags=["lineage"])

EVENT_STATUS = {
    "START": RunStatus.running,
    "RUNNING": RunStatus.running,
    "COMPLETE": RunStatus.success,
    "FAIL": RunStatus.failed,
    "ABORT": RunStatus.cancelled,
}
TERMINAL_EVENTS = ("COMPLETE", "FAIL", "ABORT")


class _OpenModel(BaseModel):
    # OpenLineage objects carry facets and fields of their own: keep them.
    model_config = ConfigDict(extra="allow")


class LineageRun(_OpenModel):
    runId: str = Field(min_length=1, max_length=500)  # noqa: N815 (the spec's name)
    facets: dict[str, Any] = Field(default_factory=dict)


class LineageJob(_OpenModel):
    namespace: str = Field(min_length=1, max_length=500)
    name: str = Field(min_length=1, max_length=500)
    facets: dict[str, Any] = Field(default_factory=dict)


class RunEvent(_OpenModel):
    """An OpenLineage RunEvent: what CHM reads of it is validated, the rest is kept."""

    eventType: Literal["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"] | None = None  # noqa: N815
    eventTime: str = Field(min_length=1, max_length=64)  # noqa: N815
    run: LineageRun
    job: LineageJob
    producer: str = Field(min_length=1)
    schemaURL: str = Field(min_length=1)  # noqa: N815
    inputs: list[Any] = Field(default_factory=list)
    outputs: list[Any] = Field(default_factory=list)


class LineageAnswer(BaseModel):
    result: Literal["created", "updated", "unchanged", "ignored"]
    pipeline_id: str | None = None
    external_run_id: str | None = None
    reason: str | None = None
    ignored_total: int | None = Field(
        None, description="Events this process ignored so far (jobs mapped to no pipeline)"
    )


class IgnoredEvents:
    """The events a process ignored, counted (and logged by the caller)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0

    def add(self) -> int:
        with self._lock:
            self.total += 1
            return self.total


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    return key.strip() or None if scheme.lower() == "bearer" else None


def _keyed_sources(sources: Sources, key: str) -> list[AnySource]:
    """The namespace sources whose token is ``key`` (compared in constant time)."""
    matched = []
    for source in sources.all:
        if source.openlineage_namespace is None:
            continue
        try:
            token = source.token(os.environ)
        except TokenMissing:
            logger.warning("source %r: token_env is not set; its namespace refuses events",
                           source.name)  # fmt: skip
            continue
        if token is not None and hmac.compare_digest(
            token.get_secret_value().encode(), key.encode()
        ):
            matched.append(source)
    return matched


async def _body(request: Request) -> bytes:
    # The body as sent is bounded by chm.core.body_limit; inflated, by the same limit.
    limit: int = request.app.state.settings.max_body_bytes
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            raise PayloadTooLarge(f"the event is larger than {limit} bytes")
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return bytes(raw)
    if encoding != "gzip":
        raise BadRequest(f"Content-Encoding {encoding!r} is not supported (gzip is)")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(bytes(raw), limit + 1)
    except zlib.error:
        raise BadRequest("the body is not valid gzip") from None
    if len(body) > limit or inflater.unconsumed_tail:
        raise PayloadTooLarge(f"the event is larger than {limit} bytes uncompressed")
    if not inflater.eof:
        raise BadRequest("the body is not valid gzip (truncated)")
    return body


def _parse(body: bytes) -> tuple[RunEvent, dict[str, Any]]:
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadRequest("The request body is not valid JSON") from None
    if not isinstance(document, dict):
        raise ValidationFailed.one("body", "invalid_type", "a RunEvent is a JSON object")
    try:
        event = RunEvent.model_validate(document)
    except ValidationError as error:
        raise ValidationFailed(issues_from_pydantic(error.errors())) from None
    return event, document


def _snapshot(event: RunEvent, document: dict[str, Any], key: str) -> Row:
    try:
        moment = parse_timestamp(event.eventTime, "eventTime")
        if moment is None:
            raise InvalidRun("eventTime is empty")
        kind = event.eventType or "OTHER"
        status = EVENT_STATUS[kind]
        error = event.run.facets.get("errorMessage")
        message = error.get("message") if isinstance(error, dict) else None
        run = SourceRun(
            external_run_id=run_identity(event.run.runId, "run.runId"),
            status=status,
            source_status=kind,
            started_at=moment if kind == "START" else None,
            finished_at=moment if kind in TERMINAL_EVENTS else None,
            error_message=error_text(message) if kind in ("FAIL", "ABORT") else None,
            source_updated_at=moment,
        )
        # Redacted, then capped, as every path that stores runs does.
        if run.error_message is not None:
            run.error_message = stored_text(run.error_message, (key,))
        payload = canonical_json(stored_payload(document, (key,)))
        return snapshot_row(run, payload)
    except InvalidRun as invalid:
        field = "eventTime" if "eventTime" in str(invalid) else "run.runId"
        raise ValidationFailed([FieldIssue(field, "invalid", str(invalid))]) from None


def _pipeline_for(
    session: Any, sources: Sources, source: AnySource, job_name: str
) -> tuple[int | None, str | None]:
    """The one active pipeline ``source`` serves for ``job_name``, or the reason there is none."""
    query = (
        sa.select(Pipeline.id, Pipeline.platform, Pipeline.environment, Client.name)
        .join(Client, Client.id == Pipeline.client_id)
        .where(
            Pipeline.is_active.is_(True),
            Client.is_active.is_(True),
            Pipeline.platform == source.platform,
            Pipeline.environment == source.environment,
            Pipeline.external_id == job_name,
        )
        .order_by(Pipeline.id)
    )
    if source.client is not None:
        query = query.where(Client.name_key == name_key(source.client))
    served = [
        row.id
        for row in session.execute(query)
        if sources.for_pipeline(row.platform, row.environment, row.name) is source
    ]
    if not served:
        return None, "no active pipeline of this namespace has the job as external_id"
    if len(served) > 1:
        return None, f"the job is the external_id of {len(served)} pipelines of this namespace"
    return served[0], None


def _store(
    request: Request, sources: Sources, source: AnySource, event: RunEvent, row: Row | None
) -> tuple[int, LineageAnswer]:
    state = request.app.state
    with state.read_sessions() as session:
        pipeline_id, reason = _pipeline_for(session, sources, source, event.job.name)
    if pipeline_id is None:
        ignored = _ignored(request).add()
        logger.info("lineage event ignored (namespace %r, job %r): %s; %d ignored so far",
                    event.job.namespace, event.job.name, reason, ignored)  # fmt: skip
        return 202, LineageAnswer(result="ignored", reason=reason, ignored_total=ignored)
    answer = LineageAnswer(
        result="unchanged", pipeline_id=str(pipeline_id), external_run_id=event.run.runId
    )
    if row is None:  # OTHER: nothing to change
        return 200, answer
    with state.write_sessions.begin() as session:
        counts = run_store(state.engine).upsert_page(
            session, pipeline_id, [row], utcnow(), fold=fold_event
        )
    if counts.invalid:
        raise ValidationFailed.one("eventTime", "invalid", counts.invalid[0][1])
    if counts.created or counts.updated:
        answer.result = "created" if counts.created else "updated"
        return 201, answer
    return 200, answer


def _ignored(request: Request) -> IgnoredEvents:
    counter = getattr(request.app.state, "lineage_ignored", None)
    if counter is None:
        counter = request.app.state.lineage_ignored = IgnoredEvents()
    return counter


@router.post(
    "",
    status_code=201,
    response_model=LineageAnswer,
    responses={
        200: {"model": LineageAnswer, "description": "The event changed nothing"},
        202: {"model": LineageAnswer, "description": "The job maps to no pipeline: ignored"},
        **problem_responses(400, 401, 409, 422),
    },
)
async def receive_lineage_event(request: Request) -> JSONResponse:
    """Take one OpenLineage RunEvent (as the openlineage-python HTTP transport sends it)
    and record the run it tells of; the bearer key is the namespace source's token."""
    settings = request.app.state.settings
    try:
        sources = load_sources(settings.config, settings.env)
    except ConfigError as error:
        # The caller is not authenticated yet: the details (file, fields) go
        # to the log, the answer only says that no source can be checked.
        logger.error("lineage event refused: %s", error)
        raise IngestionNotConfigured(
            "no OpenLineage source can be checked: the sources file is missing or invalid"
        ) from None
    key = _bearer(request)
    keyed = _keyed_sources(sources, key) if key is not None else []
    if not keyed:
        raise Unauthorized("A valid 'Authorization: Bearer <key>' of an OpenLineage source is "
                           "required")  # fmt: skip
    assert key is not None
    # Parsing, redaction and capping are CPU work on up to CHM_MAX_BODY_BYTES:
    # in a worker thread, not on the event loop every other request waits on.
    event, document = await run_in_threadpool(_parse, await _body(request))
    source = next((s for s in keyed if s.openlineage_namespace == event.job.namespace), None)
    if source is None:
        raise Unauthorized(f"this key may not write namespace {event.job.namespace[:200]!r}")
    row = None
    if event.eventType not in (None, "OTHER"):
        row = await run_in_threadpool(_snapshot, event, document, key)
    status, answer = await run_in_threadpool(_store, request, sources, source, event, row)
    return JSONResponse(answer.model_dump(mode="json", exclude_none=True), status_code=status)
